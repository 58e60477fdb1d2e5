"""Clinical safety invariants as properties over arbitrary patients (hypothesis), on the durable engine.

* any neurological symptom gives `emergency`;
* setting any unknown or false yes/no fact to true never lowers urgency, and never delays or removes a
  whole-spine MRI (a window growing, or a number becoming "no fixed window", is a delay);
* a missing answer is unknown, never false: leaving a fact out never fires a rule that needs it to be false.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumbar_kb.engine.analysis.escalation import decide as build
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.logic import evaluate

KB = load()
BOOL_FACTS = [f.name for f in KB.input_facts if f.type == "bool"]
NEURO = [
    "leg_weakness",
    "gait_difficulty",
    "radiating_numbness",
    "unable_to_walk",
    "bowel_bladder_dysfunction",
    "saddle_anesthesia",
    "progressive_neuro_deficit",
]
SETTINGS = settings(
    max_examples=60 if os.environ.get("LUMBAR_KB_QUICK") else 400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@st.composite
def patients(draw):
    facts = {}
    for fact in KB.input_facts:
        value = draw(st.one_of(st.none(), st.sampled_from(fact.values)))
        if value is not None:
            facts[fact.name] = value
    for fact in KB.input_facts:  # respect the vocabulary's own consistency constraints
        if fact.only_if is not None and fact.name in facts and evaluate(fact.only_if, facts) is False:
            del facts[fact.name]
    return facts


def run(evaluator, facts):
    return build(KB, evaluator.engine.run(facts))


def rank(result):
    return KB.urgency_rank(result.urgency)


def mri_window(result):
    """(present, hours): hours None means no fixed window, which counts as later than any number."""
    for action in result.actions:
        if action.code == "mri_whole_spine":
            return True, action.within_hours
    return False, None


def later(a, b):
    """Is window `b` later than window `a`? None is later than every number."""
    if a is None:
        return False
    return b is None or b > a


def test_the_neurological_symptoms_are_the_vocabularys_first_seven():
    assert [f.name for f in KB.input_facts][:7] == NEURO


@SETTINGS
@given(patients(), st.sampled_from(NEURO))
def test_any_neurological_symptom_is_an_emergency(evaluator, facts, symptom):
    facts = {**facts, symptom: True}
    result = run(evaluator, facts)
    assert result.urgency == "emergency"
    assert mri_window(result)[0], "a neurological symptom always brings a whole-spine MRI"


@SETTINGS
@given(patients(), st.sampled_from(BOOL_FACTS))
def test_adding_a_symptom_never_lowers_urgency_or_delays_the_whole_spine_mri(evaluator, facts, fact):
    if facts.get(fact) is True:
        return
    before = run(evaluator, facts)
    after_facts = {**facts, fact: True}
    if any(
        f.only_if is not None and f.name in after_facts and evaluate(f.only_if, after_facts) is False
        for f in KB.input_facts
    ):
        return  # not a valid patient
    after = run(evaluator, after_facts)
    assert rank(after) >= rank(before), (facts, fact)
    had, hours_before = mri_window(before)
    has, hours_after = mri_window(after)
    if had:
        assert has, f"setting {fact} removed the whole-spine MRI"
        assert not later(hours_before, hours_after), f"setting {fact} delayed the MRI {hours_before}->{hours_after}"


@SETTINGS
@given(patients())
def test_a_missing_answer_never_fires_a_rule_that_needs_a_no(evaluator, facts):
    trace = evaluator.engine.run(facts)
    for firing in trace.firings:
        for name, value in firing.matched.items():
            assert name in trace.facts(), f"{firing.rule} fired on {name}, which is unknown"
            assert trace.facts()[name] == value


@SETTINGS
@given(patients(), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_the_order_facts_are_given(evaluator, facts, rnd):
    items = list(facts.items())
    rnd.shuffle(items)
    assert run(evaluator, dict(items)).to_dict() == run(evaluator, facts).to_dict()


@pytest.mark.parametrize("symptom", NEURO)
def test_each_neurological_symptom_alone_is_an_emergency(evaluator, symptom):
    assert run(evaluator, {symptom: True}).urgency == "emergency"


@SETTINGS
@given(patients())
def test_an_emergency_never_waits_two_weeks_for_imaging(evaluator, facts):
    """Only a diagnosed cord compression (imaging already done, treatment within 24 h) may be an emergency
    whose whole-spine MRI keeps the 2-week window of local back pain."""
    result = run(evaluator, facts)
    present, hours = mri_window(result)
    if result.urgency == "emergency" and present and hours is not None and hours > 48:
        assert facts.get("cord_compression_confirmed") is True, facts
