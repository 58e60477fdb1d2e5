"""The questionnaire page at `/` and its JSON API: alarm questions first, then only the questions whose answer
could still change the result (the Result's could_escalate), and the result as the answers come in."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from lumbar_kb.clinic.service import cards as cardmod
from lumbar_kb.clinic.service.problems import PROBLEM_RESPONSES, ProblemError
from lumbar_kb.clinic.service.schemas import EvaluateRequest, PageResult
from lumbar_kb.clinic.service.state import state
from lumbar_kb.engine.errors import PatientError
from lumbar_kb.engine.model import hours_text
from lumbar_kb.engine.result_text import contradiction_texts

STATIC = Path(__file__).resolve().parent / "static"
router = APIRouter(tags=["questionnaire page"])


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


@router.post("/api/evaluate", response_model=PageResult, responses=PROBLEM_RESPONSES)
def evaluate(body: EvaluateRequest, request: Request) -> JSONResponse:
    st = state(request)
    kb = st.kb
    answers = {k: v for k, v in body.answers.items() if v is not None}
    try:
        result = st.evaluator.evaluate(answers, body.audience, contradictions="most_urgent")  # never drop an alarm
    except PatientError as exc:
        first = exc.problems[0]
        subject = first.subject or ""
        field = "answers." + subject.removeprefix("fact ").strip("'") if subject.startswith("fact ") else "answers"
        raise ProblemError(
            400, f"{field}: {first.message}" + (f" ({first.hint})" if first.hint else ""), field
        ) from None
    patient = body.audience == "patient"

    def question(f, why=None) -> dict:
        return {
            "fact": f.name,
            "question": (f.patient_question if patient else f.question) or f.meaning,
            "type": f.type,
            "values": [str(v) for v in f.values] if f.type == "enum" else [],
            "alarm": f.alarm,
            "answer": answers.get(f.name),
            "why": why,
        }

    escalating = {e.fact: e for e in result.could_escalate}
    unanswered = {q.fact for q in result.unanswered}
    shown, more = [], []
    for fact in sorted(kb.input_facts, key=lambda f: (not f.alarm, f.order)):
        e = escalating.get(fact.name)
        why = None
        if e is not None:
            parts = []
            if e.would_raise_urgency_to:
                level = kb.catalog["urgency"][e.would_raise_urgency_to]
                parts.append(level.patient_text.split(". ")[0].rstrip(".") if patient else level.label)
            for b in e.would_bring_forward:
                action = kb.catalog["action"][b.action]
                what = action.patient_text.rstrip(".") if patient else b.label
                parts.append(f"{what} {b.window or hours_text(b.within_hours)}")
            answer = " or ".join(fact.label(a) for a in (e.answers or (e.answer,)))
            why = f"if {answer}: " + "; ".join(parts)
        if fact.alarm and (fact.name in unanswered or fact.name in answers):
            shown.append(question(fact, why))
        elif e is not None or fact.name in answers:
            shown.append(question(fact, why))
        elif fact.name in unanswered:
            more.append(question(fact))
    data = {
        "urgency": result.urgency,
        "title": kb.title,
        "question": kb.question,
        "headline": cardmod.headline(kb, result, patient),
        "urgency_text": result.urgency_text,
        "indicator": cardmod.indicator(kb, result),
        "complete": result.complete,
        "alarm_unanswered": len(cardmod.unanswered_alarm(result)),
        "incomplete_text": result.incomplete_text,
        "scope_text": result.scope_text,
        "actions": [
            {"label": a.label, "window": cardmod.window(a), "text": a.text, "done": a.done} for a in result.actions
        ],
        "warnings": [{"label": "", "text": text} for text in contradiction_texts(result, kb)]
        + [{"label": "" if patient else w.label, "text": w.text} for w in result.warnings],
        "why": [f.title for f in result.fired],
        "questions": shown,
        "more_questions": more,
        "disclaimer": kb.disclaimer,
    }
    return JSONResponse(data)
