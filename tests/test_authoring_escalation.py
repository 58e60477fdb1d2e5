"""could_escalate in every Result: vignettes, its place in the JSON and the report, and a property test
that each entry is real and no unlisted unanswered question escalates."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumbar_kb.engine.analysis.escalation import could_escalate
from lumbar_kb.engine.api import Evaluator, reference_result
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.logic import asked, breaks, evaluate
from lumbar_kb.engine.patient import random_patient
from lumbar_kb.engine.result_text import render
from lumbar_kb.main import main

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py


@pytest.fixture(scope="module")
def evaluator():
    return Evaluator.open()


def entries(result) -> dict:
    return {e.fact: e for e in result.could_escalate}


def test_nothing_answered_lists_the_alarm_questions_most_urgent_first(evaluator):
    result = evaluator.evaluate({})
    order = [e.fact for e in result.could_escalate]
    # every question that alone gives EMERGENCY comes before imaging-only ones; among the emergencies, the earliest
    # step first: the emergency department now (the "immediate care" list, suspected and diagnosed compression),
    # radiating numbness among them: its MRI within 12 hours is reached through the emergency department, which
    # therefore cannot wait the red flags' 12-24 hours (issue 23); ties keep the vocabulary's order
    assert order[:10] == [
        "leg_weakness",
        "gait_difficulty",
        "radiating_numbness",
        "unable_to_walk",
        "bowel_bladder_dysfunction",
        "saddle_anesthesia",
        "progressive_neuro_deficit",
        "rapid_progression",
        "suspected_cord_compression",
        "cord_compression_confirmed",
    ]
    assert set(order[:10]) == {f.name for f in evaluator.kb.input_facts if f.alarm}
    assert all(e.would_raise_urgency_to == "emergency" for e in result.could_escalate[:10])
    # nothing answered is already at least PROMPT (incomplete), so a concerning symptom raises nothing: only the
    # questions that bring imaging follow (a cancer history: whole-spine MRI; radiographs, a persisting mass: lumbar)
    assert order[10:] == ["cancer_history", "primary_cancer", "radiograph", "mass_persists"]
    compression = entries(result)["suspected_cord_compression"]
    assert (
        compression.answer is True and compression.question == "Is spinal cord or cauda equina compression suspected?"
    )
    ed, mri = compression.would_bring_forward
    assert (ed.action, ed.within_hours) == ("emergency_department", 0)
    assert (mri.action, mri.within_hours, mri.was_required) == ("mri_whole_spine", 12, False)


def test_emergency_patient_keeps_only_the_questions_that_bring_imaging_forward(evaluator):
    result = evaluator.evaluate({"leg_weakness": True})
    assert result.urgency == "emergency"
    listed = entries(result)
    # leg weakness already means the emergency department now and whole-spine MRI within 12 hours (a sign of
    # compression): only a diagnosed compression adds a step (treatment within 24 h, a time-critical step). The
    # radiographs and a persisting mass would only add a lumbar MRI the whole-spine MRI covers: not asked.
    assert set(listed) == {"cord_compression_confirmed"}
    assert all(e.would_raise_urgency_to is None for e in listed.values())
    [treatment] = listed["cord_compression_confirmed"].would_bring_forward
    assert (treatment.action, treatment.within_hours, treatment.was_required) == ("start_treatment", 24, False)
    for moot in ("gait_difficulty", "suspected_cord_compression", "cancer_history", "radiograph", "mass_persists"):
        assert moot not in listed


def test_an_enum_answer_names_the_value_that_escalates(evaluator):
    result = evaluator.evaluate({"palpable_mass": True})
    assert entries(result)["radiograph"].answer == "abnormal"
    assert entries(result)["primary_cancer"].answer in evaluator.kb.facts["primary_cancer"].values


def test_an_enum_whose_every_answer_escalates_alike_reads_if_answered(evaluator):
    result = evaluator.evaluate({"palpable_mass": True})
    primary = entries(result)["primary_cancer"]
    assert set(primary.answers) == set(evaluator.kb.facts["primary_cancer"].values)
    assert "if answered: MRI of the whole spine urgently, within 2 weeks at the latest" in render(result, evaluator.kb)
    radiograph = entries(result)["radiograph"]
    assert radiograph.answers == ("abnormal",)


def test_only_if_is_respected(evaluator):
    result = evaluator.evaluate({"cancer_history": False})
    assert "primary_cancer" not in entries(result)  # it may not be given once the history is answered no


def test_json_puts_could_escalate_right_after_unanswered(evaluator):
    data = evaluator.evaluate({"night_pain": True}).to_dict()
    keys = list(data)
    assert keys[keys.index("unanswered") + 1] == "could_escalate"
    first = next(e for e in data["could_escalate"] if e["fact"] == "suspected_cord_compression")
    assert set(first) == {"fact", "question", "answer", "answers", "would_raise_urgency_to", "would_bring_forward"}
    assert first["would_bring_forward"][0]["action"] == "emergency_department"
    assert first["would_bring_forward"][1] == {
        "action": "mri_whole_spine",
        "within_hours": 12,
        "window": "within 12 hours",
        "was_required": False,
        "was_within_hours": None,
        "was_window": None,
    }
    json.dumps(data)


def test_report_shows_it_right_after_urgency(evaluator, tmp_path, capsys):
    result = evaluator.evaluate({"leg_weakness": True})
    lines = render(result, evaluator.kb).splitlines()
    assert lines[0].startswith("EMERGENCY")
    assert lines[1].startswith("Incomplete: alarm questions whose answer could still change what to do are unanswered")
    ask = next(i for i, line in enumerate(lines) if line.startswith("Ask now:"))
    assert lines[ask - 1] == "" and ask < lines.index("Actions:")
    assert lines[ask].startswith("Ask now: these answers would raise the urgency or bring a step forward")
    assert lines[ask + 1] == "  ? Has spinal cord compression been diagnosed?"
    assert lines[ask + 2].startswith("      if yes: Start treatment for spinal cord compression within 24 hours")
    text = "\n".join(lines)
    assert "Other unanswered questions (no single answer changes the urgency or a time-critical step now):" in text
    patient_file = tmp_path / "p.yaml"
    patient_file.write_text("night_pain: true\n")
    assert main(["evaluate", "--audience", "patient", str(patient_file)]) == 0
    out = capsys.readouterr().out
    assert "Please answer now, it could change what to do:" in out
    assert (
        "if yes: This is an emergency; go to an emergency department immediately; an MRI scan of your whole spine"
        in " ".join(out.split())
    )
    assert "PROMPT" not in out and "EMERGENCY" not in out and "ROUTINE" not in out  # no internal labels


def test_every_result_has_it_and_the_fully_answered_patient_has_none(evaluator):
    kb = evaluator.kb
    everything = {f.name: (False if f.type == "bool" else f.values[0]) for f in kb.input_facts}
    everything.pop("primary_cancer")  # may not be given with cancer_history = false
    assert evaluator.evaluate(everything).could_escalate == []
    assert evaluator.evaluate(everything).to_dict()["could_escalate"] == []


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_each_entry_is_real_and_nothing_unlisted_escalates(seed):
    kb = load()
    patient = random_patient(kb, random.Random(seed))
    base = reference_result(kb, patient)
    listed = {e.fact: e for e in could_escalate(kb, patient)}
    rank = kb.urgency_rank(base.urgency)
    before = {a.code: a.within_hours for a in base.actions}
    imaging = set(kb.watched_actions)  # imaging studies and other time-critical steps
    for fact in kb.input_facts:
        if fact.name in patient or not asked(fact, patient, kb.not_asked_when):
            assert fact.name not in listed  # answered, or moot (suspected compression once it is diagnosed)
            continue
        escalating = []
        for answer in (True,) if fact.type == "bool" else fact.values:
            trial = {**patient, fact.name: answer}
            if any(kb.facts[n].only_if is not None and evaluate(kb.facts[n].only_if, trial) is False for n in trial):
                continue  # a patient file could not say this
            if any(breaks(r, trial) for r in kb.relations):
                continue  # nor this: the answers would contradict each other
            after = reference_result(kb, trial)
            windows = {a.code: a.within_hours for a in after.actions}
            sooner = [
                c
                for c in imaging & set(windows)
                if c not in before or (windows[c] is not None and (before[c] is None or windows[c] < before[c]))
            ]
            if kb.urgency_rank(after.urgency) > rank or sooner:
                escalating.append(answer)
        assert (fact.name in listed) == bool(escalating), (patient, fact.name)
        if escalating:
            assert listed[fact.name].answer in escalating


def test_incremental_look_ahead_equals_full_re_evaluation(kb):
    """could_escalate chains on from the patient's trace; it must find exactly what evaluating the patient
    again from scratch with each added answer finds."""
    import random as _random

    from lumbar_kb.engine.analysis.escalation import could_escalate
    from lumbar_kb.engine.logic import breaks, contradicts_only_if
    from lumbar_kb.engine.patient import random_patient
    from lumbar_kb.engine.reference import ReferenceEvaluator
    from lumbar_kb.engine.result import build

    reference = ReferenceEvaluator(kb)
    imaging = set(kb.watched_actions)  # imaging studies and other time-critical steps
    rng = _random.Random(7)
    checked = 0
    for _ in range(400):
        inputs = random_patient(kb, rng)
        base = build(kb, reference.run(inputs))
        before = {a.code: a.within_hours for a in base.actions}
        expected = {}
        for fact in kb.input_facts:
            if fact.name in inputs:
                continue
            for answer in (True,) if fact.type == "bool" else fact.values:
                trial = {**inputs, fact.name: answer}
                if any(contradicts_only_if(f, trial) for f in kb.input_facts) or any(
                    breaks(r, trial) for r in kb.relations
                ):  # a patient file could not give these answers
                    continue
                full = build(kb, reference.run(trial))
                raised = kb.urgency_rank(full.urgency) > kb.urgency_rank(base.urgency)
                sooner = any(
                    a.code in imaging
                    and (
                        a.code not in before
                        or (a.within_hours is not None and (before[a.code] is None or a.within_hours < before[a.code]))
                    )
                    for a in full.actions
                )
                if raised or sooner:
                    expected.setdefault(fact.name, set()).add(answer)
        found = {e.fact: e.answer for e in could_escalate(kb, inputs)}
        assert set(found) == set(expected), inputs
        for name, answer in found.items():
            assert answer in expected[name]
        checked += bool(found)
    assert checked > 100  # the sample is not vacuous


def test_kept_look_ahead_outcomes_equal_chaining_every_trial_answer_afresh(kb):
    """The look-ahead keeps what each trial answer adds by the values of the facts downstream of it, its
    verdict on each question by what that verdict reads, and the questions its static bound leaves open by the
    urgency and windows that bound reads. Kept or worked out afresh (another evaluator: nothing kept), every
    patient gets the same escalations, in the same order with the same reasons."""
    import random as _random

    from lumbar_kb.engine.analysis import escalation
    from lumbar_kb.engine.patient import random_patient
    from lumbar_kb.engine.reference import ReferenceEvaluator

    shared, _, _, outcomes, kept, open_, permitted = escalation._prepared(kb)
    outcomes.clear()
    kept.clear()
    open_.clear()
    permitted.clear()
    afresh = ReferenceEvaluator(kb)
    rng = _random.Random(23)
    hits = 0
    for n in range(1500):
        inputs = random_patient(kb, rng)
        trace = shared.run(inputs)
        before = len(kept)
        audience = ("clinician", "patient")[n % 2]  # the question's words are the audience's
        found = [e.to_dict() for e in escalation.could_escalate(kb, inputs, audience, trace=trace)]
        hits += len(kept) == before and bool(found)
        again = escalation.could_escalate(kb, inputs, audience, evaluator=afresh)
        assert found == [e.to_dict() for e in again], (audience, inputs)
    assert hits > 100  # most patients were answered from kept outcomes: the comparison tested them


def test_questions_left_open_are_kept_by_the_bound_they_read_and_bounded(kb, monkeypatch):
    """The questions the static bound leaves open depend on the urgency and the actions' windows alone: a second
    patient with the same result is not bounded again (the kept questions are read), and the store never holds
    more than _OPEN_KEPT results however many come (flat memory)."""
    import random as _random

    from lumbar_kb.engine.analysis import escalation
    from lumbar_kb.engine.patient import random_patient

    shared, _, _, _, _, open_, _ = escalation._prepared(kb)
    open_.clear()
    bounded = []
    real = escalation._cannot_escalate
    monkeypatch.setattr(escalation, "_cannot_escalate", lambda *a: bounded.append(a) or real(*a))
    first = {"palpable_mass": True, "leg_weakness": False}
    escalation.could_escalate(kb, first)
    assert bounded and len(open_) == 1
    bounded.clear()
    escalation.could_escalate(kb, {**first, "night_pain": False})  # the same urgency and windows
    assert bounded == [] and len(open_) == 1
    monkeypatch.setattr(escalation, "_OPEN_KEPT", 3)
    rng = _random.Random(31)
    for _ in range(300):
        escalation.could_escalate(kb, random_patient(kb, rng))
        assert len(open_) <= 3
    assert len(bounded) > 300  # results kept no longer were bounded again


def test_answers_a_constrained_question_allows_are_kept_by_what_its_checks_read_and_bounded(kb, monkeypatch):
    """Which answers to a constrained question can be given is judged once for the values its checks read
    (primary_cancer's only_if reads cancer_history): a patient differing elsewhere reads the kept judgment; and the
    store holds at most _PERMITTED_KEPT judgments (flat memory)."""
    import random as _random

    from lumbar_kb.engine.analysis import escalation
    from lumbar_kb.engine.patient import random_patient
    from lumbar_kb.engine.prepared import Prepared

    *_, permitted = escalation._prepared(kb)
    permitted.clear()
    judged = []
    real = Prepared.allowed_adding
    monkeypatch.setattr(Prepared, "allowed_adding", lambda self, *a: judged.append(a[1]) or real(self, *a))
    first = {"palpable_mass": True, "cancer_history": True}
    escalation.could_escalate(kb, first)
    assert "primary_cancer" in judged and ("primary_cancer", True, None) in permitted
    judged.clear()
    escalation.could_escalate(kb, {**first, "night_pain": True})  # the same values where the checks read
    assert "primary_cancer" not in judged
    escalation.could_escalate(kb, {"palpable_mass": True, "cancer_history": False})
    assert "primary_cancer" in judged  # another value where they read: judged again
    monkeypatch.setattr(escalation, "_PERMITTED_KEPT", 2)
    permitted.clear()
    rng = _random.Random(37)
    for _ in range(200):
        escalation.could_escalate(kb, random_patient(kb, rng))
        assert len(permitted) <= 2
    assert len(judged) > 200  # judgments kept no longer were made again


def test_a_decision_is_the_result_without_its_words(kb):
    """`escalation.decision` (what a cohort row reads) is `decide`'s Result less its words, on random patients in
    both audiences: the same urgency, items (texts included), rules, completeness, scope and look-ahead."""
    import random as _random

    from lumbar_kb.engine.analysis.escalation import decide, decision
    from lumbar_kb.engine.patient import random_patient
    from lumbar_kb.engine.result import conclude
    from lumbar_kb.engine.session import Engine

    engine = Engine(kb)
    rng = _random.Random(29)
    escalating = 0
    for n in range(1000):
        trace = engine.run(random_patient(kb, rng))
        audience = ("clinician", "patient")[n % 2]
        result, found = decide(kb, trace, audience), decision(kb, trace, audience)
        assert found.urgency == result.urgency
        assert (found.actions, found.warnings, found.differential) == (
            result.actions,
            result.warnings,
            result.differential,
        )
        assert found.fired_ids() == result.fired_ids() == [f.rule for f in trace.firings]
        assert (found.complete, found.unanswered_alarm, found.in_scope) == (
            result.complete,
            result.unanswered_alarm,
            result.in_scope,
        )
        assert [e.to_dict() for e in found.could_escalate] == [e.to_dict() for e in result.could_escalate]
        escalating += bool(found.could_escalate)
        assert conclude(kb, trace, audience).could_escalate == []  # the look-ahead is decision's, not conclude's
    assert escalating > 100
