"""What the knowledge base says about itself: relations between answers (facts.yaml `relations:`), the
guideline's own inconsistencies (inconsistencies.yaml) and the hazard log (hazards.yaml)."""

from __future__ import annotations

from lumbar_kb.engine.errors import Problem, did_you_mean
from lumbar_kb.engine.loader.conditions import Conditions
from lumbar_kb.engine.model import Condition, Control, Fact, Hazard, Inconsistency, Relation, condition_facts
from lumbar_kb.engine.source import Positions


def build_relations(data: dict, pos: Positions, facts: dict[str, Fact], problems: list[Problem]) -> tuple:
    """facts.yaml `relations:`: each a `when` with what it `implies` (may not be false) or `excludes` (may not
    be true). They judge a patient's answers, so they may read input facts only."""
    out: list[Relation] = []
    seen: set[str] = set()
    conditions = Conditions(facts, problems)
    for i, raw in enumerate(data.get("relations", [])):
        where = ("relations", i)
        subject = f"relation {raw['id']}"
        if raw["id"] in seen:
            problems.append(pos.problem(where + ("id",), "duplicate relation id", subject))
            continue
        seen.add(raw["id"])
        parts: dict[str, Condition | None] = {}
        for key in ("when", "implies", "excludes"):
            parts[key] = None
            if key in raw:
                cond = conditions.condition(raw[key], where + (key,), pos, subject)
                if cond is None:
                    break
                derived = [f for f in condition_facts(cond) if facts[f].derived]
                if derived:
                    problems.append(
                        pos.problem(
                            where + (key,), f"reads derived fact '{derived[0]}': relations judge answers only", subject
                        )
                    )
                    break
                parts[key] = cond
        else:
            if (parts["implies"] is None) == (raw.get("excludes") is None) and "implies" in raw and "excludes" in raw:
                problems.append(pos.problem(where, "a relation has 'implies' or 'excludes', not both", subject))
                continue
            if parts["implies"] is None and parts["excludes"] is None:
                problems.append(pos.problem(where, "a relation needs 'implies' or 'excludes'", subject))
                continue
            when = parts["when"]
            assert when is not None  # required by the schema
            out.append(Relation(raw["id"], when, parts["implies"], parts["excludes"], raw["because"], pos.at(where)[0]))
    return tuple(out)


def build_inconsistencies(data: dict, pos: Positions, ids: set[str] | None, problems: list[Problem]) -> tuple:
    out = []
    for i, raw in enumerate(data.get("inconsistencies", [])):
        where = ("inconsistencies", i)
        subject = f"inconsistency {raw['id']}"
        for j, rule_id in enumerate(raw["rules"]):
            if ids is not None and rule_id not in ids:
                problems.append(
                    pos.problem(where + ("rules", j), f"unknown rule '{rule_id}'", subject, did_you_mean(rule_id, ids))
                )
        out.append(
            Inconsistency(
                raw["id"],
                raw["title"],
                tuple(raw["sentences"]),
                raw["choice"],
                raw["why"],
                tuple(raw["rules"]),
                raw["board"],
                pos.at(where)[0],
            )
        )
    return tuple(out)


def build_hazards(
    data: dict, pos: Positions, rule_ids: set[str] | None, relations: tuple, problems: list[Problem]
) -> tuple:
    """The hazard log. Rule and relation controls are checked here; check and test controls are proven to
    exist and run by tests/test_hazard_log.py (the loader cannot see the checks or the tests)."""
    known: dict[str, set[str] | None] = {"rule": rule_ids, "relation": {r.id for r in relations}}
    out = []
    for i, raw in enumerate(data.get("hazards", [])):
        where = ("hazards", i)
        subject = f"hazard {raw['id']}"
        controls = []
        for j, c in enumerate(raw["controls"]):
            kind, ref = c["kind"], c["ref"]
            names = known.get(kind)
            if names is not None and ref not in names:
                problems.append(
                    pos.problem(
                        where + ("controls", j, "ref"),
                        f"unknown {kind} '{ref}'",
                        subject,
                        did_you_mean(ref, names),
                    )
                )
            controls.append(Control(kind, ref, c["what"]))
        residual = raw["residual"]
        out.append(
            Hazard(
                raw["id"],
                raw["title"],
                raw["cause"],
                raw["effect"],
                raw["severity"],
                raw["likelihood"],
                tuple(controls),
                residual["severity"],
                residual["likelihood"],
                pos.at(where)[0],
            )
        )
    return tuple(out)
