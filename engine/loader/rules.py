"""Rules (rules/*.yaml) built into the model: condition, conclusions, citations, with every problem collected."""

from __future__ import annotations

import math

from lumbar_kb.engine.errors import Problem, did_you_mean
from lumbar_kb.engine.loader.conditions import Conditions
from lumbar_kb.engine.logic import MAX_ALTERNATIVES, alternatives
from lumbar_kb.engine.model import Conclusion, Derive, Recommend, Rule, SetUrgency
from lumbar_kb.engine.source import Positions

CONCLUSION_HEADS = ("urgency", "action", "warning", "differential", "derive")


def build_rule(
    raw: dict,
    where: tuple,
    pos: Positions,
    section: str,
    facts,
    catalog,
    references,
    order: int,
    problems: list[Problem],
) -> Rule | None:
    """One rule of a rules/*.yaml file; None (with the problems recorded) when it cannot be built."""
    rule_id = raw["id"]
    subject = f"rule {rule_id}"
    before = len(problems)
    when = Conditions(facts, problems).condition(raw["when"], where + ("when",), pos, subject)
    then = tuple(
        done
        for i, item in enumerate(raw["then"])
        if (done := build_conclusion(item, where + ("then", i), pos, subject, facts, catalog, problems)) is not None
    )
    for i, n in enumerate(raw["cites"]):
        if n not in references:
            problems.append(
                pos.problem(
                    where + ("cites", i),
                    f"cites reference {n}, which is not in the reference list (1-{max(references)})",
                    subject,
                )
            )
    if when is not None and alternatives(when) > MAX_ALTERNATIVES:
        problems.append(
            pos.problem(
                where + ("when",),
                f"the condition expands to more than {MAX_ALTERNATIVES} alternatives when compiled (each `all` "
                "multiplies its items' `any`s): split the rule, or derive an intermediate fact",
                subject,
            )
        )
    if len(problems) > before or when is None:
        return None
    return Rule(
        rule_id,
        raw["title"],
        section,
        when,
        then,
        tuple(raw["cites"]),
        raw["rationale"],
        raw.get("priority", 0),
        raw.get("interpretation"),
        pos.file,
        pos.at(where)[0],
        order,
    )


def build_conclusion(
    raw: dict, where: tuple, pos: Positions, subject: str, facts, catalog, problems: list[Problem]
) -> Conclusion | None:
    heads = [k for k in CONCLUSION_HEADS if k in raw]
    if len(heads) != 1:
        message = (
            f"a conclusion needs one of {', '.join(CONCLUSION_HEADS)}"
            if not heads
            else f"a conclusion has exactly one of {', '.join(CONCLUSION_HEADS)}, not {' and '.join(heads)}"
        )
        problems.append(pos.problem(where, message, subject))
        return None
    head = heads[0]
    allowed_extra = {"action": {"within_hours", "within_hours_min", "window"}, "derive": {"value"}}.get(head, set())
    for key in raw:
        if key != head and key not in allowed_extra:
            problems.append(pos.problem(where + (key,), f"'{key}' does not belong in a '{head}' conclusion", subject))
            return None
    code = raw[head]
    if head == "derive":
        if code not in facts:
            problems.append(
                pos.problem(
                    where + ("derive",),
                    f"unknown fact '{code}'",
                    subject,
                    did_you_mean(code, [f for f in facts if facts[f].derived]),
                )
            )
            return None
        if not facts[code].derived:
            problems.append(
                pos.problem(
                    where + ("derive",),
                    f"'{code}' is an input fact; only facts marked 'derived: true' in facts.yaml can be derived",
                    subject,
                )
            )
            return None
        if "value" not in raw:
            problems.append(pos.problem(where, f"derive '{code}' needs a 'value'", subject))
            return None
        if not Conditions(facts, problems).value_ok(facts[code], raw["value"], where + ("value",), pos, subject):
            return None
        return Derive(code, raw["value"])
    kind = "urgency" if head == "urgency" else head
    known = catalog[kind]
    if code not in known:
        section = {"urgency": "urgency", "action": "actions", "warning": "warnings", "differential": "differential"}[
            head
        ]
        declare = (
            f"a new {head} code is declared in guideline.yaml under '{section}:' with its label, text and patient_text"
        )
        close = did_you_mean(code, known)
        hint = f"{close} {declare}" if close else declare
        problems.append(pos.problem(where + (head,), f"unknown {head} '{code}'", subject, hint))
        return None
    if head == "urgency":
        return SetUrgency(code)
    hours = raw.get("within_hours")
    if hours is not None and not _hours_ok(hours):
        problems.append(
            pos.problem(
                where + ("within_hours",),
                f"within_hours must be a finite number of hours from 0 to {MAX_WINDOW_HOURS}, not {hours!r}",
                subject,
            )
        )
        return None
    lower = raw.get("within_hours_min")
    if lower is not None and not _window_range_ok(raw, where, pos, subject, problems):
        return None
    return Recommend(head, code, hours, raw.get("window"), lower)


MAX_WINDOW_HOURS = 8760  # a year; rules.schema.json's maximum for within_hours says the same


def _hours_ok(hours: object) -> bool:
    """A window is a number (not true/false), finite, from 0 to a year: NaN passes every schema comparison."""
    return (
        isinstance(hours, (int, float))
        and not isinstance(hours, bool)
        and math.isfinite(hours)
        and 0 <= hours <= MAX_WINDOW_HOURS
    )


def _window_range_ok(raw: dict, where: tuple, pos: Positions, subject: str, problems: list[Problem]) -> bool:
    """`within_hours_min`, the lower end of the guideline's range, is a finite number from 0 up to `within_hours`."""
    lower, upper = raw["within_hours_min"], raw.get("within_hours")
    message = None
    if isinstance(lower, bool) or not isinstance(lower, (int, float)) or not math.isfinite(lower) or lower < 0:
        message = f"within_hours_min must be a finite number of hours, 0 or more, not {lower!r}"
    elif upper is None:
        message = "within_hours_min is the lower end of a range: it needs within_hours, the upper end"
    elif lower > upper:
        message = f"within_hours_min ({lower:g}) is later than within_hours ({upper:g}); the range is min-max"
    if message is None:
        return True
    problems.append(pos.problem(where + ("within_hours_min",), message, subject))
    return False
