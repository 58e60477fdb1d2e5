"""`lumbar-kb diff`: textual changes per rule, and the patients decided differently, counted over every input
state. The expected counts are worked out from the guideline's facts by hand (first principles), not taken
from the output: every input fact is unknown or one of its values, `primary_cancer` may be given only when
`cancer_history` is not "no", and no patient breaks a relation of the vocabulary (a confirmed compression is not
"not suspected"; a persisting mass is not absent)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from lumbar_kb.engine.analysis.diff import compare
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.main import main

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

# 12 free yes/no facts (3 states each); the two related pairs (confirmed/suspected compression, mass persists/
# palpable mass): 9 states each less the contradiction; the radiograph (4); and the 15 valid pairs of
# (cancer_history, primary_cancer): yes x 7, no x 1 (no primary may be given), unknown x 7
VALID = 3**12 * (9 - 1) * (9 - 1) * 4 * 15
# the whole-spine MRI's 2-week window is the final one: cancer known (history yes with any of 7 primary answers,
# or history unknown with one of 6 named sites: 13), none of the six red flags, no rapidly progressing deficit and
# no rapid progression (2 of 3 each: no earlier tier), compression not suspected (suspected no or unknown with
# confirmed any, less the contradiction: 5); the mass pair (8), four other yes/no facts and the radiograph free
TWO_WEEK_MRI = 13 * 2**6 * 2 * 2 * 5 * 8 * 3**4 * 4


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """The bundled knowledge base and a copy with two edits: night pain now also asks for a specialist referral,
    and the cancer history's 2-week whole-spine MRI window becomes 1 week."""
    new = tmp_path_factory.mktemp("new") / "kb"
    shutil.copytree(default_kb_dir(), new)
    _edit(
        new / "rules" / "concerning.yaml",
        "    when: {fact: night_pain, is: true}\n    then:\n      - urgency: prompt\n",
        "    when: {fact: night_pain, is: true}\n    then:\n      - urgency: prompt\n"
        "      - action: specialist_referral\n        within_hours: 336\n        window: within 2 weeks\n",
    )
    _edit(
        new / "rules" / "cancer_history.yaml",
        "within_hours: 336\n        window: urgently, within 2 weeks at the latest",
        "within_hours: 168\n        window: urgently, within 1 week at the latest",
    )
    _bump(new)
    return default_kb_dir(), new


def _bump(kb_dir: Path) -> None:
    """A new version label, as a release with new content must carry."""
    _edit(kb_dir / "guideline.yaml", 'version: "2025.11.12-1"', 'version: "2025.11.12-2"')


def test_the_same_knowledge_base_has_no_difference(kb):
    diff = compare(kb, kb)
    assert diff.rules == [] and diff.changes == []
    assert diff.input_states == VALID


def test_a_seeded_edit_is_counted_exactly_and_shown_on_a_patient(seeded):
    old_dir, new_dir = seeded
    diff = compare(load(old_dir), load(new_dir))
    changed = {rc.rule: rc for rc in diff.rules}
    assert set(changed) == {"concerning.night_pain", "cancer.urgent_whole_spine_mri"}
    assert [f[0] for f in changed["concerning.night_pain"].fields] == ["then"]
    by_kind = {(c.kind, c.code): c for c in diff.changes}
    assert set(by_kind) == {("gain", "specialist_referral"), ("window", "mri_whole_spine")}
    gain = by_kind[("gain", "specialist_referral")]
    # night pain yes (1 of 3), and no referral already: imaging has not shown a mass (2 of 3); the rest free
    assert gain.exact and gain.states == VALID // 3 * 2 // 3
    assert gain.patient == {"night_pain": True}
    assert "specialist_referral" not in gain.old["actions"] and "specialist_referral" in gain.new["actions"]
    assert gain.reproduced
    window = by_kind[("window", "mri_whole_spine")]
    assert window.exact and window.states == TWO_WEEK_MRI
    assert window.old["actions"]["mri_whole_spine"] == 336 and window.new["actions"]["mri_whole_spine"] == 168
    assert window.reproduced


