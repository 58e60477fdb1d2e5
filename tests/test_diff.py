"""`lumbar-kb diff`: textual changes per rule, and the patients decided differently, counted over every input
state. The expected counts are worked out from the guideline's facts by hand (first principles), not taken
from the output: every input fact is unknown or one of its values, and `primary_cancer` may be given only
when `cancer_history` is not "no"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lumbar_kb.engine.analysis.diff import compare
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.main import main

# 16 yes/no facts besides cancer_history (3 states each), the radiograph (4), and the 15 valid pairs of
# (cancer_history, primary_cancer): yes x 7, no x 1 (no primary may be given), unknown x 7
VALID = 3**16 * 4 * 15


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """The bundled knowledge base and a copy with two edits: night pain now also asks for a lumbar MRI, and the
    2-week whole-spine MRI window becomes 1 week."""
    new = tmp_path_factory.mktemp("new") / "kb"
    shutil.copytree(default_kb_dir(), new)
    _edit(
        new / "rules" / "concerning.yaml",
        "    when: {fact: night_pain, is: true}\n    then:\n      - urgency: prompt\n",
        "    when: {fact: night_pain, is: true}\n    then:\n      - urgency: prompt\n      - action: mri_lumbar\n",
    )
    _edit(
        new / "rules" / "imaging.yaml",
        "within_hours: 336\n        window: within 2 weeks",
        "within_hours: 168\n        window: within 1 week",
    )
    return default_kb_dir(), new


def test_the_same_knowledge_base_has_no_difference(kb):
    diff = compare(kb, kb)
    assert diff.rules == [] and diff.changes == []
    assert diff.input_states == VALID


def test_a_seeded_edit_is_counted_exactly_and_shown_on_a_patient(seeded):
    old_dir, new_dir = seeded
    diff = compare(load(old_dir), load(new_dir))
    changed = {rc.rule: rc for rc in diff.rules}
    assert set(changed) == {"concerning.night_pain", "imaging.mri_window.local_pain_only"}
    assert [f[0] for f in changed["concerning.night_pain"].fields] == ["then"]
    by_kind = {(c.kind, c.code): c for c in diff.changes}
    assert set(by_kind) == {("gain", "mri_lumbar"), ("window", "mri_whole_spine")}
    gain = by_kind[("gain", "mri_lumbar")]
    # night pain yes (1 of 3), and lumbar MRI not already asked for: radiograph not abnormal (3 of 4) and the mass
    # not known to persist (2 of 3)
    assert gain.exact and gain.states == VALID // 3 * 3 // 4 * 2 // 3
    assert gain.patient == {"night_pain": True}
    assert "mri_lumbar" not in gain.old["actions"] and "mri_lumbar" in gain.new["actions"] and gain.reproduced
    window = by_kind[("window", "mri_whole_spine")]
    # cancer known (history yes with any of 7 primary answers, or history unknown with one of 6 named sites) and
    # all seven neurological questions no; no earlier window: compression not suspected and no rapid
    # progression (2 of 3 each); the other 7 yes/no facts and the radiograph free
    assert window.exact and window.states == 13 * 2 * 2 * 3**7 * 4
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
    # a palpable mass (1 of 3 states) that no alarm already made an emergency
    assert 0 < urgency.states < VALID // 3


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
    # is yes (2 of 3 each); everything else free
    assert lowered.patient == {"saddle_anesthesia": True} and lowered.reproduced
    assert lowered.states == VALID // 3 * 2**9 // 3**9


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
    assert "454,896 input states get a different window for: MRI of the whole spine" in text
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
    for method in (pair.count_by_expansion, lambda claim: pair.count_by_solver(claim, 100_000)):
        assert method(z3.BoolVal(True)) == (VALID, True)
        assert method(window) == (13 * 2 * 2 * 3**7 * 4, True)
    # a budget too small for either is reported as a lower bound, never as an exact count
    count, exact = pair.count_by_solver(window, 10)
    assert not exact and count < 13 * 2 * 2 * 3**7 * 4
