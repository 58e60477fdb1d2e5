"""`cohort --report DIR`, opened in headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

The page must show every figure at a readable size, make no request beyond its own file (self-contained,
offline), and its numbers must be the cohort's counts.
"""

from __future__ import annotations

import json
import random

import pytest

from lumbar_kb.engine.loader import default_kb_dir
from lumbar_kb.engine.patient import random_patient
from lumbar_kb.main import main

from .chromium import CHROMIUM, FLAGS

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

FIGURES = ("urgency", "windows", "rules", "pathways", "alarm_questions", "changes")


def test_the_report_opens_offline_in_chromium_with_every_figure(capsys, kb, tmp_path, kb_copy):
    from playwright.sync_api import sync_playwright

    rng = random.Random(3)
    people = tmp_path / "people.jsonl"
    people.write_text("".join(json.dumps(random_patient(kb, rng)) + "\n" for _ in range(150)))
    imaging = kb_copy / "rules" / "imaging.yaml"  # a rule change, so the report has a comparison to show
    imaging.write_text(imaging.read_text().replace("within_hours: 12\n", "within_hours: 6\n", 1))
    report = tmp_path / "report"
    argv = ["cohort", str(people), "--kb", str(kb_copy), "--compare-kb", str(default_kb_dir())]
    code = main([*argv, "--report", str(report), "--format", "json", "--quiet"])
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert code == 0 and summary["changed"]["patients"] > 0
    for name in FIGURES:
        for suffix in ("png", "svg"):
            assert (report / "figures" / f"{name}.{suffix}").stat().st_size > 1000, name

    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto((report / "index.html").as_uri())
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            sizes = {
                name: page.locator(f"section#{name} svg").first.bounding_box()
                for name in FIGURES
                if page.locator(f"section#{name} svg").count()
            }
            first_table = page.locator("table").first.inner_text()
            heading = page.locator("h1").inner_text()
        finally:
            browser.close()
    assert requests == [(report / "index.html").as_uri()]  # nothing fetched: self-contained and offline
    assert set(sizes) == set(FIGURES)
    for name, box in sizes.items():
        assert box is not None and box["width"] > 300 and box["height"] > 100, (name, box)
    assert heading == f"Cohort report: {summary['patients']} patient(s)"
    for code_, count in summary["urgency"].items():
        label = kb.catalog["urgency"][code_].label
        assert f"{label}\t{count:,} (" in first_table
    assert (tmp_path / "report.png").stat().st_size > 50_000  # a page with pictures, not a blank one


def test_the_report_shows_override_rates_per_rule_from_the_service_store(tmp_path, capsys):
    """With --feedback, the rule section lists what clinicians did with the CDS cards each rule was behind."""
    from lumbar_kb.clinic.service.store import Store

    db = tmp_path / "service.sqlite3"
    store = Store(db)
    for n in (1, 2):
        store.record_card(f"card-{n}", "lumbar-mass", f"hook-{n}", ["concerning.palpable_mass"], "sha", "prompt", "x")
    store.record_feedback("lumbar-mass", [{"card": "card-1", "outcome": "overridden", "reason_code": "benign"}])
    store.record_feedback("lumbar-mass", [{"card": "card-2", "outcome": "overridden"}])
    report = tmp_path / "report"
    patients = default_kb_dir() / "patients"
    assert main(["cohort", str(patients), "--report", str(report), "--feedback", str(db), "--quiet"]) == 0
    page = (report / "index.html").read_text()
    assert "the CDS cards each rule was behind" in page
    # two cards, both overridden: 100 %; a rule with no card has no rate
    assert "<tr><td>concerning.palpable_mass</td>" in page
    row = page[page.index("<tr><td>concerning.palpable_mass</td>") :].split("</tr>", 1)[0]
    assert row.endswith("<td>2</td><td>0</td><td>2</td><td>100%</td>")
    capsys.readouterr()
    out = tmp_path / "r2"
    assert main(["cohort", str(patients), "--report", str(out), "--feedback", str(tmp_path / "x.db"), "--quiet"]) == 2
    assert "no such feedback store" in capsys.readouterr().err and not out.exists()
