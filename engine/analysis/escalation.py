"""`could_escalate`: the unanswered questions whose answer would raise the urgency or bring imaging forward.

For every unanswered input fact, each possible answer (yes for a yes/no fact, each value for an enum) is
added to the patient's facts and the reference evaluator chains on from the patient's own trace
(`ReferenceEvaluator.extend`: facts only become known, so an added answer can only add firings). An answer
escalates when one of the rules it adds concludes a higher urgency, or a watched action (an imaging study or
another time-critical step: `imaging: true` or `time_critical: true` in the catalogue) that is new or has an
earlier window. A question moot for the patient (`completeness.not_asked_when`) is never asked, and an action
another one covers (`superseded_by`, e.g. a lumbar MRI beside a whole-spine MRI) is never a reason to ask.
No solver is involved; a static bound skips facts that could never escalate. What a trial answer adds, and
the verdict on each question, are kept by what they depend on once the answer is assumed (`_Reach.keys`;
bounded stores shared by the patients of one process: see `_OUTCOMES_KEPT` and `_VERDICTS_KEPT`), so in a
cohort nearly every question is looked up rather than judged again, and so is which answers a constrained
question allows (`_PERMITTED_KEPT`): about 136,000 instructions a patient once the stores are warm (15-25 µs on
this project's machine; 40,000 random patients; 0.01 trial answers chained a patient).

One answer at a time cannot see an answer that matters only together with another; `lumbar-kb check`
proves, for every alarm question and every patient, that this never happens (`could_escalate_complete`).
"""

from __future__ import annotations

import itertools
import math
import operator
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lumbar_kb.engine.errors import ContradictoryRules, EngineError
from lumbar_kb.engine.logic import assume
from lumbar_kb.engine.model import Fact, KnowledgeBase, Value, condition_facts
from lumbar_kb.engine.patient import contradictions, readings
from lumbar_kb.engine.prepared import Prepared, prepared
from lumbar_kb.engine.reference import ReferenceEvaluator
from lumbar_kb.engine.result import Decision, Result, build, conclude, merge_window
from lumbar_kb.engine.trace import Trace


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
    # For each answer tried (yes; or each value of an enum, in vocabulary order), what its outcome depends on:
    # (facts, rules). Once the answer is assumed (`logic.assume`), the rules downstream of the fact either
    # cannot fire, or still read `facts` (or derive them: a derived value already known is a contradiction or
    # nothing new); and a rule that could fire adds nothing when it has already fired, which `rules` lists
    # unless the rule reads nothing but the fact (then it cannot have fired while the fact is unanswered).
    # Chaining from the patient's trace (`ReferenceEvaluator.extender`) reads nothing else, so what an answer
    # adds is a function of the answer, these facts' values and these rules' fired-or-not: the look-ahead keeps
    # each outcome by them (`_OUTCOMES_KEPT`). Far fewer than every fact downstream: once "leg weakness: yes"
    # is assumed, the other six neurological answers no longer matter, only whether their rules fired.
    keys: tuple = ()
    # the watched actions downstream and the actions that cover them (`superseded_by`): the part of the patient's
    # own result an answer's verdict reads, with `keys` and the urgency (`_VERDICTS_KEPT`)
    codes: tuple = ()
    # `keys` and `codes` as what to look up in a patient's `_known` facts, fired rules and windows: each answer's
    # part of an outcome key, and all of them with the codes for the verdict's key
    answer_probes: tuple = ()
    probe: tuple = ()
    # `probe` read from a `_known` mapping in one call: the tuple of its values (`_reader`)
    read: Callable[[Mapping], tuple] = lambda known: ()  # the empty probe's reader


def _reader(keys: tuple) -> Callable[[Mapping], tuple]:
    """A function giving the tuple of these keys' values in a mapping that has every one of them (`_known`)."""
    if len(keys) > 1:
        return operator.itemgetter(*keys)
    if keys:
        only = keys[0]
        return lambda known: (known[only],)
    return lambda known: ()


