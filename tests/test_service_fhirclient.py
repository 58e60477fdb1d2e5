"""The careful FHIR client, attacked with real FHIR servers on loopback: the access token goes to the listed base
and nowhere else (no foreign `next` link, no redirect), https only off --insecure-dev, a byte cap and a total
time cap per hook call, the page limit said on the card (never silently less), context values URL-encoded,
and failures that do not tell which ports are open.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from lumbar_kb.clinic.service.app import create_app
from lumbar_kb.clinic.service.fhirclient import fill_template
from lumbar_kb.clinic.service.state import Settings

from .test_service import SERVICE, empty_bundle, hook_body, problem_ok

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

TOKEN = "secret-fhir-access-token"
CAUDA_EQUINA = {
    "resourceType": "Condition",
    "id": "c1",
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G83.4"}]},
    "subject": {"reference": "Patient/p1"},
}


class Fhir:
    """A FHIR server on 127.0.0.1 whose answer per resource type is a function of (handler, page)."""

    def __init__(self):
        self.seen: list[tuple[str, str | None]] = []
        self.routes: dict = {}
        self.written = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.seen.append((self.path, self.headers.get("Authorization")))
                kind = self.path.lstrip("/").split("?")[0].split("/")[-1]
                route = owner.routes.get(kind)
                if route is None:
                    self.json(empty_bundle())
                else:
                    route(self)

            def json(self, data, status=200):
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        ).start()  # shut down in 0.05 s, not 0.5

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fhir():
    servers = [Fhir(), Fhir()]
    yield servers
    for s in servers:
        s.close()


def dev(tmp_path, **settings) -> TestClient:
    return TestClient(create_app(Settings(db=tmp_path / "s.sqlite3", insecure_dev=True, **settings)))


def fetching(base: str) -> dict:
    body = hook_body(None)
    body["prefetch"] = {}
    body["fhirServer"] = base
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds",
    }
    return body


def bundle(*resources, next_url: str | None = None) -> dict:
    out = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    if next_url:
        out["link"] = [{"relation": "next", "url": next_url}]
    return out


def test_a_next_link_to_another_host_is_not_followed_and_the_card_says_so(tmp_path, fhir):
    a, b = fhir
    a.routes["Condition"] = lambda h: h.json(bundle(CAUDA_EQUINA, next_url=f"{b.base}/Condition?page=2"))
    response = dev(tmp_path).post(SERVICE, json=fetching(a.base))
    (card,) = response.json()["cards"]
    assert b.seen == []  # the token never left the base it was given for
    assert card["indicator"] == "critical"  # what was read still counts
    assert "incomplete" in card["detail"] and "outside fhirServer" in card["detail"]
    assert all(auth == f"Bearer {TOKEN}" for _, auth in a.seen)


@pytest.mark.parametrize("step", ["%2e%2e", ".%2E", "%2E.", "a%2f..%2f..", "a%5c..%5c.."])
def test_a_next_link_that_steps_out_of_the_base_once_decoded_is_not_followed(tmp_path, fhir, step):
    """urljoin resolves `..` but not `%2e%2e`, which a client sends encoded: a server that decodes it would
    answer from outside the base with the token. Such a link is not followed, and the card says so."""
    a, _ = fhir
    a.routes["Condition"] = lambda h: h.json(bundle(CAUDA_EQUINA, next_url=f"{a.base}/{step}/admin/Condition?p=2"))
    (card,) = dev(tmp_path).post(SERVICE, json=fetching(a.base)).json()["cards"]
    assert [path for path, _ in a.seen if "admin" in path] == []
    assert card["indicator"] == "critical" and "outside fhirServer" in card["detail"]


def test_a_next_link_under_the_same_base_is_followed(tmp_path, fhir):
    a, _ = fhir
    pages = {"n": 0}

    def paged(h):
        pages["n"] += 1
        if pages["n"] == 1:
            h.json(bundle(next_url=f"{a.base}/Condition?page=2"))
        else:
            h.json(bundle(CAUDA_EQUINA))

    a.routes["Condition"] = paged
    (card,) = dev(tmp_path).post(SERVICE, json=fetching(a.base)).json()["cards"]
    assert card["indicator"] == "critical" and "incomplete" not in card["detail"]
    assert ("/fhir/Condition?page=2", f"Bearer {TOKEN}") in a.seen


def test_the_page_limit_is_said_on_the_card_never_silently_less(tmp_path, fhir):
    a, _ = fhir
    a.routes["Condition"] = lambda h: h.json(bundle(next_url=f"{a.base}/Condition?more"))
    response = dev(tmp_path, fhir_max_pages=3).post(SERVICE, json=fetching(a.base))
    (card,) = response.json()["cards"]  # no fact known, but the card says the record could not be read whole
    assert "more than 3 pages" in card["detail"] and card["indicator"] != "info"
    assert sum(1 for path, _ in a.seen if path.startswith("/fhir/Condition")) == 3


def test_a_redirect_is_not_followed(tmp_path, fhir):
    a, b = fhir

    def redirect(h):
        h.send_response(302)
        h.send_header("Location", f"{b.base}/Condition?patient=p1")
        h.send_header("Content-Length", "0")
        h.end_headers()

    a.routes["Condition"] = redirect
    problem_ok(dev(tmp_path).post(SERVICE, json=fetching(a.base)), 412, "prefetch.conditions")
    assert b.seen == []


def test_a_huge_answer_is_cut_at_the_byte_cap(tmp_path, fhir):
    a, _ = fhir

    def flood(h):  # 200 MB, no Content-Length: only the cap stops it
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+json")
        h.end_headers()
        chunk = b" " * 1_000_000
        try:
            h.wfile.write(b'{"resourceType": "Bundle", "entry": []')
            for _ in range(200):
                h.wfile.write(chunk)
                a.written += len(chunk)
        except OSError:
            pass

    a.routes["Condition"] = flood
    client = dev(tmp_path, fhir_max_bytes=2_000_000)
    problem_ok(client.post(SERVICE, json=fetching(a.base)), 412, "prefetch.conditions")
    time.sleep(0.2)
    assert a.written < 40_000_000  # the service hung up near the cap (plus socket buffers), not at 200 MB


def test_a_slow_server_cannot_hold_a_call_beyond_the_deadline(tmp_path, fhir):
    a, _ = fhir

    def drip(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+json")
        h.end_headers()
        try:
            for _ in range(120):  # a byte every 0.25 s: each read is quick, the whole is not
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(0.25)
        except OSError:
            pass

    a.routes["Condition"] = drip
    client = dev(tmp_path, fhir_deadline=1.5)
    started = time.monotonic()
    problem_ok(client.post(SERVICE, json=fetching(a.base)), 412, "prefetch.conditions")
    assert time.monotonic() - started < 1.5 + 4  # the deadline plus one read's timeout at most, not 30 s


def test_failures_do_not_tell_which_ports_are_open(tmp_path, fhir):
    a, _ = fhir
    a.routes["Condition"] = lambda h: h.json({"resourceType": "OperationOutcome"}, status=404)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/fhir"
    client = dev(tmp_path)
    open_detail = problem_ok(client.post(SERVICE, json=fetching(a.base)), 412)["detail"]
    closed_detail = problem_ok(client.post(SERVICE, json=fetching(closed)), 412)["detail"]
    assert open_detail == closed_detail


def test_context_values_are_url_encoded_and_a_patient_id_must_be_a_fhir_id(tmp_path):
    assert fill_template("Condition?patient={{context.patientId}}", {"patientId": "a b/c?d&e=f#g"}) == (
        "Condition?patient=a%20b%2Fc%3Fd%26e%3Df%23g"
    )
    body = hook_body({"leg_weakness": True})
    body["context"]["patientId"] = "p1&_include=*"
    problem_ok(dev(tmp_path).post(SERVICE, json=body), 400, "context.patientId")


# ---- with a trust file: https only, and only the bases the issuer lists ----------------------------------------
PUBLIC = "https://cds.example.org"
ISS = "https://ehr.test.invalid"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "k1"
    folder = tmp_path_factory.mktemp("trusted")
    trust = folder / "trust.json"
    listed = "https://fhir.ehr.test.invalid/r4"
    trust.write_text(json.dumps({"issuers": {ISS: {"jwks": {"keys": [jwk]}, "fhir_servers": [listed]}}}))
    client = TestClient(
        create_app(Settings(db=folder / "s.sqlite3", trust=trust, public_url=PUBLIC, fhir_deadline=3)),
        base_url=PUBLIC,
    )
    return client, key, listed


def _auth(key) -> dict:
    now = int(time.time())
    claims = {"iss": ISS, "aud": f"{PUBLIC}{SERVICE}", "iat": now, "exp": now + 60, "jti": str(time.time_ns())}
    return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})}


def test_plain_http_is_refused_off_insecure_dev(secure, fhir):
    client, key, _ = secure
    a, _ = fhir
    problem_ok(client.post(SERVICE, json=fetching(a.base), headers=_auth(key)), 400, "fhirServer")
    assert a.seen == []


def test_only_a_fhir_server_the_issuer_lists_gets_the_token(secure):
    client, key, listed = secure
    for other in ("https://attacker.example.net/fhir", "https://127.0.0.1:1/fhir", listed + "-other"):
        data = problem_ok(client.post(SERVICE, json=fetching(other), headers=_auth(key)), 412, "fhirServer")
        assert "trust file" in data["detail"]


def test_fhir_authorization_without_a_fhir_server_is_a_400(tmp_path):
    body = fetching("https://x.invalid")
    del body["fhirServer"]
    problem_ok(dev(tmp_path).post(SERVICE, json=body), 400, "fhirServer")


def test_the_fhir_access_token_is_transient_never_stored(tmp_path, fhir):
    a, _ = fhir
    a.routes["Condition"] = lambda h: h.json(bundle(CAUDA_EQUINA))
    client = dev(tmp_path)
    (card,) = client.post(SERVICE, json=fetching(a.base)).json()["cards"]
    assert ("/fhir/Condition?patient=p1", f"Bearer {TOKEN}") in a.seen
    for stored in tmp_path.glob("s.sqlite3*"):  # the store, its WAL and shared memory
        assert TOKEN.encode() not in stored.read_bytes(), stored
    assert TOKEN not in client.get(card["links"][0]["url"].removeprefix("http://testserver")).text


def test_a_slow_call_does_not_block_the_event_loop(tmp_path, fhir):
    """While a hook call waits on a slow fhirServer in a worker thread, a real server still answers at once."""
    import httpx

    from .servers import serving

    a, _ = fhir

    def slow(h):
        time.sleep(2.5)
        h.json(bundle(CAUDA_EQUINA))

    a.routes["Condition"] = slow
    with serving(tmp_path) as served:
        results: dict = {}

        def hook_call():
            results["call"] = httpx.post(f"{served.base}{SERVICE}", json=fetching(a.base), timeout=30)

        caller = threading.Thread(target=hook_call)
        caller.start()
        time.sleep(0.5)  # the call is now waiting on the FHIR server
        started = time.monotonic()
        assert httpx.get(f"{served.base}/healthz", timeout=30).status_code == 200
        waited = time.monotonic() - started
        caller.join()
    assert results["call"].status_code == 200
    assert waited < 1.5, waited  # not the 2 s the FHIR server still had to go


def test_an_order_call_on_an_incomplete_record_says_so_even_without_an_order_card(tmp_path, fhir):
    a, _ = fhir
    a.routes["Condition"] = lambda h: h.json(bundle(next_url=f"{a.base}/Condition?more"))
    body = fetching(a.base)
    body["hook"] = "order-sign"
    body["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": []}
    response = dev(tmp_path, fhir_max_pages=2).post("/cds-services/lumbar-mass-order-sign", json=body)
    (card,) = response.json()["cards"]
    assert "more than 2 pages" in card["detail"] and card["indicator"] != "info"


def test_an_access_token_for_another_patient_is_refused_before_any_fetch(tmp_path, fhir):
    a, _ = fhir
    body = fetching(a.base)
    body["fhirAuthorization"]["patient"] = "someone-else"
    problem_ok(dev(tmp_path).post(SERVICE, json=body), 400, "fhirAuthorization.patient")
    assert a.seen == []
    body["fhirAuthorization"]["patient"] = "p1"
    assert dev(tmp_path).post(SERVICE, json=body).status_code == 200


def test_a_slow_fhir_server_does_not_hold_the_engine_lane(tmp_path, fhir):
    """A call waiting on fhirServer waits in the I/O pool, not in the engine lane: with a lane of one thread, a
    call whose record came in the prefetch is answered while the other call's fetch is still held open."""
    a, _ = fhir
    fetching_started, release = threading.Event(), threading.Event()

    def held(h):
        fetching_started.set()
        release.wait(10)
        h.json(bundle())

    a.routes["Condition"] = held
    client = dev(tmp_path, engine_threads=1)
    answers: dict = {}
    slow = threading.Thread(target=lambda: answers.update(slow=client.post(SERVICE, json=fetching(a.base))))
    fast = threading.Thread(
        target=lambda: answers.update(fast=client.post(SERVICE, json=hook_body({"leg_weakness": True})))
    )
    slow.start()
    try:
        assert fetching_started.wait(10)
        fast.start()
        fast.join(5)
        answered_while_held = "fast" in answers
    finally:
        release.set()
        fast.join(20)
        slow.join(20)
    assert answered_while_held
    assert answers["fast"].status_code == 200 and answers["fast"].json()["cards"][0]["indicator"] == "critical"
    assert answers["slow"].status_code == 200
