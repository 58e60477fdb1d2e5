"""Clinical coherence (issue 23), proven over every input state: the steps of one result agree with each other.

  * `windows_agree`: no step falls due before the visit that carries it. The visit is the referral whose window
    the knowledge base declares for every emergency (`referral: true` with `in_emergency`: the emergency
    department); in any result that sends the patient there, no other action has a numeric window earlier than the
    visit's (an MRI due within 12 hours cannot be reached through an emergency department visited within 12-24).
  * `settled_questions_never_matter`: an unanswered alarm question stops keeping a result incomplete only when no
    answer to it, now or after any further answers, could raise the urgency or bring a step forward.

Each failure comes with the patient with the fewest answered facts that shows it, evaluated by the engine.
"""

from __future__ import annotations

from lumbar_kb.engine.analysis import bools
from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import Check, Finding
from lumbar_kb.engine.analysis.encoding import canonical, solve
from lumbar_kb.engine.model import hours_text


def check_coherence(ctx: Context) -> list[Check]:
    return [_windows_agree(ctx), _settled_never_matters(ctx)]


def _settled_never_matters(ctx: Context) -> Check:
    """A result is complete once every unanswered alarm question is settled (`State.settled`, `Prepared.settled`):
    the rules already give its highest urgency and every step it could bring, as early. That must hold whatever is
    answered later: no patient has a settled question whose answer, once other questions are answered, raises the
    urgency or brings a step forward. (Kept incomplete only by questions that can still change it, and never made
    complete while one could.)"""
    kb, sem = ctx.kb, ctx.sem
    check = Check(
        "settled_questions_never_matter",
        "safety",
        "an alarm question that no longer keeps a result incomplete never changes it, whatever is answered later",
    )
    for fact in [f for f in kb.input_facts if f.alarm]:
        answers = [True] if fact.type == "bool" else list(fact.values)
        now, later = sem.state("now"), sem.state("later")
        constraints = [now.ok(), later.ok(), bools.Not(now.known(fact.name)), bools.Not(later.known(fact.name))]
        for other in sem.inputs:
            if other != fact.name:
                constraints += [bools.Implies(now.is_(other, v), later.is_(other, v)) for v in kb.facts[other].values]
        constraints.append(now.settled(fact.name))
        pivots = []
        for value in answers:
            after = sem.state("later+", base=later, fresh=[fact.name])
            pivots.append(bools.And(after.is_(fact.name, value), after.ok(), later.escalates_to(after, ctx.imaging)))
        constraints.append(bools.Or(pivots))
        if solve(*constraints) is None:  # the usual answer, proven at once (the minimal patients cost more)
            continue
        found = canonical(constraints, [now, later])
        if found is None:
            continue
        p, q = found
        file, line = ctx.fact_at(fact.name)
        finding = Finding(
            check.id,
            "problem",
            f"fact {fact.name}",
            "counted as settled (the result may be complete without it), but once other questions are answered "
            "its answer raises the urgency or brings a step forward",
            file,
            line,
            p,
            q,
        )
        finding.labels = ("now", "later")
        finding.verify = lambda run, p=p, f=fact.name: (
            None if f not in run.result(p).unanswered_alarm else "the engine still counts it"
        )
        check.findings.append(finding)
    return check


def visits(ctx: Context) -> list[str]:
    """The actions that carry an emergency's other steps: referrals declared for every emergency (`in_emergency`)."""
    return [code for code, e in ctx.kb.catalog["action"].items() if e.referral and e.emergency_within_hours is not None]


def _windows_agree(ctx: Context) -> Check:
    kb, s = ctx.kb, ctx.s
    carriers = visits(ctx)
    labels = ", ".join(kb.catalog["action"][c].label for c in carriers)
    check = Check("windows_agree", "safety", f"no step falls due before the visit that carries it ({labels})")
    if not carriers:
        check.claim = "no step falls due before the visit that carries it"
        check.skipped = "no referral action declares 'in_emergency' in guideline.yaml"
        return check
    for visit in carriers:
        for code, hours in sorted(ctx.sem.action_hours.items()):
            if code == visit:
                continue
            for h in hours:  # the step is due by h while the visit is not (later, or with no figure)
                patient = ctx.canonical_witness(s.action(visit), s.action_by(code, h), bools.Not(s.action_by(visit, h)))
                if patient is None:
                    continue
                file, line = ctx.code_at("action", code)
                finding = Finding(
                    check.id,
                    "problem",
                    f"action:{code}",
                    f"'{code}' is due {hours_text(h)}, before '{visit}' through which it is reached",
                    file,
                    line,
                    patient,
                )
                finding.verify = lambda run, p=patient, code=code, visit=visit: _before_visit(run, p, code, visit)
                check.findings.append(finding)
                break  # the earliest figure that shows it is enough for one action
    return check


def _before_visit(run, patient, code: str, visit: str) -> str | None:
    """None when the engine's result for the patient has `code` due before `visit` (else why not)."""
    got = {a.code: a for a in run.result(patient).actions}
    if visit not in got or code not in got:
        return "the result does not have both steps"
    step, at = got[code].within_hours, got[visit].within_hours
    if step is None:
        return f"'{code}' has no figure"
    return None if at is None or step < at else f"'{code}' is due {hours_text(step)}, not before {hours_text(at)}"
