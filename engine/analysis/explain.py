"""`lumbar-kb explain PATIENT --why CODE / --why-not CODE`.

Why: the rules that concluded it, each with the facts it matched; a matched derived fact is followed to
the rule that derived it, down to the patient's own answers; with citations.

Why not: the rules that would conclude it, nearest first (fewest answers to change before the rule
fires, by the solver), each condition shown with its value for this patient (true, false, unknown), an
unknown or false derived fact followed to the rules that could derive it; then the smallest change of
answers that reaches the conclusion, with the other changes of the same size, each re-evaluated.

A target is `kind:code` (urgency, action, warning, differential), `rule:<id>`, or a bare code or rule
id when only one of them has it; the case of the kind and code does not matter where that is
unambiguous. "Reaching" an urgency level means being the patient's urgency; anything else means
appearing in the result (a rule: firing).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field

from lumbar_kb.engine import logic
from lumbar_kb.engine.analysis.escalation import decide
from lumbar_kb.engine.analysis.structure import logic_value, resolve_name
from lumbar_kb.engine.model import All, Condition, KnowledgeBase, Not, Recommend, SetUrgency, Test, Value, hours_text
from lumbar_kb.engine.reference import ReferenceEvaluator
from lumbar_kb.engine.result import Result, build
from lumbar_kb.engine.trace import Trace

KINDS = ("urgency", "action", "warning", "differential")
MAX_ALTERNATIVES = 5
NEAREST = 3


@dataclass(frozen=True)
class Target:
    kind: str  # one of KINDS, or "rule"
    code: str

    def __str__(self) -> str:
        return f"rule {self.code}" if self.kind == "rule" else f"{self.kind}:{self.code}"


def resolve_target(kb: KnowledgeBase, text: str) -> Target:
    """Parse CODE with the resolver `graph --focus` uses (`structure.resolve_name`): kind:code, rule:<id>,
    or a bare code or rule id only one of them has, the case of the kind and code ignored where that is
    unambiguous. An empty, unknown or ambiguous one is a LumbarKBError (exit 2) with a "did you mean"."""
    ids = [f"{kind}:{code}" for kind in KINDS for code in kb.catalog[kind]] + [f"rule:{r.id}" for r in kb.rules]
    kind, code = resolve_name(ids, text, subject="explain", unknown="unknown conclusion or rule '{}'").split(":", 1)
    return Target(kind, code)


# ---- the explanation as data --------------------------------------------------------------------------------
@dataclass
class Step:
    """One fired rule in a why-chain: what it concluded about the target, what it matched."""

    rule: str
    title: str
    file: str
    line: int | None
    cites: list
    concluded: str  # e.g. "action mri_whole_spine within 12 hours"
    matched: list  # list[(fact, value, list[Step] | None)]: None for the patient's own answer
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "title": self.title,
            "file": self.file,
            "line": self.line,
            "cites": self.cites,
            "concluded": self.concluded,
            "note": self.note,
            "matched": [
                {"fact": f, "value": v, "answered": steps is None, "derived_by": [s.to_dict() for s in steps or ()]}
                for f, v, steps in self.matched
            ],
        }


@dataclass
class Node:
    """A condition (or one of its parts) with its value for this patient."""

    text: str
    value: bool | None
    children: list = field(default_factory=list)  # list[Node]
    derivations: list = field(default_factory=list)  # list[Gap]: for a derived fact not yet as needed

    def to_dict(self) -> dict:
        return {
            "condition": self.text,
            "value": self.value,
            "parts": [c.to_dict() for c in self.children],
            "derived_by": [g.to_dict() for g in self.derivations],
        }


@dataclass
class Gap:
    """A rule that did not fire: its condition tree, and how many answers must change before it fires."""

    rule: str
    title: str
    file: str
    line: int | None
    cites: list
    condition: Node
    changes_needed: int | None = None  # None: no change of answers makes it fire

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "title": self.title,
            "file": self.file,
            "line": self.line,
            "cites": self.cites,
            "changes_needed": self.changes_needed,
            "condition": self.condition.to_dict(),
        }


@dataclass
class Change:
    fact: str
    before: Value | None
    after: Value | None

    def to_dict(self) -> dict:
        return {"fact": self.fact, "from": self.before, "to": self.after}


@dataclass
class Option:
    changes: list  # list[Change]
    outcome: dict  # urgency and actions after the change (re-evaluated)

    def to_dict(self) -> dict:
        return {"changes": [c.to_dict() for c in self.changes], "outcome": self.outcome}


@dataclass
class Explanation:
    target: Target
    asked: str  # "why" | "why-not"
    reached: bool
    patient: dict
    result: Result
    summary: str
    why: list = field(default_factory=list)  # list[Step]
    nearest: list = field(default_factory=list)  # list[Gap]
    other_rules: int = 0  # rules concluding the target not shown among the nearest
    smallest: list = field(default_factory=list)  # list[Option], all of the smallest size, in vocabulary order
    note: str = ""

    def cited(self) -> list[int]:
        numbers = set()

        def walk(steps):
            for s in steps:
                numbers.update(s.cites)
                for _, _, sub in s.matched:
                    walk(sub or ())

        walk(self.why)
        for gap in self.nearest:
            numbers.update(gap.cites)
        return sorted(numbers)

    def to_dict(self) -> dict:
        return {
            "target": str(self.target),
            "asked": self.asked,
            "reached": self.reached,
            "patient": self.patient,
            "summary": self.summary,
            "note": self.note,
            "why": [s.to_dict() for s in self.why],
            "nearest": [g.to_dict() for g in self.nearest],
            "other_rules": self.other_rules,
            "smallest_change": [o.to_dict() for o in self.smallest],
            "citations": self.cited(),
        }


# ---- building it ----------------------------------------------------------------------------------------------
def explain(kb: KnowledgeBase, patient: Mapping[str, Value], target: Target, want: bool = True) -> Explanation:
    evaluator = ReferenceEvaluator(kb)
    patient = dict(patient)
    trace = evaluator.run(patient)
    result = decide(kb, trace)
    reached, summary = _reached(kb, result, trace, target)
    out = Explanation(target, "why" if want else "why-not", reached, patient, result, summary)
    if reached:
        out.why = _why(kb, trace, result, target)
        if not out.why and target.kind == "urgency" and not result.complete and target.code == kb.incomplete_floor:
            out.note = (
                f"no rule concluded it; {target.code} is the floor while an alarm question is unanswered "
                f"(an unanswered question is never a no): {', '.join(result.unanswered_alarm)}. Ask them now."
            )
        elif not out.why and target.kind == "urgency":
            out.note = (
                f"no rule concluded an urgency; {target.code} is the level of a patient no rule raises. "
                "Answering the questions listed under could_escalate may change it."
            )
        return out
    from lumbar_kb.engine.analysis.encoding import Semantics

    state = Semantics(kb).state("s")
    out.nearest, out.other_rules = _nearest(kb, trace, patient, target, state)
    out.smallest = _smallest(kb, patient, target, evaluator, state)
    if target.kind == "urgency" and kb.urgency_rank(result.urgency) > kb.urgency_rank(target.code):
        out.note = (
            f"the urgency is {result.urgency}, higher than {target.code}: a result takes the highest level any "
            "fired rule concludes, so reaching it means no rule concluding a higher level may fire"
        )
    return out


def _reached(kb: KnowledgeBase, result: Result, trace: Trace, target: Target) -> tuple[bool, str]:
    if target.kind == "rule":
        fired = target.code in {f.rule for f in trace.firings}
        return fired, f"rule {target.code} {'fired' if fired else 'did not fire'}"
    if target.kind == "urgency":
        label = kb.catalog["urgency"][result.urgency].label
        return result.urgency == target.code, f"the urgency is {label}"
    items = {"action": result.actions, "warning": result.warnings, "differential": result.differential}[target.kind]
    for item in items:
        if item.code == target.code:
            window = f", {item.window or hours_text(item.within_hours)}" if target.kind == "action" else ""
            return True, f"{item.label}{window}"
    return False, f"{kb.catalog[target.kind][target.code].label}: not in the result"


def _concludes(rule, target: Target) -> list:
    if target.kind == "rule":
        return list(rule.then) if rule.id == target.code else []
    if target.kind == "urgency":
        return [c for c in rule.then if isinstance(c, SetUrgency) and c.level == target.code]
    return [c for c in rule.then if isinstance(c, Recommend) and c.kind == target.kind and c.code == target.code]


def _describe(conclusion) -> str:
    if isinstance(conclusion, SetUrgency):
        return f"urgency {conclusion.level}"
    if isinstance(conclusion, Recommend):
        if conclusion.kind == "action":
            return f"action {conclusion.code}, {conclusion.window or hours_text(conclusion.within_hours)}"
        return f"{conclusion.kind} {conclusion.code}"
    return f"derive {conclusion.fact} = {logic_value(conclusion.value)}"


def _why(kb: KnowledgeBase, trace: Trace, result: Result, target: Target) -> list[Step]:
    firing_of = {f.rule: f for f in trace.firings}
    steps = []
    window = None
    if target.kind == "action":
        window = next(a.within_hours for a in result.actions if a.code == target.code)
    for firing in trace.firings:
        rule = kb.rule(firing.rule)
        said = _concludes(rule, target)
        if not said:
            continue
        step = _step(kb, trace, firing_of, rule.id, "; ".join(_describe(c) for c in said), set())
        if target.kind == "action":
            hours = [c.within_hours for c in said]
            step.note = "gives the window" if window in hours else "a later window, not used"
        steps.append(step)
    steps.sort(key=lambda s: s.note == "a later window, not used")  # the window's rule first, else firing order
    return steps


def _step(kb, trace: Trace, firing_of: dict, rule_id: str, concluded: str, seen: set) -> Step:
    rule = kb.rule(rule_id)
    matched: list[tuple[str, Value, list[Step] | None]] = []
    for fact, value in firing_of[rule_id].matched.items():
        if not kb.facts[fact].derived:
            matched.append((fact, value, None))
            continue
        sub = []
        for other in trace.firings:  # the rules that derived it, in firing order
            r = kb.rule(other.rule)
            if other.rule not in seen and any(d.fact == fact and d.value == value for d in r.derives()):
                sub.append(
                    _step(kb, trace, firing_of, other.rule, f"derive {fact} = {logic_value(value)}", seen | {rule_id})
                )
        matched.append((fact, value, sub))
    return Step(rule.id, rule.title, rule.file, rule.line, list(rule.cites), concluded, matched)


def _node(kb: KnowledgeBase, cond: Condition, facts: dict, trace: Trace, depth: int, want: bool = True) -> Node:
    value = logic.evaluate(cond, facts)
    if isinstance(cond, Test):
        node = Node(cond.describe(), value)
        fact = kb.facts[cond.fact]
        if fact.derived and value is not want and depth > 0:
            needed = cond.values if want else frozenset(fact.values) - cond.values
            for rule in kb.rules:
                if any(d.fact == cond.fact and d.value in needed for d in rule.derives()):
                    if rule.id not in {f.rule for f in trace.firings}:
                        node.derivations.append(
                            Gap(
                                rule.id,
                                rule.title,
                                rule.file,
                                rule.line,
                                list(rule.cites),
                                _node(kb, rule.when, facts, trace, depth - 1),
                            )
                        )
        return node
    if isinstance(cond, Not):
        inner = _node(kb, cond.item, facts, trace, depth, not want)
        return Node("not", value, [inner])
    return Node(
        "all of" if isinstance(cond, All) else "any of",
        value,
        [_node(kb, c, facts, trace, depth, want) for c in cond.items],
    )


def _nearest(kb: KnowledgeBase, trace: Trace, patient: dict, target: Target, s) -> tuple[list[Gap], int]:
    facts = trace.facts()
    gaps = []
    fired = {f.rule for f in trace.firings}
    for rule in kb.rules:
        if not _concludes(rule, target) or rule.id in fired:
            continue
        gap = Gap(rule.id, rule.title, rule.file, rule.line, list(rule.cites), _node(kb, rule.when, facts, trace, 2))
        found = _min_change(s, patient, s.fires[rule.id])
        gap.changes_needed = None if found is None else len(found[0])
        gaps.append(gap)
    gaps.sort(key=lambda g: (g.changes_needed is None, g.changes_needed or 0, kb.rule(g.rule).order))
    return gaps[:NEAREST], max(0, len(gaps) - NEAREST)


def _goal(s, target: Target):
    if target.kind == "rule":
        return s.fires[target.code]
    if target.kind == "urgency":
        return s.urgency_is(target.code)
    return s.concludes((target.kind, target.code))


def _min_change(s, patient: dict, goal) -> tuple[list[Change], object] | None:
    import z3

    opt = z3.Optimize()
    opt.add(s.ok(), goal)
    for fact in s.sem.inputs:
        opt.add_soft(s.equals(patient, fact), 1)
    if opt.check() != z3.sat:
        return None
    model = opt.model()
    return _changes(s, patient, model), model


def _changes(s, patient: dict, model) -> list[Change]:
    after = s.patient(model)
    return [Change(f, patient.get(f), after.get(f)) for f in s.sem.inputs if patient.get(f) != after.get(f)]


def _smallest(kb: KnowledgeBase, patient: dict, target: Target, evaluator: ReferenceEvaluator, s) -> list[Option]:
    import z3

    from lumbar_kb.engine.analysis import bools

    sem = s.sem
    goal = _goal(s, target)
    found = _min_change(s, patient, goal)
    if found is None:
        return []
    first, _ = found
    size = len(first)
    options = [first]
    solver = z3.Solver()
    differs = [bools.Not(s.equals(patient, f)) for f in sem.inputs]
    solver.add(s.ok(), goal, z3.AtMost(*differs, size) if differs else z3.BoolVal(True))
    solver.add(_block(s, first))
    while len(options) < MAX_ALTERNATIVES and solver.check() == z3.sat:
        changes = _changes(s, patient, solver.model())
        options.append(changes)
        solver.add(_block(s, changes))
    order = {name: i for i, name in enumerate(sem.inputs)}
    out = []
    for changes in sorted(options, key=lambda cs: [(order[c.fact], str(c.after)) for c in cs]):
        after = dict(patient)
        for c in changes:
            if c.after is None:
                after.pop(c.fact, None)
            else:
                after[c.fact] = c.after
        result = build(kb, evaluator.run(after))
        out.append(
            Option(changes, {"urgency": result.urgency, "actions": {a.code: a.within_hours for a in result.actions}})
        )
    return out


def _block(s, changes: list[Change]):
    """Exclude this change set (and every larger one containing it)."""
    import z3

    from lumbar_kb.engine.analysis import bools

    terms = [s.equals({c.fact: c.after}, c.fact) for c in changes]
    return bools.Not(bools.And(terms)) if terms else z3.BoolVal(False)


# ---- text ---------------------------------------------------------------------------------------------------
def _answer(kb: KnowledgeBase, fact: str, value) -> str:
    return kb.facts[fact].label(value)


def render(ex: Explanation, kb: KnowledgeBase) -> str:
    out = []
    verb = "is reached" if ex.reached else "is not reached"
    out.append(f"{ex.target} {verb} for this patient: {ex.summary}.")
    if ex.asked == "why" and not ex.reached:
        out.append("(asked why; it was not reached, so here is why not)")
    if ex.asked == "why-not" and ex.reached:
        out.append("(asked why not; it was reached, so here is why)")
    if ex.note:
        out.append(ex.note)
    if ex.reached:
        if ex.why:
            out.append("")
            out.append("Why:")
            for step in ex.why:
                _render_step(kb, step, out, "  ")
    else:
        out.append("")
        if ex.nearest:
            out.append("Nearest rules that conclude it (fewest changed answers first):")
            for gap in ex.nearest:
                _render_gap(kb, gap, out, "  ")
            if ex.other_rules:
                out.append(f"  ... and {ex.other_rules} more rule{'s' if ex.other_rules > 1 else ''} that conclude it")
        else:
            out.append(
                "No rule that concludes it is left to fire"
                if ex.target.kind != "urgency"
                else "No rule that did not fire concludes it"
            )
        out.append("")
        if not ex.smallest:
            out.append("No change of answers reaches it: no valid patient does (see `lumbar-kb check`).")
        else:
            size = len(ex.smallest[0].changes)
            out.append(f"Smallest change that reaches it ({size} answer{'s' if size != 1 else ''}):")
            for i, option in enumerate(ex.smallest):
                if i == 1:
                    out.append("Other changes of the same size:")
                changes = ", ".join(
                    f"{c.fact}: {_answer(kb, c.fact, c.before)} -> {_answer(kb, c.fact, c.after)}"
                    for c in option.changes
                )
                actions = ", ".join(f"{code} ({hours_text(h)})" for code, h in option.outcome["actions"].items())
                out.extend(textwrap.wrap(changes, 100, initial_indent="  ", subsequent_indent="    "))
                out.extend(
                    textwrap.wrap(
                        f"then: {kb.catalog['urgency'][option.outcome['urgency']].label}"
                        f"{'; ' + actions if actions else ''}",
                        100,
                        initial_indent="      ",
                        subsequent_indent="        ",
                    )
                )
    cited = ex.cited()
    if cited:
        out.append("")
        out.append("References:")
        for n in cited:
            out.append(f"  {kb.references[n].cite()}")
    return "\n".join(out) + "\n"


def _cites(numbers) -> str:
    return "[" + ", ".join(str(n) for n in numbers) + "]"


def _render_step(kb: KnowledgeBase, step: Step, out: list, indent: str) -> None:
    note = f" - {step.note}" if step.note else ""
    out.append(f"{indent}{step.rule} {_cites(step.cites)}: {step.concluded}{note}")
    out.append(f"{indent}    {step.title} ({step.file}:{step.line})")
    for fact, value, sub in step.matched:
        if sub is None:
            out.append(f"{indent}    matched {fact} = {_answer(kb, fact, value)} (answered)")
        else:
            out.append(f"{indent}    matched {fact} = {_answer(kb, fact, value)}, derived by:")
            for s in sub:
                _render_step(kb, s, out, indent + "      ")


_MARK = {True: "true   ", False: "FALSE  ", None: "unknown"}


def _render_gap(kb: KnowledgeBase, gap: Gap, out: list, indent: str) -> None:
    need = (
        "no change of answers makes it fire"
        if gap.changes_needed is None
        else f"fires with {gap.changes_needed} changed answer{'s' if gap.changes_needed != 1 else ''}"
    )
    out.append(f"{indent}{gap.rule} {_cites(gap.cites)}: {need}")
    out.append(f"{indent}    {gap.title} ({gap.file}:{gap.line})")
    _render_node(kb, gap.condition, out, indent + "    ")


def _render_node(kb: KnowledgeBase, node: Node, out: list, indent: str) -> None:
    out.append(f"{indent}[{_MARK[node.value]}] {node.text}")
    for child in node.children:
        _render_node(kb, child, out, indent + "    ")
    for gap in node.derivations:
        out.append(f"{indent}    derived by {gap.rule} {_cites(gap.cites)}, which did not fire:")
        _render_node(kb, gap.condition, out, indent + "        ")
