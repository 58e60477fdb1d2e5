"""CDS Hooks cards from the engine's Result: a view, with no clinical logic of its own.

Urgency, actions, windows, warnings and questions are the Result's (`Evaluator` + `decide`); every text is
the knowledge base's (catalogue, vocabulary, references) or names what it shows. The indicator follows the
urgency's rank in the catalogue (the highest rank is critical, the lowest info, anything between a warning),
so a level added to the catalogue needs no code here. The lowest level is never shown as settled while an
alarm question is unanswered: the card says the answers are incomplete and asks them.
"""

from __future__ import annotations

import re
import string
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass

from lumbar_kb.clinic.fhir.codes import Codes, OrderKind
from lumbar_kb.clinic.fhir.export import timing
from lumbar_kb.clinic.fhir.inbound import Mapped
from lumbar_kb.engine.errors import safe_text
from lumbar_kb.engine.model import KnowledgeBase, hours_text
from lumbar_kb.engine.result import Item, Result
from lumbar_kb.engine.result_text import contradiction_texts

SUMMARY_MAX = 139  # the spec: a "<140-character summary"
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ESCAPED = str.maketrans({c: "\\" + c for c in string.punctuation})  # every ASCII punctuation mark


def md(text: str) -> str:
    """Text from the record made inert in (GitHub-flavoured) markdown: every ASCII punctuation mark is
    backslash-escaped (CommonMark's rule: an escaped mark is a literal), so record text can open no link,
    image, HTML tag, emphasis, code, table or autolink (`www.` and `https:` no longer match); line breaks become
    spaces, and control, bidirectional and zero-width characters are shown escaped (`\\u202e`), never applied."""
    return safe_text(" ".join(str(text).split())).translate(_ESCAPED)


@dataclass(frozen=True)
class Context:
    service: str
    hook_instance: str
    patient_id: str
    base_url: str  # where this service is reached (links)
    explanation_url: Callable[[str], str] | None = None  # a card's uuid -> its (signed) explanation link
    incomplete: tuple[str, ...] = ()  # what of the record could not be read (caps, page limit)
    set_aside: tuple[str, ...] = ()  # records not attributed to this patient that would give a fact (Mapped)

    def notices(self) -> str:
        """What a card from this call says first, whatever else is known (a card is made for it even when the
        record says nothing of a lumbar mass): records set aside, then what could not be read. Empty: nothing."""
        return (set_aside_text(self) if self.set_aside else "") + (incomplete_text(self) if self.incomplete else "")


def card_uuid() -> str:
    """Random (version 4): never derived from anything an outsider knows, and never the same for two cards, so
    one patient's card can never stand for another's."""
    return str(uuidlib.uuid4())


def indicator(kb: KnowledgeBase, result: Result) -> str:
    ranks = sorted({e.rank for e in kb.catalog["urgency"].values()})
    rank = kb.urgency_rank(result.urgency)
    if rank == ranks[-1]:
        return "critical"
    if rank == ranks[0] and not unanswered_alarm(result):
        return "info"
    return "warning"


def priority(kb: KnowledgeBase, level: str) -> str:
    ranks = sorted({e.rank for e in kb.catalog["urgency"].values()})
    rank = kb.urgency_rank(level)
    return "stat" if rank == ranks[-1] else ("routine" if rank == ranks[0] else "urgent")


def unanswered_alarm(result: Result) -> list:
    """The alarm questions still to ask, as the Result says (moot ones excluded by the knowledge base)."""
    missing = set(result.unanswered_alarm)
    return [q for q in result.unanswered if q.fact in missing]


def window(item: Item) -> str:
    return item.window or hours_text(item.within_hours)


def headline(kb: KnowledgeBase, result: Result, patient: bool = False) -> str:
    """The urgency's label, and below the top level, that alarm questions are unanswered (at the lowest level the
    label is not shown as settled at all)."""
    label = kb.catalog["urgency"][result.urgency].label
    missing = unanswered_alarm(result)
    if missing and kb.urgency_rank(result.urgency) == min(e.rank for e in kb.catalog["urgency"].values()):
        n = len(missing)
        if patient:
            return f"Not finished: {n} important question{'s' if n != 1 else ''} still to answer"
        return f"INCOMPLETE ({n} alarm question{'s' if n != 1 else ''} unanswered; not {label})"
    if missing and kb.urgency_rank(result.urgency) < max(e.rank for e in kb.catalog["urgency"].values()):
        s = "s" if len(missing) != 1 else ""
        return (
            f"{label} (not finished: {len(missing)} important question{s} to answer)"
            if patient
            else (f"{label}, incomplete ({len(missing)} alarm question{s} unanswered)")
        )
    return label


