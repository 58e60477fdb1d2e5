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
from typing import Mapping

from .errors import EngineError
from .logic import evaluate, support
from .model import KnowledgeBase, Value
from .trace import Firing, Trace


class ReferenceEvaluator:
    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self._keyed = [((-r.priority, r.order), r) for r in kb.rules]
        self._readers: dict[str, list] = {}
        for key, rule in self._keyed:
            for fact in rule.reads:
                self._readers.setdefault(fact, []).append((key, rule))

    def run(self, inputs: Mapping[str, Value]) -> Trace:
        trace = Trace(dict(inputs))
        facts = dict(inputs)
        agenda = [(key, rule.id, rule) for key, rule in self._keyed if evaluate(rule.when, facts) is True]
        heapq.heapify(agenda)
        fired: set[str] = set()
        while agenda:
            _, rule_id, rule = heapq.heappop(agenda)
            if rule_id in fired:
                continue
            fired.add(rule_id)
            trace.firings.append(Firing(rule_id, len(trace.firings) + 1, support(rule.when, facts)))
            for derive in rule.derives():
                known = facts.get(derive.fact)
                if known is not None:
                    if known != derive.value:
                        raise EngineError(f"rule {rule_id} derives {derive.fact}={derive.value!r} but it was "
                                          f"already derived as {known!r}")
                    continue
                facts[derive.fact] = derive.value
                trace.derived[derive.fact] = derive.value
                for key, reader in self._readers.get(derive.fact, ()):
                    if reader.id not in fired and evaluate(reader.when, facts) is True:
                        heapq.heappush(agenda, (key, reader.id, reader))
        return trace
