"""Contradictory answers are refused, and `check` never reasons about a patient who could not exist.

The relations come from the guideline's own words: a cord compression that has been diagnosed was suspected
("Treatment should begin within 24 hours of diagnosing spinal cord compression" follows "suspicion of spinal cord
or cauda equina compression"), and "the mass persists" is said of a mass that is there.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lumbar_kb.engine.analysis.checks import run_checks
from lumbar_kb.engine.errors import PatientError
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.logic import breaks
from lumbar_kb.engine.patient import random_patient
from lumbar_kb.main import main

CONTRADICTIONS = [
    ({"cord_compression_confirmed": True, "suspected_cord_compression": False}, "cord_compression_confirmed"),
    ({"palpable_mass": False, "mass_persists": True}, "mass_persists"),
]


def write(tmp_path: Path, name: str, facts: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text("".join(f"{k}: {str(v).lower()}\n" for k, v in facts.items()))
    return path


@pytest.mark.parametrize(("facts", "_"), CONTRADICTIONS)
def test_contradictory_answers_are_refused_naming_both(tmp_path, capsys, facts, _):
    path = write(tmp_path, "p", facts)
    assert main(["evaluate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()  # one paragraph: one line naming both answers and where
    assert line.startswith(f"error: {path}:2:") and "contradictory answers" in line
    for name, value in facts.items():
        assert f"{name}: {str(value).lower()}" in line


@pytest.mark.parametrize(
    "facts",
    [
        {"cord_compression_confirmed": True},  # the suspicion unanswered: unknown never contradicts
        {"cord_compression_confirmed": True, "suspected_cord_compression": True},
        {"cord_compression_confirmed": False, "suspected_cord_compression": False},
        {"mass_persists": True, "palpable_mass": True},
        {"mass_persists": False, "palpable_mass": False},
        {"mass_persists": True},
    ],
)
def test_consistent_answers_are_evaluated(evaluator, facts):
    assert evaluator.evaluate(facts).inputs == facts


def test_an_excludes_relation_is_refused_too(kb_copy):
    facts_file = kb_copy / "facts.yaml"
    facts_file.write_text(
        facts_file.read_text()
        + "  - id: seeded_excludes\n    when: {fact: saddle_anesthesia, is: true}\n"
        + "    excludes: {fact: leg_weakness, is: true}\n    because: seeded for a test.\n"
    )
    kb = load(kb_copy)
    from lumbar_kb.engine.api import Evaluator

    ev = Evaluator(kb)
    with pytest.raises(PatientError, match="saddle_anesthesia: true.*leg_weakness: true|leg_weakness: true.*saddle"):
        ev.evaluate({"saddle_anesthesia": True, "leg_weakness": True})
    assert ev.evaluate({"saddle_anesthesia": True, "leg_weakness": False}).urgency == "emergency"


def test_check_never_reasons_about_a_contradictory_patient(kb_copy):
    """A rule that only a contradictory patient could fire is unreachable while the relation stands, and
    reachable once it is removed: the solver keeps the vocabulary's relations."""
    rules = kb_copy / "rules" / "concerning.yaml"
    rules.write_text(
        rules.read_text()
        + "\n  - id: seeded.only_for_contradictions\n    title: seeded for a test\n"
        + "    when: {all: [{fact: cord_compression_confirmed, is: true},\n"
        + "                 {fact: suspected_cord_compression, is: false}]}\n"
        + "    then:\n      - warning: imaging_alone_insufficient\n    cites: [1]\n    rationale: seeded defect.\n"
    )
    unreachable = [
        f.subject for c in run_checks(load(kb_copy)).checks if c.id == "unreachable_rules" for f in c.findings
    ]
    assert "rule seeded.only_for_contradictions" in unreachable
    facts_file = kb_copy / "facts.yaml"
    text = facts_file.read_text()
    facts_file.write_text(text[: text.index("relations:")] + "relations: []\n")
    (kb_copy / "hazards.yaml").unlink()  # its controls name the relations just removed
    unreachable = [
        f.subject for c in run_checks(load(kb_copy)).checks if c.id == "unreachable_rules" for f in c.findings
    ]
    assert "rule seeded.only_for_contradictions" not in unreachable


def test_could_escalate_never_proposes_a_contradictory_answer(evaluator):
    """With the suspicion answered no, "compression diagnosed: yes" cannot be given, so it is never proposed."""
    proposed = {e.fact for e in evaluator.evaluate({"suspected_cord_compression": False}).could_escalate}
    assert "cord_compression_confirmed" not in proposed
    # and with the suspicion unknown it is (it brings treatment within 24 hours): the exclusion is the relation's
    proposed = {e.fact for e in evaluator.evaluate({}).could_escalate}
    assert "cord_compression_confirmed" in proposed


def test_random_patients_keep_every_relation(kb):
    rng = random.Random(20261201)
    patients = [random_patient(kb, rng) for _ in range(3000)]
    assert all(not breaks(r, p) for p in patients for r in kb.relations)
    # the generator did meet the relations' premises, so the property was exercised
    assert sum(p.get("cord_compression_confirmed") is True for p in patients) > 100
    assert sum(p.get("mass_persists") is True for p in patients) > 100


def _normal(text: str) -> str:
    return " ".join(text.split())


def test_inconsistencies_quote_the_guideline_verbatim(kb):
    source = _normal((Path(kb.root) / "guideline-source.txt").read_text())
    assert len(kb.inconsistencies) >= 2
    for item in kb.inconsistencies:
        for sentence in item.sentences:
            assert _normal(sentence) in source, (item.id, sentence)
        assert set(item.rules) <= {r.id for r in kb.rules}


def test_check_lists_each_inconsistency_as_a_note(kb):
    report = run_checks(kb)
    (check,) = [c for c in report.checks if c.id == "guideline_inconsistencies"]
    assert [f.subject for f in check.findings] == [f"inconsistency {i.id}" for i in kb.inconsistencies]
    assert all(f.severity == "note" and f.line for f in check.findings)


def test_the_clinician_sees_the_inconsistency_a_fired_rule_carries(tmp_path, capsys, kb):
    path = write(
        tmp_path,
        "p",
        {"palpable_mass": True, **dict.fromkeys([f.name for f in kb.input_facts if f.neurological], False)},
    )
    assert main(["evaluate", str(path)]) == 0
    out = capsys.readouterr().out
    carried = [i for i in kb.inconsistencies if "imaging.xray_first" in i.rules]
    assert carried and "disagrees with itself" in out
    assert _normal(carried[0].title) in _normal(out)
    assert main(["evaluate", str(path), "--audience", "patient"]) == 0
    assert "disagrees with itself" not in capsys.readouterr().out  # the board's question, not the patient's
