"""CDS Hooks 2.0 endpoints: discovery, the hook calls (patient-view, order-select, order-sign), feedback, and the
cards' explanation links."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from lumbar_kb.clinic.fhir.codes import MalformedOrder
from lumbar_kb.clinic.fhir.inbound import FhirInputError, Mapped, map_parts, resources
from lumbar_kb.clinic.service import cards as cardmod
from lumbar_kb.clinic.service import links
from lumbar_kb.clinic.service.fhirclient import FhirFetcher, Policy, fill_template
from lumbar_kb.clinic.service.problems import ProblemError
from lumbar_kb.clinic.service.schemas import Cards, Discovery, Feedback, HookRequest, ProblemDoc
from lumbar_kb.clinic.service.security import AuthError, client_of
from lumbar_kb.clinic.service.state import State, state
from lumbar_kb.clinic.service.store import CardRow
from lumbar_kb.engine.errors import safe_text
from lumbar_kb.engine.result_text import render

PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
    "questionnaireResponses": "QuestionnaireResponse?patient={{context.patientId}}",
}
NEEDED = ("conditions", "observations", "questionnaireResponses")  # the facts come from these
SERVICES = {
    "lumbar-mass-patient-view": "patient-view",
    "lumbar-mass-order-select": "order-select",
    "lumbar-mass-order-sign": "order-sign",
}
FEEDBACK_SKEW = 300.0  # seconds a feedback timestamp may lie before its card or after now (clocks differ)
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemDoc, "description": text}
    for code, text in (
        (400, "bad request: the field is named"),
        (401, "the JWT bearer token is missing or refused"),
        (404, "no such service or card"),
        (412, "the data needed cannot be had (prefetch missing and fhirServer unavailable)"),
        (413, "request body too large"),
    )
}
LINK_PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: {"model": ProblemDoc, "description": "the link is not signed, its signature is wrong or it has expired"},
    404: {"model": ProblemDoc, "description": "no such card"},
    409: {"model": ProblemDoc, "description": "the knowledge base has changed since the card was issued"},
}

router = APIRouter(tags=["CDS Hooks"])


async def authenticated(request: Request) -> dict:
    """The token's claims; the audience is the URL of the endpoint invoked, made from --public-url. The check
    (a signature, a SQLite write, at times a JWKS fetch) runs in a worker thread, never on the event loop; under
    --insecure-dev there is nothing to check and no thread is taken."""
    st = state(request)
    verifier = st.verifier
    if verifier is None:  # --insecure-dev
        return {}
    route = request.scope.get("route")
    template = getattr(route, "path", "/cds-services")
    endpoint = template.format(**dict(request.path_params)) if request.path_params else template
    try:
        return await run_in_threadpool(
            verifier.verify, request.headers.get("authorization"), st.base_url(request) + endpoint
        )
    except AuthError as exc:
        raise ProblemError(401, exc.detail, "Authorization", headers={"WWW-Authenticate": "Bearer"}) from None


Claims = Annotated[dict, Depends(authenticated)]


@router.get("/cds-services", response_model=Discovery, responses=PROBLEMS)
def discovery(request: Request, _claims: Claims) -> JSONResponse:
    kb = state(request).kb
    what = {
        "patient-view": "the urgency, the actions with their windows, the warnings and the questions still to ask",
        "order-select": "checks a lumbar radiograph, CT, MRI or biopsy being ordered against the pathway",
        "order-sign": "checks a lumbar radiograph, CT, MRI or biopsy about to be signed against the pathway",
    }
    services = [
        {
            "hook": hook,
            "title": f"{kb.title} ({hook})",
            "description": f"{kb.question} {what[hook].capitalize()}. {kb.disclaimer}",
            "id": sid,
            "prefetch": PREFETCH,
            "usageRequirements": "A JWT bearer token (asymmetric signature) from a trusted issuer on every call.",
        }
        for sid, hook in SERVICES.items()
    ]
    return JSONResponse({"services": services})


@router.post(
    "/cds-services/{service_id}",
    response_model=Cards,
    responses=PROBLEMS,
    summary="Call a CDS service with a hook",
)
async def call(service_id: str, body: HookRequest, request: Request, claims: Claims) -> JSONResponse:
    """Two lanes, neither of them the event loop: a fetch from fhirServer (I/O, seconds at worst) runs in the
    fetch lane, apart from the threads that check tokens; the engine's work (mapping, evaluation, cards, the
    store) runs in the engine lane, a few threads taken in arrival order. Many threads interleaving CPU work
    under the GIL give every call a long tail (measured: p99 134 ms with 8 threads against 26-30 ms with 2,
    benchmarks/bench_service.py)."""
    st = state(request)
    hook = SERVICES.get(service_id)
    if hook is None:
        raise ProblemError(404, f"no CDS service '{service_id}' (see GET /cds-services)", "service_id")
    if body.hook != hook:
        raise ProblemError(400, f"service '{service_id}' answers the '{hook}' hook, not '{body.hook}'", "hook")
    ctx = body.context
    patient_id = ctx.get("patientId")
    if not isinstance(patient_id, str) or not patient_id:
        raise ProblemError(400, "context.patientId is required (a string)", "context.patientId")
    if not cardmod.FHIR_ID.fullmatch(patient_id):
        raise ProblemError(400, "context.patientId must be a FHIR id ([A-Za-z0-9-.], 1 to 64)", "context.patientId")
    for name in ("userId", "encounterId"):
        if name in ctx and not isinstance(ctx[name], str):
            raise ProblemError(400, f"context.{name} must be a string", f"context.{name}")
    if body.fhirAuthorization is not None and not body.fhirServer:
        raise ProblemError(400, "fhirServer is required when fhirAuthorization is given", "fhirServer")
    granted = body.fhirAuthorization.patient if body.fhirAuthorization else None
    if granted is not None and granted != patient_id:  # a token for one patient, a call about another
        raise ProblemError(400, "fhirAuthorization.patient is not context.patientId", "fhirAuthorization.patient")
    base = st.base_url(request)
    if _needs_fetch(body):
        gathered = await st.in_fetch_lane(_gather, st, body, hook, patient_id, claims)
        return await st.in_engine_lane(_decide, st, body, service_id, hook, patient_id, claims, base, gathered)
    return await st.in_engine_lane(_decide, st, body, service_id, hook, patient_id, claims, base, None)


Gathered = tuple[list, list, list[str]]  # the draft orders, the record's parts, what could not be read


def _gather(st: State, body: HookRequest, hook: str, patient_id: str, claims: dict) -> Gathered:
    """The draft orders and the record's parts, fetched from fhirServer where the prefetch does not hold them."""
    orders = _draft_orders(st, body.context, hook) if hook in ("order-select", "order-sign") else []
    data, incomplete = _record(st, body, claims)
    return orders, data, incomplete


