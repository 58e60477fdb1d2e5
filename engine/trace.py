"""What one evaluation produced before interpretation: the rules that fired, in order, with their support.

Both evaluators (the durable-rules `session` and the plain-Python `reference`) produce a `Trace`;
`result.build` turns a Trace into the user-facing Result, so the two can only differ in the trace itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from lumbar_kb.engine.model import Value


class Firing:
    """One rule firing: the rule's id, its 1-based firing `order`, and `matched`, the facts that made the rule's
    condition true when it fired (its evidence, cited in the trace).

    The evaluators record the evidence as a way to work it out (`evidence`: the rule's supporter, the trace's
    inputs, its derived facts, how many of them were known when the rule fired, and a mapping the firings of
    one trace share, of the facts known after each number of derivations): a cohort row never reads it, so it
    costs nothing there; the first read of `matched` works it out from exactly the facts known at the firing,
    and keeps it. Read-only, compared by value."""

    __slots__ = ("rule", "order", "_matched", "_evidence")

    def __init__(self, rule: str, order: int, matched: dict | None = None, evidence: tuple | None = None):
        if (matched is None) == (evidence is None):
            raise TypeError("a Firing needs its matched facts or the evidence to work them out, not both")
        self.rule = rule
        self.order = order
        self._matched = matched
        self._evidence = evidence  # (supporter, inputs, derived, how many derived facts were known, shared facts)

    @property
    def matched(self) -> dict:  # dict[str, Value]
        if self._matched is None:
            self._matched, self._evidence = self._evidence[0](self._known()), None  # type: ignore[index]
        return self._matched

    def values_of(self, names: tuple[str, ...]) -> tuple | None:
        """The values (None: unknown) the facts `names` had when the rule fired, without working out `matched`;
        None once the evidence is gone (`matched` read, or a firing made with its matched facts). `matched` is
        a function of the rule and the values of the facts its condition reads (`Rule.reads`), so those values
        identify it: a cohort numbering distinct steps looks them up instead of walking the supporter."""
        if self._evidence is None:
            return None
        return tuple(map(self._known().get, names))

    def _known(self) -> dict:
        _, inputs, derived, known, facts_after = self._evidence  # type: ignore[misc]
        facts = facts_after.get(known)
        if facts is None:  # the first firing read after this many derivations: the facts known then
            facts = facts_after[known] = {**inputs, **dict(itertools.islice(derived.items(), known))}
        return facts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Firing):
            return NotImplemented
        return (self.rule, self.order, self.matched) == (other.rule, other.order, other.matched)

    def __repr__(self) -> str:
        return f"Firing(rule={self.rule!r}, order={self.order!r}, matched={self.matched!r})"

    def __reduce__(self) -> tuple:
        return (Firing, (self.rule, self.order, self.matched))


@dataclass
class Trace:
    inputs: dict  # dict[str, Value]: the patient's answered input facts
    firings: list = field(default_factory=list)  # list[Firing]
    derived: dict = field(default_factory=dict)  # dict[str, Value], in derivation order

    def facts(self) -> dict[str, Value]:
        return {**self.inputs, **self.derived}
