"""The CDS Hooks 2.0 service: discovery, cards equal to `evaluate`, problems for bad input, 412, fetching from a
real FHIR server on 127.0.0.1, feedback and override rates, JWT security, order-select, the OpenAPI contract,
and a real uvicorn started and stopped by the test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import jsonschema
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumbar_kb.clinic.fhir.codes import load_codes
from lumbar_kb.clinic.fhir.export import questionnaire_response
from lumbar_kb.clinic.service.app import create_app
from lumbar_kb.clinic.service.state import Settings
from lumbar_kb.clinic.service.store import override_rates
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.engine.patient import load_patient
from lumbar_kb.main import main

from .servers import serving

KB = load()
CODES = load_codes(KB)
PATIENTS = sorted((default_kb_dir() / "patients").iterdir())
SERVICE = "/cds-services/lumbar-mass-patient-view"
ISS = "https://ehr.test.invalid"
AUD = "https://testserver/cds-services"


# ---- fixtures -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def secure(tmp_path_factory, keys):
    """An app that checks tokens: the test issuer's public key in the trust file."""
    folder = tmp_path_factory.mktemp("secure")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    trust = folder / "trust.json"
    trust.write_text(json.dumps({"issuers": {ISS: {"jwks": {"keys": [jwk]}}}}))
    app = create_app(Settings(db=folder / "service.sqlite3", trust=trust, public_url="https://testserver"))
    return TestClient(app, base_url="https://testserver"), folder / "service.sqlite3"


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dev")
    return TestClient(
        create_app(Settings(db=folder / "service.sqlite3", insecure_dev=True))
    ), folder / "service.sqlite3"


def token(keys, **override) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "exp": now + 300, "iat": now, "jti": uuid.uuid4().hex}
    claims.update(override)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, keys, algorithm="RS256", headers={"kid": "k1", "typ": "JWT"})


def auth(keys, **override) -> dict:
    return {"Authorization": f"Bearer {token(keys, **override)}"}


def empty_bundle() -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": []}


def hook_body(facts: dict | None = None, hook="patient-view", **extra) -> dict:
    qr = empty_bundle()
    if facts is not None:
        qr["entry"] = [{"resource": questionnaire_response(KB, CODES, facts, "Patient/p1", "q1")}]
    body = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/u1", "patientId": "p1"},
        "prefetch": {"conditions": empty_bundle(), "observations": empty_bundle(), "questionnaireResponses": qr},
    }
    body.update(extra)
    return body


def observation(rid: str, fact: str, value: bool) -> dict:
    """A Bundle entry: a final Observation coded with the knowledge base's own code for the yes/no `fact`."""
    resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": CODES.kb_system, "code": fact}]},
        "valueBoolean": value,
    }
    return {"resource": resource}


def order(code: str, system="http://www.ama-assn.org/go/cpt", rid="draft1") -> dict:
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]},
    }


def order_body(facts: dict, *orders: dict, hook="order-select") -> dict:
    body = hook_body(facts, hook=hook)
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": o} for o in orders],
    }
    if hook == "order-select":
        body["context"]["selections"] = [f"ServiceRequest/{o['id']}" for o in orders]
    return body


