"""The clinical invariants of issue 9, proven over every input state, each declared in the knowledge base:

  * every EMERGENCY result gives each action marked `in_emergency` a numeric window of at most its `within_hours`
    (the emergency department within 24 hours, the whole-spine MRI within 48), except where its `unless` holds
    (a compression already diagnosed has been imaged);
  * nothing with an unanswered alarm question is at the lowest urgency (ROUTINE): `completeness.floor`;
  * every floor in `floors:` holds (a lump, palpable, visible or found on imaging, is never below PROMPT);
  * every imaging (`imaging: true`) or referral (`referral: true`) action a result gives has a numeric window.

Each failure comes with the patient with the fewest answered facts that shows it, evaluated by the engine.
"""

from __future__ import annotations

import math

from lumbar_kb.engine.analysis import bools
from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import Check, Finding
from lumbar_kb.engine.logic import evaluate


def check_clinical(ctx: Context) -> list[Check]:
    return [_emergency_windows(ctx), _incomplete_not_lowest(ctx), _floors(ctx), _numeric_windows(ctx)]


def _emergency_windows(ctx: Context) -> Check:
    kb, s = ctx.kb, ctx.s
    top = kb.catalog["urgency"][ctx.top]
    declared = [(code, e) for code, e in kb.catalog["action"].items() if e.emergency_within_hours is not None]
    parts = [f"{e.label} within {e.emergency_within_hours:g} h" for _, e in declared]
    check = Check("emergency_windows", "safety", f"every {top.label} result has a numeric window: {'; '.join(parts)}")
    if not declared:
        check.claim = f"every {top.label} result has numeric windows for its time-critical actions"
        check.skipped = "no action declares 'in_emergency' in guideline.yaml"
        return check
    emergency = s.urgency_at_least(ctx.sem.level_rank[ctx.top])
    for code, entry in declared:
        hours = entry.emergency_within_hours
        assert hours is not None
        exempt = [] if entry.emergency_unless is None else [bools.Not(s.true(entry.emergency_unless))]
        patient = ctx.canonical_witness(emergency, bools.Not(s.action_by(code, hours)), *exempt)
        if patient is None:
            continue
        file, line = ctx.code_at("action", code)
        finding = Finding(
            check.id,
            "problem",
            f"action:{code}",
            f"an {top.label} result without '{code}' within {hours:g} hours (missing, no figure, or later)",
            file,
            line,
            patient,
        )
        finding.verify = lambda run, p=patient, code=code, hours=hours, unless=entry.emergency_unless: _emergency_gap(
            run, p, code, hours, unless, ctx.top
        )
        check.findings.append(finding)
    return check


def _emergency_gap(run, patient, code, hours, unless, top) -> str | None:
    result = run.result(patient)
    if result.urgency != top:
        return f"the engine gave {result.urgency}"
    if unless is not None and evaluate(unless, run.engine.run(run.check_patient(patient)).facts()) is True:
        return "the exception applies"
    got = {a.code: a.within_hours for a in result.actions}.get(code, math.inf)
    return None if got is None or got > hours else f"'{code}' is within {got:g} hours"


def _incomplete_not_lowest(ctx: Context) -> Check:
    kb, s = ctx.kb, ctx.s
    lowest = kb.catalog["urgency"][kb.lowest_urgency]
    check = Check("incomplete_never_lowest", "safety", f"nothing with an unanswered alarm question is {lowest.label}")
    if not any(f.alarm for f in kb.input_facts):
        check.skipped = "no fact is marked 'alarm: true' in facts.yaml"
        return check
    above = min(r for r in ctx.sem.ranks if r > ctx.sem.ranks[0]) if len(ctx.sem.ranks) > 1 else None
    if above is None:
        check.skipped = "the knowledge base has a single urgency level"
        return check
    patient = ctx.canonical_witness(s.incomplete(), bools.Not(s.urgency_at_least(above)))
    if patient is None:
        return check
    file, line = ctx.position("guideline.yaml", ("completeness",) if kb.incomplete_floor else ("urgency",))
    finding = Finding(
        check.id,
        "problem",
        "completeness",
        f"a patient with an unanswered alarm question comes out {lowest.label}"
        + ("" if kb.incomplete_floor else " (guideline.yaml declares no completeness floor)"),
        file,
        line,
        patient,
    )
    finding.verify = lambda run, p=patient: (
        None if not run.result(p).complete and run.result(p).urgency == kb.lowest_urgency else "not reproduced"
    )
    check.findings.append(finding)
    return check


def _floors(ctx: Context) -> Check:
    kb, s = ctx.kb, ctx.s
    claims = "; ".join(f.claim for f in kb.floors)
    check = Check("urgency_floors", "safety", f"urgency floors hold: {claims}" if claims else "urgency floors hold")
    if not kb.floors:
        check.skipped = "guideline.yaml declares no 'floors'"
        return check
    for floor in kb.floors:
        rank = ctx.sem.level_rank[floor.at_least]
        patient = ctx.canonical_witness(s.true(floor.when), bools.Not(s.urgency_at_least(rank)))
        if patient is None:
            continue
        file, line = ctx.position("guideline.yaml", ("floors", floor.id))
        label = kb.catalog["urgency"][floor.at_least].label
        finding = Finding(
            check.id, "problem", f"floor {floor.id}", f"{floor.claim}: a patient below {label}", file, line, patient
        )
        finding.verify = lambda run, p=patient, rank=rank: (
            None if ctx.sem.level_rank[run.result(p).urgency] < rank else "not reproduced"
        )
        check.findings.append(finding)
    return check


def _numeric_windows(ctx: Context) -> Check:
    kb, s = ctx.kb, ctx.s
    codes = [code for code, e in kb.catalog["action"].items() if e.imaging or e.referral]
    check = Check("actions_have_windows", "safety", "every imaging or referral action has a numeric window")
    if not codes:
        check.skipped = "no action is marked 'imaging: true' or 'referral: true' in guideline.yaml"
        return check
    for code in codes:
        patient = ctx.canonical_witness(s.action(code), bools.Not(s.action_by(code, math.inf)))
        if patient is None:
            continue
        file, line = ctx.code_at("action", code)
        finding = Finding(
            check.id, "problem", f"action:{code}", f"'{code}' is given with no numeric window", file, line, patient
        )
        finding.verify = lambda run, p=patient, code=code: (
            None
            if any(a.code == code and a.within_hours is None for a in run.result(p).actions)
            else "the engine gave a window"
        )
        check.findings.append(finding)
    return check
