"""The reference evaluator: plain-Python forward chaining over the same model, no durable-rules.

It is the test oracle (the engine must agree with it exactly, firing order included) and the speed
baseline of the benchmark. Its conflict resolution is the one durable-rules was measured to use with our
compiled rulesets: among the rules whose condition is true and that have not fired, fire the one with the
highest `priority`, then the earliest in definition order; re-check after every firing, to quiescence.
Conditions only become true as facts become known, and facts never change once known, so a ready rule
stays ready: an agenda heap plus re-checking only the rules that read a newly derived fact is exact.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from lumbar_kb.engine.errors import ContradictoryRules
from lumbar_kb.engine.model import KnowledgeBase, Value
from lumbar_kb.engine.prepared import first_deriver, prepared
from lumbar_kb.engine.trace import Firing, Trace


class ReferenceEvaluator:
    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        plan = prepared(kb)
        self._rules = sorted(plan.rules.values(), key=lambda p: p.key)  # conflict-resolution order
        self._readers = plan.readers

    def run(self, inputs: Mapping[str, Value]) -> Trace:
        trace = Trace(dict(inputs))
        facts = dict(inputs)
        agenda = [(p.key, p.rule.id, p) for p in self._rules if p.when(facts) is True]
        self._chain(agenda, facts, set(), trace)
        return trace

    def extend(self, trace: Trace, fact: str, value: Value) -> list:
        """The rules that would fire in addition if the unanswered `fact` were answered `value`.

        Facts only become known, never change, so everything that fired still fires: chaining from the
        rules that read `fact` gives exactly the difference a full re-evaluation would find, in a fraction
        of the time. Used by the look-ahead (`could_escalate`); see `extender` for many answers at once."""
        return self.extender(trace)(fact, value)

    def extender(self, trace: Trace):
        """`extend` for one trace and many trial answers, sharing the work that does not depend on them."""
        base = {**trace.inputs, **trace.derived}
        fired = frozenset(f.rule for f in trace.firings)
        readers = self._readers

        def added(fact: str, value: Value) -> list:
            facts = {**base, fact: value}
            agenda = [
                (p.key, p.rule.id, p) for p in readers.get(fact, ()) if p.rule.id not in fired and p.when(facts) is True
            ]
            return self._chain(agenda, facts, set(fired), None) if agenda else []

        return added

    def _chain(self, agenda: list, facts: dict, fired: set, trace: Trace | None) -> list:
        """Fire to quiescence: the best ready rule first, re-checking the readers of each derived fact."""
        heapq.heapify(agenda)
        new = []
        while agenda:
            _, rule_id, step = heapq.heappop(agenda)
            if rule_id in fired:
                continue
            fired.add(rule_id)
            new.append(step.rule)
            if trace is not None:
                trace.firings.append(Firing(rule_id, len(trace.firings) + 1, step.support(facts)))
            for derive in step.derives:
                known = facts.get(derive.fact)
                if known is not None:
                    if known != derive.value:
                        fired_steps = (p for p in self._rules if p.rule.id in fired)
                        first = first_deriver(fired_steps, derive.fact, known)
                        raise ContradictoryRules(derive.fact, first, known, step.rule, derive.value)
                    continue
                facts[derive.fact] = derive.value
                if trace is not None:
                    trace.derived[derive.fact] = derive.value
                for reader in self._readers.get(derive.fact, ()):
                    if reader.rule.id not in fired and reader.when(facts) is True:
                        heapq.heappush(agenda, (reader.key, reader.rule.id, reader))
        return new
