"""Fetching what the prefetch did not bring, from the CDS client's `fhirServer` with its bearer token."""

from __future__ import annotations

import httpx

from lumbar_kb.clinic.service.problems import ProblemError

MAX_PAGES = 10


def fill_template(template: str, context: dict) -> str:
    out = template
    for key, value in context.items():
        if isinstance(value, str):
            out = out.replace("{{context." + key + "}}", value)
    return out


def fetch(fhir_server: str, token: str | None, query: str, key: str, timeout: float = 5.0) -> dict:
    """GET `query` from the FHIR server; a searchset's pages are followed and merged. A 412 when it fails."""
    headers = {"Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url: str | None = f"{fhir_server.rstrip('/')}/{query.lstrip('/')}"
    merged: dict | None = None
    pages = 0
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            while url and pages < MAX_PAGES:
                pages += 1
                response = client.get(url, headers=headers)
                if response.status_code != 200:
                    raise ProblemError(
                        412,
                        f"prefetch '{key}' is missing and fhirServer answered {response.status_code}",
                        f"prefetch.{key}",
                    )
                data = response.json()
                if not isinstance(data, dict):
                    raise ProblemError(
                        412, f"prefetch '{key}': fhirServer did not answer a FHIR resource", f"prefetch.{key}"
                    )
                if merged is None:
                    merged = data
                elif data.get("resourceType") == "Bundle":
                    merged.setdefault("entry", []).extend(data.get("entry") or [])
                url = next(
                    (
                        link.get("url")
                        for link in data.get("link") or []
                        if isinstance(link, dict) and link.get("relation") == "next"
                    ),
                    None,
                )
                if data.get("resourceType") != "Bundle":
                    break
    except (httpx.HTTPError, ValueError) as exc:
        raise ProblemError(
            412,
            f"prefetch '{key}' is missing and fhirServer could not be read ({type(exc).__name__})",
            f"prefetch.{key}",
        ) from None
    assert merged is not None
    return merged
