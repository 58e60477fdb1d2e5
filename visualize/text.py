"""Words for the decision graph: conditions, values and windows as a reviewer reads them.

Pure functions of the model; no drawing here. Used for node meaning attributes (a rule's condition text)
and for labels and tooltips.
"""

from __future__ import annotations

import textwrap

from lumbar_kb.engine.model import All, AnyOf, Condition, Fact, Not, Test, Value, hours_text


def show_value(fact: Fact | None, value: Value | None) -> str:
    """A value as the patient file would say it: yes / no / the enum value / unknown."""
    if value is None:
        return "unknown"
    if fact is not None and fact.type == "bool":
        return "yes" if value else "no"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def values_phrase(fact: Fact, values) -> str:
    """The tested values of one fact in the shortest honest words: `yes`, `abnormal`, `any answer`,
    `not other` (when the values are the whole domain but one or two)."""
    chosen = [v for v in fact.values if v in set(values)]
    if len(chosen) == len(fact.values):
        return "any answer"
    if len(chosen) == 1:
        return show_value(fact, chosen[0])
    rest = [v for v in fact.values if v not in set(values)]
    if len(rest) < len(chosen) and len(rest) <= 2:
        return "not " + " or ".join(show_value(fact, v) for v in rest)
    return " or ".join(show_value(fact, v) for v in chosen)


def describe_condition(cond: Condition, facts: dict, indent: str = "") -> list[str]:
    """A condition as indented lines: `any of:` / `all of:` / `not:` heads, `fact: value` leaves."""
    if isinstance(cond, Test):
        return [f"{indent}{cond.fact}: {values_phrase(facts[cond.fact], cond.values)}"]
    if isinstance(cond, Not):
        return [f"{indent}not:", *describe_condition(cond.item, facts, indent + "  ")]
    head = "all of:" if isinstance(cond, All) else "any of:"
    assert isinstance(cond, (All, AnyOf))
    lines = [f"{indent}{head}"]
    for item in cond.items:
        lines.extend(describe_condition(item, facts, indent + "  "))
    return lines


def hours_phrase(hours: float | None) -> str:
    """A window in hours as words (the catalogue's own words are preferred when a rule gives them)."""
    return "" if hours is None else hours_text(hours)


def wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]
