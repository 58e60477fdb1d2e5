"""Clinical coherence (issue 23), proven over every input state: the steps of one result agree with each other.

  * `windows_agree`: no step falls due before the visit that carries it. The visit is the referral whose window
    the knowledge base declares for every emergency (`referral: true` with `in_emergency`: the emergency
    department); in any result that sends the patient there, no other action has a numeric window earlier than the
    visit's (an MRI due within 12 hours cannot be reached through an emergency department visited within 12-24).

Each failure comes with the patient with the fewest answered facts that shows it, evaluated by the engine.
"""

from __future__ import annotations

import z3

from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import Check, Finding
from lumbar_kb.engine.model import hours_text


def check_coherence(ctx: Context) -> list[Check]:
    return [_windows_agree(ctx)]


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
                patient = ctx.canonical_witness(s.action(visit), s.action_by(code, h), z3.Not(s.action_by(visit, h)))
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