def problem_ok(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    data = response.json()
    assert data["status"] == status and data["detail"] and "Traceback" not in response.text
    if field is not None:
        assert data.get("field") == field, data
    return data


# ---- discovery and cards ------------------------------------------------------------------------------------
def test_discovery_lists_the_three_hooks_with_prefetch(dev):
    client, _ = dev
    services = client.get("/cds-services").json()["services"]
    assert sorted(s["hook"] for s in services) == ["order-select", "order-sign", "patient-view"]
    for s in services:
        assert s["prefetch"]["conditions"] == "Condition?patient={{context.patientId}}"
        assert set(s) >= {"hook", "description", "id", "prefetch"}


@pytest.mark.parametrize("patient", PATIENTS, ids=lambda p: p.name)
def test_cards_for_the_bundled_patients_equal_evaluate(dev, patient, capsys):
    client, _ = dev
    assert main(["evaluate", str(patient), "--format", "json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(patient)]) == 0
    report = capsys.readouterr().out
    response = client.post(SERVICE, json=hook_body(load_patient(patient, KB)))
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    ranks = sorted(e.rank for e in KB.catalog["urgency"].values())
    rank = KB.urgency_rank(expected["urgency"])
    alarm_missing = any(q["alarm"] for q in expected["unanswered"])
    want = "critical" if rank == ranks[-1] else "info" if rank == ranks[0] and not alarm_missing else "warning"
    assert card["indicator"] == want
    assert len(card["summary"]) <= 140
    label = KB.catalog["urgency"][expected["urgency"]].label
    assert card["summary"].startswith(label) or card["summary"].startswith("INCOMPLETE")
    pending = [a for a in expected["actions"] if not a["done"]]
    requests = [s["actions"][-1]["resource"] for s in card.get("suggestions", [])]
    assert [r["code"]["coding"][0]["code"] for r in requests] == [a["code"] for a in pending]
    for request, action in zip(requests, pending, strict=True):
        bounds = request.get("occurrenceTiming", {}).get("repeat", {}).get("boundsDuration", {}).get("value")
        assert bounds == action["within_hours"]
        assert (action["window"] or "") in request["note"][0]["text"]
    for action in expected["actions"]:
        assert action["label"] in card["detail"]
    for warning in expected["warnings"]:
        assert warning["text"] in card["detail"]
    explained = client.get(card["links"][0]["url"].removeprefix("http://testserver"))
    assert explained.status_code == 200 and explained.text.startswith(report)


def test_card_uuids_are_random_and_never_replace_another_patients_card(dev):
    """Patient B sent with A's hookInstance gets a card of its own: A's explanation still shows A's record."""
    client, _ = dev
    a = hook_body({"leg_weakness": True})
    (card_a,) = client.post(SERVICE, json=a).json()["cards"]
    again = client.post(SERVICE, json=a).json()["cards"][0]["uuid"]
    assert again != card_a["uuid"]  # the same call twice: two cards, two rows
    b = hook_body({"cancer_history": True, "palpable_mass": True})
    b["hookInstance"] = a["hookInstance"]
    b["prefetch"]["observations"]["entry"] = [
        observation("patient-b-record", "palpable_mass", True),
    ]
    (card_b,) = client.post(SERVICE, json=b).json()["cards"]
    assert card_b["uuid"] != card_a["uuid"]
    explained = client.get(card_a["links"][0]["url"].removeprefix("http://testserver"))
    assert explained.status_code == 200
    assert "patient-b-record" not in explained.text and "leg_weakness" in explained.text
    assert uuid.UUID(card_a["uuid"]).version == 4


def test_nothing_known_means_no_cards_and_no_nulls_anywhere(dev):
    client, _ = dev
    assert client.post(SERVICE, json=hook_body(None)).json() == {"cards": []}
    text = client.post(SERVICE, json=hook_body({"palpable_mass": True})).text
    assert "null" not in text


def test_unanswered_alarm_questions_are_never_shown_as_routine(dev):
    """A patient with only non-alarm answers, at the lowest urgency: the card asks, it does not reassure."""
    client, _ = dev
    lowest = min(KB.catalog["urgency"].values(), key=lambda e: e.rank)
    (card,) = client.post(SERVICE, json=hook_body({"cancer_history": False})).json()["cards"]
    result = json.loads(client.post("/api/evaluate", json={"answers": {"cancer_history": False}}).text)
    if result["urgency"] == lowest.code:
        assert card["indicator"] == "warning" and card["summary"].startswith("INCOMPLETE")
    assert "Is there decreased strength in the legs?" in card["detail"]


def test_conflicting_records_are_listed_as_questions(dev):
    client, _ = dev
    body = hook_body({"leg_weakness": True})
    body["prefetch"]["observations"]["entry"] = [
        observation("o1", "leg_weakness", False),
    ]
    (card,) = client.post(SERVICE, json=body).json()["cards"]
    assert "Conflicting records" in card["detail"] and "Is there decreased strength in the legs?" in card["detail"]


# ---- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("hookInstance"), "hookInstance"),
        (lambda b: b.update(hook="order-sign"), "hook"),
        (lambda b: b["context"].pop("patientId"), "context.patientId"),
        (lambda b: b.update(context=[]), "context"),
        (lambda b: b["prefetch"].update(conditions=[1]), "prefetch.conditions[0]"),
        (
            lambda b: b["prefetch"].update(conditions={"resourceType": "Bundle", "entry": "x"}),
            "prefetch.conditions.entry",
        ),
        (lambda b: b.update(fhirServer="ftp://x"), "fhirServer"),
        (
            lambda b: b["prefetch"].update(
                observations={
                    "resourceType": "Bundle",
                    "entry": [{"resource": {"resourceType": "Observation", "status": "final", "code": "x"}}],
                }
            ),
            "prefetch.observations.entry[0].resource.code",
        ),
    ],
)
def test_bad_requests_are_400_problems_naming_the_field(dev, mutate, field):
    client, _ = dev
    body = hook_body({"leg_weakness": True})
    mutate(body)
    problem_ok(client.post(SERVICE, json=body), 400, field)


def test_not_json_unknown_service_and_too_large(dev):
    client, _ = dev
    problem_ok(client.post(SERVICE, content=b"{nope", headers={"content-type": "application/json"}), 400, "body")
    problem_ok(client.post("/cds-services/nope", json=hook_body({})), 404, "service_id")
    problem_ok(client.post(SERVICE, content=b" " * 2_000_000, headers={"content-type": "application/json"}), 413)
    deep = b"[" * 100_000 + b"]" * 100_000  # nesting deeper than the JSON parser recurses
    problem_ok(client.post(SERVICE, content=deep, headers={"content-type": "application/json"}), 400, "body")
    # a body that is not sent as JSON is 415, naming what is read (it was a 400 "should be a valid dictionary")
    text = json.dumps(hook_body(RED_FLAG)).encode()
    for media in ("text/plain", "application/xml", "application/x-www-form-urlencoded", None):
        headers = {"content-type": media} if media else {}
        assert "application/json" in problem_ok(client.post(SERVICE, content=text, headers=headers), 415)["detail"]
    fhir_json = client.post(SERVICE, content=text, headers={"content-type": "application/fhir+json; charset=utf-8"})
    assert fhir_json.status_code == 200


def test_missing_prefetch_without_a_fhir_server_is_412(dev):
    client, _ = dev
    body = hook_body({"leg_weakness": True})
    del body["prefetch"]["conditions"]
    problem_ok(client.post(SERVICE, json=body), 412, "prefetch.conditions")


def test_an_internal_error_is_a_500_without_internals(dev, monkeypatch):
    client, _ = dev
    state = client.app.state.lumbar

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(state.evaluator, "evaluate", broken)
    app_client = TestClient(client.app, raise_server_exceptions=False)
    response = app_client.post(SERVICE, json=hook_body({"leg_weakness": True}))
    data = problem_ok(response, 500)
    assert "secret" not in response.text and "RuntimeError" not in response.text and data["incident"]


# ---- fetching from the FHIR server ---------------------------------------------------------------------------
class _Fhir(BaseHTTPRequestHandler):
    seen: list = []
    bundles: dict = {}

    def do_GET(self):
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        kind = self.path.lstrip("/").split("?")[0]
        body = json.dumps(type(self).bundles.get(kind, empty_bundle())).encode()
        self.send_response(200 if kind != "Broken" else 500)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fhir_server():
    _Fhir.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fhir)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # shutdown in 0.05 s, not 0.5
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Fhir
    server.shutdown()
    server.server_close()