# for the last few knowledge bases used: (kb, its ReferenceEvaluator, {fact: _Reach}, `_blank`, and the stores:
# {outcome key: outcome}, {verdict key: verdict}, {bound key: the questions left open}, {the answers a constrained
# question allows, by what its checks read})
_PREPARED: list = []
# Outcomes of trial answers kept per knowledge base, by (fact, answer, what it depends on: `_Reach.keys`):
# patients share most of them (about 7,500 keys cover a random cohort), so most trials are looked up, not
# chained. Bounded (the older half forgotten when full), so memory stays flat; the answers are the same either
# way (tested).
_OUTCOMES_KEPT = 20_000
_FAILED = object()  # the outcome of a trial answer for which the knowledge base contradicts itself
# Verdicts on one unanswered question kept the same way, by what they read: the question, the audience, what
# each answer's outcome depends on, which of its answers could be given, the urgency so far and the patient's own
# windows for the actions it could bring forward (`_Reach.codes`). A verdict is the question's Escalation (frozen,
# shared) or None; patients share most of them, so most questions are looked up, not judged.
_VERDICTS_KEPT = 30_000
# The questions the static bound leaves open (`_cannot_escalate`), kept by what the bound reads of the patient's
# result: the urgency's rank and each action's window (a few hundred such results in a random cohort).
_OPEN_KEPT = 4_096
# Which answers to a constrained question can be given (its only_if, the relations an answer to it could break:
# `Prepared.allowed_adding`), kept by the question and the values of the facts those checks read
# (`Prepared.check_reads`): a few dozen in a random cohort.
_PERMITTED_KEPT = 4_096
_ABSENT = object()  # a verdict not kept (None is a kept verdict: the question escalates nothing)


_PREPARED_LOCK = threading.Lock()


def _prepared(kb: KnowledgeBase) -> tuple:
    with _PREPARED_LOCK:
        for known, *kept in _PREPARED:
            if known is kb:
                return tuple(kept)
        reach = _reach(kb)
        made: tuple = (ReferenceEvaluator(kb), reach, _blank(reach), {}, {}, {}, {})
        _PREPARED.insert(0, (kb, *made))
        del _PREPARED[8:]
        return made


def _reach(kb: KnowledgeBase) -> dict:
    """For each input fact, what the rules downstream of it (through derived facts) can conclude."""
    plan = prepared(kb)
    out = {}
    for fact in kb.input_facts:
        seen_rules, seen_facts, todo = set(), {fact.name}, [fact.name]
        max_rank = -1
        earliest: dict[str, float] = {}
        downstream = []
        while todo:
            for step in plan.readers.get(todo.pop(), ()):
                if step.rule.id in seen_rules:
                    continue
                seen_rules.add(step.rule.id)
                downstream.append(step)
                max_rank = max([max_rank, *(rank for _, rank in step.urgencies)])
                for c, _ in step.recommends:
                    if c.kind == "action" and c.code in plan.watched:
                        hours = math.inf if c.within_hours is None else c.within_hours
                        earliest[c.code] = min(earliest.get(c.code, math.inf), hours)
                for d in step.derives:
                    if d.fact not in seen_facts:
                        seen_facts.add(d.fact)
                        todo.append(d.fact)
        codes = tuple(
            sorted(set(earliest) | {o for code in earliest for o in kb.catalog["action"][code].superseded_by})
        )
        keys = tuple(_depends(downstream, fact.name, answer) for answer in _answers(fact))
        answer_probes = tuple((*facts, *((_FIRED, r) for r in rules)) for facts, rules in keys)
        probe = (*dict.fromkeys(p for probes in answer_probes for p in probes), *((_WINDOW, code) for code in codes))
        out[fact.name] = _Reach(
            max_rank,
            {code: (None if h == math.inf else h) for code, h in earliest.items()},
            keys,
            codes,
            answer_probes,
            probe,
            _reader(probe),
        )
    return out


def _blank(reach: dict) -> dict:
    """Every key some question's probe reads, as None: what `_known` starts from."""
    return dict.fromkeys(p for at in reach.values() for p in at.probe)


_FIRED, _WINDOW = "fired", "window"  # a _known entry's kind besides a fact's value (a fact's name is a string)


def _known(trace: Trace, baseline: Result | Decision, blank: dict) -> dict:
    """What a patient's look-ahead keys read, in one mapping: each fact's value by its name; True by
    (_FIRED, rule id) for each rule that fired; (hours, words) by (_WINDOW, code) for each action the patient's
    result has. None (every key of `blank`, `_blank`) for an unknown fact, a rule that did not fire, an action
    the result does not have."""
    known: dict = {**blank, **trace.inputs, **trace.derived}
    for firing in trace.firings:
        known[_FIRED, firing.rule] = True
    for action in baseline.actions:
        known[_WINDOW, action.code] = (action.within_hours, action.window)
    return known


