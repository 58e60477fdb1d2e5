"""The fact vocabulary (facts.yaml) built into Facts, with the checks a schema cannot make."""

from __future__ import annotations

from dataclasses import replace

from lumbar_kb.engine.errors import Problem
from lumbar_kb.engine.loader.conditions import Conditions
from lumbar_kb.engine.model import Fact
from lumbar_kb.engine.patient import META_KEYS
from lumbar_kb.engine.source import Positions

RESERVED_FACT_NAMES = META_KEYS + ("sid", "t")  # patient-file metadata; keys of the engine's fact messages


def build_facts(data: dict, pos: Positions, problems: list[Problem]) -> dict[str, Fact]:
    """The vocabulary, in file order; `only_if` constraints parsed once every fact is known."""
    facts: dict[str, Fact] = {}
    for i, (name, f) in enumerate(data["facts"].items()):
        where = ("facts", name)
        subject = f"fact {name}"
        if name in RESERVED_FACT_NAMES:
            problems.append(
                pos.problem(
                    where,
                    f"'{name}' is reserved (patient files use id and note; the engine's fact messages use sid and t)",
                    subject,
                    key=True,
                )
            )
            continue
        derived = bool(f.get("derived", False))
        if f["type"] == "enum":
            if "values" not in f:
                problems.append(pos.problem(where, "an enum fact needs 'values'", subject))
                continue
            values = tuple(f["values"])
        else:
            if "values" in f:
                problems.append(pos.problem(where + ("values",), "a bool fact has no 'values'", subject))
            values = (True, False)
        if not derived:
            for key in ("question", "patient_question"):
                if key not in f:
                    problems.append(pos.problem(where, f"an input fact needs '{key}'", subject))
        elif f.get("alarm"):
            problems.append(
                pos.problem(where + ("alarm",), "a derived fact is never asked, so never an alarm", subject)
            )
        neurological = bool(f.get("neurological", False))
        if neurological and (derived or f["type"] != "bool"):
            problems.append(
                pos.problem(
                    where + ("neurological",), "only an input yes/no fact can be a neurological symptom", subject
                )
            )
        facts[name] = Fact(
            name,
            f["type"],
            values,
            f["meaning"],
            f.get("question"),
            f.get("patient_question"),
            bool(f.get("alarm", False)),
            derived,
            i,
            pos.at(where)[0],
            neurological=neurological,
        )
    for name, f in data["facts"].items():  # constraints may name facts defined further down
        if "only_if" in f and name in facts:
            subject = f"fact {name}"
            if facts[name].derived:
                problems.append(pos.problem(("facts", name, "only_if"), "a derived fact has no 'only_if'", subject))
                continue
            cond = Conditions(facts, problems).condition(f["only_if"], ("facts", name, "only_if"), pos, subject)
            if cond is not None:
                facts[name] = replace(facts[name], only_if=cond)
    return facts