def test_missing_prefetch_is_fetched_from_the_fhir_server_with_the_token(dev, fhir_server):
    client, _ = dev
    url, handler = fhir_server
    handler.bundles = {
        "Condition": {
            "resourceType": "Bundle",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Condition",
                        "id": "c1",
                        "clinicalStatus": {"coding": [{"code": "active"}]},
                        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G83.4"}]},
                        "subject": {"reference": "Patient/p1"},
                    }
                }
            ],
        }
    }
    body = hook_body(None)
    body["prefetch"] = {}
    body["fhirServer"] = url
    body["fhirAuthorization"] = {
        "access_token": "tok-123",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds",
    }
    (card,) = client.post(SERVICE, json=body).json()["cards"]
    assert card["indicator"] == "critical"  # cauda equina syndrome: suspected compression
    assert ("/Condition?patient=p1", "Bearer tok-123") in handler.seen
    assert len(handler.seen) == 3


def test_an_unreachable_fhir_server_is_412(dev):
    client, _ = dev
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    body = hook_body(None)
    body["prefetch"] = {}
    body["fhirServer"] = f"http://127.0.0.1:{port}"
    problem_ok(client.post(SERVICE, json=body), 412, "prefetch.conditions")


# ---- order-select / order-sign --------------------------------------------------------------------------------
RED_FLAG = {"leg_weakness": True}


def test_a_radiograph_for_a_red_flag_patient_is_replaced_by_a_whole_spine_mri(dev):
    client, _ = dev
    result = client.post("/api/evaluate", json={"answers": RED_FLAG}).json()
    mri = next(a for a in result["actions"] if a["label"] == KB.catalog["action"]["mri_whole_spine"].label)
    for hook in ("order-select", "order-sign"):
        (card,) = client.post(
            f"/cds-services/lumbar-mass-{hook}", json=order_body(RED_FLAG, order("72100"), hook=hook)
        ).json()["cards"]
        assert card["indicator"] == "critical"
        (suggestion, *_) = card["suggestions"]
        delete, create = suggestion["actions"]
        assert delete == {
            "type": "delete",
            "description": delete["description"],
            "resourceId": "ServiceRequest/draft1",  # spec 2.0: a string (a relative reference)
        }
        assert create["resource"]["code"]["coding"][0]["code"] == "mri_whole_spine"
        assert mri["window"] in create["resource"]["note"][0]["text"]


