"""What one evaluation produced before interpretation: the rules that fired, in order, with their support.

Both evaluators (the durable-rules `session` and the plain-Python `reference`) produce a `Trace`;
`result.build` turns a Trace into the user-facing Result, so the two can only differ in the trace itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Value


@dataclass(frozen=True)
class Firing:
    rule: str
    order: int  # 1-based firing order
    matched: dict  # dict[str, Value]: the facts that made the rule's condition true when it fired


@dataclass
class Trace:
    inputs: dict  # dict[str, Value]: the patient's answered input facts
    firings: list = field(default_factory=list)  # list[Firing]
    derived: dict = field(default_factory=dict)  # dict[str, Value], in derivation order

    def facts(self) -> dict[str, Value]:
        return {**self.inputs, **self.derived}
