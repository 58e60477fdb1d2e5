"""What changed between two versions of a knowledge base: in the rules' text, and for which patients.

Textual: rules added, removed, and edited field by field (title, section, priority, condition, conclusions
with their catalogue texts, citations, rationale, interpretation), from the same content the approvals hash.

Behaviour, over every input state at once (z3, `encoding.Semantics`): one symbolic patient is evaluated by both
versions (each input fact unknown or one of its values; a fact only one version asks is free there; a value
only one version allows is excluded, as neither file would be valid in both). Classes:

    urgency       the urgency differs
    gain / lose   an action is recommended by one version only (per action)
    window        both recommend the action, with different earliest windows (per action)

Besides the rules, every other item the board approves (facts, catalogue, safety declarations, code bindings,
guideline sentences: `approvals.items`) is compared by its content hash, field by field, and each changed item
names the approvals it voids. Each behaviour change is said clinically: for whom (its smallest patient in
words), before and after (urgency raised or LOWERED; a window earlier or LATER, with hours), how many answer
combinations (each input fact unknown or one of its values: not patients), the safety proofs of `check` that
hold on the old version and fail on the new one, and an example patient the engine re-evaluates on both. Two
versions with different content under one version label are a finding (a release must carry a new label).

Each class is counted exactly (a decision tree over the facts, splitting only where the class is neither
certain nor impossible; `limit` bounds the solver calls, beyond which the count is a lower bound) and comes
with a smallest example patient (fewest answered facts), which the real engine then evaluates on both
versions; the example is printed with what the engine did, and flagged if the engine disagrees.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import z3

from lumbar_kb.engine.analysis import approvals, bools
from lumbar_kb.engine.analysis.approvals import rule_content
from lumbar_kb.engine.analysis.encoding import Semantics, State, solve_min
from lumbar_kb.engine.analysis.reproduce import Runner, decisions
from lumbar_kb.engine.errors import LumbarKBError
from lumbar_kb.engine.model import All, AnyOf, Condition, KnowledgeBase, Not, Test, Value, condition_facts

FIELDS = ("title", "section", "priority", "when", "then", "cites", "rationale", "interpretation")
LIMIT = 20_000  # expansions per count
QUICK = 2_000  # solver calls the quick method may spend before the expansion takes over


@dataclass
class RuleChange:
    rule: str
    change: str  # "added" | "removed" | "changed"
    fields: list = field(default_factory=list)  # [(field, old text, new text)]
    voids: list = field(default_factory=list)  # the approvals of the old content it voids: "Dr A (2026-01-02)"

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "change": self.change,
            "fields": [{"field": f, "old": o, "new": n} for f, o, n in self.fields],
            "voids": list(self.voids),
        }


@dataclass
class ItemChange:
    item: str
    kind: str
    title: str
    change: str  # "added" | "removed" | "changed"
    fields: list = field(default_factory=list)  # [(field, old text, new text)]
    voids: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "item": self.item,
            "kind": self.kind,
            "title": self.title,
            "change": self.change,
            "fields": [{"field": f, "old": o, "new": n} for f, o, n in self.fields],
            "voids": list(self.voids),
        }


@dataclass
class Broken:
    """A safety proof that holds on the old version and fails on the new one."""

    check: str
    claim: str
    message: str
    subject: str
    patient: dict | None

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "claim": self.claim,
            "message": self.message,
            "subject": self.subject,
            "patient": self.patient,
        }


@dataclass
class Change:
    kind: str  # "urgency" | "gain" | "lose" | "window"
    code: str | None  # the action, for gain / lose / window; "<old level>-><new level>" for urgency
    states: int
    exact: bool
    patient: dict | None = None
    old: dict | None = None  # what the engine decided on the old version for the example
    new: dict | None = None
    reproduced: bool | None = None
    label: str = ""  # the action's label in the catalogue
    who: str = ""  # the example patient in words: the smallest condition of the change
    direction: str = ""  # "raised" | "LOWERED" | "earlier" | "LATER" | "added" | "REMOVED"
    before: str = ""  # the example's old urgency or window, in words
    after: str = ""
    breaks: list = field(default_factory=list)  # list[Broken] about this change

    @property
    def title(self) -> str:
        name = self.label or self.code
        return {
            "urgency": f"urgency {self.label}",
            "gain": f"gain the action: {name}",
            "lose": f"lose the action: {name}",
            "window": f"a different window for: {name}",
        }[self.kind]

    @property
    def headline(self) -> str:
        """The change as a board member says it: whom, what, before -> after, which way."""
        what = {"urgency": "urgency", "gain": self.label, "lose": self.label, "window": self.label}[self.kind]
        line = f"{what} for patients with {self.who or 'no answer at all'}: {self.before} -> {self.after}"
        if self.direction:
            line += f", {self.direction}"
        for b in self.breaks:
            line += f"; breaks the proof {b.check}"
        return line

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "code": self.code,
            "title": self.title,
            "headline": self.headline,
            "who": self.who,
            "direction": self.direction,
            "before": self.before,
            "after": self.after,
            "answer_combinations": self.states,
            "input_states": self.states,
            "exact": self.exact,
            "example": self.patient,
            "old": self.old,
            "new": self.new,
            "reproduced": self.reproduced,
            "breaks": [b.to_dict() for b in self.breaks],
        }


@dataclass
class Diff:
    old: KnowledgeBase
    new: KnowledgeBase
    rules: list  # list[RuleChange]
    changes: list  # list[Change], only classes with at least one state
    input_states: int
    elapsed: float = 0.0
    items: list = field(default_factory=list)  # list[ItemChange]: the other items the board approves
    broken: list = field(default_factory=list)  # list[Broken]: proofs that hold on the old version only

    @property
    def same_label(self) -> bool:
        """Different content under one version label: a release must carry a new one."""
        return self.old.version == self.new.version and (bool(self.rules) or bool(self.items) or bool(self.changes))

    @property
    def voided(self) -> int:
        return sum(len(c.voids) for c in [*self.rules, *self.items])

    def to_dict(self) -> dict:
        return {
            "old": self.old.identity(),
            "new": self.new.identity(),
            "same_version_label": self.same_label,
            "rules": [r.to_dict() for r in self.rules],
            "items": [i.to_dict() for i in self.items],
            "approvals_voided": self.voided,
            "broken_proofs": [b.to_dict() for b in self.broken],
            "input_states": self.input_states,
            "answer_combinations": self.input_states,
            "behaviour": [c.to_dict() for c in self.changes],
        }


# ---- text ---------------------------------------------------------------------------------------------------------
def condition_text(cond: Condition) -> str:
    if isinstance(cond, Test):
        return cond.describe()
    if isinstance(cond, Not):
        return f"not ({condition_text(cond.item)})"
    assert isinstance(cond, (All, AnyOf))
    word = " and " if isinstance(cond, All) else " or "
    return "(" + word.join(condition_text(c) for c in cond.items) + ")"


def _field_text(kb: KnowledgeBase, rule_id: str, name: str, content: dict) -> str:
    if name == "when":
        return condition_text(kb.rule(rule_id).when)
    value = content[name]
    if name == "then":
        parts = []
        for c in value:
            head = next(k for k in ("urgency", "action", "warning", "differential", "derive") if k in c)
            text = f"{head}: {c[head]}"
            if head == "action" and (c.get("window") or c.get("within_hours") is not None):
                text += f" ({c.get('window') or ''}{'; ' if c.get('window') else ''}{c.get('within_hours')} h)"
            if head == "derive":
                text += f" = {c['value']}"
            parts.append(text)
        return "; ".join(parts)
    if name == "cites":
        return ", ".join(str(c["number"]) for c in value)
    return "" if value is None else str(value)


def text_changes(old: KnowledgeBase, new: KnowledgeBase) -> list[RuleChange]:
    out = []
    old_ids, new_ids = [r.id for r in old.rules], [r.id for r in new.rules]
    for rule in old.rules:
        if rule.id not in new_ids:
            out.append(RuleChange(rule.id, "removed"))
    for rule in new.rules:
        if rule.id not in old_ids:
            out.append(RuleChange(rule.id, "added"))
            continue
        a, b = rule_content(old, old.rule(rule.id)), rule_content(new, rule)
        fields = []
        for name in FIELDS:
            if a[name] != b[name]:
                fields.append((name, _field_text(old, rule.id, name, a), _field_text(new, rule.id, name, b)))
        if fields:
            out.append(RuleChange(rule.id, "changed", fields))
    return out


def _short(value: object, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _approvals_of(*kbs: KnowledgeBase) -> list:
    """The valid approvals recorded beside either version (each version's own board judges its records)."""
    out, seen = [], set()
    for kb in kbs:
        try:
            board = approvals.board_of(kb)
            records = approvals.load_records(kb)
        except LumbarKBError:  # an unreadable approvals file voids nothing it could be read to say
            continue
        for r in records:
            key = (r.item, r.by, r.content_hash)
            if r.decision == "approved" and key not in seen and approvals.signature_problem(kb, board, r) is None:
                seen.add(key)
                out.append(r)
    return out


def item_changes(old: KnowledgeBase, new: KnowledgeBase, rules: list[RuleChange]) -> list[ItemChange]:
    """Every item other than a rule whose content differs, field by field; and the approvals each change
    (rules included, filled into `rules`) voids."""
    a, b = approvals.items(old), approvals.items(new)
    records = _approvals_of(new, old)

    def voids(item: str) -> list[str]:
        if item not in a:
            return []
        h = a[item].content_hash
        return [f"{r.by} ({r.date})" for r in records if r.item == item and r.content_hash == h]

    for rc in rules:
        rc.voids = voids(rc.rule) if rc.change != "added" else []
    out = []
    rule_ids = {r.id for r in old.rules} | {r.id for r in new.rules}
    for iid in dict.fromkeys([*a, *b]):
        if iid in rule_ids:
            continue
        if iid not in b:
            out.append(ItemChange(iid, a[iid].kind, a[iid].title, "removed", [], voids(iid)))
        elif iid not in a:
            out.append(ItemChange(iid, b[iid].kind, b[iid].title, "added"))
        elif a[iid].content_hash != b[iid].content_hash:
            ca, cb = a[iid].content, b[iid].content
            if isinstance(ca, dict) and isinstance(cb, dict):
                fields = [
                    (k, _short(ca.get(k)), _short(cb.get(k)))
                    for k in dict.fromkeys([*ca, *cb])
                    if ca.get(k) != cb.get(k)
                ]
            else:
                fields = [("content", _short(ca), _short(cb))]
            out.append(ItemChange(iid, b[iid].kind, b[iid].title, "changed", fields, voids(iid)))
    return out


def broken_proofs(old: KnowledgeBase, new: KnowledgeBase) -> list[Broken]:
    """The safety proofs of `check` that hold on the old version and fail on the new one."""
    from lumbar_kb.engine.analysis.checks import run_checks

    def failing(kb: KnowledgeBase) -> tuple[dict[str, list], dict[str, str]]:
        report = run_checks(kb)
        found = {c.id: [f for f in c.findings if f.severity == "problem"] for c in report.checks}
        return found, {c.id: c.claim for c in report.checks}

    (before, _), (after, claims) = failing(old), failing(new)
    out = []
    for check, findings in after.items():
        if findings and not before.get(check):
            f = findings[0]
            out.append(Broken(check, claims.get(check, ""), f.message, f.subject, f.patient))
    return out


def patient_words(kb: KnowledgeBase, patient: dict | None) -> str:
    """A patient as the board reads one: each answered fact's meaning and answer (unanswered ones left out)."""
    if not patient:
        return ""
    parts = []
    for name, value in patient.items():
        fact = kb.facts.get(name)
        if fact is None:
            parts.append(f"{name}: {value}")
        elif value is True:
            parts.append(fact.meaning)
        elif value is False:
            parts.append(f"no {fact.meaning}")
        else:
            parts.append(f"{fact.meaning}: {value}")
    return ", ".join(parts)


# ---- behaviour ----------------------------------------------------------------------------------------------------
class _Pair:
    """One symbolic patient evaluated by both versions."""

    def __init__(self, old: KnowledgeBase, new: KnowledgeBase):
        self.old, self.new = old, new
        self.so: State = Semantics(old).state("old")
        self.sn: State = Semantics(new).state("new")
        old_in = {f.name: f for f in old.input_facts}
        new_in = {f.name: f for f in new.input_facts}
        self.facts: list[str] = [f.name for f in old.input_facts] + [n for n in new_in if n not in old_in]
        self.domains: dict[str, tuple] = {}
        ties = []  # one patient: the two versions' variables agree
        for name in self.facts:
            if name in old_in and name in new_in:
                shared = tuple(v for v in old_in[name].values if v in new_in[name].values)
                for v in shared:
                    ties.append(self.so.var[(name, v)] == self.sn.var[(name, v)])
                for v in old_in[name].values:
                    if v not in shared:
                        ties.append(bools.Not(self.so.var[(name, v)]))
                for v in new_in[name].values:
                    if v not in shared:
                        ties.append(bools.Not(self.sn.var[(name, v)]))
                self.domains[name] = shared
            else:
                self.domains[name] = tuple((old_in.get(name) or new_in[name]).values)
        self.ties = bools.And(ties)
        self.ok = bools.And(self.so.ok(), self.sn.ok())  # a valid patient file for both, and no contradiction
        self.base = bools.And(self.ties, self.ok)
        self.coupled: set[str] = set()
        for kb in (old, new):
            for f in kb.input_facts:
                if f.only_if is not None:
                    self.coupled |= {f.name, *(x for x in condition_facts(f.only_if) if not kb.facts[x].derived)}
            for r in kb.relations:  # a relation between answers couples its facts the same way
                self.coupled |= {x for c in (r.when, r.implies, r.excludes) if c for x in condition_facts(c)}
        self.well_formed = bools.And(self.so.one_value(), self.sn.one_value())

    def var(self, fact: str, value: Value) -> z3.BoolRef:
        return self.so.var[(fact, value)] if (fact, value) in self.so.var else self.sn.var[(fact, value)]

    def known(self, fact: str) -> z3.BoolRef:
        return bools.Or([self.var(fact, v) for v in self.domains[fact]])

    def patient(self, model: z3.ModelRef) -> dict:
        out: dict = {}
        for fact in self.facts:
            for v in self.domains[fact]:
                if z3.is_true(model.eval(self.var(fact, v), model_completion=True)):
                    out[fact] = v
        return out

    # -- the classes --
    def actions(self) -> list[str]:
        return list(dict.fromkeys([*self.old.catalog["action"], *self.new.catalog["action"]]))

    def has(self, state: State, code: str) -> z3.BoolRef:
        return state.action(code) if code in state.kb.catalog["action"] else z3.BoolVal(False)

    def window(self, code: str) -> z3.BoolRef:
        hours = sorted(set(self.so.sem.action_hours.get(code, [])) | set(self.sn.sem.action_hours.get(code, [])))
        differs = bools.Or([self.so.action_by(code, h) != self.sn.action_by(code, h) for h in hours])
        return bools.And(self.has(self.so, code), self.has(self.sn, code), differs)

    def branches(self, fact: str) -> list[list[z3.BoolRef]]:
        """The literals fixing `fact` to each of its values, then to unknown. Both versions' variables are
        fixed (outside the ties they are independent), and a value only one version allows is false."""
        both = [s.var[(fact, v)] for s in (self.so, self.sn) for v in s.kb.facts[fact].values if (fact, v) in s.var]
        out = []
        for v in self.domains[fact]:
            chosen = [x for s in (self.so, self.sn) if (x := s.var.get((fact, v))) is not None]
            out.append(chosen + [bools.Not(x) for x in both if not any(x.eq(c) for c in chosen)])
        out.append([bools.Not(x) for x in both])  # unknown
        return out

    # -- counting --
    def count(self, claim: z3.BoolRef, limit: int = LIMIT) -> tuple[int, bool]:
        """How many input states (valid in both versions) satisfy `claim`; (count, exact). Two exact methods:
        the solver's, quick where few answers matter, tried first within a small budget; then the expansion."""
        count, exact = self.count_by_solver(claim, QUICK)
        return (count, exact) if exact else self.count_by_expansion(claim, limit)

    def count_by_solver(self, claim: z3.BoolRef, limit: int) -> tuple[int, bool]:
        """A decision tree over the answers that stops where the solver proves the claim certain or impossible
        for every completion."""
        inside, outside = z3.Solver(), z3.Solver()
        inside.add(self.well_formed, self.base, claim)
        outside.add(self.well_formed, self.ties, bools.Not(bools.And(self.ok, claim)))
        # facts tied by `only_if` or a relation first (until they are fixed, some completions are not valid patients,
        # so no branch can be certain), then the facts the claim reads, then the rest (which it never splits on)
        mentioned = _mentioned(claim)
        order = sorted(self.facts, key=lambda f: (f not in self.coupled, f not in mentioned))
        sizes = [len(self.domains[f]) + 1 for f in order]
        calls = 0
        exact = True

        def walk(i: int, assumptions: list) -> int:
            nonlocal calls, exact
            if calls >= limit:
                exact = False
                return 0
            calls += 2
            if bools.check(inside, *assumptions) != z3.sat:
                return 0
            if bools.check(outside, *assumptions) != z3.sat:
                return math.prod(sizes[i:])
            if i == len(order):  # pragma: no cover - a full assignment is decided one way or the other
                return 0
            return sum(walk(i + 1, assumptions + b) for b in self.branches(order[i]))

        return walk(0, []), exact

    def count_by_expansion(self, claim: z3.BoolRef, limit: int = LIMIT) -> tuple[int, bool]:
        """Shannon expansion over the answers, each branch substituted into the formula and simplified: a branch
        that simplifies to false counts nothing, one that simplifies to true counts every answer to the facts
        it no longer reads, and identical residual formulas (z3 shares equal terms) are counted once, so the
        answers that do not matter (a "no" and an "unknown" that lead to the same decisions) cost nothing more.
        `limit` bounds the expansions; beyond it the count is a lower bound."""
        formula = bools.And(self.ties, self.ok, claim)
        order = {f: i for i, f in enumerate(self.facts)}
        size = {f: len(self.domains[f]) + 1 for f in self.facts}
        memo: dict[int, tuple[z3.BoolRef, int]] = {}  # the term is kept alive: z3 reuses a freed term's id
        steps = 0
        exact = True

        def expand(g: z3.BoolRef) -> tuple[int, set[str]]:
            """(the number of answers to the facts g reads that satisfy g, those facts)."""
            nonlocal steps, exact
            g = z3.simplify(g)
            if z3.is_false(g):
                return 0, set()
            if z3.is_true(g):
                return 1, set()
            reads = _mentioned(g)
            key = g.get_id()
            if key in memo:
                return memo[key][1], reads
            if steps >= limit:
                exact = False
                return 0, reads
            steps += 1
            fact = min(reads, key=order.__getitem__)
            total = 0
            for value in (*self.domains[fact], None):
                sub, sub_reads = expand(z3.substitute(g, *self.assign(fact, value)))
                total += sub * math.prod(size[f] for f in reads - {fact} - sub_reads)
            memo[key] = (g, total)
            return total, reads

        count, reads = expand(formula)
        return count * math.prod(size[f] for f in self.facts if f not in reads), exact

    def assign(self, fact: str, value: Value | None) -> list[tuple[z3.BoolRef, z3.BoolRef]]:
        """Substitutions giving `fact` the answer `value` (None: unknown) in both versions."""
        out = []
        for state in (self.so, self.sn):
            for v in state.kb.facts[fact].values if fact in state.kb.facts else ():
                if (fact, v) in state.var:
                    out.append((state.var[(fact, v)], z3.BoolVal(v == value and value is not None)))
        return out

    def example(self, claim: z3.BoolRef) -> dict | None:
        """The smallest patient (fewest answered facts) satisfying the claim; among those, the first in the
        vocabulary's order (each fact unknown if possible, else its first possible value), so the same
        versions always give the same example."""
        model = solve_min([self.base, claim], [self.known(f) for f in self.facts])
        if model is None:
            return None
        size = len(self.patient(model))
        solver = z3.Solver()
        solver.add(self.base, claim, z3.AtMost(*[self.known(f) for f in self.facts], size))
        fixed: list = []
        for fact in self.facts:
            options = self.branches(fact)
            for lits in [options[-1], *options[:-1]]:
                if bools.check(solver, *fixed, *lits) == z3.sat:
                    fixed += lits
                    break
        bools.check(solver, *fixed)
        return self.patient(solver.model())


def _mentioned(expr: z3.ExprRef) -> set[str]:
    """Input facts whose variables occur in a z3 expression (names are `<state>.<fact>=<value>`)."""
    found: set[str] = set()
    seen: set[int] = set()
    stack = [expr]
    while stack:
        e = stack.pop()
        if e.get_id() in seen:
            continue
        seen.add(e.get_id())
        if z3.is_const(e) and e.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            name = e.decl().name()
            found.add(name.split(".", 1)[1].rsplit("=", 1)[0])
        stack.extend(e.children())
    return found


def _restrict(kb: KnowledgeBase, patient: dict) -> dict:
    return {k: v for k, v in patient.items() if k in kb.facts and v in kb.facts[k].values}


def _shows(change: Change, old: dict, new: dict) -> bool:
    if change.kind == "urgency":
        return f"{old['urgency']}->{new['urgency']}" == change.code
    code = change.code
    if change.kind == "gain":
        return code in new["actions"] and code not in old["actions"]
    if change.kind == "lose":
        return code in old["actions"] and code not in new["actions"]
    return code in old["actions"] and code in new["actions"] and old["actions"][code] != new["actions"][code]


def compare(old: KnowledgeBase, new: KnowledgeBase, limit: int = LIMIT, proofs: bool = True) -> Diff:
    """`proofs`: also run `check` on both versions to name the safety proofs the change breaks."""
    started = time.perf_counter()
    pair = _Pair(old, new)
    claims: list[tuple[str, str | None, z3.BoolRef]] = []
    # one class per (old level, new level): a lowered urgency is the change a board must see first
    for a in old.catalog["urgency"]:
        for b in new.catalog["urgency"]:
            if a != b:
                claims.append(("urgency", f"{a}->{b}", bools.And(pair.so.urgency_is(a), pair.sn.urgency_is(b))))
    for action in pair.actions():
        a, b = pair.has(pair.so, action), pair.has(pair.sn, action)
        claims.append(("gain", action, bools.And(b, bools.Not(a))))
        claims.append(("lose", action, bools.And(a, bools.Not(b))))
        claims.append(("window", action, pair.window(action)))
    quick = z3.Solver()
    quick.add(pair.base)
    runners: dict[str, Runner] = {}
    changes = []
    for kind, code, claim in claims:
        if bools.check(quick, claim) != z3.sat:
            continue
        states, exact = pair.count(claim, limit)
        change = Change(kind, code, states, exact, pair.example(claim))
        if kind == "urgency":
            a, b = (code or "").split("->")
            raised = b in old.catalog["urgency"] and new.urgency_rank(b) > old.urgency_rank(a)
            change.label = (
                f"{'raised' if raised else 'LOWERED'}: {old.catalog['urgency'][a].label} -> "
                f"{new.catalog['urgency'][b].label}"
            )
        elif code is not None:
            change.label = (new.catalog["action"].get(code) or old.catalog["action"][code]).label
        if change.patient is not None:
            if not runners:
                runners = {"old": Runner(old), "new": Runner(new)}
            change.old = decisions(runners["old"].result(_restrict(old, change.patient)))
            change.new = decisions(runners["new"].result(_restrict(new, change.patient)))
            change.reproduced = _shows(change, change.old, change.new)
        _say(old, new, change)
        changes.append(change)
    total, _ = pair.count(z3.BoolVal(True), limit)  # the answer combinations valid in both versions
    rules = text_changes(old, new)
    diff = Diff(old, new, rules, changes, total, items=item_changes(old, new, rules))
    if proofs and (changes or rules or diff.items):
        diff.broken = broken_proofs(old, new)
        for c in changes:
            c.breaks = [b for b in diff.broken if _about(b, c)]
    diff.elapsed = time.perf_counter() - started
    return diff


def _window_words(kb: KnowledgeBase, code: str, hours: float | None) -> str:
    """An action's window for the example patient, in the words of the rule that gives it, with hours."""
    if hours is None:
        return "no fixed window"
    from lumbar_kb.engine.model import Recommend

    for rule in kb.rules:
        for c in rule.then:
            if isinstance(c, Recommend) and c.code == code and c.within_hours == hours and c.window:
                return f"{c.window.removeprefix('within ')} ({hours:g} h)"
    return f"{hours:g} h"


def _say(old: KnowledgeBase, new: KnowledgeBase, c: Change) -> None:
    c.who = patient_words(new, c.patient) or patient_words(old, c.patient)
    # an alarm question left unanswered decides too (the completeness floor): name those of the example
    unasked = [f.meaning for f in old.facts.values() if f.alarm and not f.derived and f.name not in (c.patient or {})]
    if unasked and len(unasked) <= 3:
        c.who = (c.who + ", " if c.who else "") + " and ".join(unasked) + " unanswered"
    if c.kind == "urgency":
        a, b = (c.code or "").split("->")
        c.before, c.after = old.catalog["urgency"][a].label, new.catalog["urgency"][b].label
        c.direction = "raised" if new.urgency_rank(b) > old.urgency_rank(a) else "LOWERED"
    elif c.kind in ("gain", "lose"):
        c.before, c.after = ("not required", "required") if c.kind == "gain" else ("required", "NOT REQUIRED")
        c.direction = "added" if c.kind == "gain" else "REMOVED"
    elif c.kind == "window" and c.old is not None and c.new is not None and c.code is not None:
        h_old, h_new = c.old["actions"].get(c.code), c.new["actions"].get(c.code)
        c.before, c.after = _window_words(old, c.code, h_old), _window_words(new, c.code, h_new)
        if h_old is not None and h_new is not None and h_old != h_new:
            c.direction = "LATER: a delay" if h_new > h_old else "earlier"
        elif h_new is None and h_old is not None:
            c.direction = "LATER: the window is gone"


def _about(b: Broken, c: Change) -> bool:
    if c.kind == "urgency":
        return "urgency" in b.subject or "urgency" in b.message.lower() or "EMERGENCY" in b.message
    return c.code is not None and (b.subject == f"action:{c.code}" or f"'{c.code}'" in b.message)


# ---- words --------------------------------------------------------------------------------------------------------
def _hours(h) -> str:
    return "no fixed window" if h is None else f"{h:g} h"


def _show_patient(patient: dict | None) -> str:
    if not patient:
        return "{} (nothing answered)"
    shown = {True: "yes", False: "no"}
    return "{" + ", ".join(f"{k}: {shown.get(v, v) if isinstance(v, bool) else v}" for k, v in patient.items()) + "}"


def _decided(d: dict | None) -> str:
    if d is None:
        return "-"
    actions = ", ".join(f"{code} {_hours(h)}" for code, h in d["actions"].items()) or "no action"
    return f"{d['urgency'].upper()}; {actions}"


def render(diff: Diff) -> str:
    o, n = diff.old, diff.new
    out = [f"lumbar-kb diff: {o.name} {o.version} -> {n.name} {n.version}", ""]
    if diff.same_label:
        out += [
            f"FINDING: both versions carry the version label {n.version}, but the content changed: a release "
            "must carry a new version label",
            "",
        ]
    out.append(f"Rules: {len(diff.rules)} changed" if diff.rules else "Rules: no textual change")
    for rc in diff.rules:
        out.append(f"  {rc.change:<8} {rc.rule}" + (f"  (voids {_approvals(rc.voids)})" if rc.voids else ""))
        for name, old_text, new_text in rc.fields:
            out.append(f"      {name}:")
            out.append(f"        - {old_text}")
            out.append(f"        + {new_text}")
    out.append("")
    out.append(f"Other items: {len(diff.items)} changed" if diff.items else "Other items: no change")
    for ic in diff.items:
        out.append(f"  {ic.change:<8} {ic.item}" + (f"  (voids {_approvals(ic.voids)})" if ic.voids else ""))
        for name, old_text, new_text in ic.fields:
            out.append(f"      {name}:")
            out.append(f"        - {old_text}")
            out.append(f"        + {new_text}")
    if diff.voided:
        out.append(f"Approvals voided: {diff.voided}")
    out.append("")
    if diff.broken:
        out.append("Safety proofs that held and now fail:")
        for b in diff.broken:
            out.append(f"  {b.check}: {b.message}")
        out.append("")
    out.append(
        f"Behaviour (over every one of {diff.input_states:,} answer combinations valid in both versions; "
        "each input fact unknown or one of its values; not patients):"
    )
    if not diff.changes:
        out.append("  no answer combination is decided differently")
    for c in diff.changes:
        count = f"{c.states:,}" if c.exact else f"at least {c.states:,}"
        out.append(f"  {c.headline}")
        out.append(f"      {count} answer combinations; e.g. {_show_patient(c.patient)}")
        out.append(f"        old: {_decided(c.old)}")
        out.append(f"        new: {_decided(c.new)}")
        if c.reproduced is False:
            out.append("        INTERNAL: the engine does not show this difference; please report it")
    return "\n".join(out) + "\n"


def _approvals(voids: list) -> str:
    return f"{len(voids)} approval{'' if len(voids) == 1 else 's'}: {', '.join(voids)}"
