"""CDS Hooks 2.0 client authentication: a JWT bearer token on every call, checked as the spec asks.

* signature with an asymmetric algorithm only (RS/PS/ES/EdDSA; `none` and HMAC are refused before any key is
  looked at, so a public key can never be used as an HMAC secret);
* `iss` on the configured allowlist, each issuer with its JWKS (a trust file; keys are never fetched from a
  URL the token itself names);
* `aud` equal to the service URL (the discovery base or the endpoint called); `exp`, `iat` and `jti` required;
* a `jti` used once is refused afterwards (replay), across workers (the store's SQLite file).

Trust file (JSON): {"issuers": {"https://ehr.example.org": {"jwks": {"keys": [...]}}}} or, per issuer,
{"jwks_file": "path/to/jwks.json"} (relative to the trust file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jwt

from lumbar_kb.clinic.service.store import Store
from lumbar_kb.engine.errors import LumbarKBError, Problem

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class AuthError(Exception):
    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(detail)


@dataclass
class Issuer:
    iss: str
    keys: jwt.PyJWKSet


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
        try:
            if isinstance(entry, dict) and "jwks_file" in entry:
                jwks = json.loads((path.parent / entry["jwks_file"]).read_text(encoding="utf-8"))
            elif isinstance(entry, dict) and "jwks" in entry:
                jwks = entry["jwks"]
            else:
                raise ValueError("give `jwks` or `jwks_file`")
            keys = jwt.PyJWKSet.from_dict(jwks)
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise LumbarKBError(Problem(f"issuer {iss}: {exc}", file=str(path))) from None
        for key in keys.keys:
            if key.key_type == "oct":
                raise LumbarKBError(Problem(f"issuer {iss}: symmetric keys are not allowed", file=str(path)))
        out[iss] = Issuer(iss, keys)
    return out


class Verifier:
    def __init__(self, issuers: dict[str, Issuer], store: Store, leeway: float = 30.0):
        self.issuers = issuers
        self.store = store
        self.leeway = leeway

    def verify(self, authorization: str | None, audiences: list[str]) -> dict:
        """The token's claims, or AuthError saying why it is refused."""
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
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("the token's claims cannot be read") from None
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError(f"issuer {iss!r} is not trusted")
        key = self._key(issuer, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=audiences,
                issuer=issuer.iss,
                leeway=self.leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"the token's audience is not this service ({audiences[0]})") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token lacks the required claim {exc.claim!r}") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"the token is invalid: {exc}") from None
        if not self.store.use_token(issuer.iss, str(claims["jti"]), float(claims["exp"])):
            raise AuthError("the token was used before (jti replay)")
        return claims

    @staticmethod
    def _key(issuer: Issuer, kid: str | None) -> jwt.PyJWK:
        keys = issuer.keys.keys
        if kid is not None:
            for key in keys:
                if key.key_id == kid:
                    return key
            raise AuthError(f"no key {kid!r} in the JWKS of {issuer.iss}")
        if len(keys) == 1:
            return keys[0]
        raise AuthError("the token names no key (kid) and the issuer has several")
