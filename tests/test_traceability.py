"""The sentence <-> rule mapping (guideline_text.yaml) and the three traceability checks of `lumbar-kb check`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lumbar_kb.engine.analysis.checks import run_checks
from lumbar_kb.engine.errors import KnowledgeBaseError
from lumbar_kb.engine.guideline_text import load_text
from lumbar_kb.engine.loader import load
from lumbar_kb.main import main


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _findings(kb_dir: Path, check_id: str) -> list:
    report = run_checks(load(kb_dir))
    (check,) = [c for c in report.checks if c.id == check_id]
    return check.findings


def test_bundled_text_traces_every_rule_and_accounts_for_every_sentence(kb):
    text = load_text(kb)
    assert text is not None
    named = {rid for s in text.sentences for rid in s.rules}
    assert named == {r.id for r in kb.rules}
    assert all(s.rules or s.not_encoded for s in text.sentences)
    # the guideline's own red flags are five sentences, each naming the rule of that red flag
    red = {
        s.id: s for s in text.sentences if s.group == "assessment" and s.id.startswith("red_flags.") and not s.heading
    }
    assert {rid for s in red.values() for rid in s.rules if rid.startswith("red_flag.")} == {
        r.id for r in kb.rules if r.section == "red_flags" and r.id.startswith("red_flag.")
    }
    encoded, total = text.coverage()
    assert 0 < encoded < total  # the disclaimer and the specialist's considerations are not encoded


def test_a_rule_no_sentence_names_is_a_problem(kb_copy):
    _edit(
        kb_copy / "guideline_text.yaml",
        "concerning.severe_back_pain, concerning.night_pain,",
        "concerning.severe_back_pain,",
    )
    _edit(
        kb_copy / "guideline_text.yaml",
        "rules: [concerning.night_pain]",
        "not_encoded: seeded defect",
    )
    found = _findings(kb_copy, "rules_traced")
    assert [f.subject for f in found] == ["rule concerning.night_pain"]
    assert found[0].file.endswith("concerning.yaml") and found[0].line


def test_a_sentence_with_neither_rules_nor_reason_is_a_problem(kb_copy):
    _edit(
        kb_copy / "guideline_text.yaml",
        "        not_encoded: A legal notice of the publisher, not a clinical decision.\n",
        "",
    )
    found = _findings(kb_copy, "sentences_accounted")
    assert [f.subject for f in found] == ["sentence disclaimer.liability"]
    assert found[0].line is not None


def test_an_unknown_rule_id_is_a_problem_with_a_suggestion(kb_copy, capsys):
    _edit(kb_copy / "guideline_text.yaml", "rules: [concerning.night_pain]", "rules: [concerning.nigth_pain]")
    assert main(["check", "--kb", str(kb_copy)]) == 1
    out = capsys.readouterr().out
    assert "names rule 'concerning.nigth_pain', which does not exist (did you mean 'concerning.night_pain'?)" in out
    assert "guideline_text.yaml:" in out


def test_both_rules_and_a_reason_is_bad_input(kb_copy, capsys):
    _edit(
        kb_copy / "guideline_text.yaml",
        "rules: [concerning.night_pain]",
        "rules: [concerning.night_pain]\n        not_encoded: contradicts itself",
    )
    with pytest.raises(KnowledgeBaseError, match="both rules and not_encoded"):
        load_text(load(kb_copy))
    assert main(["check", "--kb", str(kb_copy)]) == 2
    assert "guideline_text.yaml:" in capsys.readouterr().err


def test_a_duplicate_sentence_id_is_bad_input(kb_copy):
    _edit(kb_copy / "guideline_text.yaml", "- id: concerning.night_pain", "- id: concerning.radiating_pain")
    with pytest.raises(KnowledgeBaseError, match="duplicate id"):
        load_text(load(kb_copy))


def test_without_a_text_the_checks_are_skipped_not_passed(kb_copy):
    (kb_copy / "guideline_text.yaml").unlink()
    report = run_checks(load(kb_copy))
    statuses = {
        c.id: c.status for c in report.checks if c.id in ("rules_traced", "sentences_accounted", "trace_ids_known")
    }
    assert statuses == dict.fromkeys(("rules_traced", "sentences_accounted", "trace_ids_known"), "skipped")


def _without_references(text: str) -> str:
    """The guideline's words without its reference numbers (" 1", " 1, 2" before a full stop, a colon or the end
    of a line), its bullets and its line breaks."""
    lines = [
        re.sub(r"\s+[0-9](,\s*[0-9])*(?=[.:](\s|$)|$)", "", line.strip().lstrip("•").strip())
        for line in text.splitlines()
    ]
    return " ".join(" ".join(lines).split())


def test_every_sentence_of_the_guideline_text_is_the_published_guideline_word_for_word(kb):
    """guideline_text.yaml's sentences are the guideline as published (the bundled guideline-source.txt, which
    inconsistencies.yaml quotes too), not a paraphrase: the board reads the rules beside the real text."""
    source = _without_references((Path(kb.root) / "guideline-source.txt").read_text())
    text = load_text(kb)
    assert text is not None and len(text.sentences) > 50
    for sentence in text.sentences:
        # a sentence may end in a full stop where the guideline's line ends in a colon before its list
        assert _without_references(sentence.text).rstrip(".:") in source, sentence.id
    # seeded: a paraphrase is caught
    assert _without_references("MRI of the whole spine is the gold standard and should be done urgently.") not in source


def test_every_sentence_has_a_status_and_a_departure_must_say_why(kb, kb_copy):
    text = load_text(kb)
    by_id = {s.id: s for s in text.sentences}
    interpreted = {r.id for r in kb.rules if r.interpretation}
    for s in text.sentences:
        if s.not_encoded:
            assert s.status == "not_encoded"
        elif s.status != "departs":  # derived: interpreted exactly when a rule encoding it carries an interpretation
            assert s.status == ("interpreted" if set(s.rules) & interpreted else "faithful"), s.id
    # the headline's "immediate medical evaluation with MRI" is encoded as the prompt pathway: a departure
    assert by_id["summary.evaluation"].status == "departs" and by_id["summary.evaluation"].departs
    path = kb_copy / "guideline_text.yaml"
    original = path.read_text()
    start = original.index("        departs: >-")
    end = original.index("\n  - id: assessment", start)
    path.write_text(original[:start] + original[end:])  # the departure without its reason
    with pytest.raises(KnowledgeBaseError, match="status departs needs `departs:`"):
        load_text(load(kb_copy))
