"""The catalogue of everything a rule can conclude, with its clinician and patient texts."""

from __future__ import annotations

from dataclasses import replace

from lumbar_kb.engine.errors import Problem, did_you_mean
from lumbar_kb.engine.loader.conditions import Conditions
from lumbar_kb.engine.model import CodeEntry
from lumbar_kb.engine.source import Positions

CATALOG_KINDS = {"urgency": "urgency", "actions": "action", "warnings": "warning", "differential": "differential"}


def build_catalog(g: dict, pos: Positions, facts: dict, problems: list[Problem]) -> dict:
    """The conclusion catalogue (urgency levels, actions, warnings, differential) from guideline.yaml."""
    catalog: dict[str, dict[str, CodeEntry]] = {}
    for key, kind in CATALOG_KINDS.items():
        catalog[kind] = {
            code: CodeEntry(
                kind,
                code,
                e["label"],
                e["text"],
                e["patient_text"],
                e["rank"] if kind == "urgency" else 0,
                i,
                **(_action_flags(e) if kind == "action" else {}),
            )
            for i, (code, e) in enumerate(g[key].items())
        }
    ranks: dict[int, str] = {}
    for code, entry in catalog["urgency"].items():
        if entry.rank in ranks:
            problems.append(
                pos.problem(
                    ("urgency", code, "rank"), f"urgency rank {entry.rank} is also used by '{ranks[entry.rank]}'"
                )
            )
        ranks[entry.rank] = code
    for code, e in g["actions"].items():  # conditions are parsed once the vocabulary is known
        if "done_when" in e:
            cond = Conditions(facts, problems).condition(
                e["done_when"], ("actions", code, "done_when"), pos, f"action {code}"
            )
            if cond is not None:
                catalog["action"][code] = replace(catalog["action"][code], done_when=cond)
        emergency = e.get("in_emergency")
        if emergency is not None:
            unless = None
            if "unless" in emergency:
                unless = Conditions(facts, problems).condition(
                    emergency["unless"], ("actions", code, "in_emergency", "unless"), pos, f"action {code}"
                )
            catalog["action"][code] = replace(
                catalog["action"][code],
                emergency_within_hours=float(emergency["within_hours"]),
                emergency_unless=unless,
            )
        for i, other in enumerate(e.get("superseded_by", ())):
            if other not in g["actions"] or other == code:
                problems.append(
                    pos.problem(
                        ("actions", code, "superseded_by", i),
                        f"superseded_by names '{other}', which is not another action of the catalogue",
                        f"action {code}",
                        did_you_mean(other, [a for a in g["actions"] if a != code]),
                    )
                )
    for code, e in g["actions"].items():
        for other in e.get("superseded_by", ()):
            if code in g["actions"].get(other, {}).get("superseded_by", ()):
                problems.append(
                    pos.problem(
                        ("actions", code, "superseded_by"),
                        f"'{code}' and '{other}' supersede each other: a result would drop both",
                        f"action {code}",
                    )
                )
    return catalog


def _action_flags(entry: dict) -> dict:
    """The flags only an action entry of the catalogue has (see guideline.schema.json#/$defs/action)."""
    flags: dict = {
        flag: bool(entry.get(flag, False)) for flag in ("imaging", "never_delay", "time_critical", "referral")
    }
    flags["superseded_by"] = tuple(entry.get("superseded_by", ()))
    return flags
