"""The CDS Hooks service attacked as the issue describes: cards and explanations that belong to one patient,
tokens to the letter of the spec (audience from --public-url, kid and typ, a maximum lifetime, keys fetched from
a JWKS server on loopback and rotated without a restart), feedback that can be trusted, record text that cannot
form a link in card markdown, security headers, and a private store.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from lumbar_kb.clinic.service import links
from lumbar_kb.clinic.service.app import create_app
from lumbar_kb.clinic.service.state import Settings, build_state
from lumbar_kb.clinic.service.store import Store, override_rates
from lumbar_kb.engine.errors import LumbarKBError
from lumbar_kb.main import main

from .test_service import RED_FLAG, SERVICE, hook_body, observation, problem_ok

PUBLIC = "https://cds.example.org"
ISS = "https://ehr.test.invalid"
OTHER_ISS = "https://other-ehr.test.invalid"


def _jwk(key, kid: str) -> dict:
    public = key.public_key()
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    jwk = json.loads(algorithm.to_jwk(public))
    jwk.update(kid=kid, use="sig")
    return jwk


@pytest.fixture(scope="module")
def keys():
    return {
        "k1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "other": ec.generate_private_key(ec.SECP384R1()),
    }


@pytest.fixture(scope="module")
def app(tmp_path_factory, keys):
    folder = tmp_path_factory.mktemp("secure")
    trust = folder / "trust.json"
    trust.write_text(
        json.dumps(
            {
                "issuers": {
                    ISS: {"jwks": {"keys": [_jwk(keys["k1"], "k1")]}},
                    OTHER_ISS: {"jwks": {"keys": [_jwk(keys["other"], "o1")]}},
                }
            }
        )
    )
    settings = Settings(db=folder / "state" / "service.sqlite3", trust=trust, public_url=PUBLIC, questionnaire=True)
    return TestClient(create_app(settings), base_url=PUBLIC), folder


def mint(key, kid="k1", alg="RS256", headers=None, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": f"{PUBLIC}{SERVICE}", "exp": now + 120, "iat": now, "jti": uuid.uuid4().hex}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    head = {"kid": kid, "typ": "JWT"}
    head.update(headers or {})
    if head["typ"] is None:
        head["typ"] = ""  # PyJWT leaves out an empty typ (and adds "JWT" when none is given)
    head = {k: v for k, v in head.items() if v is not None}
    token = jwt.encode(body, key, algorithm=alg, headers=head)
    assert ("typ" in jwt.get_unverified_header(token)) == bool(head.get("typ"))
    return token


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def call(client, keys, body=None, **claims):
    return client.post(SERVICE, json=body or hook_body(RED_FLAG), headers=bearer(mint(keys["k1"], **claims)))


# ---- 1. cards and explanations that belong to one patient ------------------------------------------------------
def test_an_explanation_opens_only_with_its_signed_unexpired_link(app, keys):
    client, _ = app
    (card,) = call(client, keys).json()["cards"]
    link = card["links"][0]["url"]
    assert link.startswith(f"{PUBLIC}/explanations/{card['uuid']}?expires=")
    path = link.removeprefix(PUBLIC)
    assert client.get(path).status_code == 200
    # the uuid alone, the old computable id, a forged signature, another card's signature: refused
    problem_ok(client.get(f"/explanations/{card['uuid']}"), 403, "signature")
    forged = path[:-4] + ("0000" if not path.endswith("0000") else "1111")
    problem_ok(client.get(forged), 403, "signature")
    (other,) = call(client, keys).json()["cards"]
    stolen = other["links"][0]["url"].removeprefix(PUBLIC).replace(other["uuid"], card["uuid"])
    problem_ok(client.get(stolen), 403, "signature")
    # a later expiry with the old signature: refused; an expired link with a true signature: refused
    expires = int(path.split("expires=")[1].split("&")[0])
    problem_ok(client.get(path.replace(f"expires={expires}", f"expires={expires + 3600}")), 403, "signature")
    secret = client.app.state.lumbar.link_secret
    old = links.signed_url("", secret, card["uuid"], ttl=-1)
    assert "expired" in problem_ok(client.get(old), 403, "signature")["detail"]
    # an expiry of digits int() refuses ("²" isdigit), a signature that is not ASCII: refused, never a 500
    signature = path.split("signature=")[1]
    for odd in (path.replace(f"expires={expires}", "expires=%C2%B2"), path.replace(signature, "%C3%A9" * 32)):
        problem = problem_ok(client.get(odd), 403, "signature")
        assert problem["title"] == "Forbidden"


def test_the_link_secret_is_random_per_store_and_kept_across_restarts(tmp_path):
    a = Store(tmp_path / "a.sqlite3").secret("explanation-links")
    b = Store(tmp_path / "b.sqlite3").secret("explanation-links")
    assert len(a) == 32 and a != b
    assert Store(tmp_path / "a.sqlite3").secret("explanation-links") == a


def test_a_stored_card_is_never_replaced(tmp_path):
    import sqlite3

    store = Store(tmp_path / "s.sqlite3")
    store.record_card("c1", "svc", "h1", ["r1"], "sha", "emergency", "patient A")
    with pytest.raises(sqlite3.IntegrityError):
        store.record_card("c1", "svc", "h1", ["r1"], "sha", "emergency", "patient B")
    card = store.card("c1")
    assert card is not None and card["explanation"] == "patient A"


def test_a_calls_cards_are_stored_all_or_none(tmp_path):
    """One hook call's cards are one transaction: a clash on any of them stores none of them."""
    import sqlite3

    from lumbar_kb.clinic.service.store import CardRow

    store = Store(tmp_path / "s.sqlite3")
    store.record_card("c2", "svc", "h1", ["r1"], "sha", "emergency", "patient A")
    rows = [CardRow(f"c{n}", "svc", "h2", ["r1"], "sha", "prompt", "patient B") for n in (1, 2, 3)]
    with pytest.raises(sqlite3.IntegrityError):
        store.record_cards(rows)
    assert store.card("c1") is None and store.card("c3") is None
    assert store.card("c2")["explanation"] == "patient A"  # type: ignore[index]
    store.record_cards([rows[0], rows[2]])
    assert store.card("c1")["urgency"] == store.card("c3")["urgency"] == "prompt"  # type: ignore[index]