def _decide(
    st: State,
    body: HookRequest,
    service_id: str,
    hook: str,
    patient_id: str,
    claims: dict,
    base: str,
    gathered: Gathered | None,
) -> JSONResponse:
    orders, data, incomplete = gathered if gathered is not None else _gather(st, body, hook, patient_id, claims)
    try:
        mapped = map_parts(data, st.kb, st.codes, patient_id)
    except FhirInputError as exc:
        raise ProblemError(400, f"{exc.field}: {exc.message}", exc.field) from None
    # records that contradict each other are evaluated under the most urgent reading they allow (never dropped)
    result = st.evaluator.evaluate(mapped.most_urgent_inputs(), contradictions="most_urgent")
    ttl = st.settings.link_ttl
    context = cardmod.Context(
        service_id,
        body.hookInstance,
        patient_id,
        base,
        explanation_url=lambda uid: links.signed_url(base, st.link_secret, uid, ttl),
        incomplete=tuple(incomplete),
        set_aside=tuple(mapped.set_aside),
    )
    if hook == "patient-view":
        cards = cardmod.patient_view(st.kb, st.codes, result, mapped, context)
    else:
        cards = cardmod.order_cards(st.kb, st.codes, result, mapped, context, orders)
        if not cards and context.notices():  # the record not read whole, or records set aside: say so, never less
            cards = cardmod.patient_view(st.kb, st.codes, result, mapped, context)
    # the explanation is rendered when asked for (the card's link), from the facts and the same knowledge base
    explanation = json.dumps({"facts": mapped.most_urgent_inputs(), "provenance": _provenance(mapped, incomplete)})
    client = client_of(claims)
    st.store.record_cards(
        [
            CardRow(
                card["uuid"],
                service_id,
                body.hookInstance,
                result.fired_ids(),
                st.kb.sha256,
                result.urgency,
                explanation,
                client=client,
                suggestions=[s["uuid"] for s in card.get("suggestions", [])],
            )
            for card in cards
        ]
    )
    return JSONResponse({"cards": cards})