def test_an_urgency_change_has_an_example_the_engine_reproduces(tmp_path):
    new = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), new)
    _edit(
        new / "rules" / "concerning.yaml",
        "when: {fact: palpable_mass, is: true}\n    then:\n      - urgency: prompt",
        "when: {fact: palpable_mass, is: true}\n    then:\n      - urgency: emergency",
    )
    diff = compare(load(default_kb_dir()), load(new))
    (urgency,) = [c for c in diff.changes if c.kind == "urgency"]  # only raised, and only from prompt
    assert urgency.code == "prompt->emergency" and urgency.title == "urgency raised: PROMPT -> EMERGENCY"
    assert urgency.patient == {"palpable_mass": True}
    assert (urgency.old["urgency"], urgency.new["urgency"]) == ("prompt", "emergency") and urgency.reproduced
    # a palpable mass (3 of the 8 states of the mass pair) that no alarm already made an emergency
    assert 0 < urgency.states < VALID * 3 // 8


def test_a_lowered_urgency_is_named_as_such(tmp_path):
    new = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), new)
    _edit(
        new / "rules" / "emergency_triggers.yaml",
        "    when: {fact: saddle_anesthesia, is: true}\n    then:\n      - urgency: emergency",
        "    when: {fact: saddle_anesthesia, is: true}\n    then:\n      - urgency: prompt",
    )
    diff = compare(load(default_kb_dir()), load(new))
    (lowered,) = [c for c in diff.changes if c.kind == "urgency"]
    assert lowered.title == "urgency LOWERED: EMERGENCY -> PROMPT"
    # saddle anaesthesia yes (1 of 3), and none of the nine other answers that give an emergency on their own
    # (five red flags, rapidly progressing deficits, rapid progression, suspected and confirmed compression)
    # is yes (2 of 3 each; for the related compression pair: no or unknown for both, 4 of its 8 states); the
    # cancer pair (15), the mass pair (8), four other yes/no facts and the radiograph free
    assert lowered.patient == {"saddle_anesthesia": True} and lowered.reproduced
    assert lowered.states == 2**5 * 2 * 2 * 4 * 15 * 8 * 3**4 * 4


def test_cli_json_is_deterministic_and_text_names_the_counts(seeded, capsys):
    old_dir, new_dir = seeded
    assert main(["diff", str(old_dir), str(new_dir), "--format", "json"]) == 0
    first = capsys.readouterr().out
    assert main(["diff", str(old_dir), str(new_dir), "--format", "json"]) == 0
    assert capsys.readouterr().out == first
    data = json.loads(first)
    assert data["input_states"] == VALID and len(data["behaviour"]) == 2
    assert main(["diff", str(old_dir), str(new_dir)]) == 0
    text = capsys.readouterr().out
    assert f"{TWO_WEEK_MRI:,} answer combinations; e.g." in text
    # the window brought forward is said so, with both windows in the rule's words and hours
    assert "MRI of the whole spine for patients with " in text
    assert (
        "urgently, within 2 weeks at the latest (336 h) -> urgently, within 1 week at the latest (168 h), earlier"
        in text
    )
    assert "e.g. {night_pain: yes}" in text


def test_a_missing_knowledge_base_is_bad_input(tmp_path, capsys):
    assert main(["diff", str(tmp_path / "nope"), str(default_kb_dir())]) == 2
    assert "not found" in capsys.readouterr().err


