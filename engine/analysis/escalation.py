"""`could_escalate`: the unanswered questions whose answer would raise the urgency or bring imaging forward.

For every unanswered input fact, the patient is evaluated again with that one answer added (yes for a
yes/no fact, each value for an enum) by the plain-Python reference evaluator; an answer escalates when
the urgency comes out higher, or an imaging action (`imaging: true` in the catalogue) is newly required
or required with an earlier window. Per patient that is at most one re-evaluation per unanswered answer
(about 20 for this guideline, a few milliseconds in all); no solver is involved.

One answer at a time cannot see an answer that matters only together with another; `lumbar-kb check`
proves, for every alarm question and every patient, that this never happens (`could_escalate_complete`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from ..errors import EngineError
from ..logic import evaluate
from ..model import KnowledgeBase, Value
from ..reference import ReferenceEvaluator


@dataclass(frozen=True)
class BroughtForward:
    action: str
    label: str
    within_hours: float | None  # the window the answer would give (None: no fixed window)
    window: str | None
    was_required: bool
    was_within_hours: float | None
    was_window: str | None

    def to_dict(self) -> dict:
        return {"action": self.action, "within_hours": self.within_hours, "window": self.window,
                "was_required": self.was_required, "was_within_hours": self.was_within_hours,
                "was_window": self.was_window}


@dataclass(frozen=True)
class Escalation:
    fact: str
    question: str
    answer: Value  # the answer that escalates (the most escalating one, for an enum)
    would_raise_urgency_to: str | None
    would_bring_forward: tuple  # tuple[BroughtForward, ...], earliest first

    def to_dict(self) -> dict:
        return {"fact": self.fact, "question": self.question, "answer": self.answer,
                "would_raise_urgency_to": self.would_raise_urgency_to,
                "would_bring_forward": [b.to_dict() for b in self.would_bring_forward]}


def could_escalate(kb: KnowledgeBase, inputs: Mapping[str, Value], audience: str = "clinician",
                   baseline=None, evaluator: ReferenceEvaluator | None = None) -> list[Escalation]:
    """The escalating unanswered questions for this patient, most urgent first.

    `baseline` is the patient's Result when the caller has it (saves one evaluation)."""
    from ..result import build  # result imports this module lazily in turn

    evaluator = evaluator or ReferenceEvaluator(kb)
    inputs = dict(inputs)
    if baseline is None:
        baseline = build(kb, evaluator.run(inputs), audience, could_escalate=False)
    rank = kb.urgency_rank(baseline.urgency)
    before = {a.code: a.within_hours for a in baseline.actions}
    words = {a.code: a.window for a in baseline.actions}
    imaging = [code for code, e in kb.catalog["action"].items() if e.imaging]
    found = []
    for fact in kb.input_facts:
        if fact.name in inputs:
            continue
        best = None
        for answer in ((True,) if fact.type == "bool" else fact.values):
            trial = {**inputs, fact.name: answer}
            if not _allowed(kb, trial):
                continue
            try:
                result = build(kb, evaluator.run(trial), audience, could_escalate=False)
            except EngineError:
                continue  # the knowledge base contradicts itself here; `lumbar-kb check` reports it
            raised = result.urgency if kb.urgency_rank(result.urgency) > rank else None
            forward = tuple(BroughtForward(a.code, a.label, a.within_hours, a.window, a.code in before,
                                           before.get(a.code), words.get(a.code))
                            for a in result.actions if a.code in imaging and _sooner(a.code, a.within_hours, before))
            if raised is None and not forward:
                continue
            key = _severity(kb, raised, forward)
            if best is None or key < best[0]:
                best = (key, answer, raised, forward)
        if best is not None:
            question = (fact.patient_question if audience == "patient" else fact.question) or fact.meaning
            found.append((best[0], fact.order, Escalation(fact.name, question, best[1], best[2], best[3])))
    found.sort(key=lambda item: (item[0], item[1]))
    return [e for _, _, e in found]


def _allowed(kb: KnowledgeBase, facts: dict) -> bool:
    """Every given fact's `only_if` is not false: the answer could be given in a patient file."""
    return all(kb.facts[name].only_if is None or evaluate(kb.facts[name].only_if, facts) is not False
               for name in facts)


def _sooner(code: str, hours: float | None, before: dict) -> bool:
    if code not in before:
        return True
    was = before[code]
    return hours is not None and (was is None or hours < was)


def _severity(kb: KnowledgeBase, raised: str | None, forward: tuple) -> tuple:
    """Sort key, most urgent first: the higher urgency, then the earliest imaging window."""
    earliest = min((b.within_hours if b.within_hours is not None else math.inf for b in forward), default=math.inf)
    return (-(kb.urgency_rank(raised) if raised else -1), earliest, not forward)
