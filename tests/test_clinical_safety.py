"""Issue 9's clinical safety, from the guideline's text: a number on every time-critical step, completeness as an
output, a lump never below PROMPT, out-of-scope patients told so, completed pathways, patient wording.

Three kinds of test: hypothesis properties over the durable engine (expectations written from the guideline, not
from the knowledge base's own flags), `lumbar-kb check` catching a seeded defect in a copy of the knowledge base
with a minimal patient, and the loader refusing a malformed range.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumbar_kb.engine.analysis.checks import run_checks
from lumbar_kb.engine.analysis.escalation import decide
from lumbar_kb.engine.api import Evaluator
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.logic import breaks, evaluate
from lumbar_kb.engine.result_text import render
from lumbar_kb.main import main

from .bundled import KB
from .guideline import NEUROLOGICAL
from .strategies import one_of_or_unknown

ALARM = [
    *NEUROLOGICAL,
    "rapid_progression",
    "suspected_cord_compression",
    "cord_compression_confirmed",
]
# "Red Flag Symptoms Requiring Emergency Evaluation" and saddle anaesthesia: the signs of cord / cauda equina
# compression, whose MRI is due "within 12 hours"
COMPRESSION_SIGNS = ALARM[:6] + ["suspected_cord_compression"]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def patients(draw):
    facts = {}
    for fact in KB.input_facts:
        value = draw(one_of_or_unknown(tuple(fact.values)))
        if value is not None:
            facts[fact.name] = value
    for fact in KB.input_facts:
        if fact.only_if is not None and fact.name in facts and evaluate(fact.only_if, facts) is False:
            del facts[fact.name]
    return facts


def run(evaluator, facts, audience="clinician"):
    return decide(KB, evaluator.engine.run(facts), audience)


def windows(result) -> dict:
    return {a.code: a.within_hours for a in result.actions}


# ---- properties over the engine ---------------------------------------------------------------------------------
def test_the_alarm_questions_are_the_guidelines():
    assert [f.name for f in KB.input_facts if f.alarm] == ALARM


@SETTINGS
@given(patients())
def test_every_emergency_has_numbers_for_the_emergency_department_and_the_whole_spine_mri(evaluator, facts):
    result = run(evaluator, facts)
    if result.urgency != "emergency":
        return
    got = windows(result)
    # "Emergency Evaluation (within 12-24 hours)" / "Go to an emergency department immediately"
    assert got.get("emergency_department") is not None and got["emergency_department"] <= 24, facts
    if facts.get("cord_compression_confirmed") is True:  # imaged already: treatment within 24 h of diagnosis
        assert got.get("start_treatment") == 24
        return
    assert got.get("mri_whole_spine") is not None and got["mri_whole_spine"] <= 48, facts
    if any(facts.get(sign) is True for sign in COMPRESSION_SIGNS):
        assert got["mri_whole_spine"] <= 12, facts


@SETTINGS
@given(patients())
def test_an_unanswered_alarm_question_is_never_routine_and_the_result_says_so(evaluator, facts):
    result = run(evaluator, facts)
    moot = {"suspected_cord_compression"} if facts.get("cord_compression_confirmed") is True else set()
    missing = [f for f in ALARM if f not in facts and f not in moot]
    # a question whose yes the relations refuse cannot raise an alarm (a diagnosis once the suspicion is no)
    possible = [f for f in missing if _yes_allowed(evaluator, facts, f)]
    # issue 23: only the ones whose answer could still change the decision keep the result incomplete
    assert set(result.unanswered_alarm) <= set(possible)
    assert result.complete is (not result.unanswered_alarm)
    if possible:  # unanswered is never "no": counted or settled, never the lowest level
        assert result.urgency != "routine"
    if result.unanswered_alarm:
        assert result.incomplete_text
    else:
        assert result.incomplete_text == ""


def _yes_allowed(evaluator, facts, fact) -> bool:
    """A yes to `fact` breaks no relation the answers kept (the generated answers may already break another)."""
    added = {**facts, fact: True}
    return not any(breaks(r, added) and not breaks(r, facts) for r in evaluator.kb.relations)


@SETTINGS
@given(patients())
def test_a_lump_is_never_below_prompt(evaluator, facts):
    lump = (
        facts.get("palpable_mass") is True
        or facts.get("imaging_shows_mass") is True
        or facts.get("mass_persists") is True
        or facts.get("radiograph") == "abnormal"
    )
    if lump:
        assert run(evaluator, facts).urgency in ("prompt", "emergency"), facts


@SETTINGS
@given(patients())
def test_every_imaging_or_referral_step_has_a_number_and_ranges_are_ordered(evaluator, facts):
    result = run(evaluator, facts)
    for action in result.actions:
        assert action.within_hours is not None, (facts, action.code)
        if action.within_hours_min is not None:
            assert 0 <= action.within_hours_min <= action.within_hours


@SETTINGS
@given(patients())
def test_no_radiographs_or_lumbar_mri_beside_a_whole_spine_mri(evaluator, facts):
    got = windows(run(evaluator, facts))
    if "mri_whole_spine" in got:
        assert "mri_lumbar" not in got and "xray_lumbar" not in got, facts


@SETTINGS
@given(patients())
def test_no_question_is_asked_that_cannot_change_a_step(evaluator, facts):
    result = run(evaluator, facts)
    asked = {e.fact for e in result.could_escalate}
    if "mri_whole_spine" in windows(result):  # radiographs and a lumbar MRI are covered: their answers change nothing
        assert not asked & {"radiograph", "mass_persists"}, facts
    if facts.get("cord_compression_confirmed") is True:  # diagnosed: whether it is suspected no longer matters
        assert "suspected_cord_compression" not in asked | {q.fact for q in result.unanswered}


@SETTINGS
@given(patients())
def test_no_mass_at_all_is_out_of_scope_without_a_differential(evaluator, facts):
    result = run(evaluator, facts)
    no_mass = facts.get("palpable_mass") is False and facts.get("imaging_shows_mass") is False
    assert result.in_scope is (not no_mass)
    if no_mass:
        assert result.differential == [] and result.scope_text


@SETTINGS
@given(patients())
def test_patient_text_has_no_jargon_no_false_reassurance_and_keeps_the_disclaimer(evaluator, facts):
    text = render(run(evaluator, facts, "patient"), KB)
    flat = " ".join(text.split())
    for jargon in ("EMERGENCY", "PROMPT", "ROUTINE", "raise the urgency", "could_escalate", "within_hours"):
        assert jargon not in flat
    for reassurance in ("needs urgent care", "nothing to worry", "harmless fatty", "most common cause", "is benign"):
        assert reassurance not in flat
    assert " ".join(KB.disclaimer.split()) in flat


# ---- the guideline's pathways, one patient each -------------------------------------------------------------------
def test_the_report_keeps_the_range_of_the_red_flags(evaluator):
    """Radiating numbness is a red flag ("emergency evaluation (within 12-24 hours)") whose whole-spine MRI is due
    within 12 hours; the visit that carries the MRI cannot come after it (issue 23), so the emergency department is
    now, and the red flag's own range is shown as overridden, naming the rule whose earlier window won."""
    result = evaluator.evaluate({"radiating_numbness": True})
    ed = next(a for a in result.actions if a.code == "emergency_department")
    assert ed.within_hours == 0
    assert ed.overridden == (("red_flag.radiating_numbness", "within 12-24 hours", "imaging.mri_window.red_flags"),)
    shown = next(a for a in result.to_dict()["actions"] if a["code"] == "emergency_department")
    assert shown["overridden"] == [
        {"rule": "red_flag.radiating_numbness", "window": "within 12-24 hours", "by": "imaging.mri_window.red_flags"}
    ]
    text = " ".join(render(result, evaluator.kb).split())
    assert "Emergency department, immediately" in text
    assert (
        "red_flag.radiating_numbness's window (within 12-24 hours) is overridden by imaging.mri_window.red_flags"
        in text
    )


