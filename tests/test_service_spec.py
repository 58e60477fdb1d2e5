"""Contract tests written from the CDS Hooks 2.0 specification: its own example requests (the "Calling a CDS
Service" example and the R4 examples of the patient-view, order-select and order-sign hooks, rendered here with
the spec's ids and shapes), prefetch as the spec reads it (null, left out, an OperationOutcome), and the orders a
real EHR sends (a lumbar X-ray coded in CPT, LOINC or SNOMED CT, and one coded in nothing the service knows).

Each expectation is the spec's wording or the guideline's: a red flag (cauda equina syndrome) is an emergency,
so any lumbar X-ray for that patient gets the critical card whichever code system names it.
"""

from __future__ import annotations

import copy

import jsonschema
import pytest
from fastapi.testclient import TestClient

from lumbar_kb.clinic.service.app import create_app
from lumbar_kb.clinic.service.cds import PREFETCH
from lumbar_kb.clinic.service.state import Settings

from .test_service import KB, _schema, problem_ok
from .test_service_fhirclient import CAUDA_EQUINA, Fhir

NEEDED = ("conditions", "observations", "questionnaireResponses")
PATIENT = "1288992"  # the spec's examples' patient
CAUDA = {**CAUDA_EQUINA, "subject": {"reference": f"Patient/{PATIENT}"}}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spec")
    return TestClient(create_app(Settings(db=folder / "s.sqlite3", insecure_dev=True)))


def nulls() -> dict:
    """The prefetch of a record with no data for any of the service's templates: each key null (spec)."""
    return dict.fromkeys(PREFETCH)


# ---- the spec's example requests ---------------------------------------------------------------------------------
def spec_call_example() -> dict:
    """The "Calling a CDS Service" example: patient-view with fhirAuthorization and a prefetch of its own key."""
    return {
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": "http://hooks.smarthealthit.org:9080",
        "hook": "patient-view",
        "fhirAuthorization": {
            "access_token": "some-opaque-fhir-access-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Patient.read user/Observation.read",
            "subject": "cds-service4",
        },
        "context": {"userId": "Practitioner/example", "patientId": PATIENT, "encounterId": "89284"},
        "prefetch": {
            "patientToGreet": {"resourceType": "Patient", "gender": "male", "birthDate": "1925-12-23", "id": PATIENT}
        },
    }


def draft_orders() -> dict:
    """The R4 examples' draftOrders: a NutritionOrder and a MedicationRequest (neither is imaging)."""
    return {
        "resourceType": "Bundle",
        "entry": [
            {
                "resource": {
                    "resourceType": "NutritionOrder",
                    "id": "pureeddiet-simple",
                    "status": "draft",
                    "patient": {"reference": f"Patient/{PATIENT}"},
                    "oralDiet": {"type": [{"coding": [{"system": "http://snomed.info/sct", "code": "226211001"}]}]},
                }
            },
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "smart-MedicationRequest-103",
                    "status": "draft",
                    "intent": "order",
                    "subject": {"reference": f"Patient/{PATIENT}"},
                    "medicationCodeableConcept": {
                        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "617993"}]
                    },
                }
            },
        ],
    }


def order_example(hook: str) -> dict:
    context = {"userId": "PractitionerRole/123", "patientId": PATIENT, "encounterId": "89284"}
    if hook == "order-select":
        context["selections"] = ["NutritionOrder/pureeddiet-simple", "MedicationRequest/smart-MedicationRequest-103"]
    context["draftOrders"] = draft_orders()
    return {"hook": hook, "hookInstance": "b3a2ae5c-6a0a-4f77-9d14-4d9a2c3e0c11", "context": context}


def check_cards(client, response) -> list[dict]:
    """A 200 whose body is the spec's response and the served schema's, with the spec's MUSTs on each card."""
    assert response.status_code == 200, response.text
    data = response.json()
    jsonschema.validate(data, _schema(client, "/cds-services/{service_id}", "post", "200"))
    for card in data["cards"]:
        assert len(card["summary"]) < 140  # "<140-character summary"
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"]
        assert ("suggestions" in card) == ("selectionBehavior" in card)  # MUST when suggestions are present
        assert all(reason["display"] for reason in card.get("overrideReasons", []))  # MUST populate display
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                assert action["type"] in ("create", "update", "delete") and action["description"]
                if action["type"] == "delete":
                    assert isinstance(action["resourceId"], str) and "/" in action["resourceId"]
                if action["type"] == "create":
                    assert action["resource"]["resourceType"]
        for link in card.get("links", []):
            assert link["type"] in ("absolute", "smart") and link["url"].startswith("http")
    return data["cards"]


