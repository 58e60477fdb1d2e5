"""Clinical coherence (issue 23): the steps, windows and words of one result agree with each other.

Expectations come from the guideline's sentences: "Red Flag Symptoms Requiring Emergency Evaluation (within 12-24
hours)", "Within 12 hours: If there's suspicion of spinal cord or cauda equina compression", "Treatment should begin
within 24 hours of diagnosing spinal cord compression", "If imaging reveals a mass, you need referral to an
appropriate specialist before any biopsy". Each `check` invariant is shown failing on a seeded defect in a copy of
the knowledge base, with the minimal patient the engine then reproduces.
"""

from __future__ import annotations

import json
import random
import re

import httpx
import z3

from lumbar_kb.engine.analysis.checks import run_checks
from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.escalation import decide
from lumbar_kb.engine.errors import PatientError
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.model import AnyOf
from lumbar_kb.engine.model import Test as Is
from lumbar_kb.engine.patient import contradictions, random_patient, readings
from lumbar_kb.engine.prepared import prepared
from lumbar_kb.engine.result_text import render
from lumbar_kb.main import main

from .bundled import KB
from .servers import serving


def edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def check_of(kb_dir, check_id):
    return next(c for c in run_checks(load(kb_dir)).checks if c.id == check_id)


def patients(kb, n, seed):
    rng = random.Random(seed)
    return [random_patient(kb, rng) for _ in range(n)]


# ---- windows that agree ------------------------------------------------------------------------------------------
def test_check_proves_no_step_falls_due_before_the_emergency_department(kb):
    check = next(c for c in run_checks(kb).checks if c.id == "windows_agree")
    assert check.status == "ok" and "Emergency department" in check.claim


def test_windows_agree_catches_an_mri_due_before_the_visit_that_carries_it(kb_copy):
    """Seeded defect: the red flags' MRI rule no longer sends the patient to the emergency department now, so
    radiating numbness (a red flag missing from the "immediately" list) gets the visit within 12-24 hours and the
    MRI within 12: the MRI falls due before the visit that carries it."""
    edit(
        kb_copy / "rules" / "imaging.yaml",
        "      - action: emergency_department\n        within_hours: 0\n        window: immediately\n"
        "      - action: mri_whole_spine\n        within_hours: 12\n",
        "      - action: mri_whole_spine\n        within_hours: 12\n",
    )
    check = check_of(kb_copy, "windows_agree")
    [finding] = check.problems
    assert finding.subject == "action:mri_whole_spine" and finding.reproduced is True
    assert finding.patient == {"radiating_numbness": True}


def test_no_step_is_due_before_the_emergency_department_on_random_patients(evaluator, kb):
    for facts in patients(kb, 1500, 2312):
        actions = {a.code: a.within_hours for a in evaluator.evaluate(facts).actions}
        if "emergency_department" not in actions:
            continue
        visit = actions["emergency_department"]
        assert visit is not None
        for code, hours in actions.items():
            assert hours is None or hours >= visit, (facts, code, hours, visit)


def test_radiating_numbness_goes_to_the_emergency_department_before_its_12_hour_mri(evaluator):
    result = evaluator.evaluate({"radiating_numbness": True})
    windows = {a.code: a.within_hours for a in result.actions}
    assert windows["mri_whole_spine"] == 12 and windows["emergency_department"] <= 12


# ---- never lose an alarm ---------------------------------------------------------------------------------------
CONTRADICTORY = [
    {"cord_compression_confirmed": True, "suspected_cord_compression": False},
    {"mass_persists": True, "palpable_mass": False},
]


