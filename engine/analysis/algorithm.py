"""The clinical algorithm: the rules read as questions asked in a clinician's order, generated, never drawn.

For each decision the result makes (the urgency, then each action and its window) a decision diagram over the
input facts: questions in the order a clinician asks them (the alarm questions first, then the vocabulary's
order), each question a node whose branches are its answers (unknown, "not asked or not known", is an answer
of its own, never folded into "no" unless the two lead to the same decisions), each leaf the decision. A
question is asked only where its answer can change the decision (proved: the branches it would merge are
equivalent for every patient, z3 over two symbolic patients that differ in that answer alone); answers that
lead to the same decisions share one branch ("no or unknown"). Built with the same z3 semantics as
`lumbar-kb check`, so the diagram is equivalent to the engine by construction; `prove` re-checks that for every
path, and the tests compare it with the engine on patients.

A leaf of the urgency diagram also lists the actions every patient reaching it gets, with their windows
("certain" actions); the per-action diagrams give each action's window for every patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import z3

from lumbar_kb.engine.analysis import bools
from lumbar_kb.engine.analysis.encoding import Semantics, State
from lumbar_kb.engine.analysis.memo import ByContent
from lumbar_kb.engine.analysis.structure import analyse
from lumbar_kb.engine.model import KnowledgeBase, Recommend, Value, condition_facts, hours_text

NOT_RECOMMENDED = "not recommended"
DEPENDS = "depending on other answers"


@dataclass
class Leaf:
    outcome: str  # the decision: an urgency level, or an action's window ("not recommended", "within 12 hours")
    label: str
    certain: list = field(default_factory=list)  # urgency leaves: [(action label, window words)] every patient gets
    windows: dict = field(default_factory=dict)  # action label -> the windows patients on the path can get


@dataclass
class Branch:
    answers: tuple  # values (True/False/str) and None for unknown
    words: str  # "yes", "no or unknown", ...
    to: Node | Leaf


@dataclass
class Node:
    fact: str
    question: str
    alarm: bool
    branches: list  # list[Branch]


@dataclass
class Decision:
    id: str  # "urgency" or "action:<code>"
    title: str
    facts: list  # the input facts this decision can depend on, in question order
    root: Node | Leaf
    outcomes: dict  # outcome -> predicate builder (state -> z3 expr); not for display


def question_order(kb: KnowledgeBase) -> list[str]:
    return [f.name for f in sorted(kb.input_facts, key=lambda f: (not f.alarm, f.order))]


def _cone(kb: KnowledgeBase, rules: list[str]) -> set[str]:
    """Input facts that can influence whether any of `rules` fires (through derived facts too)."""
    structure = analyse(kb)
    seen: set[str] = set()
    todo = list(rules)
    done: set[str] = set()
    while todo:
        rid = todo.pop()
        if rid in done:
            continue
        done.add(rid)
        for fact in kb.rule(rid).reads:
            if kb.facts[fact].derived:
                for (f, _v), derivers in structure.derivers.items():
                    if f == fact:
                        todo += derivers
            else:
                seen.add(fact)
    for name in list(seen):  # a fact restricted by only_if brings the facts of its condition along
        only_if = kb.facts[name].only_if
        if only_if is not None:
            seen |= {f for f in condition_facts(only_if) if not kb.facts[f].derived}
    for relation in kb.relations:  # so does a relation between answers
        tied = {f for c in (relation.when, relation.implies, relation.excludes) if c for f in condition_facts(c)}
        if tied & seen:
            seen |= tied
    return seen


def _completeness_facts(kb: KnowledgeBase) -> frozenset:
    """The facts the completeness floor reads: every alarm question and what makes one moot."""
    if kb.incomplete_floor is None:
        return frozenset()
    alarms = {f.name for f in kb.input_facts if f.alarm}
    moot = {f for cond in kb.not_asked_when.values() for f in condition_facts(cond)}
    return frozenset(alarms | moot)


def _window_words(kb: KnowledgeBase, code: str) -> dict[float | None, str]:
    words: dict[float | None, str] = {}
    for rule in kb.rules:
        for c in rule.then:
            if isinstance(c, Recommend) and c.kind == "action" and c.code == code:
                key = None if c.within_hours is None else float(c.within_hours)
                if c.window and key not in words:
                    words[key] = c.window
    return words


class Builder:
    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self.sem = Semantics(kb)
        self.s = self.sem.state("a")
        self.ok = self.s.ok()
        self.order = question_order(kb)
        self._pairs: dict[str, State] = {}
        self.solver = z3.Solver()
        self.solver.add(self.ok)

    # -- literals --
    def lits(self, state: State, fact: str, value: Value | None) -> list:
        values = self.kb.facts[fact].values
        if value is None:
            return [bools.Not(state.var[(fact, v)]) for v in values]
        return [state.var[(fact, value)]]

    def twin(self, fact: str) -> State:
        """A second symbolic patient with the same answers as the first, except to `fact`."""
        if fact not in self._pairs:
            self._pairs[fact] = self.sem.state("b", base=self.s, fresh={fact})
        return self._pairs[fact]

    # -- decisions --
    def urgency_outcomes(self) -> dict:
        return {level: (lambda st, lv=level: st.urgency_is(lv)) for level in self.kb.catalog["urgency"]}

    def action_outcomes(self, code: str) -> dict:
        hours = self.sem.action_hours.get(code, [])
        words = _window_words(self.kb, code)
        out: dict = {NOT_RECOMMENDED: lambda st: bools.Not(st.action(code))}
        previous = None
        for h in hours:
            label = words.get(h) or hours_text(h)
            if previous is None:
                out[label] = lambda st, h=h: st.action_by(code, h)
            else:
                out[label] = lambda st, h=h, p=previous: bools.And(
                    st.action_by(code, h), bools.Not(st.action_by(code, p))
                )
            previous = h
        none_label = words.get(None) or "no fixed window"
        if previous is None:
            out[none_label] = lambda st: st.action(code)
        else:
            out[none_label] = lambda st, p=previous: bools.And(st.action(code), bools.Not(st.action_by(code, p)))
        return out

    def build(
        self, decision_id: str, title: str, outcomes: dict, rules: list[str], also: frozenset = frozenset()
    ) -> Decision:
        cone = _cone(self.kb, rules) | also
        facts = [f for f in self.order if f in cone]
        preds = {name: make(self.s) for name, make in outcomes.items()}

        def outcome_of(model: z3.ModelRef) -> str:
            for name, pred in preds.items():
                if z3.is_true(model.eval(pred, model_completion=True)):
                    return name
            raise AssertionError("no outcome holds")  # pragma: no cover - the outcomes partition every patient

        same_solvers: dict[str, tuple[z3.Solver, State]] = {}

        def same(fact: str, a: Value | None, b: Value | None, assumptions: list) -> bool:
            if fact not in same_solvers:
                twin = self.twin(fact)
                # the same decisions for every completion, and the same completions valid (an `only_if` may allow
                # a later answer after one answer but not after the other)
                ok_twin = twin.ok()
                outcome_differs = bools.Or([bools.Xor(preds[n], outcomes[n](twin)) for n in outcomes])
                check = z3.Solver()
                check.add(self.s.one_value(), twin.one_value())
                check.add(bools.Or(bools.Xor(self.ok, ok_twin), bools.And(self.ok, ok_twin, outcome_differs)))
                same_solvers[fact] = (check, twin)
            check, twin = same_solvers[fact]
            return bools.check(check, *assumptions, *self.lits(self.s, fact, a), *self.lits(twin, fact, b)) == z3.unsat

        def walk(i: int, assumptions: list, path: tuple) -> Node | Leaf:
            if bools.check(self.solver, *assumptions) != z3.sat:  # pragma: no cover - only possible branches are walked
                raise AssertionError("an impossible branch")
            outcome = outcome_of(self.solver.model())
            if bools.check(self.solver, *assumptions, bools.Not(preds[outcome])) == z3.unsat:
                return self.leaf(outcome, path, decision_id)
            while i < len(facts):
                fact = facts[i]
                answers = [*self.kb.facts[fact].values, None]
                possible = [
                    a for a in answers if bools.check(self.solver, *assumptions, *self.lits(self.s, fact, a)) == z3.sat
                ]
                groups: list[list] = []
                for a in possible:
                    for g in groups:
                        if same(fact, g[0], a, assumptions):
                            g.append(a)
                            break
                    else:
                        groups.append([a])
                if len(groups) == 1:
                    i += 1
                    continue
                f = self.kb.facts[fact]
                branches = []
                for g in groups:
                    rep = g[0]
                    branches.append(
                        Branch(
                            tuple(g),
                            _answer_words(f, g),
                            walk(i + 1, assumptions + self.lits(self.s, fact, rep), (*path, self.answered(fact, g))),
                        )
                    )
                return Node(fact, f.question or f.meaning, f.alarm, branches)
            raise AssertionError("undecided after every question")  # pragma: no cover

        root = walk(0, [], ())
        return Decision(decision_id, title, facts, root, outcomes)

    def answered(self, fact: str, answers: list) -> z3.BoolRef:
        """The patient gave one of `answers` (None: unknown) to `fact`."""
        return bools.Or([bools.And(self.lits(self.s, fact, a)) for a in answers])

    def leaf(self, outcome: str, path: tuple, decision_id: str) -> Leaf:
        """A leaf; for the urgency, with the actions every patient on the path gets (judged on the path's
        answer groups, not on the one answer each group was explored with)."""
        if decision_id != "urgency":
            return Leaf(outcome, outcome)
        certain = []
        possible_windows = {}
        on_path = z3.Solver()
        on_path.add(self.ok, *path)
        for code, entry in self.kb.catalog["action"].items():
            if bools.check(on_path, bools.Not(self.s.action(code))) != z3.unsat:
                continue
            possible = tuple(
                words
                for words, make in self.action_outcomes(code).items()
                if words != NOT_RECOMMENDED and bools.check(on_path, make(self.s)) == z3.sat
            )
            possible_windows[entry.label] = possible
            words = possible[0] if len(possible) == 1 else f"{' or '.join(possible)}, {DEPENDS}"
            certain.append((entry.label, words))
        return Leaf(outcome, self.kb.catalog["urgency"][outcome].label, certain, possible_windows)


def _answer_words(fact, answers: list) -> str:
    def one(a):
        if a is None:
            return "unknown"
        if fact.type == "bool":
            return "yes" if a else "no"
        return str(a)

    return " or ".join(one(a) for a in answers)


_BUILT: ByContent[list] = ByContent(private=True)


def build_algorithm(kb: KnowledgeBase) -> list[Decision]:
    """The urgency decision, then one per action (catalogue order): built once per content in a process
    (`memo.ByContent`; seconds of proofs), each caller given its own copy."""
    return _BUILT.get(kb, lambda: _build_algorithm(kb))


def _build_algorithm(kb: KnowledgeBase) -> list[Decision]:
    builder = Builder(kb)
    structure = analyse(kb)
    out = [
        builder.build(
            "urgency",
            "Urgency",
            builder.urgency_outcomes(),
            sorted({r for key, rs in structure.concluders.items() if key.startswith("urgency:") for r in rs}),
            _completeness_facts(kb),
        )
    ]
    for code, entry in kb.catalog["action"].items():
        rules = structure.concluders.get(f"action:{code}", [])
        # an action dropped beside one that supersedes it depends on that one's rules too
        covering = [r for other in entry.superseded_by for r in structure.concluders.get(f"action:{other}", [])]
        if rules:
            out.append(builder.build(f"action:{code}", entry.label, builder.action_outcomes(code), rules + covering))
    return out


# ---- reading the diagram -------------------------------------------------------------------------------------------
def follow(decision: Decision, patient: dict) -> Leaf:
    """The leaf a patient's answers lead to."""
    node = decision.root
    while isinstance(node, Node):
        answer = patient.get(node.fact)
        node = next(b.to for b in node.branches if answer in b.answers)
    return node


