"""One patient's path over the decision graph: what fired, in which order, through which edges.

Built from the engine's `Result` (never by re-evaluating anything here), so the picture shows exactly what
the engine did. States are meanings, looked up in the style table when drawing:

    rules        fired | not-fired
    facts        fact-true | fact-false | fact-unknown | fact-value (an answered enum, e.g. radiograph)
    conclusions  concluded | not-concluded   (the result's urgency counts as concluded, even the default)
    edges        used | unused               (a fired rule's matched facts in, all its conclusions out)
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from lumbar_kb.engine.model import Value
from lumbar_kb.engine.result import Result
from lumbar_kb.visualize.graph import CONCLUSION_KINDS, conclusion_id, fact_id, rule_id

FACT_STATES = ("fact-true", "fact-false", "fact-unknown", "fact-value")
RULE_STATES = ("fired", "not-fired")
CONCLUSION_STATES = ("concluded", "not-concluded")
EDGE_STATES = ("used", "unused")


@dataclass(frozen=True)
class Overlay:
    urgency: str
    fired: dict  # dict[node id, firing order]
    values: dict  # dict[fact node id, Value | None]: the answered inputs and the derived facts
    used: frozenset  # frozenset[(tail, head)]
    concluded: frozenset  # frozenset[node id]
    patient: str = ""  # how to name the patient in a title (usually the file name)

    def node_state(self, g: nx.DiGraph, node: str) -> str:
        kind = g.nodes[node]["kind"]
        if kind == "rule":
            return "fired" if node in self.fired else "not-fired"
        if kind in CONCLUSION_KINDS:
            return "concluded" if node in self.concluded else "not-concluded"
        return fact_state(self.values.get(node))

    def edge_state(self, tail: str, head: str) -> str:
        return "used" if (tail, head) in self.used else "unused"

    def order(self, node: str) -> int | None:
        return self.fired.get(node)


def fact_state(value: Value | None) -> str:
    if value is None:
        return "fact-unknown"
    if value is True:
        return "fact-true"
    if value is False:
        return "fact-false"
    return "fact-value"


def overlay_from_result(g: nx.DiGraph, result: Result, patient: str = "") -> Overlay:
    """The overlay of one evaluation. Raises ValueError if the result names a rule the graph lacks
    (a result from another knowledge base)."""
    fired: dict[str, int] = {}
    used: set[tuple[str, str]] = set()
    concluded: set[str] = {conclusion_id("urgency", result.urgency)}
    for firing in result.fired:
        node = rule_id(firing.rule)
        if node not in g:
            raise ValueError(f"rule {firing.rule} fired but is not in the graph (another knowledge base?)")
        fired[node] = firing.order
        for name in firing.matched:
            used.add((fact_id(name), node))
        for head in g.successors(node):
            used.add((node, head))
            if g.nodes[head]["kind"] in CONCLUSION_KINDS:
                concluded.add(head)
    known = {**result.inputs, **result.derived}
    values = {n: known.get(g.nodes[n]["name"]) for n, k in g.nodes(data="kind") if k in ("input_fact", "derived_fact")}
    return Overlay(
        urgency=result.urgency,
        fired=fired,
        values=values,
        used=frozenset(used),
        concluded=frozenset(concluded),
        patient=patient,
    )
