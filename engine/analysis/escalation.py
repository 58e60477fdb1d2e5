"""`could_escalate`: the unanswered questions whose answer would raise the urgency or bring imaging forward.

For every unanswered input fact, each possible answer (yes for a yes/no fact, each value for an enum) is
added to the patient's facts and the reference evaluator chains on from the patient's own trace
(`ReferenceEvaluator.extend`: facts only become known, so an added answer can only add firings). An answer
escalates when one of the rules it adds concludes a higher urgency, or a watched action (an imaging study or
another time-critical step: `imaging: true` or `time_critical: true` in the catalogue) that is new or has an
earlier window. A question moot for the patient (`completeness.not_asked_when`) is never asked, and an action
another one covers (`superseded_by`, e.g. a lumbar MRI beside a whole-spine MRI) is never a reason to ask.
No solver is involved; a static bound skips facts
that could never escalate, and the look-ahead costs about 90 µs a patient (`make bench`).

One answer at a time cannot see an answer that matters only together with another; `lumbar-kb check`
proves, for every alarm question and every patient, that this never happens (`could_escalate_complete`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import EngineError
from ..logic import asked, breaks, contradicts_only_if
from ..model import Derive, KnowledgeBase, Recommend, SetUrgency, Value
from ..reference import ReferenceEvaluator
from ..result import Result, build, merge_window
from ..trace import Trace


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
        return {
            "action": self.action,
            "within_hours": self.within_hours,
            "window": self.window,
            "was_required": self.was_required,
            "was_within_hours": self.was_within_hours,
            "was_window": self.was_window,
        }


@dataclass(frozen=True)
class Escalation:
    fact: str
    question: str
    answer: Value  # the answer that escalates (the most escalating one, for an enum)
    would_raise_urgency_to: str | None
    would_bring_forward: tuple  # tuple[BroughtForward, ...], earliest first
    answers: tuple = ()  # every answer that escalates as much as `answer` (an enum may have several)

    def to_dict(self) -> dict:
        return {
            "fact": self.fact,
            "question": self.question,
            "answer": self.answer,
            "answers": list(self.answers or (self.answer,)),
            "would_raise_urgency_to": self.would_raise_urgency_to,
            "would_bring_forward": [b.to_dict() for b in self.would_bring_forward],
        }


@dataclass(frozen=True)
class _Reach:
    """The most an answer to one fact could ever change, over every patient (a static upper bound)."""

    max_rank: int  # the highest urgency rank of any rule downstream of the fact (-1: none)
    earliest: dict  # imaging action code -> the earliest window downstream (None: only unfixed windows)


_PREPARED: list = []  # (kb, ReferenceEvaluator, {fact: _Reach}) for the last few knowledge bases used


_PREPARED_LOCK = threading.Lock()


def _prepared(kb: KnowledgeBase) -> tuple:
    with _PREPARED_LOCK:
        for known, evaluator, reach in _PREPARED:
            if known is kb:
                return evaluator, reach
        evaluator, reach = ReferenceEvaluator(kb), _reach(kb)
        _PREPARED.insert(0, (kb, evaluator, reach))
        del _PREPARED[8:]
        return evaluator, reach


def _reach(kb: KnowledgeBase) -> dict:
    """For each input fact, what the rules downstream of it (through derived facts) can conclude."""
    readers: dict[str, list] = {}
    for rule in kb.rules:
        for name in rule.reads:
            readers.setdefault(name, []).append(rule)
    imaging = set(kb.watched_actions)
    out = {}
    for fact in kb.input_facts:
        seen_rules, seen_facts, todo = set(), {fact.name}, [fact.name]
        max_rank = -1
        earliest: dict[str, float] = {}
        while todo:
            for rule in readers.get(todo.pop(), ()):
                if rule.id in seen_rules:
                    continue
                seen_rules.add(rule.id)
                for c in rule.then:
                    if isinstance(c, SetUrgency):
                        max_rank = max(max_rank, kb.urgency_rank(c.level))
                    elif isinstance(c, Recommend) and c.kind == "action" and c.code in imaging:
                        known = earliest.get(c.code, math.inf)
                        hours = math.inf if c.within_hours is None else c.within_hours
                        earliest[c.code] = min(known, hours)
                    elif isinstance(c, Derive) and c.fact not in seen_facts:
                        seen_facts.add(c.fact)
                        todo.append(c.fact)
        out[fact.name] = _Reach(max_rank, {code: (None if h == math.inf else h) for code, h in earliest.items()})
    return out


def _cannot_escalate(reach: _Reach, rank: int, before: dict) -> bool:
    """True when no answer to the fact could raise the urgency or bring any imaging forward."""
    return reach.max_rank <= rank and all(
        code in before and not _sooner(code, hours, before) for code, hours in reach.earliest.items()
    )


def could_escalate(
    kb: KnowledgeBase,
    inputs: Mapping[str, Value],
    audience: str = "clinician",
    baseline=None,
    evaluator: ReferenceEvaluator | None = None,
    trace: Trace | None = None,
) -> list[Escalation]:
    """The escalating unanswered questions for this patient, most urgent first.

    `baseline` (the patient's Result) and `trace` (the evaluation behind it) save re-computing them."""

    shared_evaluator, reach = _prepared(kb)
    evaluator = evaluator or shared_evaluator
    inputs = dict(inputs)
    if trace is None:
        trace = evaluator.run(inputs)
    if baseline is None:
        baseline = build(kb, trace, audience)
    rank = kb.urgency_rank(baseline.urgency)
    before = {a.code: a.within_hours for a in baseline.actions}
    words = {a.code: a.window for a in baseline.actions}
    imaging = set(kb.watched_actions)
    constrained = [f for f in kb.input_facts if f.only_if is not None]
    judged = bool(constrained or kb.relations)  # some answers could not be given: judge each trial answer
    added_by = evaluator.extender(trace)
    catalog_order = {code: e.order for code, e in kb.catalog["action"].items()}
    found = []
    for fact in kb.input_facts:
        if fact.name in inputs or _cannot_escalate(reach[fact.name], rank, before):
            continue
        if fact.name in kb.not_asked_when and not asked(fact, inputs, kb.not_asked_when):
            continue  # moot for this patient (e.g. "suspected?" once compression is diagnosed): never asked
        best = None
        for answer in (True,) if fact.type == "bool" else fact.values:
            if judged and not _allowed(kb, {**inputs, fact.name: answer}, constrained):
                continue
            try:
                added = added_by(fact.name, answer)
            except EngineError:
                continue  # the knowledge base contradicts itself here; `lumbar-kb check` reports it
            raised, windows = _added_conclusions(kb, added, imaging)
            raised = raised if raised is not None and kb.urgency_rank(raised) > rank else None
            forward = tuple(
                BroughtForward(
                    code,
                    kb.catalog["action"][code].label,
                    hours,
                    window,
                    code in before,
                    before.get(code),
                    words.get(code),
                )
                for code, (hours, window) in sorted(
                    windows.items(), key=lambda kv: (kv[1][0] is None, kv[1][0] or 0, catalog_order[kv[0]])
                )
                if _sooner(code, hours, before) and not _covered(kb, code, before, windows)
            )
            if raised is None and not forward:
                continue
            key = _severity(kb, raised, forward)
            if best is None or key < best[0]:
                best = (key, answer, raised, forward)
                equal = [answer]
            elif key == best[0]:
                equal.append(answer)
        if best is not None:
            question = (fact.patient_question if audience == "patient" else fact.question) or fact.meaning
            found.append(
                (best[0], fact.order, Escalation(fact.name, question, best[1], best[2], best[3], tuple(equal)))
            )
    found.sort(key=lambda item: (item[0], item[1]))
    return [e for _, _, e in found]


def _added_conclusions(kb: KnowledgeBase, rules: list, imaging: set) -> tuple:
    """The highest urgency the added rules conclude, and each imaging action's earliest window among them
    (hours, words), merged as `result.build` merges them."""
    raised = None
    windows: dict[str, tuple] = {}
    for rule in rules:
        for c in rule.then:
            if isinstance(c, SetUrgency):
                if raised is None or kb.urgency_rank(c.level) > kb.urgency_rank(raised):
                    raised = c.level
            elif isinstance(c, Recommend) and c.kind == "action" and c.code in imaging:
                windows[c.code] = merge_window(windows.get(c.code, (None, None)), c)
    return raised, windows


def _allowed(kb: KnowledgeBase, facts: dict, constrained=None) -> bool:
    """Every given fact's `only_if` is not false: the answer could be given in a patient file."""
    candidates = constrained if constrained is not None else [kb.facts[name] for name in facts]
    return not any(contradicts_only_if(f, facts) for f in candidates) and not any(
        breaks(r, facts) for r in kb.relations
    )


def _covered(kb: KnowledgeBase, code: str, before: dict, added: dict) -> bool:
    """The action would be dropped: an action that supersedes it is already required or would be (a lumbar MRI
    beside a whole-spine MRI), so asking for it changes nothing."""
    return any(other in before or other in added for other in kb.catalog["action"][code].superseded_by)


def _sooner(code: str, hours: float | None, before: dict) -> bool:
    if code not in before:
        return True
    was = before[code]
    return hours is not None and (was is None or hours < was)


def _severity(kb: KnowledgeBase, raised: str | None, forward: tuple) -> tuple:
    """Sort key, most urgent first: the higher urgency, then the earliest imaging window."""
    earliest = min((b.within_hours if b.within_hours is not None else math.inf for b in forward), default=math.inf)
    return (-(kb.urgency_rank(raised) if raised else -1), earliest, not forward)


def decide(kb: KnowledgeBase, trace: Trace, audience: str = "clinician") -> Result:
    """The Result of one evaluation with its `could_escalate` look-ahead: what every user-facing view shows."""
    result = build(kb, trace, audience)
    result.could_escalate = could_escalate(kb, trace.inputs, audience, baseline=result, trace=trace)
    return result
