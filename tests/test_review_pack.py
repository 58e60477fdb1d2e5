"""`lumbar-kb review` without a browser: deterministic bytes, hostile text escaped, bad output paths and
knowledge bases refused, and the inconsistencies / hazard section rendering what a knowledge base provides."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest
from markupsafe import escape

from lumbar_kb.engine.loader import load
from lumbar_kb.main import main
from lumbar_kb.visualize.review.content import build_pack
from lumbar_kb.visualize.review.pack import write_pack

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py


def test_the_same_knowledge_base_gives_the_same_bytes_in_another_process(tmp_path, bundled_pack):
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # this process's pack against another's, another hash seed
    subprocess.run(
        [sys.executable, "-m", "lumbar_kb", "review", "-o", str(tmp_path / "b")],
        check=True,
        env=env,
        capture_output=True,
    )
    a = sorted(p.name for p in bundled_pack.iterdir())
    assert a == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in a:
        assert (bundled_pack / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_text_from_the_knowledge_base_is_escaped(kb_copy, tmp_path):
    path = kb_copy / "rules" / "pitfalls.yaml"
    path.write_text(
        path.read_text().replace(
            "title: A palpable mass is not benign until imaging confirms it",
            'title: "A palpable mass <script>alert(1)</script> & not benign"',
        )
    )
    out = tmp_path / "pack"
    write_pack(build_pack(load(kb_copy)), out)
    html = (out / "rules.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "A palpable mass &lt;script&gt;alert(1)&lt;/script&gt; &amp; not benign" in html


def test_an_output_that_is_a_file_is_bad_input(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert main(["review", "-o", str(target)]) == 2
    assert "cannot create the output directory" in capsys.readouterr().err
    assert target.read_text() == "not a folder"


def test_a_missing_older_version_is_bad_input_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "pack"
    assert main(["review", "--against", str(tmp_path / "nope"), "-o", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert not out.exists()


def test_the_issues_page_renders_what_the_knowledge_base_records(kb, bundled_pack, tmp_path):
    """The recorded inconsistencies (each quote linked to its sentence in the guideline text), the hazard log with
    its ratings and controls, and every interpretation flag; without them the page says none are recorded."""
    out = bundled_pack
    html = (out / "issues.html").read_text()
    assert kb.inconsistencies and kb.hazards
    for item in kb.inconsistencies:
        assert f'id="inconsistency-{item.id}"' in html and str(escape(item.title)) in html
        assert str(escape(item.board)) in html
    # the headline's "immediate MRI" quote links to its sentence of the guideline text
    assert 'href="guideline.html#s-summary-evaluation"' in html
    for hazard in kb.hazards:
        assert f'id="hazard-{hazard.id}"' in html and f"risk {hazard.residual_risk}" in html
        for control in hazard.controls:
            assert str(escape(control.ref)) in html
    plain = tmp_path / "plain"
    write_pack(build_pack(replace(kb, inconsistencies=(), hazards=())), plain)
    plain_html = (plain / "issues.html").read_text()
    assert "records none yet" in plain_html and "records no hazard log yet" in plain_html
    # every interpretation flag of the rules is listed for the board, linked to its card
    for rule in kb.rules:
        assert (f'href="rules.html#rule-{rule.id.replace(".", "-")}"' in plain_html) == bool(rule.interpretation)


def test_rule_cards_show_how_clinicians_answered_the_cds_cards(tmp_path, capsys):
    """Override rates per rule from the service's own store (no CDS product feeds them back to the authors)."""
    from lumbar_kb.clinic.service.store import Store

    db = tmp_path / "service.sqlite3"
    store = Store(db)
    rules = ["red_flag.leg_weakness", "ed.leg_weakness_or_walking"]
    for n in (1, 2, 3):
        store.record_card(f"card-{n}", "lumbar-mass", f"hook-{n}", rules, "sha", "emergency", "explanation")
    store.record_feedback("lumbar-mass", [{"card": "card-1", "outcome": "accepted"}])
    store.record_feedback(
        "lumbar-mass", [{"card": "card-2", "outcome": "overridden", "reason_display": "already imaged today"}]
    )
    out = tmp_path / "pack"
    assert main(["review", "--feedback", str(db), "-o", str(out)]) == 0
    html = (out / "rules.html").read_text()
    card = html[html.index('id="rule-red_flag-leg_weakness"') :]
    card = card[: card.index("</article>")] if "</article>" in card else card[:6000]
    # three cards, one answered each way, one not answered: the rate is over the answered ones
    assert "Behind 3 CDS cards: accepted 1, overridden 1 (override rate <b>50%</b>)" in card
    assert "already imaged today (1)" in card
    # a rule no card stood behind says so
    other = html[html.index('id="rule-concerning-night_pain"') :]
    assert "No CDS card behind this rule has been shown yet." in other[:6000]
    capsys.readouterr()
    assert main(["review", "--feedback", str(tmp_path / "nope.sqlite3"), "-o", str(tmp_path / "p2")]) == 2
    assert "no such feedback store" in capsys.readouterr().err and not (tmp_path / "p2").exists()
