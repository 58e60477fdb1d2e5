"""Patient files: read, validate against the fact vocabulary, and return the answered input facts.

A patient file is a YAML or JSON mapping of fact name to value. A fact left out, or given as null, is
unknown. Two optional keys describe the file rather than the patient: `id` and `note`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lumbar_kb.engine.errors import PatientError, Problem, did_you_mean
from lumbar_kb.engine.logic import breaks, contradicts_only_if
from lumbar_kb.engine.model import Fact, KnowledgeBase, Relation, Test, Value, condition_facts
from lumbar_kb.engine.source import DocumentError, Positions, glued_colon_hint, read_document

META_KEYS = ("id", "note")
MAX_HINTS = 50  # "did you mean" costs ~0.1 ms a key: computed for the first problems, the ones printed


def load_patient(path: Path | str, kb: KnowledgeBase, contradictions: str = "refuse") -> dict[str, Value]:
    try:
        data, pos = read_document(path)
    except DocumentError as exc:
        raise PatientError(exc.problem) from None
    return parse_patient(data, pos, kb, contradictions=contradictions)


def parse_patient(
    data: Any, pos: Positions, kb: KnowledgeBase, at: tuple = (), contradictions: str = "refuse"
) -> dict[str, Value]:
    """Validate one patient mapping; raise PatientError listing every problem, return the known inputs.

    `contradictions="read"` returns answers that break a relation instead of refusing them (everything else is still
    refused): the caller then evaluates them under the most urgent reading they allow (`readings`), so a
    contradictory record never drops an alarm."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        hint = glued_colon_hint(data) if isinstance(data, str) else None
        raise PatientError(pos.problem(at, f"a patient must be a mapping of fact: value, not {kind}", hint=hint))
    problems: list[Problem] = []
    inputs: dict[str, Value] = {}
    for key, value in data.items():
        where = at + (key,)
        if key in META_KEYS:
            if not isinstance(value, (str, int)):
                problems.append(pos.problem(where, f"'{key}' must be text or a number"))
            continue
        fact = kb.facts.get(key)
        if fact is None:
            hint = (
                (glued_colon_hint(key) if ":" in key else did_you_mean(key, [f.name for f in kb.input_facts]))
                if len(problems) < MAX_HINTS
                else None  # only the first are shown
            )
            problems.append(pos.problem(where, "unknown fact", f"fact '{key}'", hint, key=True))
            continue
        if fact.derived:
            problems.append(
                pos.problem(where, "is derived by the rules and cannot be given in a patient file", f"fact '{key}'")
            )
            continue
        if value is None:
            continue  # explicitly unknown
        if fact.type == "bool" and not isinstance(value, bool):
            problems.append(
                pos.problem(
                    where,
                    f"must be true or false (or null for unknown), not {_shown(value)}",
                    f"fact '{key}'",
                    _bool_hint(value),
                )
            )
            continue
        if fact.type == "enum" and (not isinstance(value, str) or value not in fact.values):
            problems.append(
                pos.problem(
                    where,
                    f"must be one of {', '.join(map(str, fact.values))} (or null), not {_shown(value)}",
                    f"fact '{key}'",
                    did_you_mean(str(value), [str(v) for v in fact.values]),
                )
            )
            continue
        inputs[key] = value
    for name in inputs:
        fact = kb.facts[name]
        if contradicts_only_if(fact, inputs):
            problems.append(pos.problem(at + (name,), _refused_by_only_if(fact, inputs), f"fact '{name}'"))
    for relation in kb.relations if contradictions == "refuse" else ():
        if not problems and breaks(relation, inputs):
            problems.append(_contradiction(relation, inputs, pos, at))
    if problems:
        raise PatientError(problems)
    return {f.name: inputs[f.name] for f in kb.input_facts if f.name in inputs}  # vocabulary order


@dataclass(frozen=True)
class Contradiction:
    """Answers that break a relation (facts.yaml `relations:`): both sides as given, why they cannot both hold, and
    the questions whose answers settle it."""

    relation: str
    given: dict  # fact -> the answer given, for every answered fact the relation reads (both sides)
    because: str
    settle: tuple  # the facts whose questions settle it: the relation's premise first, then what it implies

    def to_dict(self) -> dict:
        return {
            "relation": self.relation,
            "given": dict(self.given),
            "because": self.because,
            "settle": list(self.settle),
        }


def contradictions(kb: KnowledgeBase, inputs: dict[str, Value]) -> list[Contradiction]:
    """The relations the answers break, each with both answers named."""
    found = []
    for relation in kb.relations:
        if breaks(relation, inputs):
            other = relation.implies if relation.implies is not None else relation.excludes
            assert other is not None
            named = list(dict.fromkeys((*condition_facts(relation.when), *condition_facts(other))))
            given = {f: inputs[f] for f in named if f in inputs}
            found.append(Contradiction(relation.id, given, " ".join(relation.because.split()), tuple(named)))
    return found


MAX_READINGS = 64  # readings tried for one patient at most (two per broken relation; a few relations in practice)