def paths(decision: Decision) -> list[tuple[list[tuple[str, tuple]], Leaf]]:
    """Every path from the root: the (fact, answers) taken, and the leaf."""
    out: list = []

    def walk(node, taken):
        if isinstance(node, Leaf):
            out.append((taken, node))
            return
        for b in node.branches:
            walk(b.to, [*taken, (node.fact, b.answers)])

    walk(decision.root, [])
    return out


def prove(kb: KnowledgeBase, decision: Decision) -> list[str]:
    """Re-check the diagram against the semantics: every valid patient follows a path (the branches of each
    node cover every possible answer) and every patient on a path gets the path's leaf decision. Returns the
    failures (none when the diagram is equivalent to the engine's semantics)."""
    sem = Semantics(kb)
    s = sem.state("p")
    windows = {code: Builder(kb).action_outcomes(code) for code in kb.catalog["action"]}
    solver = z3.Solver()
    solver.add(s.ok())
    failures = []

    def on(fact: str, answers: tuple):
        parts = []
        for a in answers:
            if a is None:
                parts.append(bools.Not(s.known(fact)))
            else:
                parts.append(s.var[(fact, a)])
        return bools.Or(parts)

    def walk(node, taken: list):
        if isinstance(node, Leaf):
            pred = decision.outcomes[node.outcome](s)
            if bools.check(solver, *taken, bools.Not(pred)) != z3.unsat:
                failures.append(f"{decision.id}: a patient on the path to '{node.outcome}' gets another decision")
            for label, _words in node.certain:
                code = next(c for c, e in kb.catalog["action"].items() if e.label == label)
                claim = bools.Or([windows[code][w](s) for w in node.windows.get(label, ())])
                if bools.check(solver, *taken, bools.Not(claim)) != z3.unsat:
                    failures.append(f"{decision.id}: not every patient on the path to '{node.outcome}' gets {label}")
            return
        covered = bools.Or([on(node.fact, b.answers) for b in node.branches])
        if bools.check(solver, *taken, bools.Not(covered)) != z3.unsat:
            failures.append(f"{decision.id}: the answers to {node.fact} do not cover every patient")
        for b in node.branches:
            walk(b.to, [*taken, on(node.fact, b.answers)])

    walk(decision.root, [])
    return failures


def size(decision: Decision) -> tuple[int, int]:
    """(questions asked in the diagram, leaves)."""
    questions = leaves = 0

    def walk(node):
        nonlocal questions, leaves
        if isinstance(node, Leaf):
            leaves += 1
            return
        questions += 1
        for b in node.branches:
            walk(b.to)

    walk(decision.root)
    return questions, leaves