def contradictory_patients(kb, n, seed):
    """Random patients with at least one broken relation: each relation's premise given yes and what it implies
    given no, the other answers random (unknown included)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        facts = random_patient(kb, rng)
        for pair in CONTRADICTORY[: 1 + i % 2] if i % 3 else CONTRADICTORY[1:]:
            facts.update(pair)
        out.append(facts)
    return out


def never_lower(kb, evaluate_most_urgent, run) -> list:
    """The patients for whom the contradictory result is less urgent than one of its readings (none, when it holds),
    with the reading: the property "a contradiction never hides an alarm"."""
    rank = {code: e.rank for code, e in kb.catalog["urgency"].items()}
    failures = []
    for facts in contradictory_patients(kb, 300, 2323):
        got = evaluate_most_urgent(facts)
        assert got.contradictions, facts
        for reading in readings(kb, facts):
            alone = decide(kb, run(reading))
            if rank[alone.urgency] > rank[got.urgency]:
                failures.append((facts, reading))
    return failures


def test_a_contradiction_is_never_less_urgent_than_either_of_its_readings(evaluator, kb):
    assert never_lower(kb, lambda f: evaluator.evaluate(f, contradictions="most_urgent"), evaluator.engine.run) == []


def test_the_property_fails_on_a_seeded_reading_that_trusts_the_reassuring_answer(evaluator, kb):
    """Seeded defect: the least urgent reading (the diagnosis doubted because the suspicion was answered no)."""
    rank = {code: e.rank for code, e in kb.catalog["urgency"].items()}

    def least_urgent(facts):
        facts = check(evaluator, facts)
        results = [decide(kb, evaluator.engine.run(r)) for r in readings(kb, facts)]
        worst = min(results, key=lambda r: rank[r.urgency])
        worst.contradictions = contradictions(kb, facts)
        return worst

    failures = never_lower(kb, least_urgent, evaluator.engine.run)
    assert ({"cord_compression_confirmed": True, "suspected_cord_compression": False} | failures[0][0]) == failures[0][
        0
    ]
    minimal = evaluator.evaluate(CONTRADICTORY[0], contradictions="most_urgent")
    assert minimal.urgency == "emergency" and least_urgent(CONTRADICTORY[0]).urgency != "emergency"


def check(evaluator, facts):
    return evaluator.check_inputs(facts, "read")


def test_a_diagnosed_compression_not_suspected_is_an_emergency_naming_both_answers(evaluator, kb):
    result = evaluator.evaluate(CONTRADICTORY[0], contradictions="most_urgent")
    # "Treatment should begin within 24 hours of diagnosing spinal cord compression"
    assert result.urgency == "emergency"
    assert {a.code: a.within_hours for a in result.actions}["start_treatment"] == 24
    [c] = result.contradictions
    assert c.given == CONTRADICTORY[0] and c.relation == "confirmed_compression_was_suspected"
    text = " ".join(render(result, kb).split())
    assert "Contradictory answers" in text
    assert "cord_compression_confirmed: yes and suspected_cord_compression: no" in text
    for name in c.settle:  # the questions that settle it, in the knowledge base's words
        assert kb.facts[name].question in text
    patient = " ".join(render(evaluator.evaluate(CONTRADICTORY[0], "patient", "most_urgent"), kb).split())
    assert "contradict each other" in patient and kb.facts["suspected_cord_compression"].patient_question in patient
    assert result.to_dict()["contradictions"][0]["given"] == CONTRADICTORY[0]


def test_evaluate_refuses_by_default_and_offers_the_most_urgent_reading(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text("cord_compression_confirmed: true\nsuspected_cord_compression: false\n")
    assert main(["evaluate", str(path)]) == 2
    assert "--contradictions most-urgent" in capsys.readouterr().err
    assert main(["evaluate", "--contradictions", "most-urgent", "--format", "json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["urgency"] == "emergency"
    assert data["contradictions"][0]["given"] == {
        "cord_compression_confirmed": True,
        "suspected_cord_compression": False,
    }


def test_the_questionnaire_page_never_refuses_a_contradiction_and_names_it(tmp_path):
    with serving(tmp_path) as served:
        body = {"answers": CONTRADICTORY[0], "audience": "clinician"}
        response = httpx.post(served.base + "/api/evaluate", json=body, timeout=30)
    assert response.status_code == 200
    data = response.json()
    assert data["urgency"] == "emergency"
    first = data["warnings"][0]["text"]
    assert "Contradictory answers" in first and "suspected_cord_compression: no" in first


# ---- completeness that reads the relations both ways -------------------------------------------------------------
ALL_NO_BUT_DIAGNOSIS = {
    "leg_weakness": False,
    "gait_difficulty": False,
    "radiating_numbness": False,
    "unable_to_walk": False,
    "bowel_bladder_dysfunction": False,
    "saddle_anesthesia": False,
    "progressive_neuro_deficit": False,
    "rapid_progression": False,
    "suspected_cord_compression": False,
    "cancer_history": False,
    "palpable_mass": False,
}


def kept_open_by_a_refused_answer(evaluator, kb, facts) -> list[str]:
    """The alarm questions keeping this result incomplete whose alarming answer (yes) a patient file could not give
    with these answers (the patient parser refuses it as contradictory): none, when completeness reads the
    relations both ways."""
    refused = []
    for name in evaluator.evaluate(facts).unanswered_alarm:
        if kb.facts[name].type != "bool":
            continue
        try:
            evaluator.check_inputs({**facts, name: True})
        except PatientError:
            refused.append(name)
    return refused


def test_a_question_that_cannot_be_yes_keeps_nothing_incomplete(evaluator, kb):
    """facts.yaml: a confirmed compression was suspected. With the suspicion answered no, "has compression been
    diagnosed?" cannot be yes, so with every alarm question answered no the result is complete, not PROMPT."""
    result = evaluator.evaluate(ALL_NO_BUT_DIAGNOSIS)
    assert result.complete and result.unanswered_alarm == [] and result.urgency == "routine"
    assert kept_open_by_a_refused_answer(evaluator, kb, ALL_NO_BUT_DIAGNOSIS) == []
    # the relation is read the other way too: with the suspicion unknown, a diagnosis is still possible
    open_ = evaluator.evaluate({k: v for k, v in ALL_NO_BUT_DIAGNOSIS.items() if k != "suspected_cord_compression"})
    assert not open_.complete and "cord_compression_confirmed" in open_.unanswered_alarm