def readings(kb: KnowledgeBase, inputs: dict[str, Value]) -> list[dict[str, Value]]:
    """The patients the answers allow once each broken relation is settled one way or the other, in order: trust the
    premise (make what it implies true, or leave what it excludes unknown), or trust the other side (leave the
    premise's answers unknown: an answer not believed is unknown, never its opposite, so it never reassures).
    Every reading keeps every relation and only_if; none is empty for a patient whose only problem is a broken
    relation. The caller evaluates each and keeps the most urgent."""
    out: list[dict[str, Value]] = []
    todo = [dict(inputs)]
    seen: set[tuple] = set()
    while todo and len(seen) < MAX_READINGS:
        facts = todo.pop(0)
        key = tuple(sorted(facts.items(), key=lambda kv: kv[0]))
        if key in seen:
            continue
        seen.add(key)
        broken = next((r for r in kb.relations if breaks(r, facts)), None)
        if broken is None:
            if not any(contradicts_only_if(kb.facts[name], facts) for name in facts):
                out.append(facts)
            continue
        premise = condition_facts(broken.when)
        if broken.implies is not None:
            trusted = dict(facts)
            if isinstance(broken.implies, Test) and len(broken.implies.values) == 1:
                trusted[broken.implies.fact] = next(iter(broken.implies.values))
            else:  # what it implies cannot be set from the condition alone: leave it unknown
                for name in condition_facts(broken.implies):
                    trusted.pop(name, None)
        else:
            assert broken.excludes is not None
            trusted = {k: v for k, v in facts.items() if k not in condition_facts(broken.excludes)}
        doubted = {k: v for k, v in facts.items() if k not in premise}
        todo += [trusted, doubted]
    return [{f.name: r[f.name] for f in kb.input_facts if f.name in r} for r in out]


def _contradiction(relation: Relation, inputs: dict[str, Value], pos: Positions, at: tuple) -> Problem:
    """One problem naming both answers that contradict each other, at the later one's line."""
    other = relation.implies if relation.implies is not None else relation.excludes
    assert other is not None
    named = [f for f in (*condition_facts(relation.when), *condition_facts(other)) if f in inputs]
    named = list(dict.fromkeys(named))
    lines = {f: pos.at(at + (f,))[0] for f in named}
    answers = " and ".join(
        f"{f}: {_label(inputs[f])}" + (f" (line {lines[f]})" if lines[f] is not None else "") for f in named
    )
    last = max(named, key=lambda f: lines[f] or 0)
    return pos.problem(
        at + (last,),
        f"contradictory answers: {answers} ({relation.because})",
        f"relation {relation.id}",
        "settle one of the answers; `lumbar-kb evaluate --contradictions most-urgent` evaluates it under the most "
        "urgent reading the answers allow",
    )


def _refused_by_only_if(fact: Fact, inputs: dict[str, Value]) -> str:
    """What was given that refuses the fact, and what would allow it (an unanswered condition allows it too)."""
    assert fact.only_if is not None
    given = [f"{name} is {_label(inputs[name])}" for name in condition_facts(fact.only_if) if name in inputs]
    allowed = fact.only_if.describe() if isinstance(fact.only_if, Test) else "its only_if condition holds"
    return (
        f"cannot be given here, because this file says {' and '.join(given)}; {fact.name} may be given only "
        f"when {allowed}, or while that is unanswered (leave {fact.name} out, or correct "
        f"{' and '.join(name for name in condition_facts(fact.only_if) if name in inputs)})"
    )


def _label(value: Value) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _shown(value: Any) -> str:
    return (
        f"'{value}'"
        if isinstance(value, str)
        else ("a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else repr(value))
    )


def _bool_hint(value: Any) -> str | None:
    if isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false", "y", "n"):
        return "write true or false without quotes"
    if value in (0, 1):
        return "write true or false, not a number"
    return None


def random_patient(kb: KnowledgeBase, rng: random.Random) -> dict[str, Value]:
    """A random valid patient for agreement tests and benchmarks.

    Each patient draws its own mix (how many questions are unanswered, how often a yes/no answer is yes),
    so the sample holds both sparse first-contact patients and fully answered ones, e.g. all seven
    neurological questions answered no. A value contradicting its fact's `only_if` is left unknown.
    """
    p_unknown = rng.choice((0.0, 0.1, 0.3, 0.6, 0.9))
    p_true = rng.choice((0.05, 0.15, 0.35, 0.6))
    inputs: dict[str, Value] = {}
    for fact in kb.input_facts:
        if rng.random() < p_unknown:
            continue
        if fact.type == "bool":
            inputs[fact.name] = rng.random() < p_true
        else:
            inputs[fact.name] = rng.choice(fact.values)
    for fact in kb.input_facts:
        if contradicts_only_if(fact, inputs):
            del inputs[fact.name]
    for relation in kb.relations:  # a contradictory pair loses the answer the relation is about
        while breaks(relation, inputs):
            del inputs[next(f for f in reversed(condition_facts(relation.when)) if f in inputs)]
    return inputs