def summary(kb: KnowledgeBase, result: Result) -> str:
    head = headline(kb, result)
    parts = [f"{a.label} {window(a)}" for a in result.actions if not a.done]
    text = head + (": " + "; ".join(parts) if parts else "")
    if len(text) <= SUMMARY_MAX:
        return text
    out = head
    for i, part in enumerate(parts):
        candidate = out + (": " if i == 0 else "; ") + part
        if len(candidate) + 2 > SUMMARY_MAX:
            break
        out = candidate
    return (out + " …")[:SUMMARY_MAX]


def detail(kb: KnowledgeBase, result: Result, mapped: Mapped | None) -> str:
    lines = [f"**{headline(kb, result)}.** {result.urgency_text}", ""]
    for text in (*contradiction_texts(result, kb), result.incomplete_text, result.scope_text):
        if text:
            lines += [f"**{text.strip()}**", ""]
    if result.could_escalate:
        lines.append("**Ask now** (an answer would raise the urgency or bring a step forward):")
        for e in result.could_escalate:
            effect = []
            if e.would_raise_urgency_to:
                effect.append(kb.catalog["urgency"][e.would_raise_urgency_to].label)
            effect += [f"{b.label} {b.window or hours_text(b.within_hours)}" for b in e.would_bring_forward]
            answers = " or ".join(kb.facts[e.fact].label(a) for a in (e.answers or (e.answer,)))
            lines.append(f"- {e.question} *(if {answers}: {'; '.join(effect)})*")
        lines.append("")
    if result.actions:
        lines.append("**Actions:**")
        for n, a in enumerate(result.actions, 1):
            done = " (already done)" if a.done else ""
            lines.append(f"{n}. **{a.label}, {window(a)}**{done}: {a.text} {_cites(a.citations)}")
        lines.append("")
    if result.warnings:
        lines.append("**Warnings:**")
        lines += [f"- **{w.label}**: {w.text} {_cites(w.citations)}" for w in result.warnings]
        lines.append("")
    if result.differential:
        lines.append("**Differential:** " + "; ".join(d.label for d in result.differential))
        lines.append("")
    missing = [q for q in unanswered_alarm(result) if q.fact not in {e.fact for e in result.could_escalate}]
    if missing:
        lines.append("**Alarm questions not yet answered:**")
        lines += [f"- {q.question}" for q in missing]
        lines.append("")
    if mapped is not None and mapped.conflicts:
        lines.append("**Conflicting records, left unknown (please ask):**")
        for fact, votes in mapped.conflicts.items():
            question = kb.facts[fact].question or kb.facts[fact].meaning
            lines.append(f"- {question} Records say: {md('; '.join(votes))}")
        lines.append("")
    if mapped is not None and mapped.evidence:
        lines.append(
            "**From the record:** "
            + "; ".join(
                f"{fact} = {kb.facts[fact].label(mapped.facts[fact])} ({md(', '.join(src))})"
                for fact, src in mapped.evidence.items()
            )
        )
        lines.append("")
    if result.fired:
        lines.append("**Why:** " + "; ".join(f"{f.title} {_cites(f.citations)}" for f in result.fired))
        lines.append("")
    cited = sorted({n for f in result.fired for n in f.citations})
    if cited:
        lines.append("**References:** " + " ".join(kb.references[n].cite() for n in cited))
        lines.append("")
    lines.append(f"*{kb.disclaimer}*")
    return "\n".join(lines)


def _cites(numbers) -> str:
    return "[" + ", ".join(str(n) for n in numbers) + "]" if numbers else ""


def source(kb: KnowledgeBase, codes: Codes) -> dict:
    return {
        "label": f"{kb.title} ({kb.publisher}, version {kb.version}, {kb.review_status.replace('_', ' ')})",
        "topic": {"system": codes.url("CodeSystem", "lumbar-kb-guidelines"), "code": kb.name, "display": kb.title},
    }


def service_request(kb: KnowledgeBase, codes: Codes, result: Result, item: Item, patient_id: str) -> dict:
    entry = kb.catalog["action"][item.code]
    out: dict = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "priority": priority(kb, result.urgency),
        "instantiatesCanonical": [codes.url("ActivityDefinition", item.code)],
        "code": {"coding": codes.action_coding(kb, item.code), "text": entry.label},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    t = timing(item.within_hours)
    if t:
        out["occurrenceTiming"] = t
    out["note"] = [{"text": f"{entry.label}, {window(item)}: {entry.text}"}]
    return out


