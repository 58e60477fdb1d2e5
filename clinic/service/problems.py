"""Errors as RFC 9457 problem documents (application/problem+json), naming the field at fault.

Bad input is a 4xx with what and where; an internal error is a 500 that says only that it was logged (with an
id to find it by), never a traceback.
"""

from __future__ import annotations

import logging
import uuid

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("lumbar_kb.service")
MEDIA = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    405: "Method Not Allowed",
    412: "Precondition Failed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}


PROBLEM_RESPONSES: dict[int | str, dict] = {
    400: {"description": "bad request: a problem document naming the field"},
    413: {"description": "request body too large"},
}


class ProblemError(Exception):
    def __init__(self, status: int, detail: str, field: str | None = None, headers: dict | None = None):
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers
        super().__init__(detail)


def problem(status: int, detail: str, field: str | None = None, headers: dict | None = None, **extra) -> JSONResponse:
    body: dict = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if field:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=headers)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError):
        return problem(exc.status, exc.detail, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and not (media == "application/json" or media.endswith("+json")):
            # a body sent as text, XML or a form is not read as JSON: say what the service reads
            sent = media[:80] or "untyped"
            return problem(415, f"the body must be JSON (Content-Type: application/json), not {sent}")
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        loc = tuple(first.get("loc", ("body",)))
        if first.get("type") == "json_invalid":
            return problem(400, "the body is not valid JSON", "body")
        message = str(first.get("msg", "invalid"))
        if first.get("type") == "missing":
            message = "is required"
        field = _field(loc)
        return problem(
            400,
            f"{field}: {message}",
            field,
            errors=[{"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg"))} for e in errors[:20]],
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        field = "body" if exc.status_code == 400 else None  # FastAPI's own 400: the body could not be parsed
        return problem(exc.status_code, str(exc.detail), field, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        incident = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s %s", incident, request.method, request.url.path, exc_info=exc)
        return problem(500, f"an internal error occurred; it has been logged as {incident}", incident=incident)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets a 413 problem before the app reads it all, and one
    that has not all arrived `deadline` seconds after the request began a 408 (a client trickling a body, a
    byte at a time, held a connection and its buffer for as long as it liked: the token is checked only once
    the body is read)."""

    def __init__(self, app, limit: int, deadline: float = 20.0):
        self.app = app
        self.limit = limit
        self.deadline = deadline

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, send)
            return
        parts: list[bytes] = []  # joined once: adding to one bytes object copies it all again for each part
        size = 0
        more = True
        with anyio.move_on_after(self.deadline) as waited:
            while more:  # read the whole body first (at most `limit` bytes), then hand it on
                message = await receive()
                if message["type"] != "http.request":
                    break
                part = message.get("body", b"")
                parts.append(part)
                size += len(part)
                more = message.get("more_body", False)
                if size > self.limit:
                    await self._refuse(scope, send)
                    return
        if waited.cancelled_caught:
            await self._refuse(scope, send, problem(408, f"the request body did not arrive within {self.deadline:g} s"))
            return
        body = b"".join(parts)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, send, response=None):
        response = response or problem(413, f"the request body is larger than {self.limit} bytes", "body")

        async def nothing() -> dict:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)