def test_clinician_text_keeps_the_guidelines_figures(evaluator):
    lump = dict.fromkeys(ALARM, False) | {"palpable_mass": True, "cancer_history": False}
    text = " ".join(render(evaluator.evaluate(lump), evaluator.kb).split())
    for figure in ("27%", "22%", "85%", "< 1%"):
        assert figure in text
    cancer = " ".join(
        render(evaluator.evaluate({"cancer_history": True, "rapid_progression": True}), evaluator.kb).split()
    )
    for figure in ("24-48 hours", "2 weeks", "24 hours of diagnosis"):
        assert figure in cancer or figure in text
    assert "within 12 hours" in render(evaluator.evaluate({"leg_weakness": True}), evaluator.kb)


def test_incomplete_report_leads_with_the_questions(evaluator):
    lines = render(evaluator.evaluate({"palpable_mass": True}), evaluator.kb).splitlines()
    assert lines[0].startswith("PROMPT:") and lines[1].startswith("Incomplete:")
    assert lines.index(
        "Ask now: these answers would raise the urgency or bring a step forward (most urgent first):"
    ) < (lines.index("Actions: none concluded from the answers given."))


def test_a_no_answer_to_everything_with_no_mass_is_routine_but_never_says_nothing_is_wrong(evaluator):
    everything_no = {f.name: False for f in KB.input_facts if f.type == "bool"} | {"radiograph": "not_done"}
    result = evaluator.evaluate(everything_no, audience="patient")
    assert result.urgency == "routine" and result.complete and not result.in_scope
    text = render(result, evaluator.kb)
    assert "does not mean nothing is wrong" in " ".join(text.split())