def _suggestion(
    kb: KnowledgeBase, codes: Codes, result: Result, item: Item, ctx: Context, card: str, replaces: str | None = None
) -> dict:
    actions: list[dict] = []
    if replaces:
        actions.append({"type": "delete", "description": f"Remove the draft order {replaces}", "resourceId": replaces})
    actions.append(
        {
            "type": "create",
            "description": f"{item.label}, {window(item)}",
            "resource": service_request(kb, codes, result, item, ctx.patient_id),
        }
    )
    return {
        "label": f"Order: {item.label}, {window(item)}",
        "uuid": card_uuid(),
        "isRecommended": True,
        "actions": actions,
    }


def _card(kb, codes, result, ctx, rules, summary_text, indicator_text, detail_text, suggestions, part="") -> dict:
    uid = card_uuid()
    notices = ctx.notices()
    if notices:  # a partial record, or records that may be this patient's: never a reassuring card, and it says so
        indicator_text = "warning" if indicator_text == "info" else indicator_text
        detail_text = notices + detail_text
    card: dict = {
        "uuid": uid,
        "summary": summary_text[:SUMMARY_MAX],
        "indicator": indicator_text,
        "detail": detail_text,
        "source": source(kb, codes),
    }
    made = [s(uid) for s in suggestions]
    if made:
        card["suggestions"] = made
        card["selectionBehavior"] = "any"
    card["overrideReasons"] = [dict(r) for r in OVERRIDE_REASONS]
    card["links"] = [
        {
            "label": "Why: the full explanation",
            "url": ctx.explanation_url(uid)
            if ctx.explanation_url
            else f"{ctx.base_url.rstrip('/')}/explanations/{uid}",
            "type": "absolute",
        }
    ]
    return card


OVERRIDE_REASONS = (
    {
        "system": "http://lumbar-kb.example.org/fhir/CodeSystem/override-reasons",
        "code": "already-done",
        "display": "Already done or ordered",
    },
    {
        "system": "http://lumbar-kb.example.org/fhir/CodeSystem/override-reasons",
        "code": "data-wrong",
        "display": "The record's data is wrong",
    },
    {
        "system": "http://lumbar-kb.example.org/fhir/CodeSystem/override-reasons",
        "code": "clinical-judgement",
        "display": "Clinical judgement differs",
    },
    {
        "system": "http://lumbar-kb.example.org/fhir/CodeSystem/override-reasons",
        "code": "patient-declined",
        "display": "Patient declined",
    },
)


def has_something_to_say(result: Result, mapped: Mapped | None) -> bool:
    """Nothing known about the lumbar mass (no fact answered, no conflict): the patient is not on this pathway."""
    return bool(result.inputs) or bool(mapped and mapped.conflicts)


def patient_view(kb: KnowledgeBase, codes: Codes, result: Result, mapped: Mapped | None, ctx: Context) -> list[dict]:
    if not has_something_to_say(result, mapped) and not ctx.notices():
        return []
    rules = result.fired_ids()
    suggestions = [
        (lambda card, a=a: _suggestion(kb, codes, result, a, ctx, card)) for a in result.actions if not a.done
    ]
    return [
        _card(
            kb,
            codes,
            result,
            ctx,
            rules,
            summary(kb, result),
            indicator(kb, result),
            detail(kb, result, mapped),
            suggestions,
        )
    ]


