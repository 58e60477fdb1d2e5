"""Windows: words that contradict their figure, two rules giving one action a figure in different words, and a
title or interpretation quoting a window the rule no longer gives."""

from __future__ import annotations

from lumbar_kb.engine.analysis import bools
from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import Check, Finding
from lumbar_kb.engine.analysis.reproduce import windows
from lumbar_kb.engine.analysis.structure import (
    _FIGURE,
    _UNIT_HOURS,
    action_conclusions,
    stated_hours,
    stated_lower,
)
from lumbar_kb.engine.model import Rule, hours_text


def check_windows(ctx: Context) -> tuple[Check, Check, Check]:
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
            lower = stated_lower(c.window)
            given = None if c.within_hours_min is None else float(c.within_hours_min)
            if said is not None and (lower != given and not (lower is None and given is None)):
                stated = "no range" if lower is None else f"a range from {lower:g} hours"
                figure = "missing" if given is None else f"{given:g}"
                check.findings.append(
                    Finding(
                        check.id,
                        "problem",
                        f"rule {rule.id}",
                        f"action '{c.code}': the words '{c.window}' state {stated} but within_hours_min is {figure}; "
                        "the result keeps both ends of a range only when the rule gives both",
                        rule.file,
                        rule.line,
                    )
                )
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
            earlier = bools.Or([s.fires[r] for r in earlier_rules])
            if ctx.sat(s.fires[rule.id], bools.Not(earlier)):
                continue
            always = [r for r in earlier_rules if not ctx.sat(s.fires[rule.id], bools.Not(s.fires[r]))]
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
    return check, notes, check_quoted_windows(ctx)


def quoted_windows(text: str | None) -> list[tuple[float | None, float, str]]:
    """The windows a text quotes, as (lower hours or None, upper hours, the words): "within 24-48 hours" ->
    (24, 48, "24-48 hours")."""
    out = []
    for m in _FIGURE.finditer(text or ""):
        unit = _UNIT_HOURS[m.group(3).lower().rstrip("s") or "h"]
        upper = float(m.group(2) or m.group(1)) * unit
        lower = float(m.group(1)) * unit if m.group(2) else None
        out.append((lower, upper, m.group(0)))
    return out


def window_mismatches(rule: Rule, text: str | None, every: bool = True) -> list[str]:
    """What a text about `rule` (its title, interpretation, or a guideline sentence it encodes) says about a
    window that the rule's THEN no longer gives. `every`: each quoted window must be given (a title); else
    only when none of them is (a text that also names other tiers). Nothing when the rule gives no window."""
    given = [
        (None if c.within_hours_min is None else float(c.within_hours_min), float(c.within_hours), c.window or "")
        for c in action_conclusions(rule)
        if c.within_hours is not None
    ]
    quoted = quoted_windows(text)
    if not given or not quoted:
        return []

    def matches(q: tuple) -> bool:
        return any(abs(q[1] - g[1]) < 1e-9 and (q[0] is None or g[0] is None or abs(q[0] - g[0]) < 1e-9) for g in given)

    missing = [q for q in quoted if not matches(q)]
    if not missing or (not every and len(missing) < len(quoted)):
        return []
    gives = "; ".join(f"{g[2] or hours_text(g[1], g[0])} ({g[1]:g} h)" for g in given)
    if every:
        return [f"quotes {q[2]}, but its THEN gives {gives}" for q in missing]
    return [f"quotes {' and '.join(q[2] for q in missing)}, none of which its THEN gives ({gives})"]


def check_quoted_windows(ctx: Context) -> Check:
    """Issue 22: a title or interpretation that quotes a window the rule's conclusions no longer give (the
    figure was edited, the words beside it were not)."""
    notes = Check("windows_quoted", "reach", "every window a rule's title or interpretation quotes is the one it gives")
    for rule in ctx.kb.rules:
        for name, text, every in (("title", rule.title, True), ("interpretation", rule.interpretation, False)):
            for said in window_mismatches(rule, text, every):
                notes.findings.append(
                    Finding(notes.id, "note", f"rule {rule.id}", f"its {name} {said}", rule.file, rule.line)
                )
    return notes


def _earlier(hours: float | None, than: float | None) -> bool:
    return hours is not None and (than is None or hours < than)


def _window_words(result, code: str) -> str | None:
    for a in result.actions:
        if a.code == code:
            return a.window
    return None