# ---- 3. tokens to the letter ----------------------------------------------------------------------------------
def test_the_audience_is_the_endpoint_invoked_from_the_public_url(app, keys):
    client, _ = app
    assert call(client, keys).status_code == 200
    discovery = mint(keys["k1"], aud=f"{PUBLIC}/cds-services")
    assert client.get("/cds-services", headers=bearer(discovery)).status_code == 200
    # a token for discovery is not a token for the service, nor one for another vendor's service
    problem_ok(call(client, keys, aud=f"{PUBLIC}/cds-services"), 401, "Authorization")
    spoofed = f"https://evil.example.net{SERVICE}"
    response = client.post(
        SERVICE,
        json=hook_body(RED_FLAG),
        headers={**bearer(mint(keys["k1"], aud=spoofed)), "Host": "evil.example.net", "X-Forwarded-Proto": "https"},
    )
    problem_ok(response, 401, "Authorization")
    feedback = f"{SERVICE}/feedback"
    problem_ok(
        client.post(feedback, json={"feedback": []}, headers=bearer(mint(keys["k1"]))), 401, "Authorization"
    )  # the service's audience is not the feedback endpoint's


@pytest.mark.parametrize(
    ("claims", "headers", "why"),
    [
        # iat and exp here are seconds from when the test runs (not from collection: a long run would expire them)
        ({"exp": 10 * 365 * 86400}, {}, "lives"),  # valid for ten years
        ({"iat": -200, "exp": 200}, {}, "lives"),  # 400 s
        ({"iat": 3600, "exp": 3700}, {}, "future"),
        ({}, {"kid": None}, "kid"),
        ({}, {"typ": None}, "typ"),
        ({}, {"typ": "at+jwt"}, "typ"),
        ({}, {"jku": "https://attacker.example.net/jwks.json"}, "jku"),
        ({"jti": ""}, {}, "jti"),
    ],
    ids=["ten-years", "400s", "issued-in-future", "no-kid", "no-typ", "wrong-typ", "foreign-jku", "empty-jti"],
)
def test_tokens_outside_the_spec_are_refused(app, keys, claims, headers, why):
    client, _ = app
    now = int(time.time())
    claims = {k: now + v if k in ("iat", "exp") else v for k, v in claims.items()}
    token = mint(keys["k1"], headers=headers, **claims)
    data = problem_ok(client.post(SERVICE, json=hook_body(RED_FLAG), headers=bearer(token)), 401, "Authorization")
    assert why in data["detail"]