def test_a_ct_for_a_red_flag_patient_too_but_an_mri_that_is_needed_gets_no_replacement(dev):
    client, _ = dev
    (card,) = client.post("/cds-services/lumbar-mass-order-select", json=order_body(RED_FLAG, order("72131"))).json()[
        "cards"
    ]
    assert card["indicator"] == "critical"
    whole_spine = order("mri_whole_spine", system=CODES.order_system)
    cards = client.post("/cds-services/lumbar-mass-order-select", json=order_body(RED_FLAG, whole_spine)).json()[
        "cards"
    ]
    assert all("suggestions" not in c for c in cards)


def test_a_biopsy_before_the_specialist_gets_a_warning_with_a_referral(dev):
    client, _ = dev
    body = order_body({"palpable_mass": True, "imaging_shows_mass": True}, order("21925"))
    (card,) = client.post("/cds-services/lumbar-mass-order-select", json=body).json()["cards"]
    assert card["indicator"] == "warning"
    create = card["suggestions"][0]["actions"][-1]
    assert create["resource"]["code"]["coding"][0]["code"] == "specialist_referral"
    assert KB.catalog["action"]["specialist_referral"].text in card["detail"]


def test_an_unrecognised_order_says_nothing_and_a_bad_bundle_is_400(dev):
    client, _ = dev
    assert client.post("/cds-services/lumbar-mass-order-select", json=order_body(RED_FLAG, order("99999"))).json() == {
        "cards": []
    }
    body = order_body(RED_FLAG, order("72100"))
    body["context"]["draftOrders"] = {"resourceType": "Patient"}
    problem_ok(client.post("/cds-services/lumbar-mass-order-select", json=body), 400, "context.draftOrders")


# ---- feedback --------------------------------------------------------------------------------------------------
def test_feedback_is_stored_and_gives_override_rates_per_rule(tmp_path):
    client = TestClient(create_app(Settings(db=tmp_path / "s.sqlite3", insecure_dev=True)))
    cards = [client.post(SERVICE, json=hook_body(RED_FLAG)).json()["cards"][0] for _ in range(3)]
    fired = client.post("/api/evaluate", json={"answers": RED_FLAG}).json()["why"]
    outcomes = ["overridden", "accepted", "overridden"]
    for card, outcome in zip(cards, outcomes, strict=True):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        item = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": now}
        if outcome == "accepted":
            item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
        if outcome == "overridden":
            item["overrideReason"] = {"reason": card["overrideReasons"][2], "userComment": "seen yesterday"}
        response = client.post(f"{SERVICE}/feedback", json={"feedback": [item]})
        assert response.status_code == 200, response.text
    rates = override_rates(tmp_path / "s.sqlite3")
    assert len(rates) == len(fired)
    for entry in rates.values():
        assert (entry["cards"], entry["accepted"], entry["overridden"]) == (3, 1, 2)
        assert entry["override_rate"] == pytest.approx(2 / 3)
        assert entry["reasons"] == {"Clinical judgement differs": 2}
    unknown = {"card": "nope", "outcome": "overridden", "outcomeTimestamp": "2026-12-01T12:00:00Z"}
    problem_ok(client.post(f"{SERVICE}/feedback", json={"feedback": [unknown]}), 404, "feedback[0].card")
    problem_ok(
        client.post(f"{SERVICE}/feedback", json={"feedback": [{**unknown, "outcome": "maybe"}]}),
        400,
        "feedback[0].outcome",
    )


# ---- security ---------------------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims() -> dict:
    now = int(time.time())
    return {"iss": ISS, "aud": AUD, "exp": now + 300, "iat": now, "jti": uuid.uuid4().hex}


def test_with_tokens_checked_the_tokenless_questionnaire_page_is_served_only_when_asked_for(secure, keys, tmp_path):
    client, _ = secure
    assert client.get("/").status_code == 404
    assert client.post("/api/evaluate", json={"answers": RED_FLAG}).status_code == 404
    assert "/api/evaluate" not in client.get("/openapi.json").json()["paths"]
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys.public_key()))
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps({"issuers": {ISS: {"jwks": {"keys": [dict(jwk, kid="k1")]}}}}))
    settings = Settings(db=tmp_path / "s.sqlite3", trust=trust, public_url="https://testserver", questionnaire=True)
    opted = TestClient(create_app(settings), base_url="https://testserver")
    assert opted.get("/").status_code == 200
    answer = opted.post("/api/evaluate", json={"answers": RED_FLAG})
    top = max(KB.catalog["urgency"], key=lambda code: KB.catalog["urgency"][code].rank)
    assert answer.status_code == 200 and answer.json()["urgency"] == top
    assert opted.post(SERVICE, json=hook_body(RED_FLAG)).status_code == 401  # the hook calls still need a token