def test_the_spec_call_example_with_null_prefetch_is_answered(client):
    body = spec_call_example()
    body["prefetch"].update(nulls())
    assert check_cards(client, client.post("/cds-services/lumbar-mass-patient-view", json=body)) == []
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": CAUDA}]}
    (card,) = check_cards(client, client.post("/cds-services/lumbar-mass-patient-view", json=body))
    assert card["indicator"] == "critical"


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_the_spec_order_examples_with_null_prefetch_are_answered(client, hook):
    body = order_example(hook)
    body["prefetch"] = nulls()
    # neither order is imaging of the spine and the record holds nothing: no card, never a 412
    assert check_cards(client, client.post(f"/cds-services/lumbar-mass-{hook}", json=body)) == []


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_the_spec_order_examples_with_a_lumbar_xray_for_cauda_equina_get_the_critical_card(client, hook):
    body = order_example(hook)
    body["prefetch"] = {**nulls(), "conditions": {"resourceType": "Bundle", "entry": [{"resource": CAUDA}]}}
    body["context"]["draftOrders"]["entry"].append({"resource": xray("http://loinc.org", "24970-6")})
    if hook == "order-select":
        body["context"]["selections"].append("ServiceRequest/xr1")
    (card,) = check_cards(client, client.post(f"/cds-services/lumbar-mass-{hook}", json=body))
    assert card["indicator"] == "critical"


# ---- prefetch as the spec says ------------------------------------------------------------------------------------
def red_flag_call(**prefetch) -> dict:
    body = {
        "hook": "patient-view",
        "hookInstance": "0f6d9c1e-63c4-4a55-8d5c-1f8f1f2b9a77",
        "context": {"userId": "Practitioner/example", "patientId": PATIENT},
        "prefetch": {**nulls(), "conditions": {"resourceType": "Bundle", "entry": [{"resource": CAUDA}]}},
    }
    body["prefetch"].update(prefetch)
    body["prefetch"] = {k: v for k, v in body["prefetch"].items() if v != "leave out"}
    return body


OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "timeout", "diagnostics": "the prefetch query timed out"}],
}


def test_a_null_prefetch_key_is_read_as_no_data(client):
    (card,) = check_cards(client, client.post("/cds-services/lumbar-mass-patient-view", json=red_flag_call()))
    assert card["indicator"] == "critical"


@pytest.mark.parametrize(
    "value",
    [
        "leave out",
        OUTCOME,
        {"resourceType": "Bundle", "entry": [{"resource": OUTCOME, "search": {"mode": "outcome"}}]},
    ],
    ids=["left-out", "operation-outcome", "bundle-with-error-outcome"],
)
def test_a_missing_or_failed_prefetch_without_fhir_server_is_412_never_no_data(client, value):
    response = client.post("/cds-services/lumbar-mass-patient-view", json=red_flag_call(observations=value))
    problem_ok(response, 412, "prefetch.observations")


def test_a_warning_outcome_in_a_bundle_is_not_a_failure(client):
    warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "informational"}]}
    prefetch = {"resourceType": "Bundle", "entry": [{"resource": warning, "search": {"mode": "outcome"}}]}
    response = client.post("/cds-services/lumbar-mass-patient-view", json=red_flag_call(observations=prefetch))
    (card,) = check_cards(client, response)
    assert card["indicator"] == "critical"


def test_a_failed_prefetch_is_fetched_from_the_fhir_server(client):
    server = Fhir()
    try:
        body = red_flag_call(conditions=OUTCOME)
        body["fhirServer"] = server.base
        server.routes["Condition"] = lambda h: h.json({"resourceType": "Bundle", "entry": [{"resource": CAUDA}]})
        (card,) = check_cards(client, client.post("/cds-services/lumbar-mass-patient-view", json=body))
        assert card["indicator"] == "critical"
        assert [path for path, _ in server.seen] == [f"/fhir/Condition?patient={PATIENT}"]  # only what failed
    finally:
        server.close()


# ---- orders a real EHR sends ----------------------------------------------------------------------------------------
def xray(system: str, code: str, text: str | None = None, rid: str = "xr1") -> dict:
    concept: dict = {"coding": [{"system": system, "code": code}]}
    if text:
        concept["text"] = text
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "code": concept,
    }


def sign(client, *orders) -> list[dict]:
    body = {
        "hook": "order-sign",
        "hookInstance": "7c1d1a0e-3f55-4a62-9f0b-0c6f0a9e5d21",
        "context": {
            "userId": "Practitioner/example",
            "patientId": PATIENT,
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": o} for o in orders]},
        },
        "prefetch": {**nulls(), "conditions": {"resourceType": "Bundle", "entry": [{"resource": CAUDA}]}},
    }
    return check_cards(client, client.post("/cds-services/lumbar-mass-order-sign", json=body))


