"""FHIR in and out: records mapped to facts by the bindings in codes.yaml, and the knowledge base exported as
valid FHIR (checked with the fhir.resources models), and the CLI reading FHIR patient files.

Expectations come from the bindings' meaning (ICD-10 C50 is a breast cancer; a resolved or refuted record
does not say "no"; disagreeing records leave a fact unknown), not from the code's output.
"""

from __future__ import annotations

import copy
import csv
import importlib
import io
import json
import shutil

import pytest

from lumbar_kb.clinic.fhir.codes import load_codes
from lumbar_kb.clinic.fhir.export import export_all, questionnaire, questionnaire_response
from lumbar_kb.clinic.fhir.inbound import FhirInputError, map_fhir
from lumbar_kb.engine.errors import KnowledgeBaseError
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.engine.patient import load_patient
from lumbar_kb.main import main

from .bundled import KB

CODES = load_codes(KB)
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SCT = "http://snomed.info/sct"
PATIENTS = sorted((default_kb_dir() / "patients").iterdir())


def condition(code, system=ICD10, clinical="active", verification=None, rid="c1", subject="Patient/p1"):
    res = {
        "resourceType": "Condition",
        "id": rid,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": subject},
    }
    if clinical:
        res["clinicalStatus"] = {"coding": [{"code": clinical}]}
    if verification:
        res["verificationStatus"] = {"coding": [{"code": verification}]}
    return res


def observation(fact, rid="o1", status="final", **value):
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "code": {"coding": [{"system": CODES.kb_system, "code": fact}]},
        "subject": {"reference": "Patient/p1"},
        **value,
    }


def bundle(*resources):
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def facts(*resources, patient_id="p1"):
    return map_fhir(bundle(*resources), KB, CODES, patient_id)


# ---- in ----------------------------------------------------------------------------------------------------
def test_a_breast_cancer_diagnosis_gives_the_history_and_the_primary_site():
    m = facts(condition("C50.9"))
    assert m.facts == {"cancer_history": True, "primary_cancer": "breast"}
    assert "Condition/c1" in m.evidence["primary_cancer"][0]


def test_a_resolved_cancer_is_still_a_history_but_a_resolved_symptom_is_not_a_no():
    assert facts(condition("Z85.3", clinical="resolved")).facts == {"cancer_history": True, "primary_cancer": "breast"}
    assert facts(condition("R33", clinical="resolved")).facts == {}  # unknown, never "no"


def test_refuted_and_entered_in_error_records_never_say_no():
    assert facts(condition("R33", verification="refuted")).facts == {}
    m = facts(condition("C50.9", verification="entered-in-error"))
    assert m.facts == {} and any("entered-in-error" in s for s in m.skipped)


def test_a_provisional_cord_compression_is_a_suspicion_not_a_diagnosis():
    assert facts(condition("G95.20", system="http://hl7.org/fhir/sid/icd-10-cm", verification="provisional")).facts == {
        "suspected_cord_compression": True
    }
    assert facts(condition("G95.2", verification="confirmed")).facts == {
        "suspected_cord_compression": True,
        "cord_compression_confirmed": True,
    }


def test_observations_answer_yes_and_no_and_unusable_statuses_are_skipped():
    yes = {"valueCodeableConcept": {"coding": [{"system": SCT, "code": "373066001"}]}}
    assert facts(observation("leg_weakness", **yes)).facts == {"leg_weakness": True}
    assert facts(observation("leg_weakness", valueBoolean=False)).facts == {"leg_weakness": False}
    assert facts(observation("leg_weakness", status="cancelled", valueBoolean=True)).facts == {}
    assert facts(observation("leg_weakness", dataAbsentReason={"text": "asked, not known"})).facts == {}
    abnormal = {"valueCodeableConcept": {"coding": [{"system": SCT, "code": "263654008"}]}}
    assert facts(observation("radiograph", **abnormal)).facts == {"radiograph": "abnormal"}


def test_disagreeing_records_leave_the_fact_unknown_and_are_reported():
    qr = questionnaire_response(KB, CODES, {"leg_weakness": True}, "Patient/p1", "q1")
    m = facts(qr, observation("leg_weakness", valueBoolean=False))
    assert "leg_weakness" not in m.facts
    assert len(m.conflicts["leg_weakness"]) == 2
    two_primaries = facts(condition("C50.9"), condition("C61", rid="c2"))
    assert two_primaries.facts == {"cancer_history": True}
    assert set(two_primaries.conflicts) == {"primary_cancer"}


