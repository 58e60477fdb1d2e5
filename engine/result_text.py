"""The text report a clinician reads in ten seconds (or a patient, with `audience="patient"`).

Order: urgency first, then whether the result is incomplete (alarm questions unanswered) or out of the guideline's
scope, the unanswered questions whose answer would escalate (could_escalate) next, then actions
with their windows, warnings, differential, and why (each fired rule with what it matched and its citations),
then the references.
"""

from __future__ import annotations

import textwrap

from lumbar_kb.engine.model import KnowledgeBase, hours_text
from lumbar_kb.engine.result import Result

WIDTH = 100


def _wrap(text: str, indent: str, first: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first or indent, subsequent_indent=indent) or [first.rstrip()]


def _cites(numbers) -> str:
    return "[" + ", ".join(str(n) for n in numbers) + "]"


def _escalation_text(e, kb: KnowledgeBase, patient: bool) -> str:
    """What one escalating answer would change, e.g. "if yes: EMERGENCY; MRI of the whole spine within 12 h"."""
    fact = kb.facts[e.fact]
    answers = e.answers or (e.answer,)
    if fact.type == "enum" and set(answers) == set(fact.values):
        answer = "answered"  # every answer escalates alike: naming one would mislead
    else:
        answer = " or ".join(fact.label(a) for a in answers)
    parts = []
    if e.would_raise_urgency_to:
        entry = kb.catalog["urgency"][e.would_raise_urgency_to]
        parts.append(entry.patient_text.split(". ")[0].rstrip(".") if patient else entry.label)
    for b in e.would_bring_forward:
        when = b.window or ("" if b.within_hours is None else hours_text(b.within_hours))
        if patient:
            text = kb.catalog["action"][b.action].patient_text.rstrip(".")
            parts.append(f"{text[0].lower()}{text[1:]} {when}".rstrip() if parts else f"{text} {when}".rstrip())
        else:
            now = (b.was_window or hours_text(b.was_within_hours)) if b.was_required else "not required"
            parts.append(f"{b.label} {when}".rstrip() + f" (now {now})")
    return f"if {answer}: " + "; ".join(parts)


def contradiction_texts(result: Result, kb: KnowledgeBase) -> list[str]:
    """One paragraph per contradiction the result was computed under: both answers named (for a clinician), that
    the more serious reading was assumed, and the questions that settle it, in the audience's words (the knowledge
    base's relation `because` and questions). What the report, the questionnaire page and the cards show."""
    patient = result.audience == "patient"
    out = []
    for c in result.contradictions:
        facts = [kb.facts[name] for name in c.settle]
        questions = " / ".join(((f.patient_question if patient else f.question) or f.meaning) for f in facts)
        if patient:
            out.append(
                "Some of your answers contradict each other; this advice assumes the more serious answer until they "
                f"are checked. Please check: {questions}"
            )
            continue
        given = " and ".join(f"{name}: {kb.facts[name].label(value)}" for name, value in c.given.items())
        out.append(
            f"Contradictory answers ({c.relation}): {given}. {c.because} This result is computed under the most "
            f"urgent reading the answers allow; settle it: {questions}"
        )
    return out


def render(result: Result, kb: KnowledgeBase) -> str:
    patient = result.audience == "patient"
    out: list[str] = []
    label = kb.catalog["urgency"][result.urgency].label
    if patient:
        out.extend(_wrap(result.urgency_text, ""))
    else:
        out.append(f"{label}: {result.urgency_text}")
    for text in contradiction_texts(result, kb):  # answers that contradict each other: never an alarm dropped
        out.extend(_wrap(text, "  " if not patient else "", ""))
    if not result.complete:  # the questions to ask now come first: an unanswered alarm question is never a no
        out.extend(_wrap(result.incomplete_text, ""))
        if not patient:
            out.extend(_wrap("Unanswered alarm questions: " + ", ".join(result.unanswered_alarm) + ".", "  ", ""))
    if not result.in_scope:
        out.extend(_wrap(result.scope_text, ""))
    out.append("")
    if result.could_escalate:
        out.append(
            "Please answer now, it could change what to do:"
            if patient
            else "Ask now: these answers would raise the urgency or bring a step forward (most urgent first):"
        )
        for e in result.could_escalate:
            out.extend(_wrap(e.question, "      ", "  ? "))
            out.extend(_wrap(_escalation_text(e, kb, patient), "        ", "      "))
        out.append("")
    if result.actions:
        out.append("What to do:" if patient else "Actions:")
        for i, item in enumerate(result.actions, 1):
            window = item.window or hours_text(item.within_hours, item.within_hours_min)
            if item.done:
                window = "already done" if patient else "done (the answers give its result)"
            head = f"  {i}. {item.label}, {window}" if not patient else f"  {i}. {window.capitalize()}: "
            if patient:
                out.extend(_wrap(item.text, "     ", head))
            else:
                out.append(f"{head}  {_cites(item.citations)}")
                out.extend(_wrap(item.text, "     "))
                out.append(f"     because: {', '.join(item.because)}")
                for rule, words, by in item.overridden:  # a window that never took effect is shown as such
                    out.extend(
                        _wrap(f"{rule}'s window ({words}) is overridden by {by}'s earlier one", "       ", "     (")
                    )
                    out[-1] += ")"
    else:
        out.append(
            "What to do: answer the questions above first; the steps depend on them."
            if patient
            else "Actions: none concluded from the answers given."
        )
    for title, items, mark in (("Warnings", result.warnings, "!"), ("Differential", result.differential, "-")):
        if items:
            out.append("")
            out.append(f"{'Good to know' if patient and mark == '!' else 'Possible causes' if patient else title}:")
            for item in items:
                text = item.text if patient else f"{item.text} {_cites(item.citations)}"
                out.extend(_wrap(text, "    ", f"  {mark} "))
    if not patient:
        out.append("")
        out.append("Why (rules fired, in order):")
        if not result.fired:
            out.append("  no rule fired")
        for f in result.fired:
            matched = ", ".join(f"{name} = {kb.facts[name].label(value)}" for name, value in f.matched.items())
            out.append(f"  {f.order:>2}. {f.rule} {_cites(f.citations)}")
            out.extend(_wrap(f"{f.title}; because {matched}.", "      "))
        asked = {e.fact for e in result.could_escalate}
        others = [q for q in result.unanswered if q.fact not in asked]
        if others:
            out.append("")
            out.extend(
                _wrap(
                    "Other unanswered questions (no single answer changes the urgency or a time-critical step now): "
                    + ", ".join(q.fact for q in others),
                    "  ",
                )
            )
        fired = set(result.fired_ids())
        touched = [i for i in kb.inconsistencies if fired & set(i.rules)]
        if touched:
            out.append("")
            out.append("Where the guideline disagrees with itself (the encoding's choice, pending the board):")
            for item in touched:
                out.extend(_wrap(f"{item.title} {item.choice}", "      ", "  ~ "))
        cited = sorted({n for f in result.fired for n in f.citations})
        if cited:
            out.append("")
            out.append("References:")
            for n in cited:
                out.extend(_wrap(kb.references[n].cite(), "      ", "  "))
    kbid = result.knowledge_base
    if kb.disclaimer:
        out.append("")
        out.extend(_wrap(kb.disclaimer, ""))
    out.append("")
    out.append(
        f"{kb.title} (knowledge base {kbid['name']} {kbid['version']}, sha256 {kbid['sha256'][:12]}, "
        f"review status: {kb.review_status.replace('_', ' ')})"
    )
    return "\n".join(out) + "\n"