def test_a_five_minute_token_is_accepted(app, keys):
    client, _ = app
    now = int(time.time())
    assert call(client, keys, iat=now, exp=now + 300).status_code == 200


def test_trust_without_public_url_refuses_to_start(tmp_path, keys, capsys):
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps({"issuers": {ISS: {"jwks": {"keys": [_jwk(keys["k1"], "k1")]}}}}))
    with pytest.raises(LumbarKBError, match="--public-url"):
        build_state(Settings(db=tmp_path / "s.sqlite3", trust=trust))
    assert main(["serve", "--trust", str(trust), "--db", str(tmp_path / "s.sqlite3"), "--port", "1"]) == 2
    assert "--public-url" in capsys.readouterr().err


class _Jwks(BaseHTTPRequestHandler):
    keys: dict = {"keys": []}
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        body = json.dumps(type(self).keys).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_keys_come_from_a_jwks_url_and_rotate_without_a_restart(tmp_path, monkeypatch):
    from lumbar_kb.clinic.service import security

    clock = [1000.0]
    monkeypatch.setattr(security, "_clock", lambda: clock[0])
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = ec.generate_private_key(ec.SECP384R1())
    _Jwks.keys, _Jwks.hits = {"keys": [_jwk(first, "2026-a")]}, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        trust = tmp_path / "trust.json"
        trust.write_text(json.dumps({"issuers": {ISS: {"jwks_url": url}}}))
        client = TestClient(
            create_app(Settings(db=tmp_path / "s.sqlite3", trust=trust, public_url=PUBLIC)), base_url=PUBLIC
        )
        ok = client.post(SERVICE, json=hook_body(RED_FLAG), headers=bearer(mint(first, kid="2026-a")))
        assert ok.status_code == 200 and _Jwks.hits == 1
        assert (
            client.post(SERVICE, json=hook_body(RED_FLAG), headers=bearer(mint(first, kid="2026-a"))).status_code == 200
        )
        assert _Jwks.hits == 1  # cached
        # the issuer rotates: the new kid is unknown, so the set is fetched again (no restart)
        clock[0] += security.REFETCH_EVERY
        _Jwks.keys = {"keys": [_jwk(first, "2026-a"), _jwk(second, "2026-b")]}
        rotated = mint(second, kid="2026-b", alg="ES384")
        assert client.post(SERVICE, json=hook_body(RED_FLAG), headers=bearer(rotated)).status_code == 200
        assert _Jwks.hits == 2
        # a flood of unknown kids does not make the service hammer the issuer
        for _ in range(5):
            problem_ok(
                client.post(SERVICE, json=hook_body(RED_FLAG), headers=bearer(mint(first, kid="nope"))),
                401,
                "Authorization",
            )
        assert _Jwks.hits == 2
        clock[0] += security.REFETCH_EVERY
        problem_ok(
            client.post(SERVICE, json=hook_body(RED_FLAG), headers=bearer(mint(first, kid="nope"))),
            401,
            "Authorization",
        )
        assert _Jwks.hits == 3
        # and the cache expires: after jwks_cache_seconds a known kid is fetched again too
        clock[0] += 301
        assert (
            client.post(SERVICE, json=hook_body(RED_FLAG), headers=bearer(mint(first, kid="2026-a"))).status_code == 200
        )
        assert _Jwks.hits == 4
    finally:
        server.shutdown()
        server.server_close()


def test_a_jwks_url_must_be_https_off_loopback(tmp_path):
    from lumbar_kb.clinic.service.security import load_trust

    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps({"issuers": {ISS: {"jwks_url": "http://ehr.example.org/jwks.json"}}}))
    with pytest.raises(LumbarKBError, match="https"):
        load_trust(trust)


# ---- 6. feedback that can be trusted --------------------------------------------------------------------------
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _feedback(client, key, item, kid="k1", iss=ISS, alg="RS256", service=SERVICE):
    token = mint(key, kid=kid, alg=alg, iss=iss, aud=f"{PUBLIC}{service}/feedback")
    return client.post(f"{service}/feedback", json={"feedback": [item]}, headers=bearer(token))


