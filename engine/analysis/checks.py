"""`lumbar-kb check`: static analysis of a knowledge base over every input state, with the z3 solver.

Every check is a claim about all patients at once (each input fact unknown or one of its values,
`only_if` respected). A claim that fails comes back as a Finding with a concrete patient (two for
the monotonicity invariants) that the engine is then made to evaluate (`reproduce`), so what is printed
is what the engine does. Patients are minimised: as few answered facts as the finding allows.

Definitions (also in the README, "For guideline authors"):
  * unreachable rule: no patient makes its condition true at the fixpoint;
  * redundant rule R: another rule S fires for every patient R fires for, and S's conclusions include
    every conclusion of R (an action only with the same `within_hours`, a derivation with the same value);
  * contradictory derivation: a patient for whom a derived fact is derived with two values;
  * contradictory windows: an action's window words stating a figure other than its `within_hours`, or
    two rules that fire together giving one action the same figure in different words (the report then
    prints whichever fired first). Different figures for one action are not a contradiction: the earliest
    wins, and meeting it meets every later one. A window that can never be the earliest is a note;
  * the safety invariants: a neurological symptom gives the most urgent level; a yes (from unknown or no)
    never lowers the urgency and never delays or removes a `never_delay` action; and for every unanswered
    alarm question whose answer could raise the urgency or bring an imaging action forward once other
    questions are answered, answering it alone already does so now, so `could_escalate` (which tries one
    answer at a time) names it.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import z3

from .. import logic
from ..model import All, Condition, KnowledgeBase, Not, Test, hours_text
from ..source import DocumentError, Positions, read_document
from . import encoding
from .encoding import Semantics, State, solve_min
from .escalation import could_escalate
from .reproduce import Runner, decisions, later, windows
from .structure import (
    action_conclusions,
    analyse,
    conclusion_key,
    describe_key,
    input_state_count,
    logic_value,
    stated_hours,
)


@dataclass
class Finding:
    check: str
    severity: str  # "problem" | "note"
    subject: str  # "rule red_flag.leg_weakness", "fact fever", "action:mri_lumbar"
    message: str
    file: str | None = None
    line: int | None = None
    patient: dict | None = None  # the counterexample (or witness)
    then: dict | None = None  # a second patient: the first after the change (monotonicity, escalation)
    details: list = field(default_factory=list)  # further lines: reasons, what the engine showed
    labels: tuple = ("patient", "then")  # what `patient` and `then` are
    verify: Callable | None = field(default=None, repr=False, compare=False)  # runner -> None | why not
    reproduced: bool | None = None

    def where(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "patient": self.patient,
            "then": self.then,
            "patient_label": self.labels[0],
            "then_label": self.labels[1],
            "details": list(self.details),
            "reproduced": self.reproduced,
        }


@dataclass
class Check:
    id: str
    group: str
    claim: str  # what holds when there is no finding
    findings: list = field(default_factory=list)
    skipped: str | None = None

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "problem"]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "note"]

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "failed" if self.problems else "notes" if self.notes else "ok"


@dataclass
class CheckReport:
    kb: KnowledgeBase
    checks: list
    input_states: int
    exact_count: bool
    solver: str
    elapsed: float = 0.0

    @property
    def problems(self) -> list[Finding]:
        return [f for c in self.checks for f in c.problems]

    @property
    def notes(self) -> list[Finding]:
        return [f for c in self.checks for f in c.notes]

    def to_dict(self) -> dict:
        return {
            "knowledge_base": self.kb.identity(),
            "input_states": self.input_states,
            "input_states_exact": self.exact_count,
            "solver": self.solver,
            "problems": len(self.problems),
            "notes": len(self.notes),
            "checks": [
                {
                    "id": c.id,
                    "group": c.group,
                    "claim": c.claim,
                    "status": c.status,
                    "skipped": c.skipped,
                    "findings": [f.to_dict() for f in c.findings],
                }
                for c in self.checks
            ],
        }


GROUPS = (("structure", "Structure"), ("reach", "Reachability"), ("safety", "Safety invariants (every input state)"))


# ---- the context shared by the checks -----------------------------------------------------------------------
class _Context:
    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self.structure = analyse(kb)
        self.sem = Semantics(kb, self.structure)
        self.s = self.sem.state("s")
        self.ok = self.s.ok()
        self.solver = z3.Solver()
        self.solver.add(self.ok)
        self._reachable: dict[str, bool] = {}
        self.runner = Runner(kb)
        self._positions: dict[str, Positions | None] = {}
        self.top = max(kb.catalog["urgency"].values(), key=lambda e: e.rank).code
        self.imaging = kb.watched_actions  # imaging studies and other time-critical steps

    def sat(self, *constraints) -> bool:
        self.solver.push()
        self.solver.add(*constraints)
        result = self.solver.check() == z3.sat
        self.solver.pop()
        return result

    def reachable(self, rule_id: str) -> bool:
        if rule_id not in self._reachable:
            self._reachable[rule_id] = self.sat(self.s.fires[rule_id])
        return self._reachable[rule_id]

    def witness(self, *constraints, state: State | None = None) -> dict | None:
        """The patient with the fewest answered facts that satisfies the constraints (with `ok`)."""
        state = state or self.s
        model = solve_min([self.ok, *constraints], state.answered())
        return None if model is None else state.patient(model)

    # -- where things are written --
    def display(self, path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def position(self, file: str, path: tuple) -> tuple[str, int | None]:
        full = Path(self.kb.root) / file
        if file not in self._positions:
            try:
                self._positions[file] = read_document(full)[1]
            except DocumentError:
                self._positions[file] = None
        pos = self._positions[file]
        return self.display(full), (pos.at(path)[0] if pos is not None else None)

    def fact_at(self, fact: str) -> tuple[str, int | None]:
        return self.display(Path(self.kb.root) / "facts.yaml"), self.kb.facts[fact].line

    def code_at(self, kind: str, code: str) -> tuple[str, int | None]:
        key = {"urgency": "urgency", "action": "actions", "warning": "warnings", "differential": "differential"}[kind]
        return self.position("guideline.yaml", (key, code))

    def rule_at(self, rule_id: str) -> tuple[str, int | None]:
        rule = self.kb.rule(rule_id)
        return rule.file, rule.line


def show_patient(patient: dict | None) -> str:
    if patient is None:
        return "-"
    if not patient:
        return "{} (nothing answered)"
    return "{" + ", ".join(f"{k}: {logic_value(v)}" for k, v in patient.items()) + "}"


# ---- structure -----------------------------------------------------------------------------------------------
def _check_cycles(ctx: _Context) -> Check:
    check = Check("derivation_cycles", "structure", "no derivation cycles")
    for cycle in ctx.structure.cycles:
        path = cycle[0][0] + "".join(
            f" -[{rule}]-> {nxt}" for (_, rule), (nxt, _) in zip(cycle, cycle[1:] + cycle[:1], strict=False)
        )
        rules = [rule for _, rule in cycle]
        file, line = ctx.rule_at(rules[0])
        patient = ctx.witness(z3.Or([ctx.s.fires[r] for r in rules]))
        finding = Finding(
            check.id,
            "problem",
            f"fact {cycle[0][0]}",
            f"derivation cycle: {path}: these facts are derived from each other, so only a rule on "
            "the cycle that also reads something outside it can start the chain",
            file,
            line,
            patient,
        )
        if patient is None:
            finding.details.append("no patient fires any rule on the cycle")
        else:
            finding.details.append("this patient fires a rule on the cycle")
            finding.verify = lambda run, p=patient, rs=rules: (
                None if run.fired(p) & set(rs) else "the engine fires no rule on the cycle"
            )
        check.findings.append(finding)
    return check


def _check_unread_facts(ctx: _Context) -> Check:
    check = Check("unread_facts", "structure", "every input fact is read by some rule")
    for fact in ctx.kb.input_facts:
        if ctx.structure.readers[fact.name]:
            continue
        base = ctx.witness(ctx.s.known(fact.name))
        without = {k: v for k, v in (base or {}).items() if k != fact.name}
        file, line = ctx.fact_at(fact.name)
        finding = Finding(
            check.id,
            "problem",
            f"fact {fact.name}",
            "no rule reads it: its answer never changes a result",
            file,
            line,
            without,
            base,
            labels=("unanswered", "answered"),
        )
        if base is not None:
            finding.details.append(f"answering {fact.name} = {logic_value(base[fact.name])} changes nothing")
            finding.verify = lambda run, a=without, b=base: (
                None if decisions(run.result(a)) == decisions(run.result(b)) else "the answer changed the result"
            )
        check.findings.append(finding)
    return check


def _check_derived(ctx: _Context) -> Check:
    check = Check("derived_facts", "structure", "every derived fact is derived by a rule and read by a rule")
    for fact in ctx.kb.derived_facts:
        file, line = ctx.fact_at(fact.name)
        derivers = [r for v in fact.values for r in ctx.structure.derivers[(fact.name, v)]]
        if not derivers:
            check.findings.append(
                Finding(
                    check.id, "problem", f"fact {fact.name}", "no rule derives it: it is always unknown", file, line
                )
            )
        if not ctx.structure.readers[fact.name]:
            patient = ctx.witness(ctx.s.known(fact.name)) if derivers else None
            finding = Finding(
                check.id,
                "problem",
                f"fact {fact.name}",
                f"no rule reads it (derived by {', '.join(derivers) or 'no rule'})",
                file,
                line,
                patient,
            )
            if patient is not None:
                finding.details.append(f"this patient derives {fact.name}, and nothing uses it")
                finding.verify = lambda run, p=patient, f=fact.name: (
                    None if f in run.engine.run(run.check_patient(p)).derived else "the engine did not derive it"
                )
            check.findings.append(finding)
    return check


def _check_unconcluded(ctx: _Context) -> Check:
    check = Check("catalogue", "structure", "every catalogue entry is concluded by some rule")
    lowest = ctx.kb.lowest_urgency
    for kind, codes in ctx.kb.catalog.items():
        for code in codes:
            if kind == "urgency" and code == lowest:
                continue  # the level of a patient no rule raises
            if not ctx.structure.concluders[f"{kind}:{code}"]:
                file, line = ctx.code_at(kind, code)
                check.findings.append(
                    Finding(check.id, "problem", f"{kind}:{code}", "no rule concludes it", file, line)
                )
    return check


# ---- reachability -------------------------------------------------------------------------------------------
def _check_unreachable_rules(ctx: _Context) -> Check:
    check = Check("unreachable_rules", "reach", "every rule can fire")
    for rule in ctx.kb.rules:
        if ctx.reachable(rule.id):
            continue
        reasons, closest = _why_never(ctx, rule.when)
        finding = Finding(
            check.id, "problem", f"rule {rule.id}", "can never fire", rule.file, rule.line, closest, details=reasons
        )
        if closest is not None:
            finding.details.append("the patient shown comes closest: the engine does not fire the rule for it")
            finding.verify = lambda run, p=closest, r=rule.id: None if r not in run.fired(p) else "the rule fired"
        check.findings.append(finding)
    return check


def literal_dnf(cond: Condition, domains: dict, want: bool = True, cap: int = 64) -> list[list[tuple]] | None:
    """Disjunctive normal form of "cond is true", each literal (fact, allowed values), not merged (so that a
    contradiction stays visible as two literals). None when it would exceed `cap` conjuncts."""
    if isinstance(cond, Test):
        values = frozenset(v for v in domains[cond.fact] if (v in cond.values) == want)
        return [[(cond.fact, values)]]
    if isinstance(cond, Not):
        return literal_dnf(cond.item, domains, not want, cap)
    found = [literal_dnf(item, domains, want, cap) for item in cond.items]
    parts = [p for p in found if p is not None]
    if len(parts) != len(found):
        return None
    if (isinstance(cond, All)) != want:
        out = [c for p in parts for c in p]
        return out if len(out) <= cap else None
    product: list[list[tuple]] = [[]]
    for part in parts:
        product = [left + right for left in product for right in part]
        if len(product) > cap:
            return None
    return product


def describe_literal(kb: KnowledgeBase, fact: str, values: frozenset) -> str:
    domain = kb.facts[fact].values
    if not values:
        return f"{fact} has no possible value"
    if len(values) == 1:
        return f"{fact} is {logic_value(next(iter(values)))}"
    return f"{fact} is one of {', '.join(logic_value(v) for v in domain if v in values)}"


def _why_never(ctx: _Context, cond: Condition) -> tuple[list[str], dict | None]:
    """Why no patient makes `cond` true: for each branch of its DNF, a minimal set of its requirements
    that no patient meets together, with what rules that out; and the patient that comes closest."""
    kb, s = ctx.kb, ctx.s
    domains = {name: f.values for name, f in kb.facts.items()}
    branches = literal_dnf(cond, domains)
    if branches is None:
        return ["its condition has too many branches to explain one by one; no patient makes it true"], None
    background = []  # (label, constraint)
    for name in ctx.sem.inputs:
        fact = kb.facts[name]
        if fact.only_if is not None:
            background.append(
                (
                    f"{name} is refused when its only_if ({_describe_cond(fact.only_if)}) is false "
                    f"(facts.yaml:{fact.line})",
                    s.only_if(name),
                )
            )
    consistency = []
    for name in ctx.sem.derived:
        consistency.append(f"{name} is never derived with two values (the engine would stop)")
        background.append((consistency[-1], z3.Not(s.conflict(name))))
    reasons = []
    best: tuple[int, dict] | None = None
    for n, branch in enumerate(branches, 1):
        terms = [
            (describe_literal(kb, f, v), z3.Or([s.is_(f, x) for x in v]) if v else z3.BoolVal(False)) for f, v in branch
        ]
        core = _minimal_core(s.one_value(), terms + background, dict.fromkeys(consistency, 1))
        needs = [label for label, _ in terms if label in core]
        given = [label for label, _ in background if label in core]
        derived = [(f, v) for f, v in branch if kb.facts[f].derived and describe_literal(kb, f, v) in needs]
        text = (
            "needs "
            + " and ".join(needs)
            + (", which no patient has together" if len(needs) > 1 else ", which no patient has")
        )
        if given:
            text += "; because " + "; ".join(given)
        for fact, values in derived:
            rules = sorted({r for v in values for r in ctx.structure.derivers[(fact, v)]})
            shown = "/".join(logic_value(v) for v in kb.facts[fact].values if v in values)
            text += (
                f"; {fact} = {shown} is derived only by {', '.join(rules)}"
                if rules
                else f"; no rule derives {fact} = {shown}"
            )
        reasons.append((f"branch {n}: " if len(branches) > 1 else "") + text)
        opt = z3.Optimize()
        opt.add(ctx.ok)
        weight = len(ctx.sem.inputs) + 1
        for _, term in terms:
            opt.add_soft(term, weight)
        for term in s.answered():
            opt.add_soft(z3.Not(term), 1)
        if opt.check() == z3.sat:
            model = opt.model()
            met = sum(1 for _, t in terms if z3.is_true(model.eval(t, model_completion=True)))
            if best is None or met > best[0]:
                best = (met, s.patient(model))
    return reasons, (best[1] if best else None)


def _minimal_core(base, labelled: list[tuple[str, object]], priority: dict | None = None) -> set[str]:
    """A minimal subset of the labelled constraints that is unsatisfiable together with `base`; labels with
    a higher `priority` are tried for removal first (so what remains is the more telling reason)."""
    priority = priority or {}
    solver = z3.Solver()
    solver.add(base)
    flags = {label: z3.Bool(f"core#{i}") for i, (label, _) in enumerate(labelled)}
    for label, constraint in labelled:
        solver.add(z3.Implies(flags[label], constraint))
    if solver.check(*flags.values()) != z3.unsat:
        return set()
    kept = list(flags)
    for label in sorted(kept, key=lambda k: -priority.get(k, 0)):  # deletion: drop what is not needed
        trial = [flags[k] for k in kept if k != label]
        if solver.check(*trial) == z3.unsat:
            kept.remove(label)
    return set(kept)


def _describe_cond(cond: Condition) -> str:
    if isinstance(cond, Test):
        return cond.describe()
    if isinstance(cond, Not):
        return f"not ({_describe_cond(cond.item)})"
    joiner = " and " if isinstance(cond, All) else " or "
    return "(" + joiner.join(_describe_cond(c) for c in cond.items) + ")"


def _check_derived_reach(ctx: _Context) -> Check:
    check = Check("derived_reach", "reach", "every derived value a rule tests can be derived")
    kb = ctx.kb
    domains = {name: f.values for name, f in kb.facts.items()}
    tested: dict[tuple, list[str]] = {}
    for rule in kb.rules:
        for conjunct in logic.to_dnf(rule.when, domains):
            for fact, values in conjunct.items():
                if kb.facts[fact].derived:
                    for v in values:
                        tested.setdefault((fact, v), [])
                        if rule.id not in tested[(fact, v)]:
                            tested[(fact, v)].append(rule.id)
    for fact in kb.derived_facts:
        for value in fact.values:
            readers = tested.get((fact.name, value))
            if not readers or ctx.sat(ctx.s.derived[(fact.name, value)]):
                continue
            derivers = ctx.structure.derivers[(fact.name, value)]
            file, line = ctx.fact_at(fact.name)
            why = f"the rules deriving it ({', '.join(derivers)}) can never fire" if derivers else "no rule derives it"
            check.findings.append(
                Finding(
                    check.id,
                    "problem",
                    f"fact {fact.name}",
                    f"nothing reaches {fact.name} = {logic_value(value)}: {why}; "
                    f"rules testing it: {', '.join(readers)}",
                    file,
                    line,
                )
            )
    return check


def _check_codes_reach(ctx: _Context) -> Check:
    check = Check("conclusions_reach", "reach", "every concluded entry is the outcome for some patient")
    for kind, codes in ctx.kb.catalog.items():
        for code in codes:
            rules = ctx.structure.concluders[f"{kind}:{code}"]
            if not rules:
                continue  # reported by the catalogue check
            file, line = ctx.code_at(kind, code)
            if not any(ctx.reachable(r) for r in rules):
                check.findings.append(
                    Finding(
                        check.id,
                        "problem",
                        f"{kind}:{code}",
                        f"nothing reaches it: every rule concluding it ({', '.join(rules)}) can never fire",
                        file,
                        line,
                    )
                )
            elif kind == "urgency" and not ctx.sat(ctx.s.urgency_is(code)):
                higher = [c for c, e in ctx.kb.catalog["urgency"].items() if e.rank > ctx.sem.level_rank[code]]
                check.findings.append(
                    Finding(
                        check.id,
                        "problem",
                        f"urgency:{code}",
                        f"never the outcome: whenever a rule concludes it, another concludes {' or '.join(higher)}",
                        file,
                        line,
                    )
                )
    return check


def _check_contradictions(ctx: _Context) -> Check:
    check = Check("contradictory_derivations", "reach", "no patient derives a fact with two values")
    s = ctx.s
    for fact in ctx.kb.derived_facts:
        model = solve_min([s.valid(), s.conflict(fact.name)], s.answered())
        if model is None:
            continue
        patient = s.patient(model)
        by_value = {}
        for v in fact.values:
            rules = [
                r
                for r in ctx.structure.derivers[(fact.name, v)]
                if z3.is_true(model.eval(s.fires[r], model_completion=True))
            ]
            if rules:
                by_value[v] = rules
        file, line = ctx.fact_at(fact.name)
        sides = "; ".join(
            f"{', '.join(rules)} derive{'s' if len(rules) == 1 else ''} {logic_value(v)}"
            for v, rules in by_value.items()
        )
        finding = Finding(
            check.id,
            "problem",
            f"fact {fact.name}",
            f"derived with two values for one patient: {sides}",
            file,
            line,
            patient,
        )
        finding.details.append("the engine stops with an error for this patient")
        finding.verify = lambda run, p=patient, f=fact.name: (
            None if (err := run.error(p)) and f in err else "the engine did not stop with a contradiction"
        )
        check.findings.append(finding)
    return check


def _check_redundant(ctx: _Context) -> Check:
    check = Check("redundant_rules", "reach", "no rule is made redundant by another")
    kb = ctx.kb
    keys = {r.id: {conclusion_key(c) for c in r.then} for r in kb.rules}
    covered: dict[str, list[str]] = {}
    for rule in kb.rules:
        if not ctx.reachable(rule.id):
            continue
        for other in kb.rules:
            if other.id == rule.id or not keys[rule.id] <= keys[other.id]:
                continue
            if not ctx.sat(ctx.s.fires[rule.id], z3.Not(ctx.s.fires[other.id])):
                covered.setdefault(rule.id, []).append(other.id)
    order = {r.id: r.order for r in kb.rules}
    for rule_id, others in covered.items():
        # Two rules that cover each other say the same thing: report the later one only.
        others = [o for o in others if not (rule_id in covered.get(o, ()) and order[o] > order[rule_id])]
        if not others:
            continue
        by = others[0]
        rule = kb.rule(rule_id)
        patient = ctx.witness(ctx.s.fires[rule_id])
        said = ", ".join(describe_key(k) for k in sorted(keys[rule_id], key=str))
        finding = Finding(
            check.id,
            "problem",
            f"rule {rule_id}",
            f"redundant: whenever it fires, '{by}' fires too and concludes everything it does ({said})",
            rule.file,
            rule.line,
            patient,
        )
        if len(others) > 1:
            finding.details.append("also covered by " + ", ".join(others[1:]))
        finding.details.append("for example this patient fires both")
        finding.verify = lambda run, p=patient, r=rule_id, o=by: (
            None if {r, o} <= run.fired(p) else "the engine did not fire both rules"
        )
        check.findings.append(finding)
    return check


def _check_windows(ctx: _Context) -> tuple[Check, Check]:
    check = Check("contradictory_windows", "reach", "no action is given contradictory windows")
    notes = Check("windows_never_apply", "reach", "every action window applies to some patient")
    kb, s = ctx.kb, ctx.s
    for rule in kb.rules:
        for c in action_conclusions(rule):
            said = stated_hours(c.window)
            if said is not None and (c.within_hours is None or abs(said - float(c.within_hours)) > 1e-9):
                figure = "missing" if c.within_hours is None else f"{c.within_hours:g}"
                patient = ctx.witness(s.fires[rule.id]) if ctx.reachable(rule.id) else None
                finding = Finding(
                    check.id,
                    "problem",
                    f"rule {rule.id}",
                    f"action '{c.code}': the words '{c.window}' say {hours_text(said)} but within_hours "
                    f"is {figure}; reports print the words, windows are merged by the figure",
                    rule.file,
                    rule.line,
                    patient,
                )
                if patient is not None:
                    finding.verify = lambda run, p=patient, r=rule.id, a=c.code: (
                        None if r in run.fired(p) and a in windows(run.result(p)) else "the rule did not fire"
                    )
                check.findings.append(finding)
    pairs = []
    for i, rule in enumerate(kb.rules):
        for c in action_conclusions(rule):
            for other in kb.rules[i + 1 :]:
                for d in action_conclusions(other):
                    if (
                        c.code == d.code
                        and c.within_hours == d.within_hours
                        and c.window
                        and d.window
                        and c.window != d.window
                    ):
                        pairs.append((rule, c, other, d))
    for rule, c, other, d in pairs:
        if not (ctx.reachable(rule.id) and ctx.reachable(other.id)):
            continue
        patient = ctx.witness(s.fires[rule.id], s.fires[other.id])
        if patient is None:
            continue
        finding = Finding(
            check.id,
            "problem",
            f"rule {other.id}",
            f"action '{c.code}' {hours_text(c.within_hours)}: '{rule.id}' words it '{c.window}', "
            f"'{other.id}' words it '{d.window}', and both fire for one patient (the report shows "
            "whichever fired first)",
            other.file,
            other.line,
            patient,
        )
        finding.verify = lambda run, p=patient, rs=(rule.id, other.id), a=c.code, ws=(c.window, d.window): (
            None if set(rs) <= run.fired(p) and _window_words(run.result(p), a) in ws else "not reproduced"
        )
        check.findings.append(finding)
    for rule in kb.rules:
        if not ctx.reachable(rule.id):
            continue
        for c in action_conclusions(rule):
            earlier_rules = [
                r.id
                for r in kb.rules
                if r.id != rule.id
                for d in action_conclusions(r)
                if d.code == c.code
                and d.within_hours is not None
                and (c.within_hours is None or d.within_hours < c.within_hours)
            ]
            if not earlier_rules:
                continue
            earlier = z3.Or([s.fires[r] for r in earlier_rules])
            if ctx.sat(s.fires[rule.id], z3.Not(earlier)):
                continue
            always = [r for r in earlier_rules if not ctx.sat(s.fires[rule.id], z3.Not(s.fires[r]))]
            by = f"'{always[0]}' gives it earlier" if always else f"one of {', '.join(earlier_rules)} gives it earlier"
            patient = ctx.witness(s.fires[rule.id])
            finding = Finding(
                notes.id,
                "note",
                f"rule {rule.id}",
                f"its window for '{c.code}' ({c.window or hours_text(c.within_hours)}) never applies: "
                f"whenever it fires, {by}",
                rule.file,
                rule.line,
                patient,
            )
            finding.verify = lambda run, p=patient, r=rule.id, a=c.code, h=c.within_hours: (
                None
                if r in run.fired(p) and _earlier(windows(run.result(p)).get(a), h)
                else "the rule's own window applied"
            )
            notes.findings.append(finding)
    return check, notes


def _earlier(hours: float | None, than: float | None) -> bool:
    return hours is not None and (than is None or hours < than)


def _window_words(result, code: str) -> str | None:
    for a in result.actions:
        if a.code == code:
            return a.window
    return None


# ---- safety invariants --------------------------------------------------------------------------------------
def _check_neurological(ctx: _Context) -> Check:
    label = ctx.kb.catalog["urgency"][ctx.top].label
    check = Check("neurological_emergency", "safety", f"any neurological symptom gives {label}")
    facts = [f for f in ctx.kb.input_facts if f.neurological]
    if not facts:
        check.skipped = "no fact is marked 'neurological: true' in facts.yaml"
        return check
    check.claim += f" ({len(facts)} facts)"
    top_rank = ctx.sem.level_rank[ctx.top]
    for fact in facts:
        patient = ctx.witness(ctx.s.is_(fact.name, True), z3.Not(ctx.s.urgency_at_least(top_rank)))
        if patient is None:
            continue
        file, line = ctx.fact_at(fact.name)
        finding = Finding(
            check.id, "problem", f"fact {fact.name}", f"a yes does not always give {ctx.top}", file, line, patient
        )
        finding.verify = lambda run, p=patient: (
            None if run.result(p).urgency != ctx.top else f"the engine gave {ctx.top}"
        )
        finding.details.append(f"for this patient the urgency is not {ctx.top}")
        check.findings.append(finding)
    return check


def _pair(ctx: _Context, fact_name: str) -> tuple[State, State, list]:
    """Two patients equal but for one fact: before unknown (or no), after yes (or, for an enum, answered)."""
    fact = ctx.kb.facts[fact_name]
    a = ctx.s
    b = ctx.sem.state("after", base=a, fresh=[fact_name])
    before = z3.Not(a.known(fact_name))
    if fact.type == "bool":
        before = z3.Or(before, a.is_(fact_name, False))
        after = b.is_(fact_name, True)
    else:
        after = b.known(fact_name)
    return a, b, [a.ok(), b.ok(), before, after]


def _monotone(ctx: _Context) -> tuple[Check, Check]:
    urgency = Check("yes_never_lowers_urgency", "safety", "answering yes never lowers the urgency")
    protected = [code for code, e in ctx.kb.catalog["action"].items() if e.never_delay]
    labels = ", ".join(ctx.kb.catalog["action"][c].label for c in protected)
    delay = Check("yes_never_delays", "safety", f"answering yes never delays or removes: {labels}")
    if not protected:
        delay.claim = "answering yes never delays or removes a never_delay action"
        delay.skipped = "no action is marked 'never_delay: true' in guideline.yaml"
    urgency.claim += f" ({len(ctx.kb.input_facts)} facts)"
    for fact in ctx.kb.input_facts:
        a, b, constraints = _pair(ctx, fact.name)
        change = "a yes" if fact.type == "bool" else "an answer"
        file, line = ctx.fact_at(fact.name)
        model = solve_min(constraints + [b.lower_urgency(a)], a.answered())
        if model is not None:
            p, q = a.patient(model), b.patient(model)
            finding = Finding(
                urgency.id, "problem", f"fact {fact.name}", f"{change} lowers the urgency", file, line, p, q
            )
            finding.verify = lambda run, p=p, q=q: (
                None
                if ctx.sem.level_rank[run.result(q).urgency] < ctx.sem.level_rank[run.result(p).urgency]
                else "the urgency did not drop"
            )
            urgency.findings.append(finding)
        for code in protected:
            model = solve_min(constraints + [a.later(code, b)], a.answered())
            if model is None:
                continue
            p, q = a.patient(model), b.patient(model)
            finding = Finding(
                delay.id, "problem", f"fact {fact.name}", f"{change} delays or removes '{code}'", file, line, p, q
            )
            finding.verify = lambda run, p=p, q=q, code=code: (
                None
                if code in windows(run.result(p))
                and (
                    code not in windows(run.result(q))
                    or later(windows(run.result(p))[code], windows(run.result(q))[code])
                )
                else "no delay"
            )
            delay.findings.append(finding)
    for check in (urgency, delay):
        for f in check.findings:
            f.labels = ("before", "after")
    return urgency, delay


def _check_escalation(ctx: _Context) -> Check:
    check = Check(
        "could_escalate_complete",
        "safety",
        "could_escalate names every unanswered alarm question whose answer could raise the urgency "
        "or bring imaging forward",
    )
    alarms = [f for f in ctx.kb.input_facts if f.alarm]
    if not alarms:
        check.skipped = "no fact is marked 'alarm: true' in facts.yaml"
        return check
    sem, kb = ctx.sem, ctx.kb
    for fact in alarms:
        answers = [True] if fact.type == "bool" else list(fact.values)
        now = sem.state("now")
        later_ = sem.state("later")  # the same patient with more questions answered
        constraints = [now.ok(), later_.ok(), z3.Not(now.known(fact.name)), z3.Not(later_.known(fact.name))]
        for other in sem.inputs:
            if other != fact.name:
                constraints += [z3.Implies(now.is_(other, v), later_.is_(other, v)) for v in kb.facts[other].values]
        pivots = []
        for value in answers:
            after = sem.state("later+", base=later_, fresh=[fact.name])
            pivots.append(z3.And(after.is_(fact.name, value), after.ok(), later_.escalates_to(after, ctx.imaging)))
        constraints.append(z3.Or(pivots))
        for value in answers:  # ... while one answer at a time, now, shows nothing
            step = sem.state("now+", base=now, fresh=[fact.name])
            constraints += [
                step.one_value(),
                step.is_(fact.name, value),  # the variables mean a patient ...
                z3.Implies(step.ok(), z3.Not(now.escalates_to(step, ctx.imaging))),
            ]  # ... maybe refused
        model = solve_min(constraints, now.answered() + later_.answered())
        if model is None:
            continue
        p, q = now.patient(model), later_.patient(model)
        file, line = ctx.fact_at(fact.name)
        finding = Finding(
            check.id,
            "problem",
            f"fact {fact.name}",
            "could_escalate misses it: answering it alone changes nothing now, but once other "
            "questions are answered it raises the urgency or brings imaging forward",
            file,
            line,
            p,
            q,
        )
        finding.labels = ("now", "later")
        finding.details.append(f"now, could_escalate does not name {fact.name}; later, with more answers, it does")
        finding.verify = lambda run, p=p, q=q, f=fact.name: (
            None
            if f not in {e.fact for e in could_escalate(kb, p)} and f in {e.fact for e in could_escalate(kb, q)}
            else "not reproduced"
        )
        check.findings.append(finding)
    return check


# ---- the front door ------------------------------------------------------------------------------------------
def run_checks(kb: KnowledgeBase) -> CheckReport:
    started = time.perf_counter()
    ctx = _Context(kb)
    checks = [
        _check_cycles(ctx),
        _check_unread_facts(ctx),
        _check_derived(ctx),
        _check_unconcluded(ctx),
        _check_unreachable_rules(ctx),
        _check_derived_reach(ctx),
        _check_codes_reach(ctx),
        _check_contradictions(ctx),
        _check_redundant(ctx),
    ]
    checks += _check_windows(ctx)
    checks.append(_check_neurological(ctx))
    checks += _monotone(ctx)
    checks.append(_check_escalation(ctx))
    for check in checks:
        for finding in check.findings:
            _reproduce(ctx, finding)
    count, exact = input_state_count(kb)
    report = CheckReport(kb, checks, count, exact, f"z3 {encoding.version()}")
    report.elapsed = time.perf_counter() - started
    return report


def _reproduce(ctx: _Context, finding: Finding) -> None:
    if finding.verify is None:
        return
    try:
        why_not = finding.verify(ctx.runner)
    except Exception as exc:  # a counterexample the engine refuses is a disagreement too
        why_not = f"{type(exc).__name__}: {exc}"
    finding.reproduced = why_not is None
    if why_not is not None:
        finding.details.append(
            f"INTERNAL: the engine does not reproduce this ({why_not}); the solver encoding and "
            "the engine disagree, please report it"
        )


# ---- text ----------------------------------------------------------------------------------------------------
def render(report: CheckReport) -> str:
    kb = report.kb
    out = [
        f"lumbar-kb check: {kb.name} {kb.version}: {len(kb.rules)} rules, {len(kb.input_facts)} input facts, "
        f"{len(kb.derived_facts)} derived facts",
        f"over every input state: {'' if report.exact_count else 'at most '}{report.input_states:,} patients "
        f"(each input fact unknown or one of its values), solved with {report.solver}",
    ]
    for group, title in GROUPS:
        out.append("")
        out.append(title)
        for check in (c for c in report.checks if c.group == group):
            status = {"skipped": "skip", "failed": "FAIL", "notes": "note", "ok": "ok"}[check.status]
            exceptions = f" (except {len(check.notes)}: see Notes)" if check.notes and not check.problems else ""
            out.append(f"  {status:<5} {check.claim}{exceptions}")
            if check.skipped:
                out.append(f"        ({check.skipped})")
            for finding in check.problems:
                out.extend(_finding_lines(finding, "        "))
    if report.notes:
        out.append("")
        out.append("Notes (not problems)")
        for finding in report.notes:
            out.extend(_finding_lines(finding, "  "))
    out.append("")
    problems, notes = len(report.problems), len(report.notes)
    note_text = f", {notes} note{'s' if notes != 1 else ''}" if notes else ""
    out.append(
        f"{problems} problem{'s' if problems != 1 else ''}{note_text}" if problems else f"ok: no problems{note_text}"
    )
    return "\n".join(out) + "\n"


def _finding_lines(finding: Finding, indent: str) -> list[str]:
    where = finding.where()
    lines = [f"{indent}{where + ': ' if where else ''}{finding.subject}"]  # one line: clickable, greppable
    lines += _wrap(finding.message, indent + "  ", indent + "    ")
    for detail in finding.details:
        lines += _wrap(detail, indent + "  ", indent + "    ")
    if finding.patient is not None:
        lines += _wrap(f"{finding.labels[0]}: {show_patient(finding.patient)}", indent + "  ", indent + "    ")
    if finding.then is not None:
        lines += _wrap(f"{finding.labels[1]}: {show_patient(finding.then)}", indent + "  ", indent + "    ")
    return lines


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text, 110, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False, break_long_words=False
    )
