"""The clinical-safety declarations of guideline.yaml: completeness, scope and the urgency floors.

completeness:  while an alarm question is unanswered the urgency is at least `floor`, with the texts that
               say so; `not_asked_when` makes a question moot for some patients (not asked, not counted)
scope:         `out_of_scope_when`: the patient is outside the guideline (told so, no differential)
floors:        claims `lumbar-kb check` proves: whenever `when` is true the urgency is at least `at_least`
"""

from __future__ import annotations

from lumbar_kb.engine.errors import Problem, did_you_mean
from lumbar_kb.engine.loader.conditions import Conditions
from lumbar_kb.engine.model import Floor, condition_facts
from lumbar_kb.engine.source import Positions


def build_safety(g: dict, pos: Positions, facts: dict, catalog: dict, problems: list[Problem]) -> dict:
    """The KnowledgeBase keyword arguments for the blocks present in guideline.yaml."""
    out: dict = {}
    levels = catalog["urgency"]

    def level(code: str, where: tuple, subject: str) -> bool:
        if code in levels:
            return True
        problems.append(pos.problem(where, f"unknown urgency level '{code}'", subject, did_you_mean(code, levels)))
        return False

    completeness = g.get("completeness")
    if completeness is not None:
        if level(completeness["floor"], ("completeness", "floor"), "completeness"):
            out["incomplete_floor"] = completeness["floor"]
        out["incomplete_text"] = completeness["text"]
        out["incomplete_patient_text"] = completeness["patient_text"]
        moot = {}
        for name, raw in completeness.get("not_asked_when", {}).items():
            where = ("completeness", "not_asked_when", name)
            if name not in facts or facts[name].derived:
                problems.append(
                    pos.problem(
                        where,
                        f"not_asked_when names '{name}', which is not an input fact",
                        "completeness",
                        did_you_mean(name, [f for f in facts if not facts[f].derived]),
                        key=True,
                    )
                )
                continue
            cond = Conditions(facts, problems).condition(raw, where, pos, f"fact {name}")
            derived = [f for f in condition_facts(cond) if facts[f].derived] if cond is not None else []
            if derived:  # judged on the answers given, before any rule runs: a derived fact is unknown there
                problems.append(
                    pos.problem(
                        where,
                        f"not_asked_when for '{name}' reads the derived fact '{derived[0]}': a question is judged moot "
                        "on the answers given, before any rule derives anything, so it would never be moot",
                        "completeness",
                        "name the input facts it is derived from instead",
                    )
                )
            elif cond is not None:
                moot[name] = cond
        out["not_asked_when"] = moot
    scope = g.get("scope")
    if scope is not None:
        cond = Conditions(facts, problems).condition(
            scope["out_of_scope_when"], ("scope", "out_of_scope_when"), pos, "scope"
        )
        if cond is not None:
            out["out_of_scope_when"] = cond
        out["out_of_scope_text"] = scope["text"]
        out["out_of_scope_patient_text"] = scope["patient_text"]
    floors = []
    for floor_id, raw in g.get("floors", {}).items():
        subject = f"floor {floor_id}"
        cond = Conditions(facts, problems).condition(raw["when"], ("floors", floor_id, "when"), pos, subject)
        if level(raw["at_least"], ("floors", floor_id, "at_least"), subject) and cond is not None:
            floors.append(Floor(floor_id, raw["claim"], cond, raw["at_least"]))
    out["floors"] = tuple(floors)
    return out
