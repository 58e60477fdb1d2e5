"""Results by subgroup and over time: `--keep-columns` carried into --out, the store and the report; the report's
breakdown `--by` a column and trend over a date column, opened in headless Chromium.

The expected counts come from evaluating each generated patient (the engine, not the cohort's output) and from
the columns the test itself wrote; the chart checks from what a reader needs: pathways covering at least 90 %
of patients, window colours in order of urgency, thousands separators, no label drawn over another.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter

import duckdb
import pytest

from lumbar_kb.engine.patient import random_patient
from lumbar_kb.main import main

from .chromium import CHROMIUM, FLAGS

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

N = 2400
WARDS = ["A&E", "Ortho <b>x</b>", "Oncology $1$"]


def test_results_by_ward_and_month_reach_out_store_and_report(capsys, kb, evaluator, tmp_path):
    from playwright.sync_api import sync_playwright

    rng = random.Random(29)
    names = [f.name for f in kb.input_facts]
    people = []
    extract = tmp_path / "extract.csv"
    with extract.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *names, "ward", "admit_date"])
        for i in range(N):
            facts = random_patient(kb, rng)
            ward, month = rng.choice(WARDS), rng.randint(1, 12)
            people.append((facts, ward, f"2026-{month:02d}"))
            cells = [{True: "true", False: "false", None: ""}.get(facts.get(n), facts.get(n)) for n in names]
            writer.writerow([f"p{i}", *cells, ward, f"2026-{month:02d}-{rng.randint(1, 28):02d}"])
        writer.writerow(["bad", *(["maybe"] + [""] * (len(names) - 1)), "A&E", "2026-01-01"])
    report, out_file, db = tmp_path / "report", tmp_path / "rows.csv", tmp_path / "audit.duckdb"
    code, out, _ = (
        main(
            [
                str(a)
                for a in (
                    "cohort",
                    extract,
                    "--keep-columns",
                    "ward,admit_date",
                    "--by",
                    "ward",
                    "--trend",
                    "admit_date",
                    "--report",
                    report,
                    "--out",
                    out_file,
                    "--db",
                    db,
                    "--format",
                    "json",
                    "--quiet",
                )
            ]
        ),
        *capsys.readouterr(),
    )
    assert code == 1  # the planted bad row
    summary = json.loads(out)["summary"]

    # kept columns in --out and in the store, as the extract has them
    rows = list(csv.DictReader(out_file.open()))
    assert [r["ward"] for r in rows] == [w for _, w, _ in people]
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute("SELECT kept['ward'], kept['admit_date'] FROM decisions ORDER BY seq").fetchall()
    con.close()
    assert [w for w, _ in stored] == [w for _, w, _ in people] and all(d.startswith("2026-") for _, d in stored)

    # the expected breakdown, from the engine itself
    results = [evaluator.evaluate(facts) for facts, _, _ in people]
    by_ward = {w: Counter() for w in WARDS}
    by_month = Counter()
    for (_, ward, month), result in zip(people, results, strict=True):
        by_ward[ward][result.urgency] += 1
        by_month[month] += 1
    for ward in WARDS:
        assert summary["by"]["groups"][ward]["urgency"] == {level: by_ward[ward][level] for level in summary["urgency"]}
    assert {m: v["patients"] for m, v in summary["trend"]["months"].items()} == dict(by_month)
    assert summary["bad_rows_by_cause"] == {"must be true or false (or null for unknown), not '…'": 1}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto((report / "index.html").as_uri())
            ward_table = page.locator("section#by table").first.inner_text()
            months_table = page.locator("section#trend table").first.inner_text()
            start = page.locator("section#pathways svg g.node").first.text_content()
            legend = page.locator("section#windows svg text").all_text_contents()
            ticks = page.locator("section#urgency svg text").all_text_contents()
            sections = page.locator("section").evaluate_all("els => els.map(e => e.id)")
            overlaps = page.evaluate(OVERLAPS)
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    for ward in WARDS:  # the page's table: escaped, as the extract spells it, with the engine's counts
        line = next(x for x in ward_table.splitlines() if x.startswith(ward + "\t"))
        emergencies = by_ward[ward]["emergency"]
        assert f"\t{sum(by_ward[ward].values()):,}\t{emergencies:,} (" in line
    for month, n in by_month.items():
        assert f"{month}\t{n:,}\t" in months_table
    for name in ("completeness", "warnings", "differential", "could_escalate", "bad_rows", "by", "trend"):
        assert name in sections
    covered = re.search(r"\((\d+)%\)", start)
    assert covered and int(covered.group(1)) >= 90, start
    hours = [int(h) for h in re.findall(r"within (\d+) (?:hours|h)", " ".join(legend))]
    assert hours and hours == sorted(hours)  # the windows' legend (their colours) from the soonest
    assert any(re.fullmatch(r"\d{1,3}(,\d{3})+", t.strip()) for t in ticks)  # 1,000 and not 1000
    assert overlaps == [], overlaps


# every text of each figure drawn by matplotlib (svg text elements), pairwise: none drawn over another
OVERLAPS = """() => {
  const found = [];
  for (const svg of document.querySelectorAll('section svg.figure')) {
    if (svg.querySelector('g.node')) continue;  // graphviz lays out its own labels
    const boxes = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim())
      .map(t => [t.textContent.trim(), t.getBoundingClientRect()]);
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [a, r] = boxes[i], [b, s] = boxes[j];
      const w = Math.min(r.right, s.right) - Math.max(r.left, s.left);
      const h = Math.min(r.bottom, s.bottom) - Math.max(r.top, s.top);
      if (w > 1 && h > 1) found.push([svg.closest('section').id, a, b]);
    }
  }
  return found;
}"""
