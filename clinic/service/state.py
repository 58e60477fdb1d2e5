"""What the app builds once per worker at startup: the compiled knowledge base, the bindings, the store and
the token verifier; the routes reach it through `state(request)`."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi import Request

from lumbar_kb.clinic.fhir.codes import Codes, load_codes
from lumbar_kb.clinic.service.security import Verifier, load_trust
from lumbar_kb.clinic.service.store import Store
from lumbar_kb.engine.api import Evaluator
from lumbar_kb.engine.errors import LumbarKBError
from lumbar_kb.engine.model import KnowledgeBase

STORE_NAME = "service.sqlite3"
T = TypeVar("T")


def default_state_dir() -> Path:
    """Where the service keeps its store: $LUMBAR_KB_STATE_DIR, else $XDG_STATE_HOME/lumbar-kb, else
    ~/.local/state/lumbar-kb (never the working directory)."""
    if os.environ.get("LUMBAR_KB_STATE_DIR"):
        return Path(os.environ["LUMBAR_KB_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lumbar-kb"


@dataclass
class Settings:
    kb_dir: Path | None = None
    codes_file: Path | None = None
    db: Path | None = None  # the store; default: service.sqlite3 in state_dir
    state_dir: Path | None = None  # default: default_state_dir()
    trust: Path | None = None  # the issuers' JWKS (required unless insecure_dev)
    public_url: str | None = None  # how clients reach the service: the JWT audience (required with trust)
    insecure_dev: bool = False
    max_body: int = 1_000_000
    leeway: float = 30.0
    max_token_lifetime: float = 300.0  # seconds between a token's iat and exp
    link_ttl: float = 12 * 3600.0  # how long a card's explanation link stays valid
    fhir_max_bytes: int = 5_000_000  # bytes read from fhirServer per hook call
    fhir_deadline: float = 8.0  # seconds spent on fhirServer per hook call
    fhir_max_pages: int = 10  # searchset pages followed per prefetch key
    threads: int = 8  # worker threads per process for token checks, feedback, discovery (anyio's: 40)
    engine_threads: int = 2  # the engine lane: threads per process evaluating hook calls, in arrival order
    # the fetch lane: threads per process waiting on fhirServer (I/O, up to fhir_deadline each): its own, so that
    # a stalled FHIR server holds these threads only, never the ones that check tokens or answer other calls
    fetch_threads: int = 16
    # the questionnaire page and /api/evaluate answer without a token (they read and store nothing of a patient's):
    # on under --insecure-dev, and with tokens checked only when asked for (None: follow insecure_dev)
    questionnaire: bool | None = None
    cors_origins: list = field(default_factory=list)  # browser-based CDS clients allowed to call (e.g. a sandbox)
    extra: dict = field(default_factory=dict)

    def serves_questionnaire(self) -> bool:
        return self.insecure_dev if self.questionnaire is None else self.questionnaire

    def store_path(self) -> Path:
        return Path(self.db) if self.db is not None else Path(self.state_dir or default_state_dir()) / STORE_NAME


@dataclass
class State:
    settings: Settings
    evaluator: Evaluator
    codes: Codes
    store: Store
    verifier: Verifier | None
    link_secret: bytes = b""
    _lanes: dict = field(default_factory=dict)  # name -> its ThreadPoolExecutor, made on first use

    async def in_engine_lane(self, func: Callable[..., T], *args: Any) -> T:
        """Run the engine's work for a hook call in a thread of the engine lane: a few threads taking calls from
        one queue in arrival order, so CPU-bound calls do not interleave under the GIL, and the event loop stays
        free. `settings.engine_threads` threads: 2 lets one call write the store while another computes."""
        return await self._in_lane("engine-lane", self.settings.engine_threads, func, *args)

    async def in_fetch_lane(self, func: Callable[..., T], *args: Any) -> T:
        """Run a hook call's fetches from fhirServer in a thread of the fetch lane (`settings.fetch_threads`):
        a FHIR server that answers slowly, or not at all, ties up these threads for up to fhir_deadline each,
        while token checks, discovery, feedback and prefetched calls go on in their own threads."""
        return await self._in_lane("fetch-lane", self.settings.fetch_threads, func, *args)

    async def _in_lane(self, name: str, threads: int, func: Callable[..., T], *args: Any) -> T:
        """`func(*args)` in a thread of the lane `name`. A plain executor, not an anyio limiter: it belongs to no
        event loop (a test client may run one per request)."""
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = ThreadPoolExecutor(max(1, threads), thread_name_prefix=name)
        return await asyncio.get_running_loop().run_in_executor(lane, functools.partial(func, *args))

    @property
    def kb(self) -> KnowledgeBase:
        return self.evaluator.kb

    def base_url(self, request: Request) -> str:
        """The service's own URL: --public-url; only under --insecure-dev, the request's (Host header)."""
        return (self.settings.public_url or str(request.base_url)).rstrip("/")


def check_public_url(url: str, insecure_dev: bool = False) -> str:
    """The spec: every exchange over HTTPS. Plain http only on loopback or under --insecure-dev."""
    from lumbar_kb.clinic.service.security import is_loopback

    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise LumbarKBError(f"--public-url must be an absolute https URL without query or fragment, not {url!r}")
    if parts.scheme == "http" and not (insecure_dev or is_loopback(url)):
        raise LumbarKBError(f"--public-url must be https (CDS Hooks exchanges go over TLS), not {url!r}")
    return url.rstrip("/")


def build_state(settings: Settings) -> State:
    evaluator = Evaluator.open(settings.kb_dir)
    codes = load_codes(evaluator.kb, settings.codes_file)
    verifier = None
    if settings.public_url:
        settings.public_url = check_public_url(settings.public_url, settings.insecure_dev)
    if not settings.insecure_dev:
        if settings.trust is None:
            raise LumbarKBError("give a trust file (--trust FILE: the issuers' JWKS) or run with --insecure-dev")
        if not settings.public_url:
            raise LumbarKBError(
                "--public-url is required with --trust: the URL clients call is the audience every token must name "
                "(never taken from the request's Host header)"
            )
        issuers = load_trust(settings.trust)
    store = Store(settings.store_path())
    if not settings.insecure_dev:
        verifier = Verifier(issuers, store, settings.leeway, settings.max_token_lifetime)
    return State(settings, evaluator, codes, store, verifier, store.secret("explanation-links"))


def state(request: Request) -> State:
    st: State = request.app.state.lumbar
    return st
