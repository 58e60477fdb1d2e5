"""Fetching what the prefetch did not bring, from the CDS client's `fhirServer` with its bearer token, carefully.

* `https` only (plain http only under --insecure-dev); with a trust file, `fhirServer` must be one of the bases
  the calling issuer lists (`fhir_servers`), so the access token goes to a server its issuer named, never to
  one a request names;
* the request URL is the base plus the prefetch template, its context values URL-encoded; no redirects; a
  searchset's `next` links are followed only under the same base (scheme, host, port and path prefix), so the
  token never leaves it;
* per hook call, a cap on the bytes read (compressed answers are refused, so the cap is on what is parsed) and
  on the total time (each read's timeout is what is left of it), and at most `max_pages` pages per key;
* a failure says only that the data could not be had (a 412), never why in terms of ports or hosts (the
  reason is logged), so the service cannot be used to map a network;
* when a cap, the page limit or a foreign `next` link stops a search after its first page, the call goes on
  with what was read and `incomplete` says so; the cards show it (never silently less).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx

from lumbar_kb.clinic.service.problems import ProblemError
from lumbar_kb.clinic.service.security import normal_base

log = logging.getLogger("lumbar_kb.service")


def fill_template(template: str, context: dict) -> str:
    """A prefetch template with its `{{context.X}}` tokens replaced by the context's values, URL-encoded."""
    out = template
    for key, value in context.items():
        if isinstance(value, str):
            out = out.replace("{{context." + key + "}}", quote(value, safe=""))
    return out


@dataclass(frozen=True)
class Policy:
    https_only: bool = True
    allowed: tuple[str, ...] | None = None  # normal_base() of the bases allowed; None: any (--insecure-dev)
    max_bytes: int = 5_000_000
    deadline: float = 8.0
    max_pages: int = 10


def _shut(response: httpx.Response) -> None:
    """End a response's connection now, from another thread: a blocked read returns at once."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Stop(Exception):
    """A cap was hit: what was read so far stands, marked incomplete."""


@dataclass
class FhirFetcher:
    """One hook call's access to its `fhirServer`: the caps are counted over every key fetched."""

    base: str
    token: str | None
    policy: Policy
    incomplete: list[str] = field(default_factory=list)
    read: int = 0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base)
        if parts.scheme != "https" and (self.policy.https_only or parts.scheme != "http"):
            raise ProblemError(400, "fhirServer must be an https URL", "fhirServer")
        if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
            raise ProblemError(400, "fhirServer must be a base URL (no credentials, query or fragment)", "fhirServer")
        self.base = normal_base(self.base)
        if self.policy.allowed is not None and self.base not in self.policy.allowed:
            raise ProblemError(
                412, "fhirServer is not a FHIR server the calling issuer lists in the trust file", "fhirServer"
            )

    def _left(self) -> float:
        return self.policy.deadline - (time.monotonic() - self.started)

    def under_base(self, url: str) -> bool:
        """Whether `url` lies under the base: the token goes nowhere else. A path whose segments, percent-
        decoded, step out (`%2e%2e`, `.%2E`) or hide a separator (`%2f`, a backslash) is not under it: sent as
        it is, a server that decodes it would answer from outside the base."""
        parts = urlsplit(url)
        if parts.username or parts.password:
            return False
        decoded = unquote(parts.path)
        if "\\" in decoded or "%2f" in parts.path.lower() or any(s in (".", "..") for s in decoded.split("/")):
            return False
        here = normal_base(f"{parts.scheme}://{parts.netloc}{parts.path}")
        return here == self.base or here.startswith(self.base + "/")

    def get(self, key: str, query: str) -> dict:
        """GET `query` (relative to the base); a searchset's pages are followed and merged."""
        url: str | None = f"{self.base}/{query.lstrip('/')}"
        merged: dict | None = None
        pages = 0
        with httpx.Client(follow_redirects=False, trust_env=False) as client:
            while url:
                if pages == self.policy.max_pages:
                    self.incomplete.append(f"{key}: more than {self.policy.max_pages} pages; the rest was not read")
                    break
                if not self.under_base(url):
                    self.incomplete.append(f"{key}: a further page lies outside fhirServer and was not read")
                    break
                try:
                    data = self._page(client, url, key)
                except _Stop as stop:
                    if merged is None:
                        raise self._fail(key, str(stop)) from None
                    self.incomplete.append(f"{key}: {stop}; the rest was not read")
                    break
                pages += 1
                if merged is None:
                    merged = data
                elif data.get("resourceType") == "Bundle":
                    entries = data.get("entry") or []
                    if not isinstance(entries, list) or not isinstance(merged.get("entry", []), list):
                        raise self._fail(key, "a page's entry is not a list")
                    merged.setdefault("entry", []).extend(entries)
                if data.get("resourceType") != "Bundle":
                    break
                links = data.get("link") or []
                nxt = next(
                    (
                        link.get("url")
                        for link in (links if isinstance(links, list) else [])
                        if isinstance(link, dict) and link.get("relation") == "next"
                    ),
                    None,
                )
                url = urljoin(url, nxt) if isinstance(nxt, str) and nxt else None
        assert merged is not None
        if merged.get("resourceType") == "OperationOutcome":
            raise self._fail(key, "fhirServer answered an OperationOutcome")
        return merged

    def _page(self, client: httpx.Client, url: str, key: str) -> dict:
        left = self._left()
        if left <= 0:
            raise _Stop("the time allowed for fhirServer ran out")
        room = self.policy.max_bytes - self.read
        headers = {"Accept": "application/fhir+json", "Accept-Encoding": "identity"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        watchdog: threading.Timer | None = None
        try:
            with client.stream("GET", url, headers=headers, timeout=httpx.Timeout(left)) as response:
                # a hard deadline: a server sending a byte at a time is cut off when the time is up, whatever
                # each read's timeout (the socket is shut down from a timer thread, which ends a blocked read)
                watchdog = threading.Timer(max(self._left(), 0.0), _shut, (response,))
                watchdog.daemon = True
                watchdog.start()
                if response.status_code != 200:
                    raise self._fail(key, f"status {response.status_code}")
                if response.headers.get("content-encoding", "identity").lower() != "identity":
                    raise self._fail(key, "a compressed answer")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > room:
                    raise _Stop(f"the answer is larger than the {self.policy.max_bytes:,} bytes allowed")
                body = bytearray()
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > room:
                        raise _Stop(f"the answers are larger than the {self.policy.max_bytes:,} bytes allowed")
                    if self._left() <= 0:
                        raise _Stop("the time allowed for fhirServer ran out")
        except httpx.TimeoutException:
            raise _Stop("the time allowed for fhirServer ran out") from None
        except (httpx.HTTPError, OSError) as exc:
            if self._left() <= 0:
                raise _Stop("the time allowed for fhirServer ran out") from None
            raise self._fail(key, type(exc).__name__) from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
        self.read += len(body)
        try:
            data = json.loads(bytes(body))
        except (ValueError, RecursionError):
            raise self._fail(key, "not JSON") from None
        if not isinstance(data, dict):
            raise self._fail(key, "not a FHIR resource")
        return data

    def _fail(self, key: str, why: str) -> ProblemError:
        log.info("prefetch %s from fhirServer failed: %s", key, why)
        return ProblemError(
            412, f"prefetch '{key}' was not given and could not be fetched from fhirServer", f"prefetch.{key}"
        )
