"""What the app builds once per worker at startup: the compiled knowledge base, the bindings, the store and
the token verifier; the routes reach it through `state(request)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from lumbar_kb.clinic.fhir.codes import Codes, load_codes
from lumbar_kb.clinic.service.security import Verifier, load_trust
from lumbar_kb.clinic.service.store import Store
from lumbar_kb.engine.api import Evaluator
from lumbar_kb.engine.model import KnowledgeBase


@dataclass
class Settings:
    kb_dir: Path | None = None
    codes_file: Path | None = None
    db: Path = Path("lumbar-kb-service.sqlite3")
    trust: Path | None = None  # the issuers' JWKS (required unless insecure_dev)
    public_url: str | None = None  # how clients reach the service (the JWT audience); default: the request's
    insecure_dev: bool = False
    max_body: int = 1_000_000
    leeway: float = 30.0
    cors_origins: list = field(default_factory=list)  # browser-based CDS clients allowed to call (e.g. a sandbox)
    extra: dict = field(default_factory=dict)


@dataclass
class State:
    settings: Settings
    evaluator: Evaluator
    codes: Codes
    store: Store
    verifier: Verifier | None

    @property
    def kb(self) -> KnowledgeBase:
        return self.evaluator.kb

    def base_url(self, request: Request) -> str:
        return (self.settings.public_url or str(request.base_url)).rstrip("/")


def build_state(settings: Settings) -> State:
    evaluator = Evaluator.open(settings.kb_dir)
    codes = load_codes(evaluator.kb, settings.codes_file)
    store = Store(settings.db)
    verifier = None
    if not settings.insecure_dev:
        if settings.trust is None:
            from lumbar_kb.engine.errors import LumbarKBError

            raise LumbarKBError("give a trust file (--trust FILE: the issuers' JWKS) or run with --insecure-dev")
        verifier = Verifier(load_trust(settings.trust), store, settings.leeway)
    return State(settings, evaluator, codes, store, verifier)


def state(request: Request) -> State:
    st: State = request.app.state.lumbar
    return st
