"""The ASGI app: `create_app(settings)` builds the knowledge base once (per worker) and mounts the routers.

Run by `lumbar-kb serve`; with several workers uvicorn imports `app_from_env` in each, reading the settings
from LUMBAR_KB_SERVICE (JSON) so every worker compiles its own copy once at startup.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from lumbar_kb.clinic.service import cds, page, problems
from lumbar_kb.clinic.service.state import Settings, build_state

log = logging.getLogger("lumbar_kb.service")
INSECURE_BANNER = (
    "INSECURE DEV MODE: JWT bearer tokens are NOT checked; anyone who can reach this port can call the service. "
    "Never use --insecure-dev with real patient data or on a network."
)


def create_app(settings: Settings) -> FastAPI:
    st = build_state(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # a few threads run the hook calls in arrival order: with the GIL, 40 threads interleaving 16 calls
        # make every call slow; a handful keeps the tail short and the event loop free
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        yield

    app = FastAPI(
        lifespan=lifespan,
        title=f"lumbar-kb CDS Hooks service: {st.kb.title}",
        version=st.kb.version,
        description="CDS Hooks 2.0 services, feedback, explanations and the questionnaire page. " + st.kb.disclaimer,
        docs_url=None,
        redoc_url=None,
        # no redirect of `/path/` to `/path`: Starlette builds it from the Host header (a POST re-sent elsewhere)
        redirect_slashes=False,
        openapi_url="/openapi.json",
    )
    app.state.lumbar = st
    problems.install(app)
    app.include_router(cds.router)
    if settings.serves_questionnaire():  # no token on it: a deployment that checks tokens opts in
        app.include_router(page.router)
        app.mount("/static", StaticFiles(directory=page.STATIC), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"status": "ok", "knowledge_base": st.kb.identity()}

    if settings.insecure_dev:
        log.warning(INSECURE_BANNER)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(problems.BodyLimit, limit=settings.max_body)
    app.add_middleware(SecurityHeaders, insecure_dev=settings.insecure_dev)
    return app


# the questionnaire page loads only its own script and style; nothing may frame it, and no page sends the
# address it was opened at (an explanation link carries its signature) to another site
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
NAMES = {name for name, _ in HEADERS}


class SecurityHeaders:
    """ASGI middleware: nosniff, no referrer and no framing on every response; a strict Content-Security-Policy
    on every HTML page (and on the plain-text explanations, which a browser opens); under --insecure-dev an
    `X-Insecure-Dev` header on every response. Pure ASGI: no per-request task as BaseHTTPMiddleware makes."""

    def __init__(self, app, insecure_dev: bool = False):
        self.app = app
        self.always = list(HEADERS) + ([(b"x-insecure-dev", b"tokens are not checked")] if insecure_dev else [])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in NAMES]
                headers += self.always
                kind = dict(headers).get(b"content-type", b"")
                if kind.startswith(b"text/"):
                    headers.append((b"content-security-policy", CSP.encode()))
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


def settings_to_env(settings: Settings) -> str:
    return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()})


def app_from_env() -> FastAPI:
    raw = json.loads(os.environ["LUMBAR_KB_SERVICE"])
    for key in ("kb_dir", "codes_file", "db", "state_dir", "trust"):
        if raw.get(key) is not None:
            raw[key] = Path(raw[key])
    return create_app(Settings(**raw))
