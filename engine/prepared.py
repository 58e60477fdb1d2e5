"""A knowledge base prepared for evaluating many patients in Python: what `result.build`, the reference
evaluator and the look-ahead read for every patient, worked out once per knowledge base.

Nothing here decides anything: conditions become predicates (`logic.predicate`, equal to `logic.evaluate`),
conclusions are sorted by kind with their catalogue entries looked up, and the questions are put in the order
the Result lists them. `prepared(kb)` keeps the last 8 used, by identity (a knowledge base is immutable).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lumbar_kb.engine.logic import Facts, Predicate, assume, predicate, supporter
from lumbar_kb.engine.model import (
    CodeEntry,
    Derive,
    Fact,
    KnowledgeBase,
    Recommend,
    Relation,
    Rule,
    SetUrgency,
    Value,
    condition_facts,
)
from lumbar_kb.engine.patient import META_KEYS


@dataclass(frozen=True)
class PreparedRule:
    rule: Rule
    when: Predicate
    key: tuple  # the conflict-resolution order: higher priority first, then definition order
    urgencies: tuple  # tuple[(level, rank)] of its SetUrgency conclusions
    recommends: tuple  # tuple[(Recommend, CodeEntry)] of its Recommend conclusions, in rule order
    concludes: tuple  # the (kind, code) it recommends, each once, in rule order
    derives: tuple  # tuple[Derive, ...]
    support: Callable  # logic.supporter(rule.when): the facts that made it true, for the trace


def first_deriver(steps: Iterable[PreparedRule], fact: str, value: Any) -> Rule | None:
    """The first of `steps` (rules that fired) deriving `fact` = `value`: the other side of a contradiction, named
    by the durable engine and the reference evaluator alike (`errors.ContradictoryRules`)."""
    return next((s.rule for s in steps if any((d.fact, d.value) == (fact, value) for d in s.derives)), None)


def _never(facts: Facts) -> bool | None:
    return None


class Prepared:
    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self.rank: dict[str, int] = {code: e.rank for code, e in kb.catalog["urgency"].items()}
        self.lowest: str = kb.lowest_urgency
        self.input_facts: tuple[Fact, ...] = kb.input_facts
        # the order the Result lists unanswered questions in: alarm questions first, then vocabulary order
        self.question_order: tuple[Fact, ...] = tuple(sorted(self.input_facts, key=lambda f: (not f.alarm, f.order)))
        self.alarm_facts: tuple[Fact, ...] = tuple(f for f in self.input_facts if f.alarm)
        self.rules: dict[str, PreparedRule] = {}
        for rule in kb.rules:
            urgencies, recommends, derives = [], [], []
            for c in rule.then:
                if isinstance(c, SetUrgency):
                    urgencies.append((c.level, self.rank[c.level]))
                elif isinstance(c, Recommend):
                    recommends.append((c, kb.catalog[c.kind][c.code]))
                elif isinstance(c, Derive):
                    derives.append(c)
                else:  # pragma: no cover - the model has no other kind
                    raise TypeError(c)
            self.rules[rule.id] = PreparedRule(
                rule,
                predicate(rule.when),
                (-rule.priority, rule.order),
                tuple(urgencies),
                tuple(recommends),
                tuple(dict.fromkeys((c.kind, c.code) for c, _ in recommends)),
                tuple(derives),
                supporter(rule.when),
            )
        # result.conclude's store: (firing sequence, for the patient's words?) -> its conclusions (bounded)
        self.concluded: dict[tuple[tuple[str, ...], bool], tuple] = {}
        # and the items it shares between sequences: ((kind, code), the rules concluding it, patient?) -> Item
        self.items: dict[tuple, Any] = {}
        # the rules that read each fact (input or derived), in conflict-resolution order
        self.readers: dict[str, tuple[PreparedRule, ...]] = {}
        for prepared_rule in sorted(self.rules.values(), key=lambda p: p.key):
            for name in prepared_rule.rule.reads:
                self.readers[name] = (*self.readers.get(name, ()), prepared_rule)
        self.only_if: dict[str, Predicate] = {f.name: predicate(f.only_if) for f in self.input_facts if f.only_if}
        self.moot: dict[str, Predicate] = {name: predicate(c) for name, c in kb.not_asked_when.items()}
        self.done_when: dict[str, Predicate] = {
            code: predicate(e.done_when) for code, e in kb.catalog["action"].items() if e.done_when is not None
        }
        self.out_of_scope: Predicate | None = (
            predicate(kb.out_of_scope_when) if kb.out_of_scope_when is not None else None
        )
        self.relations: tuple[tuple[Relation, Predicate, Predicate, Predicate], ...] = tuple(
            (
                r,
                predicate(r.when),
                predicate(r.implies) if r.implies is not None else _never,
                predicate(r.excludes) if r.excludes is not None else _never,
            )
            for r in kb.relations
        )
        # for each fact, the only_if conditions and relations an answer to it could change
        self._checks: dict[str, tuple[tuple, tuple]] = {}
        self.check_reads: dict[str, tuple[str, ...]] = {}
        for fact in kb.facts.values():
            only_ifs = tuple(
                (name, check)
                for name, check in self.only_if.items()
                if name == fact.name or fact.name in condition_facts(kb.facts[name].only_if)
            )
            relations = tuple(
                entry
                for entry in self.relations
                if fact.name
                in {
                    *condition_facts(entry[0].when),
                    *(condition_facts(entry[0].implies) if entry[0].implies is not None else ()),
                    *(condition_facts(entry[0].excludes) if entry[0].excludes is not None else ()),
                }
            )
            self._checks[fact.name] = (only_ifs, relations)
            # the facts those checks read: all `allowed_adding` reads besides the added answer (empty: no checks)
            self.check_reads[fact.name] = tuple(
                sorted(
                    {name for name, _ in only_ifs}
                    | {f for name, _ in only_ifs for f in condition_facts(kb.facts[name].only_if)}
                    | {
                        f
                        for entry in relations
                        for c in (entry[0].when, entry[0].implies, entry[0].excludes)
                        if c is not None
                        for f in condition_facts(c)
                    }
                )
            )
        # each input fact's accepted values, for known_inputs: bool (true or false) or the enum's values
        self._accepts: dict[str, object] = {
            f.name: bool if f.type == "bool" else frozenset(v for v in f.values if isinstance(v, str))
            for f in self.input_facts
        }
        self.watched: frozenset[str] = frozenset(kb.watched_actions)
        self.action_entries: dict[str, CodeEntry] = kb.catalog["action"]
        # for each input fact, the most an alarming answer to it (yes; each value of an enum: the look-ahead's trial
        # answers) could ever conclude through the rules downstream of it, derived facts included: the highest urgency
        # rank (-1: none) and each watched action's earliest window (None: only windows without a figure). A rule the
        # answer (or the derived value it leads to) makes false is not followed: "leg weakness: yes" never leads to
        # the radiographs of "no neurological symptom". A static bound over every patient and every later answer
        # (`settled`).
        self.bound: dict[str, tuple[int, dict[str, float | None]]] = {}
        for fact in self.input_facts:
            top, earliest = -1, dict[str, float]()
            for answer in (True,) if fact.type == "bool" else fact.values:
                seen_rules: set[str] = set()
                seen: set[tuple[str, Value]] = {(fact.name, answer)}
                todo: list[tuple[str, Value]] = [(fact.name, answer)]
                while todo:
                    name, value = todo.pop()
                    for step in self.readers.get(name, ()):
                        if step.rule.id in seen_rules or assume(step.rule.when, name, value) is False:
                            continue
                        seen_rules.add(step.rule.id)
                        top = max([top, *(rank for _, rank in step.urgencies)])
                        for c, _ in step.recommends:
                            if c.kind == "action" and c.code in self.watched:
                                hours = math.inf if c.within_hours is None else float(c.within_hours)
                                earliest[c.code] = min(earliest.get(c.code, math.inf), hours)
                        for d in step.derives:
                            if (d.fact, d.value) not in seen:
                                seen.add((d.fact, d.value))
                                todo.append((d.fact, d.value))
            self.bound[fact.name] = (top, {code: None if h == math.inf else h for code, h in earliest.items()})

    def asked(self, fact: Fact, facts: Facts) -> bool:
        """`logic.asked`: the question may be put to this patient (its only_if is not false, it is not moot)."""
        only_if = self.only_if.get(fact.name)
        if only_if is not None and only_if(facts) is False:
            return False
        moot = self.moot.get(fact.name)
        return moot is None or moot(facts) is not True

    def settled(self, fact: str, rank: int, windows: dict) -> bool:
        """No answer to `fact`, now or after any further answers, could raise the rules' urgency (`rank`, before any
        completeness floor) or bring a watched step forward: the result already has every step the rules downstream
        of it could give, each no later (`windows`: the result's actions, code -> hours). Sound for every later
        answer: a known answer never becomes unknown, so what fired still fires and windows only come sooner."""
        top, earliest = self.bound[fact]
        if top > rank:
            return False
        for code, hours in earliest.items():
            if code not in windows:
                return False
            if hours is not None and (windows[code] is None or windows[code] > hours):
                return False
        return True

    def unanswered_alarms(self, facts: Facts, rank: int | None = None, windows: dict | None = None) -> list[str]:
        """The alarm questions (`alarm: true`) not answered that may still be asked (`logic.asked`), that some
        alarming answer could still be given to, and (given the rules' urgency `rank` and the result's `windows`)
        whose answer could still change the decision (`settled`), in vocabulary order: while any is left the result
        is incomplete.

        The relations are read both ways: "compression diagnosed? yes" is not allowed once the suspicion is answered
        no (a confirmed compression was suspected), so that question cannot raise an alarm and keeps nothing
        incomplete. The alarming answers are the look-ahead's trial answers (yes; each value of an enum)."""
        return [
            f.name
            for f in self.alarm_facts
            if facts.get(f.name) is None
            and self.asked(f, facts)
            and self.could_alarm(f, facts)
            and (rank is None or not self.settled(f.name, rank, windows or {}))
        ]

    def could_alarm(self, fact: Fact, facts: Facts) -> bool:
        """Some alarming answer to the unanswered `fact` (yes; any value of an enum) keeps every only_if and
        relation with the answers given."""
        if not self.constrains(fact.name):
            return True
        trial = (True,) if fact.type == "bool" else fact.values
        return any(self.allowed_adding({**facts, fact.name: answer}, fact.name) for answer in trial)

    def allowed(self, facts: Facts) -> bool:
        """Every given fact's only_if is not false and no relation is broken: a patient file would be accepted."""
        for name, only_if in self.only_if.items():
            if name in facts and only_if(facts) is False:
                return False
        return not any(self._breaks(entry, facts) for entry in self.relations)

    def known_inputs(self, data: dict) -> dict[str, Value] | None:
        """`patient.parse_patient` for a patient mapping it accepts, without positions: the answered input facts in
        vocabulary order; None when anything in it would be a problem (an unknown or derived key, a value of the
        wrong type or spelling, an `id` or `note` that is not text or a number, an answer its only_if refuses, a
        broken relation): then `parse_patient` says what and where. Never accepts what `parse_patient` refuses
        (tested on generated mappings)."""
        accepts = self._accepts
        given: dict[str, Value] = {}
        for key, value in data.items():
            accept = accepts.get(key)
            if accept is None:
                if key in META_KEYS and isinstance(value, (str, int)):
                    continue
                return None
            if value is None:
                continue  # explicitly unknown
            if accept is bool:
                if value is not True and value is not False:
                    return None
            elif type(value) is not str or value not in accept:  # type: ignore[operator]
                return None
            given[key] = value
        if not self.allowed(given):
            return None
        return {f.name: given[f.name] for f in self.input_facts if f.name in given}

    def constrains(self, fact: str) -> bool:
        """Some only_if or relation reads `fact`: `allowed_adding` has something to check for it (and those checks
        read some facts, `check_reads`)."""
        return bool(self.check_reads[fact])

    def checks_on(self, fact: str) -> tuple[tuple[str, ...], tuple[Relation, ...]]:
        """What `allowed_adding` checks when `fact` is answered: the facts whose only_if reads it (itself
        included when it has one) and the relations that read it. For other engines' encodings (the CQL
        Library), so they check exactly what this one does."""
        only_ifs, relations = self._checks[fact]
        return tuple(name for name, _ in only_ifs), tuple(entry[0] for entry in relations)

    def allowed_adding(self, facts: Facts, fact: str) -> bool:
        """`allowed(facts)` for facts that were allowed before `fact` was added to them: only the only_if
        conditions and relations that read `fact` (or `fact`'s own only_if) can have changed, since a known
        answer never becomes unknown (Kleene's logic is monotone in what is known)."""
        only_ifs, relations = self._checks[fact]
        for name, only_if in only_ifs:
            if name in facts and only_if(facts) is False:
                return False
        return not any(self._breaks(entry, facts) for entry in relations)

    @staticmethod
    def _breaks(entry: tuple, facts: Facts) -> bool:
        """`logic.breaks`."""
        _, when, implies, excludes = entry
        return when(facts) is True and (implies(facts) is False or excludes(facts) is True)


_PLAIN = {bool: True, str: True}  # the types of an answer a fragment stands for (1 == True, but encodes as 1)


class Fragments:
    """Each answer of a knowledge base's vocabulary as its member of a JSON object (`"fact": value`, as `encode`
    writes one), encoded once: joined, the answers' object without its braces, in a fraction of the encoder's
    time (the engine's message to durable, a cohort's canonical answers). `join` gives None for anything else (a
    key or value outside the vocabulary, a value of another type), which the caller encodes as it is."""

    def __init__(self, kb: KnowledgeBase, encode: Callable[[dict], str]):
        self.table = {f.name: {v: encode({f.name: v})[1:-1] for v in f.values} for f in kb.input_facts}

    def join(self, items: Iterable[tuple[str, Any]], separator: str) -> str | None:
        table = self.table
        try:
            return separator.join([table[k][v] for k, v in items if _PLAIN[type(v)]])
        except KeyError:
            return None


_PREPARED: list[Prepared] = []  # the last few, most recent first
_KEPT = 8
_LOCK = threading.Lock()


def prepared(kb: KnowledgeBase) -> Prepared:
    """The prepared form of `kb`, made once and kept while it is among the last few used."""
    with _LOCK:
        for i, known in enumerate(_PREPARED):
            if known.kb is kb:
                if i:
                    _PREPARED.insert(0, _PREPARED.pop(i))
                return known
    made = Prepared(kb)
    with _LOCK:
        _PREPARED.insert(0, made)
        del _PREPARED[_KEPT:]
    return made