def test_no_result_is_kept_incomplete_by_a_refused_answer_on_random_patients(evaluator, kb):
    for facts in patients(kb, 800, 2324):
        assert kept_open_by_a_refused_answer(evaluator, kb, facts) == [], facts


def test_the_property_fails_on_completeness_that_reads_the_relations_one_way(evaluator, kb, monkeypatch):
    """Seeded defect: every unanswered alarm question counts, whatever the relations allow (the old reading)."""
    from lumbar_kb.engine.prepared import Prepared

    monkeypatch.setattr(Prepared, "could_alarm", lambda self, fact, facts: True)
    assert kept_open_by_a_refused_answer(evaluator, kb, {"suspected_cord_compression": False}) == [
        "cord_compression_confirmed"
    ]
    assert evaluator.evaluate(ALL_NO_BUT_DIAGNOSIS).urgency == "prompt"  # the patient, kept at PROMPT


# ---- words that presume no answer -------------------------------------------------------------------------------
def _yes(*facts):
    return AnyOf(tuple(Is(f, frozenset({True})) for f in facts))


MASS = AnyOf((_yes("palpable_mass", "imaging_shows_mass", "mass_persists"), Is("radiograph", frozenset({"abnormal"}))))
ALARMS = [f.name for f in KB.input_facts if f.alarm]
# What a patient text may say only when the answers say it (first principles: words a patient reads as facts about
# themselves). Each pattern with what the answers must say wherever a result shows the text (a function of the
# check's symbolic patient): a yes where the words state something, no yes where they deny it.
PRESUMES = [
    (
        r"getting worse|worsening|\bworse\b",
        lambda s: s.true(_yes("rapid_progression", "progressive_neuro_deficit")),
        "progression",
    ),
    (r"previous cancer|your cancer", lambda s: s.true(Is("cancer_known", frozenset({True}))), "a cancer history"),
    (r"\b(the|your) (mass|lump)\b", lambda s: s.true(MASS), "a mass"),
    (r"\btreatment\b", lambda s: s.true(_yes("cord_compression_confirmed")), "a diagnosed compression"),
    (r"have not found a lump", lambda s: z3.Not(s.true(_yes("palpable_mass"))), "no lump found"),
    (r"no scan has shown one", lambda s: z3.Not(s.true(_yes("imaging_shows_mass"))), "no mass on a scan"),
    (r"none of the warning signs", lambda s: z3.Not(s.true(_yes(*ALARMS))), "no warning sign"),
    # a scan still to come: not once the diagnosis it makes is known (the whole-spine MRI is then shown done)
    (
        r"needs a scan|wait for a scan|scans? must not be delayed",
        lambda s: z3.Not(s.true(_yes("cord_compression_confirmed"))),
        "a scan still to come",
    ),
]