# ---- check catches each seeded defect with a minimal patient ------------------------------------------------------
def edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def problems(kb_dir, check_id):
    return [f for f in run_checks(load(kb_dir)).problems if f.check == check_id]


def test_check_catches_an_emergency_without_the_emergency_department(kb_copy):
    edit(
        kb_copy / "rules" / "imaging.yaml",
        "    when: {fact: suspected_cord_compression, is: true}\n    then:\n      - urgency: emergency\n"
        "      - action: emergency_department\n        within_hours: 0\n        window: immediately\n",
        "    when: {fact: suspected_cord_compression, is: true}\n    then:\n      - urgency: emergency\n",
    )
    [finding] = problems(kb_copy, "emergency_windows")
    assert finding.subject == "action:emergency_department" and finding.reproduced is True
    assert finding.patient == {"suspected_cord_compression": True}


def test_check_catches_an_emergency_without_a_whole_spine_mri(kb_copy):
    edit(
        kb_copy / "rules" / "imaging.yaml",
        "    when: {fact: rapid_progression, is: true}\n    then:\n      - action: mri_whole_spine\n"
        "        within_hours: 48\n",
        "    when: {fact: rapid_progression, is: true}\n    then:\n      - action: mri_whole_spine\n"
        "        within_hours: 72\n",
    )
    edit(
        kb_copy / "rules" / "imaging.yaml",
        "window: within 24-48 hours\n    cites: [1]\n    rationale: >-\n      Do not",
        "window: within 3 days\n    cites: [1]\n    rationale: >-\n      Do not",
    )
    [finding] = problems(kb_copy, "emergency_windows")
    assert finding.subject == "action:mri_whole_spine" and finding.reproduced is True
    assert finding.patient == {"rapid_progression": True}


def test_check_catches_routine_for_unanswered_alarm_questions(kb_copy):
    text = (kb_copy / "guideline.yaml").read_text()
    start, end = text.index("\ncompleteness:"), text.index("\n# Scope:")
    (kb_copy / "guideline.yaml").write_text(text[:start] + text[end:])
    [finding] = problems(kb_copy, "incomplete_never_lowest")
    assert finding.patient == {} and finding.reproduced is True
    assert Evaluator(load(kb_copy)).evaluate({}).urgency == "routine"  # the defect, seen by the engine


