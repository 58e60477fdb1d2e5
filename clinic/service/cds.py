"""CDS Hooks 2.0 endpoints: discovery, the hook calls (patient-view, order-select, order-sign), feedback."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from lumbar_kb.clinic.fhir.inbound import FhirInputError, Mapped, map_parts, resources
from lumbar_kb.clinic.service import cards as cardmod
from lumbar_kb.clinic.service.fhirclient import fetch, fill_template
from lumbar_kb.clinic.service.problems import ProblemError
from lumbar_kb.clinic.service.schemas import Cards, Discovery, Feedback, HookRequest, ProblemDoc
from lumbar_kb.clinic.service.security import AuthError
from lumbar_kb.clinic.service.state import State, state
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

router = APIRouter(tags=["CDS Hooks"])


def authenticated(request: Request) -> dict:
    st = state(request)
    if st.verifier is None:  # --insecure-dev
        return {}
    base = st.base_url(request)
    audiences = [f"{base}/cds-services", f"{base}{request.url.path}", str(request.url)]
    try:
        return st.verifier.verify(request.headers.get("authorization"), audiences)
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
def call(service_id: str, body: HookRequest, request: Request, _claims: Claims) -> JSONResponse:
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
    orders = []
    if hook in ("order-select", "order-sign"):
        orders = _draft_orders(st, ctx, hook)
    mapped = _mapped(st, body, patient_id)
    result = st.evaluator.evaluate(mapped.facts)
    context = cardmod.Context(service_id, body.hookInstance, patient_id, st.base_url(request))
    if hook == "patient-view":
        cards = cardmod.patient_view(st.kb, st.codes, result, mapped, context)
    else:
        cards = cardmod.order_cards(st.kb, st.codes, result, mapped, context, orders)
    # the explanation is rendered when asked for (the card's link), from the facts and the same knowledge base
    explanation = json.dumps({"facts": mapped.facts, "provenance": _provenance(mapped)})
    for card in cards:
        st.store.record_card(
            card["uuid"], service_id, body.hookInstance, result.fired_ids(), st.kb.sha256, result.urgency, explanation
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
        ref = f"ServiceRequest/{res.get('id')}"
        if hook == "order-select" and selections is not None and ref not in selections:
            continue
        code = res.get("code")
        codings = code.get("coding") if isinstance(code, dict) else None
        if code is not None and not isinstance(codings, list):
            raise ProblemError(400, "must be a CodeableConcept with a list of codings", f"{at}.code")
        for coding in codings or []:
            if not isinstance(coding, dict):
                raise ProblemError(400, "a coding must be an object", f"{at}.code.coding")
            kind = st.codes.order_kind(coding.get("system"), coding.get("code"))
            if kind is not None:
                out.append((ref, kind))
                break
    return out


def _mapped(st: State, body: HookRequest, patient_id: str) -> Mapped:
    prefetch = body.prefetch or {}
    data: list[tuple[str, Any]] = []
    for key in NEEDED:
        value = prefetch.get(key)
        if value is None:
            if not body.fhirServer:
                raise ProblemError(
                    412, f"prefetch '{key}' is missing and no fhirServer was given to fetch it from", f"prefetch.{key}"
                )
            token = body.fhirAuthorization.access_token if body.fhirAuthorization else None
            value = fetch(body.fhirServer, token, fill_template(PREFETCH[key], body.context), key)
        data.append((f"prefetch.{key}", value))
    try:
        return map_parts(data, st.kb, st.codes, patient_id)
    except FhirInputError as exc:
        raise ProblemError(400, f"{exc.field}: {exc.message}", exc.field) from None


def _provenance(mapped: Mapped) -> str:
    lines = ["", "From the record:"]
    lines += [f"  {fact}: {', '.join(src)}" for fact, src in mapped.evidence.items()] or ["  nothing mapped to a fact"]
    if mapped.conflicts:
        lines.append("Conflicting records (left unknown):")
        lines += [f"  {fact}: {'; '.join(v)}" for fact, v in mapped.conflicts.items()]
    if mapped.skipped:
        lines.append("Not used:")
        lines += [f"  {s}" for s in mapped.skipped]
    return "\n".join(lines) + "\n"


@router.post("/cds-services/{service_id}/feedback", responses=PROBLEMS, summary="Feedback on cards")
def feedback(service_id: str, body: Feedback, request: Request, _claims: Claims) -> Response:
    st = state(request)
    if service_id not in SERVICES:
        raise ProblemError(404, f"no CDS service '{service_id}'", "service_id")
    items = []
    for i, item in enumerate(body.feedback):
        if st.store.card(item.card) is None:
            raise ProblemError(404, f"card '{item.card}' was not issued by this service", f"feedback[{i}].card")
        reason = (item.overrideReason.reason or {}) if item.overrideReason else {}
        items.append(
            {
                "card": item.card,
                "outcome": item.outcome,
                "reason_code": reason.get("code") if isinstance(reason.get("code"), str) else None,
                "reason_display": reason.get("display") if isinstance(reason.get("display"), str) else None,
                "user_comment": item.overrideReason.userComment if item.overrideReason else None,
                "accepted_suggestions": [s.id for s in item.acceptedSuggestions or []],
                "outcome_timestamp": item.outcomeTimestamp,
            }
        )
    st.store.record_feedback(service_id, items)
    return Response(status_code=200)


@router.get("/explanations/{card_uuid}", response_class=PlainTextResponse, responses=PROBLEMS, tags=["explanations"])
def explanation(card_uuid: str, request: Request) -> PlainTextResponse:
    """The full report behind a card (the card's link); the uuid is known only to whoever received the card."""
    st = state(request)
    card = st.store.card(card_uuid)
    if card is None:
        raise ProblemError(404, f"no card '{card_uuid}'", "card_uuid")
    if card["kb_sha256"] != st.kb.sha256:
        raise ProblemError(409, "the knowledge base has changed since this card was issued", "card_uuid")
    saved = json.loads(card["explanation"])
    result = st.evaluator.evaluate(saved["facts"])
    return PlainTextResponse(render(result, st.kb) + saved["provenance"])
