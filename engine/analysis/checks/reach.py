"""Reachability over every input state: rules and conclusions no patient reaches, contradictory derivations,
redundant rules."""

from __future__ import annotations

import z3

from lumbar_kb.engine import logic
from lumbar_kb.engine.analysis import bools
from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import Check, Finding
from lumbar_kb.engine.analysis.encoding import solve_min
from lumbar_kb.engine.analysis.structure import (
    conclusion_key,
    describe_key,
    logic_value,
)
from lumbar_kb.engine.model import All, Condition, KnowledgeBase, Not, Test


# ---- reachability -------------------------------------------------------------------------------------------
def check_unreachable_rules(ctx: Context) -> Check:
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


def _why_never(ctx: Context, cond: Condition) -> tuple[list[str], dict | None]:
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
        background.append((consistency[-1], bools.Not(s.conflict(name))))
    reasons = []
    best: tuple[int, dict] | None = None
    for n, branch in enumerate(branches, 1):
        terms = [
            (describe_literal(kb, f, v), bools.Or([s.is_(f, x) for x in v]) if v else z3.BoolVal(False))
            for f, v in branch
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
            opt.add_soft(bools.Not(term), 1)
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
        solver.add(bools.Implies(flags[label], constraint))
    if bools.check(solver, *flags.values()) != z3.unsat:
        return set()
    kept = list(flags)
    for label in sorted(kept, key=lambda k: -priority.get(k, 0)):  # deletion: drop what is not needed
        trial = [flags[k] for k in kept if k != label]
        if bools.check(solver, *trial) == z3.unsat:
            kept.remove(label)
    return set(kept)


def _describe_cond(cond: Condition) -> str:
    if isinstance(cond, Test):
        return cond.describe()
    if isinstance(cond, Not):
        return f"not ({_describe_cond(cond.item)})"
    joiner = " and " if isinstance(cond, All) else " or "
    return "(" + joiner.join(_describe_cond(c) for c in cond.items) + ")"


def check_derived_reach(ctx: Context) -> Check:
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


def check_codes_reach(ctx: Context) -> Check:
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


def check_contradictions(ctx: Context) -> Check:
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


def check_redundant(ctx: Context) -> Check:
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
            if not ctx.sat(ctx.s.fires[rule.id], bools.Not(ctx.s.fires[other.id])):
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