def test_a_value_its_condition_contradicts_is_left_unknown():
    qr = questionnaire_response(KB, CODES, {"cancer_history": False}, "Patient/p1", "q1")
    qr["item"][0]["item"].append({"linkId": "primary_cancer", "answer": [{"valueString": "breast"}]})
    m = facts(qr)
    assert m.facts == {"cancer_history": False}
    assert "primary_cancer" in m.conflicts


def test_records_of_another_patient_and_unbound_codes_are_not_used():
    m = facts(condition("C50.9", subject="Patient/someone-else"), condition("J45.9", rid="c2"))
    assert m.facts == {}
    assert any("another patient" in s for s in m.skipped) and any("no code bound" in s for s in m.skipped)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"resourceType": "Bundle", "entry": {"resource": {}}}, "entry"),
        ({"resourceType": "Bundle", "entry": [7]}, "entry[0]"),
        (bundle({"resourceType": "Condition", "code": {"coding": "C50"}}), "entry[0].resource.code.coding"),
        ({"entry": []}, "resourceType"),
    ],
)
def test_malformed_structure_names_the_field(data, field):
    with pytest.raises(FhirInputError) as err:
        map_fhir(data, KB, CODES)
    assert err.value.field == field


@pytest.mark.parametrize("patient", PATIENTS, ids=lambda p: p.name)
def test_a_patient_round_trips_through_a_questionnaire_response(patient):
    inputs = load_patient(patient, KB)
    qr = questionnaire_response(KB, CODES, inputs, "Patient/p1", "q1")
    assert facts(qr).facts == inputs


def test_codes_naming_an_unknown_fact_are_refused_with_the_line(tmp_path):
    copy = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), copy)
    path = copy / "codes.yaml"
    path.write_text(path.read_text().replace("- fact: unable_to_walk", "- fact: unable_to_wak"))
    with pytest.raises(KnowledgeBaseError) as err:
        load_codes(load(copy))
    (problem,) = err.value.problems
    assert problem.line is not None and "unable_to_walk" in str(problem)


# ---- out ---------------------------------------------------------------------------------------------------
def _validate(resource: dict) -> None:
    kind = resource["resourceType"]
    module = importlib.import_module(f"fhir.resources.R4B.{kind.lower()}")
    getattr(module, kind).model_validate(resource)


def test_every_exported_resource_validates_as_fhir():
    files = export_all(KB, CODES)
    kinds = sorted({r["resourceType"] for r in files.values()})
    assert kinds == ["ActivityDefinition", "Library", "PlanDefinition", "Questionnaire"]
    for resource in files.values():
        _validate(resource)


@pytest.mark.parametrize(
    "defect",
    [
        lambda q: q.pop("status"),  # required
        lambda q: q.update(id="lumbar mass"),  # not a FHIR id
        lambda q: q["item"][0]["item"][0].pop("linkId"),  # required in an item
        lambda q: q["item"][1]["item"][1]["enableWhen"][0].pop("answerBoolean"),  # enableWhen needs its answer
    ],
)
def test_the_validator_catches_seeded_defects(defect):
    broken = copy.deepcopy(questionnaire(KB, CODES))
    defect(broken)
    with pytest.raises(ValueError):
        _validate(broken)


def test_the_questionnaire_asks_alarm_questions_first_and_hides_the_primary_site_until_a_history():
    for audience, attr in (("clinician", "question"), ("patient", "patient_question")):
        q = questionnaire(KB, CODES, audience)
        alarm, further = q["item"]
        assert [i["linkId"] for i in alarm["item"]] == [f.name for f in KB.input_facts if f.alarm]
        assert [i["linkId"] for i in further["item"]] == [f.name for f in KB.input_facts if not f.alarm]
        items = {i["linkId"]: i for g in q["item"] for i in g["item"]}
        assert all(items[f.name]["text"] == getattr(f, attr) for f in KB.input_facts)
        assert items["primary_cancer"]["enableWhen"] == [
            {"question": "cancer_history", "operator": "=", "answerBoolean": True}
        ]