def test_a_valid_token_is_accepted_once(secure, keys):
    client, _ = secure
    headers = auth(keys)
    assert client.get("/cds-services", headers=headers).status_code == 200
    problem_ok(client.get("/cds-services", headers=headers), 401, "Authorization")  # replayed


@pytest.mark.parametrize(
    "make",
    [
        lambda keys: "",  # no token
        lambda keys: token(keys, exp=int(time.time()) - 3600),  # expired
        lambda keys: token(keys, aud="https://someone-else.invalid/cds-services"),  # wrong audience
        lambda keys: token(keys, iss="https://untrusted.invalid"),  # issuer not on the allowlist
        lambda keys: token(keys, jti=None),  # no jti: replay cannot be checked
        lambda keys: token(rsa.generate_private_key(public_exponent=65537, key_size=2048)),  # signed by another key
        lambda keys: _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(_claims()).encode()) + ".",
        lambda keys: _hs256(keys),  # HMAC with the public key as the secret (algorithm confusion)
    ],
    ids=["missing", "expired", "wrong-aud", "untrusted-iss", "no-jti", "other-key", "alg-none", "hs256"],
)
def test_bad_tokens_are_refused(secure, keys, make):
    client, _ = secure
    headers = {"Authorization": f"Bearer {make(keys)}"}
    for response in (
        client.get("/cds-services", headers=headers),
        client.post(SERVICE, json=hook_body(RED_FLAG), headers=headers),
    ):
        problem_ok(response, 401, "Authorization")
        assert response.headers["www-authenticate"] == "Bearer"


def _hs256(keys) -> str:
    from cryptography.hazmat.primitives import serialization

    secret = keys.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = _b64(b'{"alg":"HS256","typ":"JWT","kid":"k1"}') + "." + _b64(json.dumps(_claims()).encode())
    return head + "." + _b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def test_the_hook_call_is_checked_before_its_body(secure, keys):
    client, _ = secure
    problem_ok(client.post(SERVICE, json={"hook": 5}), 401, "Authorization")
    assert (
        client.post(
            SERVICE, json=hook_body(RED_FLAG), headers=auth(keys, aud=f"https://testserver{SERVICE}")
        ).status_code
        == 200
    )


# ---- the contract: every response matches the OpenAPI schema the app serves ---------------------------------------
def _schema(client, path: str, method: str, status: str) -> dict:
    spec = client.get("/openapi.json").json()
    content = spec["paths"][path][method]["responses"][status]["content"]
    ref = next(iter(content.values()))["schema"]
    return {"$ref": ref["$ref"], "components": spec["components"]} if "$ref" in ref else ref


def test_responses_match_the_served_openapi_schema(dev):
    client, _ = dev
    discovery = _schema(client, "/cds-services", "get", "200")
    jsonschema.validate(client.get("/cds-services").json(), discovery)
    cards = _schema(client, "/cds-services/{service_id}", "post", "200")
    for facts in ({}, RED_FLAG, {"palpable_mass": True}, {"cancer_history": True, "primary_cancer": "lung"}):
        jsonschema.validate(client.post(SERVICE, json=hook_body(facts)).json(), cards)
    for o in ("72100", "21925", "72148"):
        jsonschema.validate(
            client.post(
                "/cds-services/lumbar-mass-order-sign", json=order_body(RED_FLAG, order(o), hook="order-sign")
            ).json(),
            cards,
        )
    problem = _schema(client, "/cds-services/{service_id}", "post", "400")
    jsonschema.validate(client.post(SERVICE, json={}).json(), problem)
    page = _schema(client, "/api/evaluate", "post", "200")
    for facts in ({}, RED_FLAG, {"cancer_history": True}):
        for audience in ("clinician", "patient"):
            jsonschema.validate(
                client.post("/api/evaluate", json={"answers": facts, "audience": audience}).json(), page
            )
    bad = client.post("/api/evaluate", json={"answers": {"leg_weakness": "yes"}})
    jsonschema.validate(problem_ok(bad, 400, "answers.leg_weakness"), problem)