def presumptions(kb) -> list[tuple[str, str, dict]]:
    """Over every input state (z3, the check's encoding): each patient-audience text of the knowledge base, where a
    result can show it, that says something the answers do not (its owner, what it presumes, a minimal patient)."""
    ctx = Context(kb)
    s = ctx.s
    owners = []  # (name, its patient text, when a result shows it)
    for level, e in kb.catalog["urgency"].items():
        owners.append((f"urgency:{level}", e.patient_text, s.urgency_is(level)))
    for code, e in kb.catalog["action"].items():
        owners.append((f"action:{code}", e.patient_text, s.action(code)))
    for code, e in kb.catalog["warning"].items():
        owners.append((f"warning:{code}", e.patient_text, s.concludes(("warning", code))))
    scope = s.true(kb.out_of_scope_when) if kb.out_of_scope_when is not None else z3.BoolVal(False)
    for code, e in kb.catalog["differential"].items():
        owners.append(
            (f"differential:{code}", e.patient_text, z3.And(s.concludes(("differential", code)), z3.Not(scope)))
        )
    owners.append(("completeness", kb.incomplete_patient_text, s.incomplete()))
    owners.append(("scope", kb.out_of_scope_patient_text, scope))
    found = []
    for name, text, shown in owners:
        for pattern, says, what in PRESUMES:
            if re.search(pattern, text or "", re.IGNORECASE) is None:
                continue
            patient = ctx.canonical_witness(shown, z3.Not(says(s)))  # the same patient on every run
            if patient is not None:
                found.append((name, what, patient))
    return found


def test_no_patient_text_of_any_reachable_result_presumes_an_answer(kb):
    assert presumptions(kb) == []


def test_a_text_that_presumes_progression_is_caught_with_a_minimal_patient(kb_copy):
    """Seeded defect: the old "do not delay imaging" wording, shown to a patient whose compression is only
    suspected ("your symptoms are getting worse", which the patient never said)."""
    edit(
        kb_copy / "guideline.yaml",
        "patient_text: Do not let anything delay the steps above.",
        "patient_text: Do not wait; your symptoms are getting worse and scans must not be delayed.",
    )
    assert presumptions(load(kb_copy)) == [
        ("warning:do_not_delay_imaging", "progression", {"suspected_cord_compression": True}),
        # and "scans must not be delayed" beside the MRI a diagnosed compression shows done
        (
            "warning:do_not_delay_imaging",
            "a scan still to come",
            {"suspected_cord_compression": True, "cord_compression_confirmed": True},
        ),
    ]


def test_an_emergency_never_speaks_of_a_lower_level(evaluator, kb):
    """Inside an EMERGENCY nothing shown says "at least prompt" (the incomplete text of a lower level)."""
    for facts in [{"radiating_numbness": True}, {"leg_weakness": True}, {"suspected_cord_compression": True}]:
        for audience in ("clinician", "patient"):
            result = evaluator.evaluate(facts, audience)
            assert result.urgency == "emergency" and not result.complete
            text = " ".join(render(result, kb).split()).lower()
            assert "at least prompt" not in text and "prompt" not in text


