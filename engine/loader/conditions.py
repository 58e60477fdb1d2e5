"""Conditions as data: `fact`/`all`/`any`/`not` mappings checked against the vocabulary and built into the model."""

from __future__ import annotations

from typing import Any

from lumbar_kb.engine.errors import Problem, did_you_mean
from lumbar_kb.engine.loader.schema import typename
from lumbar_kb.engine.logic import MAX_CONDITION_DEPTH
from lumbar_kb.engine.model import All, AnyOf, Condition, Fact, Not, Test
from lumbar_kb.engine.source import Positions

CONDITION_HEADS = ("fact", "all", "any", "not")


class Conditions:
    """Builds conditions (all/any/not/fact tests) against a vocabulary, collecting problems."""

    def __init__(self, facts: dict[str, Fact], problems: list[Problem]):
        self.facts = facts
        self.problems = problems

    def condition(self, raw: dict, where: tuple, pos: Positions, subject: str, depth: int = 1) -> Condition | None:
        if depth > MAX_CONDITION_DEPTH:
            self.problems.append(
                pos.problem(where, f"conditions nested more than {MAX_CONDITION_DEPTH} deep: refused", subject)
            )
            return None
        heads = [k for k in CONDITION_HEADS if k in raw]
        if len(heads) != 1:
            message = (
                "a condition needs one of fact/all/any/not"
                if not heads
                else f"a condition has exactly one of fact/all/any/not, not {' and '.join(heads)}"
            )
            self.problems.append(pos.problem(where, message, subject))
            return None
        head = heads[0]
        if head == "fact":
            return self.test(raw, where, pos, subject)
        extra = [k for k in raw if k != head]
        if extra:
            self.problems.append(
                pos.problem(where + (extra[0],), f"'{extra[0]}' does not belong beside '{head}'", subject)
            )
            return None
        if head == "not":
            item = self.condition(raw["not"], where + ("not",), pos, subject, depth + 1)
            return None if item is None else Not(item)
        parsed = [self.condition(c, where + (head, i), pos, subject, depth + 1) for i, c in enumerate(raw[head])]
        items = tuple(i for i in parsed if i is not None)
        if len(items) != len(parsed):
            return None
        return All(items) if head == "all" else AnyOf(items)

    def test(self, raw: dict, where: tuple, pos: Positions, subject: str) -> Test | None:
        name = raw["fact"]
        if name not in self.facts:
            self.problems.append(
                pos.problem(where + ("fact",), f"unknown fact '{name}'", subject, did_you_mean(name, self.facts))
            )
            return None
        fact = self.facts[name]
        tests = [k for k in ("is", "in") if k in raw]
        if len(tests) != 1:
            self.problems.append(pos.problem(where, f"a test of '{name}' needs exactly one of 'is' or 'in'", subject))
            return None
        values = [raw["is"]] if tests[0] == "is" else list(raw["in"])
        for i, value in enumerate(values):
            at = where + (("is",) if tests[0] == "is" else ("in", i))
            if not self.value_ok(fact, value, at, pos, subject):
                return None
        return Test(name, frozenset(values), pos.at(where)[0])

    def value_ok(self, fact: Fact, value: Any, at: tuple, pos: Positions, subject: str) -> bool:
        if fact.type == "bool" and not isinstance(value, bool):
            self.problems.append(pos.problem(at, f"'{fact.name}' is true or false, not {typename(value)}", subject))
            return False
        if fact.type == "enum" and value not in fact.values:
            self.problems.append(
                pos.problem(
                    at,
                    f"'{value}' is not a value of '{fact.name}' ({', '.join(map(str, fact.values))})",
                    subject,
                    did_you_mean(str(value), [str(v) for v in fact.values]),
                )
            )
            return False
        return True