def test_the_plan_definition_has_every_rule_with_its_timing_and_citations():
    files = export_all(KB, CODES)
    plan = files[f"PlanDefinition-{KB.name.replace('_', '-')}.json"]
    actions = {a["id"]: a for section in plan["action"] for a in section["action"]}
    assert sorted(actions) == sorted(r.id for r in KB.rules)
    assert [a["label"] for a in plan["relatedArtifact"]] == [f"[{n}]" for n in sorted(KB.references)]
    for rule in KB.rules:
        timed = [c for c in rule.then if getattr(c, "within_hours", None) is not None]
        subs = [s for s in actions[rule.id]["action"] if "timingTiming" in s]
        assert [s["timingTiming"]["repeat"]["boundsDuration"]["value"] for s in subs] == [c.within_hours for c in timed]
        cited = [d["label"] for d in actions[rule.id].get("documentation", []) if d["type"] == "citation"]
        assert cited == [f"[{n}]" for n in rule.cites]


def test_export_fhir_writes_the_files(tmp_path, capsys):
    assert main(["export", "fhir", "-o", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(export_all(KB, CODES))
    for path in tmp_path.iterdir():
        _validate(json.loads(path.read_text()))


# ---- the command line reads FHIR patient files ----------------------------------------------------------------
def test_evaluate_and_cohort_accept_a_questionnaire_response_and_a_bundle(tmp_path, capsys):
    yaml_patient = default_kb_dir() / "patients" / "01-cauda-equina.yaml"
    inputs = load_patient(yaml_patient, KB)
    qr = tmp_path / "qr.json"
    qr.write_text(json.dumps(questionnaire_response(KB, CODES, inputs, "Patient/p1", "q1")))
    bundled = tmp_path / "bundle.json"
    bundled.write_text(json.dumps(bundle(questionnaire_response(KB, CODES, inputs, "Patient/p1", "q1"))))
    assert main(["evaluate", str(yaml_patient), "--format", "json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    for path in (qr, bundled):
        assert main(["evaluate", str(path), "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out) == expected
    assert main(["cohort", str(qr), str(bundled), "--format", "csv", "--jobs", "1", "--quiet"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["urgency"] for r in rows] == [expected["urgency"]] * 2
    for row in rows:
        assert [(a["code"], a["within_hours"]) for a in json.loads(row["actions"])] == [
            (a["code"], a["within_hours"]) for a in expected["actions"]
        ]


def test_a_fhir_file_of_the_wrong_kind_is_bad_input(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"resourceType": "Patient", "id": "x"}))
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "p.json" in err and "Bundle or a QuestionnaireResponse" in err
    path.write_text(
        json.dumps({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Condition", "code": 5}}]})
    )
    assert main(["evaluate", str(path)]) == 2
    assert "entry[0].resource.code" in capsys.readouterr().err


def test_every_canonical_the_plan_and_the_cards_point_at_is_exported():
    files = export_all(KB, CODES)
    urls = {r["url"] for r in files.values()}
    plan = next(r for r in files.values() if r["resourceType"] == "PlanDefinition")
    pointed = {
        s["definitionCanonical"]
        for section in plan["action"]
        for rule in section["action"]
        for s in rule["action"]
        if "definitionCanonical" in s
    }
    assert pointed and pointed <= urls
    assert {CODES.url("ActivityDefinition", code) for code in KB.catalog["action"]} <= urls


def test_records_that_contradict_a_relation_are_both_left_unknown():
    """The vocabulary's relations (a confirmed compression cannot be "not suspected") hold for FHIR input too:
    both answers become conflicts to ask about, and the patient is still evaluated."""
    relation = next(r for r in KB.relations if r.id == "confirmed_compression_was_suspected")
    qr = questionnaire_response(
        KB,
        CODES,
        {"cord_compression_confirmed": True, "suspected_cord_compression": False, "leg_weakness": True},
        "Patient/p1",
        "q1",
    )
    m = facts(qr)
    assert m.facts == {"leg_weakness": True}
    assert set(m.conflicts) == {"cord_compression_confirmed", "suspected_cord_compression"}
    assert relation.because.strip() in m.conflicts["suspected_cord_compression"][1]
