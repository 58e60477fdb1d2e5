"""The clinical algorithm is equivalent to the engine: proved over every input state (z3), checked on the
bundled scenarios and on random patients by the real engine, and read in a clinician's order."""

from __future__ import annotations

import random

import pytest

from lumbar_kb.engine.analysis.algorithm import Leaf, Node, build_algorithm, follow, paths, prove
from lumbar_kb.engine.model import hours_text
from lumbar_kb.engine.patient import random_patient
from lumbar_kb.engine.scenarios import load_scenarios


@pytest.fixture(scope="module")
def decisions(kb):
    return {d.id: d for d in build_algorithm(kb)}


def test_every_decision_is_proved_equivalent(kb, decisions):
    assert set(decisions) == {"urgency"} | {f"action:{c}" for c in kb.catalog["action"]}
    for d in decisions.values():
        assert prove(kb, d) == [], d.id


def test_the_proof_catches_a_wrong_leaf_and_a_missing_answer(kb, decisions):
    d = build_algorithm(kb)[0]  # a private copy of the urgency diagram, to damage
    (taken, leaf) = next((t, lf) for t, lf in paths(d) if lf.outcome == "emergency")
    leaf.outcome = "prompt"
    assert any("another decision" in f for f in prove(kb, d))
    leaf.outcome = "emergency"
    assert prove(kb, d) == []
    leaf.certain.append(("Specialist referral before any biopsy", "no fixed window"))  # promised, not given
    leaf.windows["Specialist referral before any biopsy"] = ("no fixed window",)
    assert any("not every patient" in f for f in prove(kb, d))
    leaf.certain.pop()
    del leaf.windows["Specialist referral before any biopsy"]
    # a leaf that claims fewer windows than its patients can get
    wide = next(lf for _, lf in paths(d) if any(len(w) > 1 for w in lf.windows.values()))
    label = next(k for k, w in wide.windows.items() if len(w) > 1)
    wide.windows[label] = wide.windows[label][:1]
    assert any("not every patient" in f for f in prove(kb, d))
    root = d.root
    assert isinstance(root, Node)
    root.branches.pop()  # forget one answer to the first question
    assert any("do not cover" in f for f in prove(kb, d))


def _expected(kb, result, decision_id: str, leaf: Leaf) -> str:
    if decision_id == "urgency":
        return result.urgency
    code = decision_id.split(":", 1)[1]
    item = next((a for a in result.actions if a.code == code), None)
    if item is None:
        return "not recommended"
    return item.window or hours_text(item.within_hours)


def _agree(kb, evaluator, decisions, patient: dict) -> None:
    result = evaluator.evaluate(patient)
    for d in decisions.values():
        leaf = follow(d, patient)
        assert leaf.outcome == _expected(kb, result, d.id, leaf), (d.id, patient)
        for label, window in leaf.certain:  # the actions an urgency leaf promises are in the engine's result
            shown = {a.label: a.window or hours_text(a.within_hours) for a in result.actions}
            assert label in shown and shown[label] in leaf.windows[label], (label, window, patient)


def test_the_engine_agrees_on_every_scenario(kb, evaluator, decisions):
    for scenario in load_scenarios(kb):
        _agree(kb, evaluator, decisions, scenario.patient)


def test_the_engine_agrees_on_random_patients(kb, evaluator, decisions):
    rng = random.Random(12)
    for _ in range(300):
        _agree(kb, evaluator, decisions, random_patient(kb, rng))


def test_questions_come_in_a_clinicians_order_alarm_first(kb, decisions):
    urgency = decisions["urgency"]
    assert isinstance(urgency.root, Node) and kb.facts[urgency.root.fact].alarm
    for d in decisions.values():
        for taken, _leaf in paths(d):
            alarms = [kb.facts[f].alarm for f, _ in taken]
            assert alarms == sorted(alarms, reverse=True), (d.id, taken)  # no alarm question after another
            orders = [(not kb.facts[f].alarm, kb.facts[f].order) for f, _ in taken]
            assert orders == sorted(orders)


def test_a_yes_to_any_neurological_question_is_an_emergency_leaf_at_once(kb, decisions):
    """The guideline's red flags: each is asked, and a yes ends the triage at the emergency level."""
    node = decisions["urgency"].root
    seen = []
    while isinstance(node, Node) and kb.facts[node.fact].neurological:
        seen.append(node.fact)
        yes = next(b for b in node.branches if True in b.answers)
        assert isinstance(yes.to, Leaf) and yes.to.outcome == "emergency"
        node = next(b.to for b in node.branches if None in b.answers)
    assert seen == [f.name for f in kb.input_facts if f.neurological][: len(seen)] and len(seen) >= 5