def _answers(fact: Fact) -> tuple:
    """The trial answers to an unanswered question: yes for a yes/no question (what a yes would bring: the
    definition `lumbar-kb check` proves complete, could_escalate_complete), or each value of an enum."""
    return (True,) if fact.type == "bool" else fact.values


def _depends(downstream: list, fact: str, answer: Value) -> tuple:
    """What the outcome of answering `fact` with `answer` depends on, besides the answer (`_Reach.keys`):
    (the facts, the rules whose having fired matters), each sorted."""
    facts: set[str] = set()
    rules: set[str] = set()
    for step in downstream:
        left = assume(step.rule.when, fact, answer)
        if left is False:
            continue  # cannot fire once the answer is given
        if left is not True:
            facts.update(condition_facts(left))
        facts.update(d.fact for d in step.derives)
        if any(name != fact for name in step.rule.reads):
            rules.add(step.rule.id)
    return tuple(sorted(facts)), tuple(sorted(rules))


def _cannot_escalate(reach: _Reach, rank: int, before: dict) -> bool:
    """True when no answer to the fact could raise the urgency or bring any imaging forward."""
    return reach.max_rank <= rank and all(
        code in before and not _sooner(code, hours, before) for code, hours in reach.earliest.items()
    )


def could_escalate(
    kb: KnowledgeBase,
    inputs: Mapping[str, Value],
    audience: str = "clinician",
    baseline: Result | Decision | None = None,
    evaluator: ReferenceEvaluator | None = None,
    trace: Trace | None = None,
) -> list[Escalation]:
    """The escalating unanswered questions for this patient, most urgent first.

    `baseline` (the patient's Result or Decision) and `trace` (the evaluation behind it) save re-computing them."""

    shared_evaluator, reach, blank, outcomes, verdicts, open_, permitted = _prepared(kb)
    plan = prepared(kb)
    if evaluator is not None and evaluator is not shared_evaluator:
        outcomes, verdicts, open_, permitted = {}, {}, {}, {}  # another evaluator's are its own (tests compare)
    evaluator = evaluator or shared_evaluator
    inputs = dict(inputs)
    if trace is None:
        trace = evaluator.run(inputs)
    if baseline is None:
        baseline = conclude(kb, trace, audience)
    rank = plan.rank[baseline.urgency]
    before = {a.code: a.within_hours for a in baseline.actions}
    bound = (rank, *before.items())
    facts = open_.get(bound)
    if facts is None:
        facts = tuple(fact for fact in plan.input_facts if not _cannot_escalate(reach[fact.name], rank, before))
        _keep(open_, bound, facts, _OPEN_KEPT)
    candidates = [fact for fact in facts if fact.name not in inputs]
    if not candidates:
        return []
    judged = bool(plan.only_if or plan.relations)  # some answers could not be given: judge each trial answer
    if judged and not plan.allowed(inputs):
        return []  # answers that already contradict each other stay contradictory whatever is added
    words = {a.code: a.window for a in baseline.actions}
    check_reads = plan.check_reads
    known = _known(trace, baseline, blank)
    chain = _Chain(evaluator, trace)
    found = []
    for fact in candidates:
        if fact.name in plan.moot and not plan.asked(fact, inputs):
            continue  # moot for this patient (e.g. "suspected?" once compression is diagnosed): never asked
        at = reach[fact.name]
        answers = _answers(fact)
        allowed = None
        reads = check_reads[fact.name]
        if judged and reads:  # an answer to it could contradict another, or be refused: which answers can be given
            permit = (fact.name, *map(inputs.get, reads))
            allowed = permitted.get(permit)
            if allowed is None:
                allowed = tuple(plan.allowed_adding({**inputs, fact.name: answer}, fact.name) for answer in answers)
                _keep(permitted, permit, allowed, _PERMITTED_KEPT)
        key = (fact.name, audience, allowed, rank, at.read(known))
        verdict = verdicts.get(key, _ABSENT)
        if verdict is _ABSENT:
            states = tuple(tuple([known.get(k) for k in probe]) for probe in at.answer_probes)
            verdict = _verdict(plan, fact, audience, answers, allowed, states, rank, before, words, outcomes, chain)
            _keep(verdicts, key, verdict, _VERDICTS_KEPT)
        if verdict is not None:
            found.append((verdict[0], fact.order, verdict[1]))
    found.sort(key=lambda item: (item[0], item[1]))
    return [e for _, _, e in found]