def _draft_orders(st: State, ctx: dict, hook: str) -> list:
    bundle = ctx.get("draftOrders")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ProblemError(400, "context.draftOrders must be a FHIR Bundle of draft orders", "context.draftOrders")
    selections = ctx.get("selections")
    if hook == "order-select":
        if not isinstance(selections, list) or not all(isinstance(s, str) for s in selections):
            raise ProblemError(400, "context.selections must be a list of references", "context.selections")
    try:
        found = list(resources(bundle, "context.draftOrders"))
    except FhirInputError as exc:
        raise ProblemError(400, exc.message, exc.field) from None
    out = []
    for at, res in found:
        if res.get("resourceType") != "ServiceRequest":
            continue
        rid = res.get("id")
        if not isinstance(rid, str) or not cardmod.FHIR_ID.fullmatch(rid):
            raise ProblemError(400, "a draft order needs a FHIR id ([A-Za-z0-9-.], 1 to 64)", f"{at}.id")
        ref = f"ServiceRequest/{rid}"
        if hook == "order-select" and selections is not None and ref not in selections:
            continue
        try:
            kind = st.codes.classify_order(res, at)
        except MalformedOrder as exc:
            raise ProblemError(400, exc.message, exc.field) from None
        if kind is not None:
            out.append((ref, kind))
            if len(out) > MAX_CHECKED_ORDERS:
                raise ProblemError(
                    400,
                    f"more than {MAX_CHECKED_ORDERS} imaging or biopsy orders of the lumbar region in one call: "
                    "send them in calls of at most that many",
                    "context.draftOrders",
                )
    return out


# orders this service checks (each may get a card, stored with its explanation) in one call: a clinician signs a
# handful; thousands in one call (a card each, 16 MB) are a client's error or an attack, not an order set
MAX_CHECKED_ORDERS = 50


def _failed(value: Any) -> bool:
    """A prefetch that failed: an OperationOutcome, or a Bundle carrying one with an error (spec: services
    SHOULD check prefetched data for OperationOutcomes)."""
    if not isinstance(value, dict):
        return False
    if value.get("resourceType") == "OperationOutcome":
        return True
    if value.get("resourceType") != "Bundle" or not isinstance(value.get("entry"), list):
        return False
    for entry in value["entry"]:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "OperationOutcome":
            issues = res.get("issue")
            if not isinstance(issues, list) or any(
                not isinstance(i, dict) or i.get("severity") in ("fatal", "error") for i in issues
            ):
                return True
    return False


def _unread(prefetch: dict, key: str) -> str | None:
    """Why the prefetch does not hold `key`'s data (it is then fetched from fhirServer), or None if it does."""
    if key not in prefetch:
        return "was not given"
    return "failed (an OperationOutcome)" if _failed(prefetch[key]) else None


def _needs_fetch(body: HookRequest) -> bool:
    """Whether some part of the record must be fetched from fhirServer: a key left out, or one that failed."""
    prefetch = body.prefetch or {}
    return any(_unread(prefetch, key) for key in NEEDED)


def _record(st: State, body: HookRequest, claims: dict) -> tuple[list[tuple[str, Any]], list[str]]:
    """The record's parts, as the spec reads the prefetch: a key whose value is null means the record holds no
    such data (read as empty); a key left out was not prefetched, and a key holding an OperationOutcome failed:
    both are fetched from fhirServer, or the call is answered 412."""
    prefetch = body.prefetch or {}
    data: list[tuple[str, Any]] = []
    fetcher: FhirFetcher | None = None
    for key in NEEDED:
        if key in prefetch and prefetch[key] is None:
            continue  # null: nothing of the kind in the record
        value = prefetch.get(key)
        why = _unread(prefetch, key)
        if why is not None:
            if not body.fhirServer:
                raise ProblemError(
                    412, f"prefetch '{key}' {why} and no fhirServer was given to fetch it from", f"prefetch.{key}"
                )
            if fetcher is None:
                fetcher = FhirFetcher(body.fhirServer, _token(body), _policy(st, claims))
            value = fetcher.get(key, fill_template(PREFETCH[key], body.context))
        data.append((f"prefetch.{key}", value))
    return data, (fetcher.incomplete if fetcher else [])


def _token(body: HookRequest) -> str | None:
    return body.fhirAuthorization.access_token if body.fhirAuthorization else None


def _policy(st: State, claims: dict) -> Policy:
    s = st.settings
    allowed = None
    if st.verifier is not None:
        issuer = st.verifier.issuers.get(str(claims.get("iss")))
        allowed = issuer.fhir_servers if issuer is not None else ()
    return Policy(
        https_only=not s.insecure_dev,
        allowed=allowed,
        max_bytes=s.fhir_max_bytes,
        deadline=s.fhir_deadline,
        max_pages=s.fhir_max_pages,
    )


def _provenance(mapped: Mapped, incomplete: list[str] | None = None) -> str:
    """Which record gave which fact, and what was not used: record text (ids, references) escaped, one line each,
    so that a record cannot write a line of the report (a newline, an escape sequence or a bidi override)."""
    lines = ["", "From the record:"]
    lines += [f"  {fact}: {safe_text(', '.join(src))}" for fact, src in mapped.evidence.items()] or [
        "  nothing mapped to a fact"
    ]
    if mapped.conflicts:
        lines.append("Conflicting records (left unknown):")
        lines += [f"  {fact}: {safe_text('; '.join(v))}" for fact, v in mapped.conflicts.items()]
    if mapped.set_aside:
        lines.append("Set aside (not attributed to this patient; check them in the record):")
        lines += [f"  {safe_text(s)}" for s in mapped.set_aside]
    if mapped.skipped:
        lines.append("Not used:")
        lines += [f"  {safe_text(s)}" for s in mapped.skipped]
    if incomplete:
        lines.append("Not read (the record data is incomplete):")
        lines += [f"  {safe_text(s)}" for s in incomplete]
    return "\n".join(lines) + "\n"