def test_feedback_is_validated_as_the_spec_says(app, keys):
    client, folder = app
    (card,) = call(client, keys).json()["cards"]
    suggestion = card["suggestions"][0]["uuid"]
    good = {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": suggestion}],
        "outcomeTimestamp": _now(),
    }
    assert _feedback(client, keys["k1"], good).status_code == 200
    bad = [
        ({**good, "acceptedSuggestions": None}, "feedback[0].acceptedSuggestions"),
        ({**good, "acceptedSuggestions": [{"id": str(uuid.uuid4())}]}, "feedback[0].acceptedSuggestions[0].id"),
        ({**good, "outcomeTimestamp": "yesterday"}, "feedback[0].outcomeTimestamp"),
        ({**good, "outcomeTimestamp": "2026-12-01T12:00:00"}, "feedback[0].outcomeTimestamp"),  # no zone
        ({**good, "outcomeTimestamp": "2001-01-01T00:00:00Z"}, "feedback[0].outcomeTimestamp"),  # before the card
        ({**good, "outcomeTimestamp": "2999-01-01T00:00:00Z"}, "feedback[0].outcomeTimestamp"),  # the future
        ({**good, "outcome": "ignored"}, "feedback[0].outcome"),
        (
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": _now(),
                "overrideReason": {"reason": {"system": "x", "code": "y"}},
            },
            "feedback[0].overrideReason.reason",
        ),
        (
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": _now(),
                "acceptedSuggestions": [{"id": suggestion}],
            },
            "feedback[0].acceptedSuggestions",
        ),
    ]
    for item, field in bad:
        problem_ok(_feedback(client, keys["k1"], item), 400, field)
    # unknown card, the wrong service, another client: the same 404
    problem_ok(_feedback(client, keys["k1"], {**good, "card": str(uuid.uuid4())}), 404, "feedback[0].card")
    problem_ok(
        _feedback(client, keys["k1"], good, service="/cds-services/lumbar-mass-order-sign"), 404, "feedback[0].card"
    )
    problem_ok(_feedback(client, keys["other"], good, kid="o1", iss=OTHER_ISS, alg="ES384"), 404, "feedback[0].card")


def test_repeated_overrides_count_once_in_the_rates(app, keys):
    client, folder = app
    (card,) = call(client, keys).json()["cards"]
    reason = card["overrideReasons"][1]
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": _now(),
        "overrideReason": {"reason": reason},
    }
    for _ in range(5):
        assert _feedback(client, keys["k1"], item).status_code == 200
    rates = override_rates(folder / "state" / "service.sqlite3")
    counts = {rule: (e["cards"], e["overridden"]) for rule, e in rates.items()}
    assert counts and all(overridden <= cards for cards, overridden in counts.values())
    fired = client.app.state.lumbar.store.card(card["uuid"])["rules"]
    for rule in fired:
        assert rates[rule]["reasons"].get(reason["display"], 0) == 1


# ---- 7. escaping, headers, the store ----------------------------------------------------------------------------
HOSTILE = (
    "x](javascript:alert(1)) <img src=x onerror=alert(1)> ![i](https://evil.example.net/p.png) www.evil.example.net"
)


def test_record_text_in_card_markdown_forms_no_link_image_or_html(app, keys):
    client, _ = app
    body = hook_body(RED_FLAG)
    body["prefetch"]["observations"]["entry"] = [
        observation(HOSTILE, "cancer_history", True),
    ]
    (card,) = call(client, keys, body).json()["cards"]
    detail = card["detail"]
    from markdown_it import MarkdownIt  # a CommonMark renderer, as a CDS client would use

    html = MarkdownIt("commonmark").render(detail)
    assert "onerror" in html  # the record is still shown, as text
    assert "<a " not in html and "href=" not in html and "<img" not in html  # no link, no image, no tag
    import re

    for raw in (r"\]\(", r"<img", r"!\[", r"www\.evil"):  # none left unescaped in the markdown itself
        assert not re.search(r"(?<!\\)" + raw, detail), raw


def test_html_pages_carry_csp_nosniff_frame_ancestors_and_referrer_policy(app, keys):
    client, _ = app
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    (card,) = call(client, keys).json()["cards"]
    explained = client.get(card["links"][0]["url"].removeprefix(PUBLIC))
    assert explained.headers["referrer-policy"] == "no-referrer"  # the signed link never leaks by Referer
    assert "frame-ancestors 'none'" in explained.headers["content-security-policy"]
    assert client.get("/cds-services").headers["x-content-type-options"] == "nosniff"


