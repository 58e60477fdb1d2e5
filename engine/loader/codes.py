"""`codes.yaml` checked at load, like every other file of the knowledge base.

The terminology bindings decide which coded record makes a fact known, so a broken file must fail `validate`
and `check` and change the knowledge base's identity, not wait for the first FHIR request. The loader checks
the file against `knowledge/schema/codes.schema.json` and here every name it uses against the vocabulary and the
catalogue: a bound fact exists and is an input, a bound value is in its domain, a system alias is declared, an
action and an order kind exist. The clinic's FHIR layer (`clinic/fhir/codes.py`) builds its lookup tables
from the same file; this is the knowledge base's own check, with file:line, so more bindings of the same shape
stay valid.
"""

from __future__ import annotations

import re

from lumbar_kb.engine.errors import Problem, did_you_mean
from lumbar_kb.engine.source import Positions


def check_codes(data: dict, pos: Positions, facts: dict, catalog: dict, problems: list[Problem]) -> None:
    systems = data["systems"]
    actions = catalog.get("action", {})
    if not re.fullmatch(r"https?://\S+", data["canonical"]):
        problems.append(pos.problem(("canonical",), "canonical must be an http(s) URL"))

    def codings(raw: list, at: tuple) -> None:
        for i, c in enumerate(raw):
            if c["system"] not in systems:
                hint = did_you_mean(c["system"], systems)
                problems.append(pos.problem((*at, i, "system"), f"unknown system alias '{c['system']}'", None, hint))

    codings(data["answers"]["yes"], ("answers", "yes"))
    codings(data["answers"]["no"], ("answers", "no"))
    profiles = data["condition_profiles"]
    inputs = [f.name for f in facts.values() if not f.derived]
    for i, raw in enumerate(data["bindings"]):
        at = ("bindings", i)
        fact = facts.get(raw["fact"])
        if fact is None or fact.derived:
            what = "unknown fact" if fact is None else "a derived fact cannot be bound"
            problems.append(
                pos.problem((*at, "fact"), what, f"fact '{raw['fact']}'", did_you_mean(raw["fact"], inputs))
            )
        else:
            value = raw.get("value")
            if value is not None and value not in fact.values:
                problems.append(pos.problem((*at, "value"), "not a value of the fact", f"fact '{fact.name}'"))
            if fact.type == "enum" and value is None:
                problems.append(pos.problem(at, "an enum fact's binding must name its value", f"fact '{fact.name}'"))
        if raw["profile"] not in profiles:
            hint = did_you_mean(raw["profile"], profiles)
            problems.append(pos.problem((*at, "profile"), "unknown condition profile", None, hint))
        codings(raw["codes"], (*at, "codes"))
    for name, by_value in (data.get("values") or {}).items():
        fact = facts.get(name)
        if fact is None or fact.type != "enum":
            problems.append(pos.problem(("values", name), "not an enum fact of the vocabulary", f"fact '{name}'"))
            continue
        for value, raw in by_value.items():
            if value not in fact.values:
                problems.append(pos.problem(("values", name, value), "not a value of the fact", f"fact '{name}'"))
            codings(raw, ("values", name, value))
    orders = data["orders"]
    for name, raw in orders.items():
        for key in ("performs", "requires_first"):
            if raw.get(key) is not None and raw[key] not in actions:
                hint = did_you_mean(raw[key], actions)
                problems.append(pos.problem(("orders", name, key), "unknown action", f"order '{name}'", hint))
        codings(raw["codes"], ("orders", name, "codes"))
    for action, raw in data["actions"].items():
        if action not in actions:
            problems.append(pos.problem(("actions", action), "unknown action", None, did_you_mean(action, actions)))
        if raw["order"] not in orders:
            hint = did_you_mean(raw["order"], orders)
            problems.append(pos.problem(("actions", action, "order"), "unknown order kind", None, hint))
    for action in actions:
        if action not in data["actions"]:
            problems.append(Problem(f"action '{action}' of the catalogue has no order under `actions`", file=pos.file))