def order_cards(
    kb: KnowledgeBase,
    codes: Codes,
    result: Result,
    mapped: Mapped | None,
    ctx: Context,
    orders: list[tuple[str, OrderKind]],
) -> list[dict]:
    """Cards about draft orders (`orders`: (reference, kind)) against what the Result requires.

    An imaging order that performs none of the Result's pending actions, while the Result requires other
    imaging, gets a card at the Result's indicator whose suggestion replaces it with the required imaging. An
    order whose `requires_first` action is still pending gets a warning suggesting that action first. An order
    the Result asks for gets no card; its pending questions, if any, an info card."""
    pending = {a.code: a for a in result.actions if not a.done}
    imaging = [a for a in result.actions if not a.done and kb.catalog["action"][a.code].imaging]
    rules = result.fired_ids()
    cards = []
    for ref, kind in orders:
        if kind.unclassified:  # imaging of the spine no binding names: for a patient on the pathway, say so
            if has_something_to_say(result, mapped) or ctx.notices():
                cards.append(_unclassified(kb, codes, result, mapped, ctx, rules, ref, kind, imaging))
            continue
        if kind.requires_first and kind.requires_first not in {a.code for a in result.actions if a.done}:
            first = pending.get(kind.requires_first) or Item(
                kind.requires_first,
                kb.catalog["action"][kind.requires_first].text,
                [],
                [],
                None,
                None,
                label=kb.catalog["action"][kind.requires_first].label,
            )
            warning = [w for w in result.warnings if w.code in kb.catalog["warning"]]
            text = f"{kind.display} ordered before: {first.label}"
            body = [f"**{text}.** {kb.catalog['action'][first.code].text}"]
            body += [f"- **{w.label}**: {w.text}" for w in warning]
            body += ["", detail(kb, result, mapped)]
            cards.append(
                _card(
                    kb,
                    codes,
                    result,
                    ctx,
                    rules,
                    text,
                    "warning",
                    "\n".join(body),
                    [lambda card, f=first, r=ref: _suggestion(kb, codes, result, f, ctx, card, replaces=r)],
                    part=f"{ref}|requires_first",
                )
            )
            continue
        if kind.performs and kind.performs in pending:
            if result.could_escalate:
                cards.append(
                    _card(
                        kb,
                        codes,
                        result,
                        ctx,
                        rules,
                        f"Before this {kind.display.lower()}: "
                        f"{len(result.could_escalate)} question(s) could change the imaging",
                        "critical"
                        if indicator(kb, result) == "critical"
                        else "warning"
                        if unanswered_alarm(result)
                        else "info",
                        detail(kb, result, mapped),
                        [],
                        part=f"{ref}|ask",
                    )
                )
            continue
        if kind.imaging and imaging:
            first = imaging[0]
            text = f"{headline(kb, result)}: {kind.display} is not the study needed; {first.label} {window(first)}"
            body = [f"**{kind.display} is not in this patient's pathway.** Needed instead:"]
            body += [f"- **{a.label}, {window(a)}**: {a.text}" for a in imaging]
            body += ["", detail(kb, result, mapped)]
            cards.append(
                _card(
                    kb,
                    codes,
                    result,
                    ctx,
                    rules,
                    text,
                    indicator(kb, result),
                    "\n".join(body),
                    [
                        (
                            lambda card, a=a, r=ref, i=i: _suggestion(
                                kb, codes, result, a, ctx, card, replaces=r if i == 0 else None
                            )
                        )
                        for i, a in enumerate(imaging)
                    ],
                    part=f"{ref}|replace",
                )
            )
    return cards


def _unclassified(kb, codes, result, mapped, ctx, rules, ref: str, kind: OrderKind, imaging: list) -> dict:
    """A card for a spine imaging order whose code the bindings do not name: it cannot be checked against the
    pathway, so the card says so, at the Result's urgency, with the imaging the Result requires (suggested
    beside the draft, which is left alone: it may be the right study under a code not yet bound)."""
    head = headline(kb, result)
    if imaging:
        first = imaging[0]
        text = f"{head}: {kind.display.lower()}; needed: {first.label} {window(first)}"
    else:
        text = f"{kind.display}: check it against the pathway"
    body = [f"**{kind.display}** (the draft order's code is not bound in codes.yaml; ask for it to be added)."]
    if imaging:
        body += ["", "**Imaging the pathway requires:**"]
        body += [f"- **{a.label}, {window(a)}**: {a.text}" for a in imaging]
    body += ["", detail(kb, result, mapped)]
    suggestions = [(lambda card, a=a: _suggestion(kb, codes, result, a, ctx, card)) for a in imaging]
    return _card(kb, codes, result, ctx, rules, text, indicator(kb, result), "\n".join(body), suggestions)


def set_aside_text(ctx: Context) -> str:
    """The first lines of a card when records that would give a fact were not attributed to this patient."""
    lines = [
        "**Records not used: their subject is not this patient, or cannot be matched to this patient.** "
        "Check them in the record: they would change what is known."
    ]
    lines += [f"- {md(s)}" for s in ctx.set_aside]
    return "\n".join(lines) + "\n\n"


def incomplete_text(ctx: Context) -> str:
    """The first lines of a card made from a record that could not be read whole."""
    lines = ["**The record data is incomplete: not everything could be read from the FHIR server.**"]
    lines += [f"- {md(s)}" for s in ctx.incomplete]
    return "\n".join(lines) + "\n\n"