def test_the_store_is_private_under_a_state_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMBAR_KB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        client = TestClient(create_app(Settings(insecure_dev=True)))
        assert client.post(SERVICE, json=hook_body(RED_FLAG)).status_code == 200
    finally:
        os.umask(old)
    store = tmp_path / "state" / "service.sqlite3"
    assert store.is_file() and not list(tmp_path.glob("*.sqlite3"))  # never the working folder
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    for extra in tmp_path.glob("state/service.sqlite3-*"):  # WAL and shared-memory files
        assert stat.S_IMODE(extra.stat().st_mode) == 0o600, extra
    loose = tmp_path / "loose.sqlite3"
    loose.touch(mode=0o644)
    Store(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600  # an existing store is narrowed


def test_the_public_url_must_be_https_off_loopback(tmp_path, keys):
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps({"issuers": {ISS: {"jwks": {"keys": [_jwk(keys["k1"], "k1")]}}}}))
    with pytest.raises(LumbarKBError, match="https"):
        build_state(Settings(db=tmp_path / "s.sqlite3", trust=trust, public_url="http://cds.example.org"))
    state = build_state(Settings(db=tmp_path / "s.sqlite3", trust=trust, public_url="http://127.0.0.1:8080/"))
    assert state.settings.public_url == "http://127.0.0.1:8080"


def _self_signed(folder):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "cert.pem", folder / "key.pem"


def test_serve_speaks_https_with_a_certificate(tmp_path):
    import ssl
    import subprocess
    import sys

    import httpx

    from .servers import free_port

    cert, key = _self_signed(tmp_path)
    port = free_port()
    argv = [sys.executable, "-m", "lumbar_kb", "serve", "--port", str(port), "--db", str(tmp_path / "s.sqlite3")]
    argv += ["--insecure-dev", "--tls-cert", str(cert), "--tls-key", str(key)]
    context = ssl.create_default_context(cafile=str(cert))
    with (tmp_path / "stderr").open("w") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        try:
            for _ in range(200):
                try:
                    response = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.05)
            else:
                pytest.fail("the server did not start")
            assert response.status_code == 200
            with pytest.raises(httpx.HTTPError):  # no plain-http answer on the TLS port
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).raise_for_status()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    assert main(["serve", "--insecure-dev", "--tls-cert", str(cert), "--port", "1"]) == 2


def test_a_store_of_the_previous_release_is_upgraded_in_place(tmp_path):
    import sqlite3

    old = tmp_path / "old.sqlite3"
    db = sqlite3.connect(old)
    db.executescript(
        """
        CREATE TABLE cards (uuid TEXT PRIMARY KEY, service TEXT NOT NULL, hook_instance TEXT NOT NULL,
            rules TEXT NOT NULL, kb_sha256 TEXT NOT NULL, urgency TEXT NOT NULL, issued_at REAL NOT NULL,
            explanation TEXT NOT NULL);
        INSERT INTO cards VALUES ('c0', 'svc', 'h0', '["r1"]', 'sha', 'emergency', 0, 'x');
        """
    )
    db.commit()
    db.close()
    store = Store(old)
    store.record_card("c1", "svc", "h1", ["r1"], "sha", "emergency", "y", client="iss", suggestions=["s1"])
    assert store.card("c0")["client"] == "" and store.card("c0")["suggestions"] == []
    assert store.card("c1")["client"] == "iss" and store.card("c1")["suggestions"] == ["s1"]
    assert override_rates(old)["r1"]["cards"] == 2


def test_a_body_trickled_past_the_deadline_is_a_408_and_one_in_pieces_is_read_whole():
    """The token is checked once the body is read: a client sending it a byte now and then held the connection
    for as long as it liked. Past the deadline it is a 408 problem; a body in many small pieces within it is
    handed on whole."""
    import asyncio

    from lumbar_kb.clinic.service.problems import BodyLimit

    async def run(pause: float) -> tuple[list, bytes]:
        seen: list[bytes] = []

        async def app(scope, receive, send):
            message = await receive()
            seen.append(message["body"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        pieces = [b"{", b'"a"', b":", b"1", b"}"]

        async def receive():
            await asyncio.sleep(pause)
            part = pieces.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(pieces)}

        sent: list = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "headers": [], "path": "/"}
        await BodyLimit(app, 1000, deadline=0.3)(scope, receive, send)
        return sent, b"".join(seen)

    sent, body = asyncio.run(run(0.2))  # 5 pieces, 0.2 s apart: 1 s, past the 0.3 s deadline
    assert sent[0]["status"] == 408 and body == b""
    problem = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert problem["status"] == 408 and "did not arrive within 0.3 s" in problem["detail"]
    sent, body = asyncio.run(run(0))
    assert sent[0]["status"] == 200 and body == b'{"a":1}'
