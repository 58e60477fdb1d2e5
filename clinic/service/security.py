"""CDS Hooks 2.0 client authentication: a JWT bearer token on every call, checked as the spec asks.

* header: `alg` asymmetric only (RS/PS/ES/EdDSA; `none` and HMAC are refused before any key is looked at, so a
  public key can never be used as an HMAC secret), `kid` required (it names the key in the issuer's JWK Set),
  `typ` equal to `JWT`; a `jku` header is accepted only when it is the issuer's own `jwks_url` (keys are never
  fetched from a URL the token names; `x5u`, `jwk` and `x5c` headers are never used);
* `iss` on the configured allowlist; `aud` equal to the URL of the endpoint invoked (from --public-url, never
  from the request's Host header); `exp`, `iat` and `jti` required; `exp - iat` at most the maximum lifetime
  (five minutes by default) and `iat` not in the future;
* a `jti` used once is refused afterwards (replay), across workers (the store's SQLite file).

Trust file (JSON), per issuer one of `jwks` (a JWK Set inline), `jwks_file` (a path, relative to the trust
file) or `jwks_url` (an https URL: fetched, cached for `jwks_cache_seconds` (300), and fetched again when a
token names a `kid` not in the cache, at most every 10 s, so keys rotate without a restart), and optionally
`fhir_servers`, the FHIR base URLs this issuer's calls may name as `fhirServer` (the service sends the FHIR
access token to those and nowhere else):

    {"issuers": {"https://ehr.example.org": {"jwks_url": "https://ehr.example.org/.well-known/jwks.json",
                                             "fhir_servers": ["https://ehr.example.org/fhir/r4"]}}}
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt

from lumbar_kb.clinic.service.store import Store
from lumbar_kb.engine.errors import LumbarKBError, Problem

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
JWKS_MAX_BYTES = 256_000
JWKS_TIMEOUT = 5.0
REFETCH_EVERY = 10.0  # at most one fetch per issuer this often when an unknown kid is named
_clock = time.monotonic  # the JWKS cache's clock (a test moves it)


class AuthError(Exception):
    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(detail)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normal_base(url: str) -> str:
    """A base URL compared as the client sends it: scheme and host lower-cased, default port dropped, no
    trailing slash."""
    parts = urlsplit(url)
    port = parts.port
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    host = (parts.hostname or "").lower()
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


@dataclass
class Issuer:
    iss: str
    keys: jwt.PyJWKSet | None = None  # a fixed JWK Set (trust file)
    jwks_url: str | None = None  # or fetched from here
    fhir_servers: tuple[str, ...] = ()  # normal_base() of each FHIR base this issuer may name
    cache_seconds: float = 300.0
    _fetched: dict = field(default_factory=dict, repr=False)  # kid -> PyJWK
    _fetched_at: float = field(default=0.0, repr=False)
    _tried_at: float = field(default=-1e9, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def key(self, kid: str) -> jwt.PyJWK:
        if self.keys is not None:
            for key in self.keys.keys:
                if key.key_id == kid:
                    return key
            raise AuthError(f"no key {kid!r} in the JWK Set of {self.iss}")
        with self._lock:
            now = _clock()
            stale = now - self._fetched_at > self.cache_seconds
            if (stale or kid not in self._fetched) and now - self._tried_at >= REFETCH_EVERY:
                self._tried_at = now
                try:
                    self._fetched = fetch_jwks(str(self.jwks_url))
                    self._fetched_at = now
                except AuthError:
                    if not self._fetched:
                        raise
            found: jwt.PyJWK | None = self._fetched.get(kid)
        if found is None:
            raise AuthError(f"no key {kid!r} in the JWK Set of {self.iss}")
        return found


def fetch_jwks(url: str) -> dict[str, jwt.PyJWK]:
    """An issuer's JWK Set from its `jwks_url`: no redirects, at most JWKS_MAX_BYTES, JWKS_TIMEOUT seconds;
    symmetric keys and keys without a `kid` are left out."""
    try:
        with httpx.Client(timeout=JWKS_TIMEOUT, follow_redirects=False) as client:
            with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise AuthError("the issuer's JWK Set cannot be fetched")
                body = b""
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > JWKS_MAX_BYTES:
                        raise AuthError("the issuer's JWK Set is too large")
        data = json.loads(body)
        keys = jwt.PyJWKSet.from_dict(data).keys
    except (httpx.HTTPError, ValueError, RecursionError, jwt.PyJWTError):
        raise AuthError("the issuer's JWK Set cannot be fetched") from None
    return {k.key_id: k for k in keys if k.key_id and k.key_type != "oct"}


def load_trust(path: Path | str) -> dict[str, Issuer]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LumbarKBError(Problem(f"cannot read the trust file: {exc}", file=str(path))) from None
    issuers = data.get("issuers") if isinstance(data, dict) else None
    if not isinstance(issuers, dict) or not issuers:
        raise LumbarKBError(Problem('must hold {"issuers": {ISS: {"jwks": ...}}}', file=str(path)))
    out = {}
    for iss, entry in issuers.items():
        where = f"issuers.{iss}"
        if not isinstance(entry, dict):
            raise LumbarKBError(Problem(f"{where}: must be an object", file=str(path)))
        servers = entry.get("fhir_servers", [])
        if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
            raise LumbarKBError(Problem(f"{where}.fhir_servers: must be a list of URLs", file=str(path)))
        for server in servers:
            if urlsplit(server).scheme != "https" or not urlsplit(server).hostname:
                raise LumbarKBError(Problem(f"{where}.fhir_servers: {server!r} is not an https URL", file=str(path)))
        issuer = Issuer(iss, fhir_servers=tuple(normal_base(s) for s in servers))
        try:
            if "jwks_url" in entry:
                url = entry["jwks_url"]
                if not isinstance(url, str) or not (
                    urlsplit(url).scheme == "https" or (urlsplit(url).scheme == "http" and is_loopback(url))
                ):
                    raise ValueError(f"jwks_url must be an https URL (http only on loopback), not {url!r}")
                issuer.jwks_url = url
                seconds = entry.get("jwks_cache_seconds", 300)
                if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                    raise ValueError("jwks_cache_seconds must be a number of seconds")
                issuer.cache_seconds = float(seconds)
            else:
                if "jwks_file" in entry:
                    jwks = json.loads((path.parent / entry["jwks_file"]).read_text(encoding="utf-8"))
                elif "jwks" in entry:
                    jwks = entry["jwks"]
                else:
                    raise ValueError("give `jwks`, `jwks_file` or `jwks_url`")
                issuer.keys = jwt.PyJWKSet.from_dict(jwks)
                for key in issuer.keys.keys:
                    if key.key_type == "oct":
                        raise ValueError("symmetric keys are not allowed")
                    if not key.key_id:
                        raise ValueError("every key needs a `kid` (tokens name their key by it)")
        except (OSError, ValueError, TypeError, jwt.PyJWTError) as exc:
            raise LumbarKBError(Problem(f"issuer {iss}: {exc}", file=str(path))) from None
        out[iss] = issuer
    return out


class Verifier:
    def __init__(self, issuers: dict[str, Issuer], store: Store, leeway: float = 30.0, max_lifetime: float = 300.0):
        self.issuers = issuers
        self.store = store
        self.leeway = leeway
        self.max_lifetime = max_lifetime

    def verify(self, authorization: str | None, audience: str) -> dict:
        """The token's claims, or AuthError saying why it is refused. `audience`: the URL of the endpoint
        invoked."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError("missing bearer token: every call carries `Authorization: Bearer <JWT>`")
        token = authorization.split(" ", 1)[1].strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("the bearer token is not a JWT") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError(f"algorithm {alg!r} is not allowed (asymmetric only: {', '.join(ALLOWED_ALGORITHMS)})")
        if header.get("typ") != "JWT":
            raise AuthError("the token's header must have typ 'JWT'")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("the token's header must name its key (kid)")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("the token's claims cannot be read") from None
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError(f"issuer {iss!r} is not trusted")
        if "jku" in header and header["jku"] != issuer.jwks_url:
            raise AuthError("the token's jku is not the issuer's JWK Set URL in the trust file")
        key = issuer.key(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer.iss,
                leeway=self.leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token was issued in the future (iat) or is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"the token's audience is not this endpoint ({audience})") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token lacks the required claim {exc.claim!r}") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"the token is invalid: {exc}") from None
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise AuthError("the token's exp and iat must be numbers")
        if exp - iat > self.max_lifetime:
            raise AuthError(f"the token lives {exp - iat:.0f} s; at most {self.max_lifetime:.0f} s is accepted")
        if iat > time.time() + self.leeway:
            raise AuthError("the token was issued in the future (iat)")
        if not isinstance(claims["jti"], str) or not claims["jti"]:
            raise AuthError("the token's jti must be a non-empty string")
        if not self.store.use_token(issuer.iss, claims["jti"], float(exp)):
            raise AuthError("the token was used before (jti replay)")
        return claims


def client_of(claims: dict) -> str:
    """Who received a card: the issuer, and the tenant when the token names one ('' under --insecure-dev)."""
    if not claims:
        return ""
    tenant = claims.get("tenant")
    return f"{claims.get('iss')}|{tenant}" if isinstance(tenant, str) else str(claims.get("iss"))