# ---- completeness: only questions that could still change the decision keep a result incomplete -----------------
def decision_of(result) -> tuple:
    return result.urgency, {a.code: a.within_hours for a in result.actions}


def test_a_question_no_answer_could_change_keeps_nothing_incomplete(evaluator):
    """Leg weakness: the emergency department now and whole-spine MRI within 12 hours. With the diagnosis answered
    no, a yes to any other alarm question (suspected compression: the department now, MRI within 12 hours) changes
    nothing, now or later, so the result is complete; with the diagnosis unanswered, a yes would start treatment
    within 24 hours, so it stays incomplete and asks it."""
    settled = evaluator.evaluate({"leg_weakness": True, "cord_compression_confirmed": False})
    assert settled.complete and settled.urgency == "emergency" and settled.incomplete_text == ""
    open_ = evaluator.evaluate({"leg_weakness": True})
    assert not open_.complete and open_.unanswered_alarm == ["cord_compression_confirmed"]


def test_a_question_that_matters_only_with_a_later_answer_keeps_the_result_open(evaluator):
    """Rapid progression: MRI within 24-48 hours. A rapidly progressing deficit changes nothing alone, but with a
    cancer history it means MRI within 12 hours ("MRI must be performed within 12 hours if you have any neurological
    symptoms"), so it still keeps the result incomplete."""
    result = evaluator.evaluate({"rapid_progression": True, "cord_compression_confirmed": False})
    assert "progressive_neuro_deficit" in result.unanswered_alarm and not result.complete


def test_a_question_left_out_of_completeness_changes_nothing_on_random_patients(evaluator, kb):
    """Engine-level: every asked alarm question a result no longer counts, answered yes (where a patient file may say
    yes), leaves the urgency and every window as they were."""
    alarms = [f for f in kb.input_facts if f.alarm and f.type == "bool"]
    plan = prepared(kb)
    tried = 0
    for facts in patients(kb, 400, 2325):
        result = evaluator.evaluate(facts)
        for fact in alarms:
            if fact.name in facts or fact.name in result.unanswered_alarm or not plan.asked(fact, facts):
                continue  # answered, still counted, or never asked (moot: `completeness.not_asked_when`)
            try:
                after = evaluator.evaluate({**facts, fact.name: True})
            except PatientError:
                continue  # a yes the relations refuse
            tried += 1
            assert decision_of(after)[0] == result.urgency, (facts, fact.name)
            before = {a.code: a.within_hours for a in result.actions if not a.done}
            done = {a.code for a in result.actions if a.done}
            for code, hours in decision_of(after)[1].items():
                if code in done:
                    continue  # a step the answers show done (the MRI of a diagnosed compression)
                if code in kb.watched_actions:
                    assert code in before and (hours is None or (before[code] is not None and before[code] <= hours))
    assert tried > 50  # the property was exercised


def test_settled_never_matters_catches_a_bound_that_forgets_a_derived_path(kb_copy):
    """Seeded defect: the bound of "progressive deficit" forgets that it is a neurological symptom (so, with a
    cancer history, MRI within 12 hours): check finds the patient for whom the question would be dropped too soon."""
    from lumbar_kb.engine.analysis.checks.coherence import check_coherence
    from lumbar_kb.engine.analysis.checks.context import Context
    from lumbar_kb.engine.prepared import prepared

    kb = load(kb_copy)
    top, earliest = prepared(kb).bound["progressive_neuro_deficit"]
    prepared(kb).bound["progressive_neuro_deficit"] = (top, {**earliest, "mri_whole_spine": 48.0})
    check = next(c for c in check_coherence(Context(kb)) if c.id == "settled_questions_never_matter")
    [finding] = check.problems
    assert finding.subject == "fact progressive_neuro_deficit"
    assert finding.patient.get("rapid_progression") is True and "progressive_neuro_deficit" not in finding.patient
    assert finding.then.get("cancer_history") is True or finding.then.get("primary_cancer") is not None