def test_both_counting_methods_agree_with_the_hand_count(seeded):
    """The quick solver tree and the expansion are both exact: each gives the first-principles numbers."""
    import z3

    from lumbar_kb.engine.analysis.diff import _Pair

    old_dir, new_dir = seeded
    pair = _Pair(load(old_dir), load(new_dir))
    window = pair.window("mri_whole_spine")
    gain = z3.And(z3.Not(pair.has(pair.so, "specialist_referral")), pair.has(pair.sn, "specialist_referral"))
    for method in (pair.count_by_expansion, lambda claim: pair.count_by_solver(claim, 100_000)):
        assert method(z3.BoolVal(True)) == (VALID, True)
        assert method(gain) == (VALID // 3 * 2 // 3, True)
    # the window's claim reads eleven facts: the solver's tree needs more than this budget, the expansion does not
    assert pair.count_by_expansion(window) == (TWO_WEEK_MRI, True)
    # a budget too small for either is reported as a lower bound, never as an exact count
    count, exact = pair.count_by_solver(window, 10)
    assert not exact and count < TWO_WEEK_MRI


def _retime(kb_dir: Path) -> None:
    """The issue's edit: the progressive-deficit MRI window from 24-48 h to 48-72 h."""
    path = kb_dir / "rules" / "imaging.yaml"
    text = path.read_text()
    start = text.index("  - id: imaging.mri_window.progressive\n")
    end = text.index("\n  - id: ", start + 1)
    block = text[start:end]
    new = block.replace("within_hours: 48", "within_hours: 72").replace("within_hours_min: 24", "within_hours_min: 48")
    new = new.replace("window: within 24-48 hours", "window: within 48-72 hours")
    path.write_text(text[:start] + new + text[end:])


def test_the_diff_speaks_clinically_a_later_window_a_broken_bound_and_voided_approvals(tmp_path, capsys):
    """The issue's "done when": whole-spine MRI for rapidly progressive deficits, 24-48 h -> 48-72 h, later;
    breaks the 48 h emergency bound; voids two approvals (a quorum of two had approved the rule)."""
    from .board import make_board

    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(default_kb_dir(), old)
    keys = make_board(old)
    for name in ("Dr A", "Dr B"):
        args = ["approve", "imaging.mri_window.progressive", "--key", str(keys[name]), "--kb", str(old)]
        assert main(args) == 0
    shutil.copytree(old, new)
    _retime(new)
    _bump(new)
    capsys.readouterr()
    assert main(["diff", str(old), str(new)]) == 0
    text = capsys.readouterr().out
    assert (
        "MRI of the whole spine for patients with progressive neurological deficits developing rapidly: "
        "24-48 hours (48 h) -> 48-72 hours (72 h), LATER: a delay; breaks the proof emergency_windows"
    ) in text
    assert "imaging.mri_window.progressive  (voids 2 approvals: Dr A (" in text
    assert "Safety proofs that held and now fail:\n  emergency_windows: " in text and "within 48 hours" in text
    assert "Approvals voided: 2" in text


def test_a_fact_edit_is_an_item_change_and_its_lowered_urgency_is_named(tmp_path, capsys):
    """The issue's edit that passed unseen: leg_weakness no longer an alarm question, reworded."""
    new = tmp_path / "new"
    shutil.copytree(default_kb_dir(), new)
    _edit(
        new / "facts.yaml",
        "  leg_weakness:\n    type: bool\n    alarm: true\n",
        "  leg_weakness:\n    type: bool\n    alarm: false\n",
    )
    _edit(
        new / "facts.yaml",
        "question: Is there decreased strength in the legs?",
        "question: Complete paralysis of both legs?",
    )
    diff = compare(load(default_kb_dir()), load(new), proofs=False)
    (item,) = diff.items
    assert item.item == "fact:leg_weakness"
    assert {f[0] for f in item.fields} == {"question", "alarm"}
    lowered = [c for c in diff.changes if c.kind == "urgency"]
    assert lowered and all(c.direction == "LOWERED" for c in lowered)
    # the completeness floor no longer holds for an unanswered leg weakness: PROMPT -> ROUTINE
    assert any(
        c.before == "PROMPT"
        and c.after == "ROUTINE"
        and re.search(r"decreased strength in the legs( and [^,]+)? unanswered$", c.who)
        for c in lowered
    )
    # the same version label over changed content is a finding: exit 1
    assert main(["diff", str(default_kb_dir()), str(new)]) == 1
    assert "FINDING: both versions carry the version label 2025.11.12-1" in capsys.readouterr().out
