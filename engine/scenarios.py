"""Authors' scenario files: a patient plus what the guideline must conclude for them.

    knowledge/<kb>/scenarios/*.yaml
    name: Leg weakness is an emergency
    description: optional
    patient: {leg_weakness: true}
    expect:
      urgency: emergency
      actions: {emergency_department: 0, mri_whole_spine: 48}   # exactly these, code -> within_hours (or null)
      warnings: [imaging_alone_insufficient]                    # exactly these
      differential: []                                           # exactly these
      fired: [red_flag.leg_weakness]                             # at least these rules fire
      not_fired: [imaging.xray_first]                            # these rules do not fire
      windows_min: {emergency_department: 12}                    # lower ends of ranges (12 of 12-24 h)
      complete: false                                            # every alarm question answered?
      in_scope: true                                             # within the guideline's scope (a mass)?
      asks: [suspected_cord_compression]                         # could_escalate names at least these
      does_not_ask: [radiograph]                                 # ... and neither it nor the alarm list these

Each key of `expect` is optional; what is given is checked exactly as documented above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lumbar_kb.engine.errors import KnowledgeBaseError, LumbarKBError, Problem, did_you_mean
from lumbar_kb.engine.loader import schema_problems, stray_files
from lumbar_kb.engine.model import KnowledgeBase
from lumbar_kb.engine.patient import parse_patient
from lumbar_kb.engine.result import Result
from lumbar_kb.engine.source import DocumentError, Positions, display, read_document


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    file: str
    line: int | None
    patient: dict  # dict[str, Value], validated
    expect: dict


@dataclass(frozen=True)
class Mismatch:
    key: str
    expected: Any  # the expectation's own shape: a level, {code: hours}, or a list of codes
    actual: Any

    def __str__(self) -> str:
        return f"{self.key}: expected {_show(self.expected)}, got {_show(self.actual)}"


def _show(value) -> str:
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(
                f"{k}: {'null' if v is None else f'{v:g}' if isinstance(v, (int, float)) else v}"
                for k, v in value.items()
            )
            + "}"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def scenario_dir(kb: KnowledgeBase) -> Path:
    return Path(kb.root) / "scenarios"


def load_scenarios(kb: KnowledgeBase, directory: Path | None = None) -> list[Scenario]:
    """Read every scenario file; raise KnowledgeBaseError listing every problem in any of them."""
    directory = directory or scenario_dir(kb)
    problems: list[Problem] = []
    scenarios: list[Scenario] = []
    problems.extend(Problem("not loaded: scenario files end in .yaml", file=display(p)) for p in stray_files(directory))
    for path in sorted(directory.glob("*.yaml")):
        try:
            data, pos = read_document(path)
        except DocumentError as exc:
            problems.append(exc.problem)
            continue
        if not isinstance(data, dict):
            problems.append(Problem("a scenario must be a mapping", file=pos.file, line=1))
            continue
        found = schema_problems(data, "scenario", pos)
        if found:
            problems.extend(found)
            continue
        try:
            patient = parse_patient(data["patient"], pos, kb, ("patient",))
        except LumbarKBError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(_check_names(data["expect"], pos, kb))
        scenarios.append(
            Scenario(data["name"], data.get("description", ""), pos.file, pos.at(())[0], patient, data["expect"])
        )
    if problems:
        raise KnowledgeBaseError(problems)
    return scenarios


def _check_names(expect: dict, pos: Positions, kb: KnowledgeBase) -> list[Problem]:
    """Every code and rule id an expectation names must exist (a typo would otherwise pass silently)."""
    problems = []
    known = {
        "actions": kb.catalog["action"],
        "warnings": kb.catalog["warning"],
        "differential": kb.catalog["differential"],
        "fired": {r.id: r for r in kb.rules},
        "not_fired": {r.id: r for r in kb.rules},
        "windows_min": kb.catalog["action"],
        "asks": {f.name: f for f in kb.input_facts},
        "does_not_ask": {f.name: f for f in kb.input_facts},
    }
    if "urgency" in expect and expect["urgency"] not in kb.catalog["urgency"]:
        problems.append(
            pos.problem(
                ("expect", "urgency"),
                f"unknown urgency '{expect['urgency']}'",
                None,
                did_you_mean(expect["urgency"], kb.catalog["urgency"]),
            )
        )
    for key, names in known.items():
        for i, name in enumerate(expect.get(key, ())):
            if name not in names:
                at = ("expect", key, name) if isinstance(expect[key], dict) else ("expect", key, i)
                problems.append(
                    pos.problem(
                        at, f"unknown {key.rstrip('s').replace('_', ' ')} '{name}'", None, did_you_mean(name, names)
                    )
                )
    return problems


def compare(scenario: Scenario, result: Result) -> list[Mismatch]:
    expect = scenario.expect
    out: list[Mismatch] = []
    if "urgency" in expect and expect["urgency"] != result.urgency:
        out.append(Mismatch("urgency", expect["urgency"], result.urgency))
    if "actions" in expect:
        actual = {a.code: a.within_hours for a in result.actions}
        wanted = dict(expect["actions"])
        if {k: _num(v) for k, v in wanted.items()} != {k: _num(v) for k, v in actual.items()}:
            out.append(Mismatch("actions", wanted, actual))
    for key in ("warnings", "differential"):
        if key in expect:
            actual_codes = sorted(i.code for i in getattr(result, key))
            if sorted(expect[key]) != actual_codes:
                out.append(Mismatch(key, sorted(expect[key]), actual_codes))
    if "windows_min" in expect:
        lower = {a.code: a.within_hours_min for a in result.actions}
        wanted = dict(expect["windows_min"])
        got = {code: lower.get(code, "absent") for code in wanted}
        if any(code not in lower or _num(v) != _num(lower[code]) for code, v in wanted.items()):
            out.append(Mismatch("windows_min", wanted, got))
    for key in ("complete", "in_scope"):
        if key in expect and expect[key] != getattr(result, key):
            out.append(Mismatch(key, expect[key], getattr(result, key)))
    asked = [e.fact for e in result.could_escalate]
    if "asks" in expect:
        missing = [f for f in expect["asks"] if f not in asked]
        if missing:
            out.append(Mismatch("asks", expect["asks"], [f for f in expect["asks"] if f in asked]))
    if "does_not_ask" in expect:
        wrongly = [f for f in expect["does_not_ask"] if f in asked or f in result.unanswered_alarm]
        if wrongly:
            out.append(Mismatch("does_not_ask", [], wrongly))
    fired = set(result.fired_ids())
    if "fired" in expect:
        missing = [r for r in expect["fired"] if r not in fired]
        if missing:
            out.append(Mismatch("fired", expect["fired"], [r for r in expect["fired"] if r in fired]))
    if "not_fired" in expect:
        wrongly = [r for r in expect["not_fired"] if r in fired]
        if wrongly:
            out.append(Mismatch("not_fired", [], wrongly))
    return out


def _num(value) -> float | None:
    return None if value is None else float(value)


def checked_conclusions(scenarios: list[Scenario]) -> set[str]:
    """The conclusions (as "urgency:emergency", "action:mri_whole_spine", ...) some scenario checks."""
    out: set[str] = set()
    for s in scenarios:
        e = s.expect
        if "urgency" in e:
            out.add(f"urgency:{e['urgency']}")
        out.update(f"action:{c}" for c in e.get("actions", {}))
        out.update(f"warning:{c}" for c in e.get("warnings", ()))
        out.update(f"differential:{c}" for c in e.get("differential", ()))
    return out
