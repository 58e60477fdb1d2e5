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
from ..logic import breaks, contradicts_only_if
from ..model import Derive, KnowledgeBase, Recommend, SetUrgency, Value
from ..prepared import Prepared, prepared
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
    # the facts the rules downstream read or derive: what an answer to the fact adds is a function of the answer
    # and of these facts' values alone (a rule has fired exactly when its condition is true of the facts, since
    # the trace is chained to quiescence), so the look-ahead keeps each outcome by them (`_OUTCOMES_KEPT`)
    depends: tuple = ()


_PREPARED: list = []  # (kb, ReferenceEvaluator, {fact: _Reach}, {outcome key: outcome}) for the last few used
# Outcomes of trial answers kept per knowledge base, by (fact, answer, the values of the facts it depends on):
# patients share most of them (a few thousand keys cover a random cohort), so most trials are looked up, not
# chained. Bounded (cleared when full), so memory stays flat; the answers are the same either way (tested).
_OUTCOMES_KEPT = 50_000
_FAILED = object()  # the outcome of a trial answer for which the knowledge base contradicts itself


_PREPARED_LOCK = threading.Lock()


def _prepared(kb: KnowledgeBase) -> tuple:
    with _PREPARED_LOCK:
        for known, evaluator, reach, outcomes in _PREPARED:
            if known is kb:
                return evaluator, reach, outcomes
        evaluator, reach, outcomes = ReferenceEvaluator(kb), _reach(kb), {}
        _PREPARED.insert(0, (kb, evaluator, reach, outcomes))
        del _PREPARED[8:]
        return evaluator, reach, outcomes


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
        depends: set[str] = set()
        while todo:
            for rule in readers.get(todo.pop(), ()):
                if rule.id in seen_rules:
                    continue
                seen_rules.add(rule.id)
                depends.update(rule.reads)
                depends.update(d.fact for d in rule.derives())
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
        depends.discard(fact.name)
        out[fact.name] = _Reach(
            max_rank, {code: (None if h == math.inf else h) for code, h in earliest.items()}, tuple(sorted(depends))
        )
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

    shared_evaluator, reach, outcomes = _prepared(kb)
    plan = prepared(kb)
    if evaluator is not None and evaluator is not shared_evaluator:
        outcomes = {}  # another evaluator's outcomes are its own
    evaluator = evaluator or shared_evaluator
    inputs = dict(inputs)
    if trace is None:
        trace = evaluator.run(inputs)
    if baseline is None:
        baseline = build(kb, trace, audience)
    rank = plan.rank[baseline.urgency]
    before = {a.code: a.within_hours for a in baseline.actions}
    candidates = [
        fact
        for fact in plan.input_facts
        if fact.name not in inputs and not _cannot_escalate(reach[fact.name], rank, before)
    ]
    if not candidates:
        return []
    judged = bool(plan.only_if or plan.relations)  # some answers could not be given: judge each trial answer
    if judged and not plan.allowed(inputs):
        return []  # answers that already contradict each other stay contradictory whatever is added
    words = {a.code: a.window for a in baseline.actions}
    added_by = evaluator.extender(trace)
    facts = {**trace.inputs, **trace.derived}
    found = []
    for fact in candidates:
        if fact.name in plan.moot and not plan.asked(fact, inputs):
            continue  # moot for this patient (e.g. "suspected?" once compression is diagnosed): never asked
        best = None
        state = tuple([facts.get(name) for name in reach[fact.name].depends])
        judge = judged and plan.constrains(fact.name)  # an answer to it could contradict another, or be refused
        for answer in (True,) if fact.type == "bool" else fact.values:
            if judge and not plan.allowed_adding({**inputs, fact.name: answer}, fact.name):
                continue
            key = (fact.name, answer, state)
            outcome = outcomes.get(key)
            if outcome is None:
                try:
                    outcome = _added_conclusions(plan, added_by(fact.name, answer))
                except EngineError:
                    outcome = _FAILED  # the knowledge base contradicts itself here; `lumbar-kb check` reports it
                if len(outcomes) >= _OUTCOMES_KEPT:
                    outcomes.clear()
                outcomes[key] = outcome
            if outcome is _FAILED:
                continue
            raised, raised_rank, entries = outcome
            up = raised_rank > rank
            forward = [
                entry
                for entry in entries
                if _sooner(entry[0], entry[1], before) and not any(other in before for other in entry[3])
            ]
            if not up and not forward:
                continue
            earliest = forward[0][1] if forward and forward[0][1] is not None else math.inf  # entries are sorted
            severity = (-(raised_rank if up else -1), earliest, not forward)
            if best is None or severity < best[0]:
                best = (severity, answer, raised if up else None, forward)
                equal = [answer]
            elif severity == best[0]:
                equal.append(answer)
        if best is not None:
            question = (fact.patient_question if audience == "patient" else fact.question) or fact.meaning
            brought = tuple(
                BroughtForward(
                    code,
                    plan.action_entries[code].label,
                    hours,
                    window,
                    code in before,
                    before.get(code),
                    words.get(code),
                )
                for code, hours, window, _ in best[3]
            )
            found.append(
                (best[0], fact.order, Escalation(fact.name, question, best[1], best[2], brought, tuple(equal)))
            )
    found.sort(key=lambda item: (item[0], item[1]))
    return [e for _, _, e in found]


def _added_conclusions(plan: Prepared, rules: list) -> tuple:
    """What the added rules conclude, independently of the patient's own result: the highest urgency (and its
    rank, -1 for none), and each watched action with its earliest window among them (merged as `result.build`
    merges them) as (code, hours, words, the actions that would cover it unless the patient already has them),
    earliest first; an action another added one covers (`superseded_by`) is left out."""
    raised, top = None, -1
    windows: dict[str, tuple] = {}
    watched = plan.watched
    for rule in rules:
        step = plan.rules[rule.id]
        for level, rank in step.urgencies:
            if rank > top:
                raised, top = level, rank
        for c, _ in step.recommends:
            if c.kind == "action" and c.code in watched:
                windows[c.code] = merge_window(windows.get(c.code, (None, None)), c)
    entries = []
    for code, (hours, window) in sorted(
        windows.items(), key=lambda kv: (kv[1][0] is None, kv[1][0] or 0, plan.catalog_order[kv[0]])
    ):
        covering = plan.action_entries[code].superseded_by
        if not any(other in windows for other in covering):
            entries.append((code, hours, window, covering))
    return raised, top, tuple(entries)


def _allowed(kb: KnowledgeBase, facts: dict, constrained=None) -> bool:
    """Every given fact's `only_if` is not false: the answer could be given in a patient file."""
    candidates = constrained if constrained is not None else [kb.facts[name] for name in facts]
    return not any(contradicts_only_if(f, facts) for f in candidates) and not any(
        breaks(r, facts) for r in kb.relations
    )


def _sooner(code: str, hours: float | None, before: dict) -> bool:
    if code not in before:
        return True
    was = before[code]
    return hours is not None and (was is None or hours < was)


def decide(kb: KnowledgeBase, trace: Trace, audience: str = "clinician") -> Result:
    """The Result of one evaluation with its `could_escalate` look-ahead: what every user-facing view shows."""
    result = build(kb, trace, audience)
    result.could_escalate = could_escalate(kb, trace.inputs, audience, baseline=result, trace=trace)
    return result