def test_the_contract_rejects_a_seeded_defect(dev):
    """The schema is strict enough to catch a null field or a summary over 140 characters."""
    client, _ = dev
    cards = _schema(client, "/cds-services/{service_id}", "post", "200")
    good = client.post(SERVICE, json=hook_body(RED_FLAG)).json()
    for defect in ({"detail": None}, {"summary": "x" * 141}, {"indicator": "hard-stop"}):
        bad = {"cards": [{**good["cards"][0], **defect}]}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, cards)


FACT_VALUES = st.one_of(
    st.none(), st.booleans(), st.sampled_from(["breast", "normal", "abnormal", "yes", ""]), st.integers()
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
JSONISH = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(SCALARS, st.lists(SCALARS, max_size=2)), max_size=3),
    st.lists(
        st.dictionaries(st.sampled_from(["resourceType", "entry", "resource", "code", "status"]), SCALARS), max_size=2
    ),
    st.fixed_dictionaries(
        {"resourceType": st.sampled_from(["Bundle", "Condition", "Observation", "QuestionnaireResponse", "Patient"])},
        optional={
            "entry": st.one_of(SCALARS, st.lists(st.one_of(SCALARS, st.fixed_dictionaries({"resource": SCALARS})))),
            "code": st.one_of(SCALARS, st.fixed_dictionaries({"coding": st.one_of(SCALARS, st.lists(SCALARS))})),
            "item": st.one_of(
                SCALARS, st.lists(st.dictionaries(st.sampled_from(["linkId", "answer", "item"]), SCALARS))
            ),
            "status": SCALARS,
        },
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    answers=st.dictionaries(st.sampled_from([f.name for f in KB.input_facts] + ["nope"]), FACT_VALUES, max_size=6),
    prefetch=st.dictionaries(
        st.sampled_from(["conditions", "observations", "questionnaireResponses"]), JSONISH, max_size=3
    ),
    context=JSONISH,
)
def test_hostile_input_is_never_a_500(dev, answers, prefetch, context):
    client, _ = dev
    cards = _schema(client, "/cds-services/{service_id}", "post", "200")
    response = client.post("/api/evaluate", json={"answers": answers})
    assert response.status_code in (200, 400), response.text
    body = hook_body(None)
    body["prefetch"].update(prefetch)
    if isinstance(context, dict):
        body["context"].update(context)
    response = client.post(SERVICE, json=body)
    assert response.status_code in (200, 400, 412), response.text
    if response.status_code == 200:
        jsonschema.validate(response.json(), cards)
    else:
        assert response.json()["detail"]
    body = order_body(RED_FLAG, order("72100"))
    body["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": context}]}
    if isinstance(context, dict) and "entry" in context:
        body["context"]["draftOrders"] = {**context, "resourceType": "Bundle"}
    response = client.post("/cds-services/lumbar-mass-order-select", json=body)
    assert response.status_code in (200, 400), response.text


# ---- a real server ---------------------------------------------------------------------------------------------
def test_lumbar_kb_serve_runs_a_real_uvicorn_on_loopback(tmp_path):
    with serving(tmp_path) as served:
        base = served.base
        discovery = httpx.get(f"{base}/cds-services")
        assert len(discovery.json()["services"]) == 3
        assert discovery.headers["x-insecure-dev"] == "tokens are not checked"  # every answer says it
        (card,) = httpx.post(f"{base}{SERVICE}", json=hook_body(RED_FLAG)).json()["cards"]
        assert card["indicator"] == "critical"
        assert httpx.get(f"{base}/").headers["content-type"].startswith("text/html")
        # a client's X-Forwarded-Proto is not the scheme (uvicorn would trust it from loopback): the link is http
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        (card,) = httpx.post(f"{base}{SERVICE}", json=hook_body(RED_FLAG), headers=forwarded).json()["cards"]
        assert card["links"][0]["url"].startswith(f"{base}/explanations/"), card["links"]
        # a trailing slash is not redirected to an address built from the Host header (a POST re-sent there)
        slashed = httpx.post(f"{base}{SERVICE}/", json=hook_body(RED_FLAG), headers={"Host": "evil.invalid:666"})
        assert slashed.status_code == 404 and "location" not in slashed.headers
        assert slashed.headers["content-type"] == "application/problem+json"
    assert "INSECURE DEV MODE" in served.stderr
    assert f"POST {SERVICE}" in served.stdout and "203.0.113.9" not in served.stdout  # the access log: the real peer


def test_serve_without_a_trust_file_refuses_to_start(capsys):
    assert main(["serve", "--port", "1"]) == 2
    assert "--insecure-dev" in capsys.readouterr().err