@router.post("/cds-services/{service_id}/feedback", responses=PROBLEMS, summary="Feedback on cards")
def feedback(service_id: str, body: Feedback, request: Request, claims: Claims) -> Response:
    """Feedback as the spec says, for cards this service issued, from the client that received them: an
    `accepted` outcome names the card's own suggestions, an `overridden` one names none and its reason (if any)
    is one the card offered; the timestamp is an RFC 3339 date-time between the card's issue and now."""
    st = state(request)
    if service_id not in SERVICES:
        raise ProblemError(404, f"no CDS service '{service_id}'", "service_id")
    client = client_of(claims)
    now = time.time()
    items = []
    for i, item in enumerate(body.feedback):
        at = f"feedback[{i}]"
        card = st.store.card(item.card)
        if card is None or card["service"] != service_id or card["client"] != client:
            raise ProblemError(404, f"card '{item.card}' was not issued by this service to this client", f"{at}.card")
        when = _timestamp(item.outcomeTimestamp, f"{at}.outcomeTimestamp")
        if when < card["issued_at"] - FEEDBACK_SKEW or when > now + FEEDBACK_SKEW:
            raise ProblemError(
                400, "the outcome's time lies before the card was issued or in the future", f"{at}.outcomeTimestamp"
            )
        accepted = [s.id for s in item.acceptedSuggestions or []]
        reason: dict = {}
        if item.outcome == "accepted":
            if not accepted:
                raise ProblemError(
                    400, "an accepted outcome names the accepted suggestions", f"{at}.acceptedSuggestions"
                )
            for j, sid in enumerate(accepted):
                if sid not in card["suggestions"]:
                    raise ProblemError(400, "not a suggestion of this card", f"{at}.acceptedSuggestions[{j}].id")
            if item.overrideReason is not None:
                raise ProblemError(400, "an accepted outcome has no override reason", f"{at}.overrideReason")
        else:
            if item.acceptedSuggestions:
                raise ProblemError(400, "an overridden card has no accepted suggestions", f"{at}.acceptedSuggestions")
            if item.overrideReason is not None and item.overrideReason.reason is not None:
                given = item.overrideReason.reason
                offered = {(r["system"], r["code"]): r["display"] for r in cardmod.OVERRIDE_REASONS}
                display = offered.get((given.system or "", given.code))
                if display is None:
                    raise ProblemError(400, "not one of the card's override reasons", f"{at}.overrideReason.reason")
                reason = {"code": given.code, "display": display}
        items.append(
            {
                "card": item.card,
                "outcome": item.outcome,
                "reason_code": reason.get("code"),
                "reason_display": reason.get("display"),
                "user_comment": item.overrideReason.userComment if item.overrideReason else None,
                "accepted_suggestions": accepted,
                "outcome_timestamp": item.outcomeTimestamp,
            }
        )
    st.store.record_feedback(service_id, items)
    return Response(status_code=200)


def _timestamp(text: str, field: str) -> float:
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except ValueError:
        raise ProblemError(400, "must be an RFC 3339 date-time, e.g. 2026-12-01T12:00:00Z", field) from None


@router.get(
    "/explanations/{card_uuid}", response_class=PlainTextResponse, responses=LINK_PROBLEMS, tags=["explanations"]
)
def explanation(
    card_uuid: str,
    request: Request,
    expires: Annotated[str | None, Query(max_length=20)] = None,
    signature: Annotated[str | None, Query(max_length=128)] = None,
) -> PlainTextResponse:
    """The full report behind a card: opened by the signed, expiring link the card carries (an HMAC over the
    card's uuid and the expiry with the service's secret), never by the uuid alone."""
    st = state(request)
    refused = links.valid(st.link_secret, card_uuid, expires, signature)
    if refused:
        raise ProblemError(403, refused, "signature")
    card = st.store.card(card_uuid)
    if card is None:
        raise ProblemError(404, f"no card '{card_uuid}'", "card_uuid")
    if card["kb_sha256"] != st.kb.sha256:
        raise ProblemError(409, "the knowledge base has changed since this card was issued", "card_uuid")
    saved = json.loads(card["explanation"])
    result = st.evaluator.evaluate(saved["facts"], contradictions="most_urgent")
    return PlainTextResponse(render(result, st.kb) + saved["provenance"])