def _keep(kept: dict, key: tuple, value: object, most: int) -> None:
    """Keep `value`; when `most` are kept, forget the older half first (a dict keeps insertion order), so memory
    stays bounded and the recent ones, which the next patients most likely share, stay."""
    if len(kept) >= most:
        for old in list(itertools.islice(kept, most // 2)):
            del kept[old]
    kept[key] = value


class _Chain:
    """The patient's trace made ready for trial answers on first use (most verdicts are looked up)."""

    def __init__(self, evaluator: ReferenceEvaluator, trace: Trace):
        self.evaluator, self.trace = evaluator, trace
        self.added_by: Callable[[str, Value], list] | None = None

    def __call__(self, fact: str, answer: Value) -> list:
        if self.added_by is None:
            self.added_by = self.evaluator.extender(self.trace)
        return self.added_by(fact, answer)


def _verdict(
    plan: Prepared,
    fact: Fact,
    audience: str,
    answers: tuple,
    allowed: tuple | None,
    states: tuple,
    rank: int,
    before: dict,
    words: dict,
    outcomes: dict,
    chain: _Chain,
) -> tuple | None:
    """(severity, Escalation) for one unanswered question, or None when no answer to it escalates."""
    best = None
    for i, answer in enumerate(answers):
        if allowed is not None and not allowed[i]:
            continue
        key = (fact.name, answer, states[i])
        outcome: Any = outcomes.get(key)
        if outcome is None:
            try:
                outcome = _added_conclusions(plan, chain(fact.name, answer))
            except (EngineError, ContradictoryRules):
                outcome = _FAILED  # the knowledge base contradicts itself here; `lumbar-kb check` reports it
            _keep(outcomes, key, outcome, _OUTCOMES_KEPT)
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
    if best is None:
        return None
    question = (fact.patient_question if audience == "patient" else fact.question) or fact.meaning
    brought = tuple(
        BroughtForward(
            code, plan.action_entries[code].label, hours, window, code in before, before.get(code), words.get(code)
        )
        for code, hours, window, _ in best[3]
    )
    return best[0], Escalation(fact.name, question, best[1], best[2], brought, tuple(equal))


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
        windows.items(), key=lambda kv: (kv[1][0] is None, kv[1][0] or 0, plan.action_entries[kv[0]].order)
    ):
        covering = plan.action_entries[code].superseded_by
        if not any(other in windows for other in covering):
            entries.append((code, hours, window, covering))
    return raised, top, tuple(entries)


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


def decide_most_urgent(
    kb: KnowledgeBase, run: Callable[[dict], Trace], inputs: Mapping[str, Value], audience: str = "clinician"
) -> Result:
    """`decide` for answers that may contradict each other (`patient.parse_patient(..., contradictions="read")`):
    without a contradiction, the patient's own Result; with one, the Result of the most urgent reading the answers
    allow (`patient.readings`: each broken relation settled either way; the first of equally urgent readings, which
    trusts the relation's premise), carrying the contradictions with both answers named and the questions that
    settle them. So a contradictory record never drops an alarm: its urgency is at least that of every reading."""
    facts = dict(inputs)
    found = contradictions(kb, facts)
    if not found:
        return decide(kb, run(facts), audience)
    rank = prepared(kb).rank
    best: Result | None = None
    for reading in readings(kb, facts):
        result = decide(kb, run(reading), audience)
        if best is None or rank[result.urgency] > rank[best.urgency]:
            best = result
    if best is None:  # pragma: no cover - leaving a doubted answer unknown always gives a reading
        raise EngineError(f"no reading of the contradictory answers {found[0].given} keeps every relation")
    best.contradictions = found
    return best


def decision(kb: KnowledgeBase, trace: Trace, audience: str = "clinician") -> Decision:
    """The Decision of one evaluation with its look-ahead, without the Result's words: what a cohort's decision
    row reads (the same as `decide`'s Result gives it, about 10 µs sooner)."""
    found = conclude(kb, trace, audience)
    found.could_escalate = could_escalate(kb, trace.inputs, audience, baseline=found, trace=trace)
    return found