def test_check_catches_a_mass_on_imaging_below_prompt(kb_copy):
    edit(
        kb_copy / "rules" / "after_imaging.yaml",
        "      - urgency: prompt\n      - action: specialist_referral\n",
        "      - action: specialist_referral\n",
    )
    [finding] = problems(kb_copy, "urgency_floors")
    assert finding.subject == "floor mass_at_least_prompt" and finding.reproduced is True
    # the smallest patient: the mass on imaging, and every alarm question answered no (else it is incomplete)
    assert finding.patient["imaging_shows_mass"] is True
    assert Evaluator(load(kb_copy)).evaluate(finding.patient).urgency == "routine"


def test_check_catches_an_imaging_step_without_a_number(kb_copy):
    edit(
        kb_copy / "rules" / "imaging.yaml",
        "      - action: xray_lumbar\n        within_hours: 336\n        window: within days to 2 weeks\n",
        "      - action: xray_lumbar\n",
    )
    [finding] = problems(kb_copy, "actions_have_windows")
    assert finding.subject == "action:xray_lumbar" and finding.reproduced is True
    assert finding.patient["palpable_mass"] is True


def test_the_bundled_knowledge_base_passes_the_clinical_checks():
    statuses = {c.id: c.status for c in run_checks(KB).checks}
    for check in ("emergency_windows", "incomplete_never_lowest", "urgency_floors", "actions_have_windows"):
        assert statuses[check] == "ok"


# ---- ranges: the loader refuses a malformed one --------------------------------------------------------------------
@pytest.mark.parametrize(
    "lower, message",
    [
        ("30", "within_hours_min (30) is later than within_hours (24)"),
        ("-1", "-1 is less than the minimum of 0"),
        (".inf", "a number must be finite"),  # refused by the reading front door, before the loader
    ],
)
def test_a_malformed_range_is_bad_input_naming_file_and_line(kb_copy, capsys, lower, message):
    edit(
        kb_copy / "rules" / "red_flags.yaml",
        "        within_hours_min: 12\n",
        f"        within_hours_min: {lower}\n",
    )
    assert main(["validate", "--kb", str(kb_copy)]) == 2  # a knowledge base with problems is bad input
    err = capsys.readouterr().err
    assert message in err and re.search(r"red_flags\.yaml:\d+:\d+", err), err


def test_a_lower_end_without_an_upper_end_is_refused(kb_copy, capsys):
    edit(
        kb_copy / "rules" / "red_flags.yaml",
        "        within_hours: 24\n        within_hours_min: 12\n",
        "        within_hours_min: 12\n",
    )
    assert main(["validate", "--kb", str(kb_copy)]) == 2  # a knowledge base with problems is bad input
    assert "needs within_hours, the upper end" in capsys.readouterr().err


def test_json_result_carries_the_new_fields(tmp_path, capsys):
    patient = tmp_path / "p.yaml"
    patient.write_text("palpable_mass: false\nimaging_shows_mass: false\n")
    assert main(["evaluate", str(patient), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["complete"] is False and data["unanswered_alarm"][0] == "leg_weakness"
    assert data["in_scope"] is False and data["scope_text"] and data["differential"] == []
    assert data["urgency"] == "prompt"


def test_check_catches_a_range_in_words_whose_lower_end_the_rule_drops(kb_copy):
    edit(kb_copy / "rules" / "red_flags.yaml", "        within_hours_min: 12\n", "")
    [finding] = problems(kb_copy, "contradictory_windows")
    assert finding.subject == "rule red_flag.leg_weakness"
    assert "state a range from 12 hours but within_hours_min is missing" in finding.message


def test_a_range_without_words_is_shown_as_a_range():
    from lumbar_kb.engine.model import hours_text

    assert hours_text(24, 12) == "within 12-24 hours" and hours_text(48, 24) == "within 24-48 hours"
    assert hours_text(24) == "within 24 hours" and hours_text(0, 0) == "immediately"
