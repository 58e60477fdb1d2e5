"""The safety invariants, proven over every input state: neurological symptoms give the top urgency, a yes never
lowers the urgency or delays a never-delay action, and could_escalate names every alarm question that matters."""

from __future__ import annotations

from lumbar_kb.engine.analysis import bools
from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import Check, Finding
from lumbar_kb.engine.analysis.encoding import State, canonical, solve_min
from lumbar_kb.engine.analysis.escalation import could_escalate
from lumbar_kb.engine.analysis.reproduce import later, windows


# ---- safety invariants --------------------------------------------------------------------------------------
def check_neurological(ctx: Context) -> Check:
    label = ctx.kb.catalog["urgency"][ctx.top].label
    check = Check("neurological_emergency", "safety", f"any neurological symptom gives {label}")
    facts = [f for f in ctx.kb.input_facts if f.neurological]
    if not facts:
        check.skipped = "no fact is marked 'neurological: true' in facts.yaml"
        return check
    check.claim += f" ({len(facts)} facts)"
    top_rank = ctx.sem.level_rank[ctx.top]
    for fact in facts:
        patient = ctx.witness(ctx.s.is_(fact.name, True), bools.Not(ctx.s.urgency_at_least(top_rank)))
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


def _pair(ctx: Context, fact_name: str) -> tuple[State, State, list]:
    """Two patients equal but for one fact: before unknown (or no), after yes (or, for an enum, answered)."""
    fact = ctx.kb.facts[fact_name]
    a = ctx.s
    b = ctx.sem.state("after", base=a, fresh=[fact_name])
    before = bools.Not(a.known(fact_name))
    if fact.type == "bool":
        before = bools.Or(before, a.is_(fact_name, False))
        after = b.is_(fact_name, True)
    else:
        after = b.known(fact_name)
    return a, b, [a.ok(), b.ok(), before, after]


def check_monotone(ctx: Context) -> tuple[Check, Check]:
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


def check_escalation(ctx: Context) -> Check:
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
        constraints = [now.ok(), later_.ok(), bools.Not(now.known(fact.name)), bools.Not(later_.known(fact.name))]
        for other in sem.inputs:
            if other != fact.name:
                constraints += [bools.Implies(now.is_(other, v), later_.is_(other, v)) for v in kb.facts[other].values]
        pivots = []
        for value in answers:
            after = sem.state("later+", base=later_, fresh=[fact.name])
            pivots.append(bools.And(after.is_(fact.name, value), after.ok(), later_.escalates_to(after, ctx.imaging)))
        constraints.append(bools.Or(pivots))
        for value in answers:  # ... while one answer at a time, now, shows nothing
            step = sem.state("now+", base=now, fresh=[fact.name])
            constraints += [
                step.one_value(),
                step.is_(fact.name, value),  # the variables mean a patient ...
                bools.Implies(step.ok(), bools.Not(now.escalates_to(step, ctx.imaging))),
            ]  # ... maybe refused
        found = canonical(constraints, [now, later_])  # the same patients on every run: output is deterministic
        if found is None:
            continue
        p, q = found
        file, line = ctx.fact_at(fact.name)
        # With a completeness floor every unanswered alarm question is listed in the result (`unanswered_alarm`) and
        # the report leads with them, so one that matters only together with other answers is still asked: a note.
        listed = kb.incomplete_floor is not None
        finding = Finding(
            check.id,
            "note" if listed else "problem",
            f"fact {fact.name}",
            "could_escalate misses it: answering it alone changes nothing now, but once other "
            "questions are answered it raises the urgency or brings imaging forward"
            + ("; the result still lists it among the unanswered alarm questions it asks first" if listed else ""),
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
