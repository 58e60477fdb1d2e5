"""The knowledge base's semantics as propositional formulas, for the z3 solver.

A `State` is one symbolic patient. Each input fact `f` with domain D gets one Boolean per value,
`f=v`, at most one of them true; none true means unknown. That is the three-valued fact of the engine
(`logic`), and every one of the (|D|+1) possibilities per fact is covered, so a satisfiable query ranges
over every input state at once instead of enumerating them.

A condition is encoded twice, as "is true" and "is false" (Kleene logic: `not` swaps the two, an unknown
fact makes both false). Neither encoding ever negates a fact variable, so both are monotone in what is
known, exactly like the engine's evaluation.

A rule fires when its condition is true at the fixpoint. A derived fact has value v when a firing rule
derives it. With an acyclic derivation graph this is a direct definition, derived facts in topological
order; with cycles the least fixpoint is unrolled: level 0 knows no derived fact, level k+1 derives what
level k's firing rules derive, and after as many levels as there are (derived fact, value) pairs nothing
new can appear. A derived fact may come out with two values (the engine then stops with an error):
`consistent()` excludes those patients, `conflict()` finds them.

Outcomes follow `result.build`: urgency is the highest rank concluded (the lowest level when none is), and
at least the knowledge base's completeness floor while an alarm question is unanswered; an action's window
is the earliest `within_hours` of the firing rules that recommend it, no figure counting as later than any
figure, and an action is dropped when an action that supersedes it (`superseded_by`) is concluded.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Set

import z3

from lumbar_kb.engine.analysis import bools
from lumbar_kb.engine.analysis.structure import Structure, analyse
from lumbar_kb.engine.model import (
    All,
    Condition,
    KnowledgeBase,
    Not,
    Recommend,
    SetUrgency,
    Test,
    Value,
    condition_facts,
)
from lumbar_kb.engine.prepared import prepared

_names = itertools.count()


class Semantics:
    """What every State of one knowledge base shares: who derives, concludes and recommends what."""

    def __init__(self, kb: KnowledgeBase, structure: Structure | None = None):
        self.kb = kb
        self.structure = structure or analyse(kb)
        self.inputs = [f.name for f in kb.input_facts]
        self.derived = [f.name for f in kb.derived_facts]
        ranks = sorted({e.rank for e in kb.catalog["urgency"].values()})
        self.ranks = ranks
        self.level_rank = {code: e.rank for code, e in kb.catalog["urgency"].items()}
        self.action_hours: dict[str, list[float]] = {}
        for rule in kb.rules:
            for c in rule.then:
                if isinstance(c, Recommend) and c.kind == "action" and c.within_hours is not None:
                    self.action_hours.setdefault(c.code, [])
                    if float(c.within_hours) not in self.action_hours[c.code]:
                        self.action_hours[c.code].append(float(c.within_hours))
        for hours in self.action_hours.values():
            hours.sort()

    def state(self, name: str = "s", base: State | None = None, fresh: Iterable[str] = ()) -> State:
        return State(self, name, base, set(fresh))


class State:
    """One symbolic patient. With `base`, it shares base's variables for every input fact not in `fresh`:
    the two patients then differ at most in the `fresh` facts."""

    def __init__(self, sem: Semantics, name: str, base: State | None = None, fresh: Set[str] = frozenset()):
        self.sem = sem
        self.kb = sem.kb
        self.name = f"{name}#{next(_names)}"
        # terms asked for again and again (each proof asks `incomplete` per urgency level, every condition is
        # read by several): built once; a state's variables never change once made, and z3 shares equal terms
        self._memo: dict[tuple, z3.BoolRef] = {}
        self.var: dict[tuple[str, Value], z3.BoolRef] = {}
        self.own: list[str] = []  # input facts with variables of this state's own
        for fact in sem.inputs:
            if base is not None and fact not in fresh:
                for v in self.kb.facts[fact].values:
                    self.var[(fact, v)] = base.var[(fact, v)]
            else:
                self.own.append(fact)
                for v in self.kb.facts[fact].values:
                    self.var[(fact, v)] = z3.Bool(f"{self.name}.{fact}={v}")
        self.derived: dict[tuple[str, Value], z3.BoolRef] = {}
        self._define_derived()
        self.fires = {rule.id: self.true(rule.when) for rule in self.kb.rules}

    def _kept(self, key: tuple, build) -> z3.BoolRef:
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = build()
        return got

    # ---- facts and conditions ----
    def is_(self, fact: str, value: Value) -> z3.BoolRef:
        if self.kb.facts[fact].derived:
            return self.derived[(fact, value)]
        return self.var[(fact, value)]

    def known(self, fact: str) -> z3.BoolRef:
        return self._kept(("known", fact), lambda: bools.Or([self.is_(fact, v) for v in self.kb.facts[fact].values]))

    def true(self, cond: Condition, lookup=None) -> z3.BoolRef:
        if lookup is None:  # the state's own facts: the same term every time
            return self._kept(("true", cond), lambda: self._tf(cond, True, self.is_))
        return self._tf(cond, True, lookup)

    def false(self, cond: Condition, lookup=None) -> z3.BoolRef:
        if lookup is None:
            return self._kept(("false", cond), lambda: self._tf(cond, False, self.is_))
        return self._tf(cond, False, lookup)

    def _tf(self, cond: Condition, want: bool, lookup) -> z3.BoolRef:
        if isinstance(cond, Test):
            domain = self.kb.facts[cond.fact].values
            values = [v for v in domain if (v in cond.values) == want]
            return bools.Or([lookup(cond.fact, v) for v in values]) if values else z3.BoolVal(False)
        if isinstance(cond, Not):
            return self._tf(cond.item, not want, lookup)
        parts = [self._tf(item, want, lookup) for item in cond.items]
        conjunctive = isinstance(cond, All) == want  # all is true / any is false when every item is
        return bools.And(parts) if conjunctive else bools.Or(parts)

    def _define_derived(self) -> None:
        structure = self.sem.structure
        rules_deriving = {key: [self.kb.rule(r) for r in ids] for key, ids in structure.derivers.items()}
        if structure.acyclic:
            for fact in structure.topological_derived():
                for v in self.kb.facts[fact].values:
                    self.derived[(fact, v)] = bools.Or([self.true(r.when) for r in rules_deriving[(fact, v)]])
            return
        levels = len(rules_deriving) + 1
        current = {key: z3.BoolVal(False) for key in rules_deriving}
        for _ in range(levels):
            at = dict(current)
            lookup = lambda f, v, at=at: at[(f, v)] if self.kb.facts[f].derived else self.var[(f, v)]
            current = {
                key: bools.Or([self.true(r.when, lookup) for r in rules]) for key, rules in rules_deriving.items()
            }
        self.derived = current

    # ---- well-formed patients ----
    def one_value(self) -> z3.BoolRef:
        """At most one value per input fact (of this state's own variables)."""
        parts = []
        for fact in self.own:
            values = [self.var[(fact, v)] for v in self.kb.facts[fact].values]
            parts += [bools.Not(bools.And(a, b)) for a, b in itertools.combinations(values, 2)]
        return bools.And(parts)

    def valid(self) -> z3.BoolRef:
        """A patient file would be accepted: one value per fact, and every `only_if` respected (judged on
        the inputs alone, as a patient file is)."""
        return self._kept(("valid",), self._valid)

    def _valid(self) -> z3.BoolRef:
        parts = [self.only_if(fact) for fact in self.sem.inputs if self.kb.facts[fact].only_if is not None]
        parts += [self.keeps(relation) for relation in self.kb.relations]
        return bools.And([self.one_value()] + parts)

    def keeps(self, relation) -> z3.BoolRef:
        """The answers keep a relation (facts.yaml `relations:`), judged three-valued as a patient file is."""
        broken = [self.true(relation.when)]
        if relation.implies is not None:
            broken.append(self.false(relation.implies))
        else:
            broken.append(self.true(relation.excludes))
        return bools.Not(bools.And(broken))

    def only_if(self, fact: str) -> z3.BoolRef:
        no_derived = lambda f, v: z3.BoolVal(False) if self.kb.facts[f].derived else self.var[(f, v)]
        return bools.Implies(self.known(fact), bools.Not(self.false(self.kb.facts[fact].only_if, no_derived)))

    def conflict(self, fact: str) -> z3.BoolRef:
        values = [self.derived[(fact, v)] for v in self.kb.facts[fact].values]
        return bools.Or([bools.And(a, b) for a, b in itertools.combinations(values, 2)])

    def consistent(self) -> z3.BoolRef:
        """No derived fact is derived with two values (the engine would stop with an error)."""
        return self._kept(("consistent",), lambda: bools.And([bools.Not(self.conflict(f)) for f in self.sem.derived]))

    def ok(self) -> z3.BoolRef:
        return bools.And(self.valid(), self.consistent())

    # ---- outcomes ----
    def concludes(self, key: tuple) -> z3.BoolRef:
        """Some firing rule concludes this: ("urgency", level), ("action", code), ("warning", code), ..."""
        return self._kept(("concludes", key), lambda: self._concludes(key))

    def _concludes(self, key: tuple) -> z3.BoolRef:
        rules = [r.id for r in self.kb.rules if any(_matches(c, key) for c in r.then)]
        return bools.Or([self.fires[r] for r in rules])

    def incomplete(self) -> z3.BoolRef:
        """Some alarm question is unanswered and not moot (`not_asked_when`, judged on the inputs, as
        `Prepared.unanswered_alarms` judges it): the result is incomplete."""
        return self._kept(("incomplete",), self._incomplete)

    def _incomplete(self) -> z3.BoolRef:
        no_derived = lambda f, v: z3.BoolVal(False) if self.kb.facts[f].derived else self.var[(f, v)]
        parts = []
        for fact in self.kb.input_facts:
            if not fact.alarm:
                continue
            moot = self.kb.not_asked_when.get(fact.name)
            unasked = bools.Not(self.known(fact.name))
            if fact.only_if is not None:
                unasked = bools.And(unasked, bools.Not(self.false(fact.only_if, no_derived)))
            if moot is not None:
                unasked = bools.And(unasked, bools.Not(self.true(moot, no_derived)))
            parts.append(bools.And(unasked, self.could_alarm(fact.name), bools.Not(self.settled(fact.name))))
        return bools.Or(parts)

    def settled(self, fact: str) -> z3.BoolRef:
        """No answer to `fact`, now or later, could raise the rules' urgency or bring a watched step forward
        (`Prepared.settled`): the rules already conclude its highest urgency and every step it could give, as early."""
        return self._kept(("settled", fact), lambda: self._settled(fact))

    def _settled(self, fact: str) -> z3.BoolRef:
        top, earliest = prepared(self.kb).bound[fact]
        parts = []
        if top > self.sem.ranks[0]:
            levels = [code for code, r in self.sem.level_rank.items() if r >= top]
            parts.append(bools.Or([self.concludes(("urgency", code)) for code in levels]))
        for code, hours in earliest.items():
            parts.append(self.action(code) if hours is None else self.action_by(code, hours))
        return bools.And(parts)

    def could_alarm(self, fact: str) -> z3.BoolRef:
        """Some alarming answer to `fact` (yes; any value of an enum) keeps every relation and only_if with the
        other answers (`Prepared.could_alarm`): the relations read both ways."""
        return self._kept(("could_alarm", fact), lambda: self._could_alarm(fact))

    def _could_alarm(self, fact: str) -> z3.BoolRef:
        entry = self.kb.facts[fact]
        trial = (True,) if entry.type == "bool" else entry.values
        options = []
        for answer in trial:

            def sub(f, v, answer=answer):
                if f == fact:
                    return z3.BoolVal(v == answer)
                return z3.BoolVal(False) if self.kb.facts[f].derived else self.var[(f, v)]

            keeps = []
            for relation in self.kb.relations:
                other = relation.implies if relation.implies is not None else relation.excludes
                assert other is not None  # a relation implies or excludes something (the loader checks it)
                if fact not in {*condition_facts(relation.when), *condition_facts(other)}:
                    continue
                broken = [self.true(relation.when, sub)]
                broken.append(self.false(other, sub) if relation.implies is not None else self.true(other, sub))
                keeps.append(bools.Not(bools.And(broken)))
            for name in self.sem.inputs:
                only_if = self.kb.facts[name].only_if
                if name != fact and only_if is not None and fact in condition_facts(only_if):
                    keeps.append(bools.Implies(self.known(name), bools.Not(self.false(only_if, sub))))
            options.append(bools.And(keeps))
        return bools.Or(options)

    def urgency_at_least(self, rank: int) -> z3.BoolRef:
        return self._kept(("urgency_at_least", rank), lambda: self._urgency_at_least(rank))

    def _urgency_at_least(self, rank: int) -> z3.BoolRef:
        if rank <= self.sem.ranks[0]:
            return z3.BoolVal(True)
        levels = [code for code, r in self.sem.level_rank.items() if r >= rank]
        parts = [self.concludes(("urgency", code)) for code in levels]
        floor = self.kb.incomplete_floor
        if floor is not None and self.sem.level_rank[floor] >= rank:
            parts.append(self.incomplete())  # an unanswered alarm question raises the urgency to the floor
        return bools.Or(parts)

    def urgency_is(self, level: str) -> z3.BoolRef:
        rank = self.sem.level_rank[level]
        higher = [r for r in self.sem.ranks if r > rank]
        at_least = self.urgency_at_least(rank)
        return bools.And(at_least, bools.Not(self.urgency_at_least(higher[0]))) if higher else at_least

    def lower_urgency(self, other: State) -> z3.BoolRef:
        """This patient's urgency is lower than `other`'s."""
        return bools.Or(
            [bools.And(other.urgency_at_least(r), bools.Not(self.urgency_at_least(r))) for r in self.sem.ranks[1:]]
        )

    def action(self, code: str) -> z3.BoolRef:
        """The result has the action: some firing rule concludes it and no action superseding it is concluded."""
        return self._kept(
            ("action", code), lambda: bools.And(self.concludes(("action", code)), self._not_superseded(code))
        )

    def _not_superseded(self, code: str) -> z3.BoolRef:
        covers = self.kb.catalog["action"][code].superseded_by
        return bools.And([bools.Not(self.concludes(("action", other))) for other in covers])

    def action_by(self, code: str, hours: float) -> z3.BoolRef:
        """The action is recommended with a window of at most `hours`."""
        return self._kept(("action_by", code, hours), lambda: self._action_by(code, hours))

    def _action_by(self, code: str, hours: float) -> z3.BoolRef:
        rules = [
            r.id
            for r in self.kb.rules
            for c in r.then
            if isinstance(c, Recommend)
            and c.kind == "action"
            and c.code == code
            and c.within_hours is not None
            and float(c.within_hours) <= hours
        ]
        return bools.And(bools.Or([self.fires[r] for r in rules]), self._not_superseded(code))

    def later(self, code: str, other: State) -> z3.BoolRef:
        """`other` recommends the action later than this patient does, or not at all while this one does."""
        parts = [bools.And(self.action(code), bools.Not(other.action(code)))]
        parts += [
            bools.And(self.action_by(code, h), bools.Not(other.action_by(code, h)))
            for h in self.sem.action_hours.get(code, ())
        ]
        return bools.Or(parts)

    def escalates_to(self, other: State, imaging: Iterable[str]) -> z3.BoolRef:
        """`other` has a higher urgency, or requires one of the imaging actions sooner (or newly)."""
        return bools.Or([self.lower_urgency(other)] + [other.later(code, self) for code in imaging])

    # ---- reading a model back ----
    def patient(self, model: z3.ModelRef) -> dict[str, Value]:
        out = {}
        for fact in self.sem.inputs:
            for v in self.kb.facts[fact].values:
                if z3.is_true(model.eval(self.var[(fact, v)], model_completion=True)):
                    out[fact] = v
                    break
        return out

    def answered(self) -> list[z3.BoolRef]:
        """One term per input fact: the fact is answered (for "fewest answered facts")."""
        return [self.known(f) for f in self.sem.inputs]

    def equals(self, patient: Mapping[str, Value], fact: str) -> z3.BoolRef:
        """This state gives `fact` the same answer (or non-answer) as `patient`."""
        if patient.get(fact) is None:
            return bools.Not(self.known(fact))
        return self.var[(fact, patient[fact])]

    def is_patient(self, patient: Mapping[str, Value]) -> z3.BoolRef:
        return bools.And([self.equals(patient, f) for f in self.sem.inputs])


def _matches(conclusion, key: tuple) -> bool:
    if isinstance(conclusion, SetUrgency):
        return key == ("urgency", conclusion.level)
    if isinstance(conclusion, Recommend):
        return key == (conclusion.kind, conclusion.code)
    return key == ("derive", conclusion.fact, conclusion.value)


# ---- solving ------------------------------------------------------------------------------------------------
def solve(*constraints) -> z3.ModelRef | None:
    solver = z3.Solver()
    solver.add(*constraints)
    return solver.model() if solver.check() == z3.sat else None


def solve_min(constraints, soft: list, limit_ms: int = 20_000) -> z3.ModelRef | None:
    """A model of `constraints` making as few `soft` terms true as possible (z3's MaxSAT)."""
    opt = z3.Optimize()
    opt.set("timeout", limit_ms)
    opt.add(*constraints)
    for term in soft:
        opt.add_soft(bools.Not(term), 1)
    result = opt.check()
    if result == z3.unsat:
        return None
    if result != z3.sat:  # timed out: any model will do
        return solve(*constraints)
    return opt.model()


def canonical(constraints, states: list, limit_ms: int = 20_000) -> list[dict] | None:
    """The patients (one per state) with the fewest answered facts, chosen canonically so that the same
    question always gets the same answer, whatever the variables happen to be named: fewest answered facts
    first (MaxSAT), then fact by fact in vocabulary order, each unknown if possible, else its first value
    that still allows a model."""
    soft = [term for state in states for term in state.answered()]
    model = solve_min(constraints, soft, limit_ms)
    if model is None:
        return None
    bound = sum(1 for term in soft if z3.is_true(model.eval(term, model_completion=True)))
    solver = z3.Solver()
    solver.add(*constraints)
    solver.add(z3.AtMost(*soft, bound))
    for state in states:
        for fact in state.own:
            for value in (None, *state.kb.facts[fact].values):
                choice = bools.Not(state.known(fact)) if value is None else state.var[(fact, value)]
                solver.push()
                solver.add(choice)
                if solver.check() == z3.sat:
                    solver.pop()
                    solver.add(choice)
                    break
                solver.pop()
    if solver.check() != z3.sat:  # pragma: no cover - every step kept a model
        return None
    final = solver.model()
    return [state.patient(final) for state in states]


def version() -> str:
    return z3.get_version_string()