@pytest.mark.parametrize(
    ("system", "code"),
    [
        ("http://www.ama-assn.org/go/cpt", "72100"),
        ("http://loinc.org", "24970-6"),
        ("http://loinc.org", "24972-2"),
        ("http://snomed.info/sct", "840361000"),
        ("http://www.radlex.org", "RPID2652"),
    ],
    ids=["cpt", "loinc-ap-lateral", "loinc-views", "snomed", "radlex"],
)
def test_a_lumbar_xray_for_a_cauda_equina_patient_gets_the_critical_card_in_any_code_system(client, system, code):
    (card,) = sign(client, xray(system, code))
    assert card["indicator"] == "critical"
    delete, create = card["suggestions"][0]["actions"]
    assert delete == {"type": "delete", "description": delete["description"], "resourceId": "ServiceRequest/xr1"}
    codings = create["resource"]["code"]["coding"]
    assert codings[0]["code"] == "mri_whole_spine"
    # the suggested order carries a standard code beside the knowledge base's own
    assert any(c["system"] == "http://snomed.info/sct" for c in codings[1:])


def test_a_spine_imaging_order_the_service_cannot_classify_gets_a_card_saying_so(client):
    local = xray("http://hospital.example.org/orderables", "RAD-4711", text="XR L-spine 2 views")
    (card,) = sign(client, local)
    assert card["indicator"] == "critical"  # the patient's urgency: never silence for a red-flag patient
    assert "cannot classify" in card["summary"]
    creates = [a for s in card["suggestions"] for a in s["actions"]]
    assert all(a["type"] == "create" for a in creates)  # the draft is not deleted: it may be the right study
    by_site = xray("http://hospital.example.org/orderables", "RAD-9")
    by_site["category"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "363679005"}]}]
    by_site["bodySite"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "122496007"}]}]
    (card,) = sign(client, by_site)
    assert "cannot classify" in card["summary"]


def test_an_order_that_is_not_spine_imaging_gets_no_card(client):
    lab = xray("http://loinc.org", "58410-2", text="CBC panel - Blood by Automated count", rid="lab1")
    assert sign(client, lab) == []


def test_for_a_patient_not_on_the_pathway_an_unclassified_order_is_as_silent_as_a_classified_one(client):
    """Nothing in the record about a lumbar mass: neither a known nor an unknown X-ray code gets a card."""
    for order in (xray("http://loinc.org", "24970-6"), xray("urn:local", "RAD-1", text="XR L-spine 2 views")):
        body = {
            "hook": "order-sign",
            "hookInstance": "5d8c2a47-2b1c-4b7e-8a34-2f3f6d9b0e18",
            "context": {
                "userId": "Practitioner/example",
                "patientId": PATIENT,
                "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": order}]},
            },
            "prefetch": nulls(),
        }
        assert check_cards(client, client.post("/cds-services/lumbar-mass-order-sign", json=body)) == []


def test_a_suggested_lumbar_xray_carries_cpt_loinc_and_snomed_codes(client):
    no = {
        f.name: False
        for f in KB.input_facts
        if f.alarm or f.name in ("cancer_history", "severe_back_pain", "night_pain", "radiating_pain")
    }
    facts = {**no, "palpable_mass": True}
    from lumbar_kb.clinic.fhir.codes import load_codes
    from lumbar_kb.clinic.fhir.export import questionnaire_response

    qr = questionnaire_response(KB, load_codes(KB), facts, f"Patient/{PATIENT}", "q1")
    body = red_flag_call(
        conditions=None, questionnaireResponses={"resourceType": "Bundle", "entry": [{"resource": qr}]}
    )
    (card,) = check_cards(client, client.post("/cds-services/lumbar-mass-patient-view", json=copy.deepcopy(body)))
    requests = [a["resource"] for s in card["suggestions"] for a in s["actions"] if a["type"] == "create"]
    (xr,) = [r for r in requests if r["code"]["coding"][0]["code"] == "xray_lumbar"]
    systems = [c["system"] for c in xr["code"]["coding"]]
    assert {"http://www.ama-assn.org/go/cpt", "http://loinc.org", "http://snomed.info/sct"} <= set(systems)
    assert len(systems) == len(set(systems))  # one code per system: one CodeableConcept says one thing


def test_the_conformance_table_names_tests_that_exist():
    """docs/clinic-cds-hooks-conformance.md: every `tests/file.py::test_name` it cites is a test of that file."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "clinic-cds-hooks-conformance.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`(tests/test_[a-z_]+\.py)::(test_[a-z0-9_]+)`", text))
    assert len(cited) >= 40
    for path, name in sorted(cited):
        source = (root / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} is cited but does not exist"