def test_a_browser_based_client_must_be_allowed_by_origin(tmp_path):
    sandbox = "https://sandbox.cds-hooks.org"
    client = TestClient(create_app(Settings(db=tmp_path / "s.sqlite3", insecure_dev=True, cors_origins=[sandbox])))
    preflight = {
        "Origin": sandbox,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = client.options(SERVICE, headers=preflight)
    assert allowed.headers.get("access-control-allow-origin") == sandbox
    other = client.options(SERVICE, headers={**preflight, "Origin": "https://evil.invalid"})
    assert other.headers.get("access-control-allow-origin") is None


def test_contradictory_records_are_a_card_not_an_error(dev):
    client, _ = dev
    body = hook_body({"cord_compression_confirmed": True, "suspected_cord_compression": False})
    response = client.post(SERVICE, json=body)
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert "Conflicting records" in card["detail"]
    assert KB.facts["cord_compression_confirmed"].question in card["detail"]
    # issue 23: the contradiction never drops the alarm: the record is evaluated under its most urgent reading (a
    # diagnosed compression is treated within 24 hours: an emergency), and the card says the answers contradict
    assert card["indicator"] == "critical", card
    assert "Contradictory answers" in card["detail"], card["detail"]
    # the explanation behind the card's link reads the record the same way
    link = next(link for link in card.get("links", []) if "/explanations/" in link["url"])
    url = urlsplit(link["url"])
    explanation = client.get(f"{url.path}?{url.query}")
    assert explanation.status_code == 200 and "EMERGENCY" in explanation.text, explanation.text


def test_contradictory_answers_on_the_page_keep_the_alarm_and_say_why(dev):
    """Issue 23: a contradiction never drops an alarm; the page evaluates the most urgent reading the answers allow
    (a diagnosed compression is treated within 24 hours) and names both answers first."""
    client, _ = dev
    answers = {"cord_compression_confirmed": True, "suspected_cord_compression": False}
    response = client.post("/api/evaluate", json={"answers": answers})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["urgency"] == "emergency"
    assert "Contradictory answers" in data["warnings"][0]["text"]


# ---- whose record it is --------------------------------------------------------------------------------------
def _red_flag_record(subject: str, rid: str = "q1") -> dict:
    return questionnaire_response(KB, CODES, RED_FLAG, subject, rid)


def _explained(client, card) -> str:
    url = urlsplit(next(link["url"] for link in card["links"] if "/explanations/" in link["url"]))
    return client.get(f"{url.path}?{url.query}").text


@pytest.mark.parametrize(
    "subject",
    ["Patient/p1/_history/2", "https://ehr.example.org/fhir/Patient/p1/_history/7", "urn:uuid:5b9e1e8f-patient-p1"],
)
def test_a_patients_own_record_counts_however_its_reference_names_the_patient(dev, subject):
    """A versioned reference, a full URL, or the fullUrl of the Patient's own Bundle entry name this patient:
    the red flag the record holds is an emergency, as with `Patient/p1`."""
    client, _ = dev
    body = hook_body()
    entries = [{"resource": _red_flag_record(subject)}]
    if subject.startswith("urn:"):
        entries.append({"fullUrl": subject, "resource": {"resourceType": "Patient", "id": "p1"}})
    body["prefetch"]["questionnaireResponses"]["entry"] = entries
    (card,) = client.post(SERVICE, json=body).json()["cards"]
    assert card["indicator"] == "critical" and card["summary"].startswith("EMERGENCY"), card
    assert "Records not used" not in card["detail"]


@pytest.mark.parametrize(
    "subject, why",
    [
        ("Patient/p9", "about another patient (Patient/p9)"),
        ("#pat", "its subject (#pat) cannot be matched to this patient"),
        ("urn:uuid:no-such-entry", "its subject (urn:uuid:no-such-entry) cannot be matched to this patient"),
        ("Patient/p1x/_history/1", "about another patient (Patient/p1x)"),
    ],
)
def test_a_record_not_attributed_to_the_patient_is_named_on_a_card_never_silently_dropped(dev, subject, why):
    """A record whose subject is another patient, or cannot be matched to this one, gives this patient no fact;
    when it would have given one, a card (never a reassuring one) tells the clinician to look at it, also when
    nothing else is known, and the explanation lists it."""
    client, _ = dev
    body = hook_body()
    body["prefetch"]["questionnaireResponses"]["entry"] = [{"resource": _red_flag_record(subject, "qr7")}]
    (card,) = client.post(SERVICE, json=body).json()["cards"]
    assert card["indicator"] in ("warning", "critical") and card["indicator"] != "info", card
    plain = card["detail"].replace("\\", "")  # record text is markdown-escaped on a card
    assert "Records not used" in plain and f"QuestionnaireResponse/qr7: {why}" in plain, card["detail"]
    assert f"it records: {KB.facts['leg_weakness'].question} yes" in plain  # the question, not a fact name
    assert not card["summary"].startswith("EMERGENCY")  # the fact is not this patient's: not used
    explained = _explained(client, card)
    assert "Set aside" in explained and f"QuestionnaireResponse/qr7: {why}" in explained, explained


def test_record_text_writes_no_line_of_the_explanation_and_no_control_character_on_a_card(dev):
    """A record's id and subject reference are the sender's text: a newline in them must not make a line of the
    plain-text explanation (a forged "URGENCY: routine"), and no escape, bidi or zero-width character reaches
    the card or the explanation as itself."""
    client, _ = dev
    forged = "x\n\nURGENCY: routine \x1b[2J\x00\u202edecnalab\u202c\u200b"
    body = hook_body(RED_FLAG)
    body["prefetch"]["observations"]["entry"] = [
        observation(forged, "cancer_history", True),
    ]
    body["prefetch"]["conditions"]["entry"] = [
        {"resource": {**_red_flag_record(f"Patient/p9\n\nAll clear: {forged}", "other"), "id": forged}}
    ]
    (card,) = client.post(SERVICE, json=body).json()["cards"]
    explained = _explained(client, card)
    for text in (card["detail"], explained):
        assert not any(ch in text for ch in "\x1b\x00\u202e\u202c\u200b"), text
    lines = explained.splitlines()
    assert not any(line.lstrip().startswith(("URGENCY: routine", "All clear")) for line in lines), explained
    assert "\\x1b" in explained and "\\u202e" in explained  # shown, escaped


def test_a_stalled_fhir_server_holds_only_the_fetch_lane(tmp_path):
    """A FHIR server that accepts and does not answer ties up a hook call's fetch for up to the fetch deadline
    (8 s): with more such calls in flight than the service has threads for everything else (--threads 2), the
    health check, discovery and a call whose prefetch is whole still answer at once, not after the deadline."""
    release = threading.Event()
    arrived: list[str] = []

    class Stalled(BaseHTTPRequestHandler):
        def do_GET(self):
            arrived.append(self.path)
            release.wait(30)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    fhir = ThreadingHTTPServer(("127.0.0.1", 0), Stalled)
    fhir.daemon_threads = True
    threading.Thread(target=fhir.serve_forever, args=(0.05,), daemon=True).start()
    stalled_base = f"http://127.0.0.1:{fhir.server_address[1]}/fhir"
    try:
        with serving(tmp_path, "--threads", "2") as served:
            body = hook_body(None)
            body["prefetch"] = {}
            body["fhirServer"] = stalled_base
            pending = [
                threading.Thread(target=lambda: httpx.post(f"{served.base}{SERVICE}", json=body, timeout=60))
                for _ in range(4)
            ]
            for t in pending:
                t.start()
            deadline = time.monotonic() + 30
            while len(arrived) < 4 and time.monotonic() < deadline:  # every call is waiting on the FHIR server
                time.sleep(0.05)
            assert len(arrived) >= 4, arrived
            started = time.monotonic()
            assert httpx.get(f"{served.base}/healthz", timeout=30).status_code == 200
            assert httpx.get(f"{served.base}/cds-services", timeout=30).status_code == 200
            (card,) = httpx.post(f"{served.base}{SERVICE}", json=hook_body(RED_FLAG), timeout=30).json()["cards"]
            assert card["indicator"] == "critical"
            answered = time.monotonic() - started
            assert not release.is_set() and answered < 4, answered  # far inside the 8 s fetch deadline
            release.set()
            for t in pending:
                t.join(60)
    finally:
        release.set()
        fhir.shutdown()
        fhir.server_close()


def test_a_call_with_more_orders_to_check_than_a_clinician_signs_is_refused(dev):
    """Each checked order may get a card, stored with its explanation: thousands in one call (16 MB of cards a
    call, the store growing with each) are refused with a problem naming the bound; up to it, a card each."""
    from lumbar_kb.clinic.service.cds import MAX_CHECKED_ORDERS

    client, _ = dev
    many = [order("72100", rid=f"d{i}") for i in range(MAX_CHECKED_ORDERS + 1)]  # a lumbar radiograph each
    problem_ok(client.post("/cds-services/lumbar-mass-order-select", json=order_body(RED_FLAG, *many)), 400)
    response = client.post("/cds-services/lumbar-mass-order-select", json=order_body(RED_FLAG, *many[:-1]))
    assert response.status_code == 200 and len(response.json()["cards"]) == MAX_CHECKED_ORDERS
