"""Checks of the shape of the knowledge base: derivation cycles, facts and conclusions nothing uses."""

from __future__ import annotations

from lumbar_kb.engine.analysis import bools
from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import Check, Finding
from lumbar_kb.engine.analysis.reproduce import decisions
from lumbar_kb.engine.analysis.structure import (
    logic_value,
)


# ---- structure -----------------------------------------------------------------------------------------------
def check_cycles(ctx: Context) -> Check:
    check = Check("derivation_cycles", "structure", "no derivation cycles")
    for cycle in ctx.structure.cycles:
        path = cycle[0][0] + "".join(
            f" -[{rule}]-> {nxt}" for (_, rule), (nxt, _) in zip(cycle, cycle[1:] + cycle[:1], strict=False)
        )
        rules = [rule for _, rule in cycle]
        file, line = ctx.rule_at(rules[0])
        patient = ctx.witness(bools.Or([ctx.s.fires[r] for r in rules]))
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


def check_unread_facts(ctx: Context) -> Check:
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


def check_derived(ctx: Context) -> Check:
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


def check_unconcluded(ctx: Context) -> Check:
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
