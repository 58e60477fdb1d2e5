"""The derivation graph's order and cycles (engine/analysis/structure.py) are worked out by hand, without
networkx: on generated graphs they must be networkx's own answers (its lexicographic topological sort, its
strongly connected components), and every reported cycle a real cycle of the graph."""

from __future__ import annotations

from types import SimpleNamespace

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from lumbar_kb.engine.analysis.structure import Structure, _components, _cycles

NAMES = [f"f{i}" for i in range(7)]


@st.composite
def graphs(draw, acyclic: bool):
    n = draw(st.integers(1, len(NAMES)))
    names = draw(st.permutations(NAMES[:n]))  # the vocabulary's order differs from the names' order
    graph: dict = {name: {} for name in names}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if (not acyclic or i < j) and draw(st.integers(0, 3)) == 0:
                graph[a][b] = [f"rule{i}.{j}"]
    return list(names), graph


def _nx(graph: dict) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(graph)
    g.add_edges_from((a, b) for a in graph for b in graph[a])
    return g


def _structure(names: list, graph: dict) -> Structure:
    kb = SimpleNamespace(facts=dict.fromkeys(names))
    return Structure(kb, {}, {}, {}, graph, _cycles(kb, graph))  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(graphs(acyclic=True))
def test_the_order_of_derived_facts_is_networkxs_lexicographic_topological_sort(drawn):
    names, graph = drawn
    order = {n: i for i, n in enumerate(names)}
    s = _structure(names, graph)
    assert s.acyclic
    assert s.topological_derived() == list(nx.lexicographical_topological_sort(_nx(graph), key=order.__getitem__))


@settings(max_examples=200, deadline=None)
@given(graphs(acyclic=False))
def test_components_are_networkxs_and_each_cycle_is_a_cycle_of_the_graph(drawn):
    names, graph = drawn
    g = _nx(graph)
    ours = sorted(sorted(c) for c in _components(graph))
    assert ours == sorted(sorted(c) for c in nx.strongly_connected_components(g))
    cycles = _cycles(SimpleNamespace(facts=dict.fromkeys(names)), graph)
    cyclic = [c for c in nx.strongly_connected_components(g) if len(c) > 1 or any(g.has_edge(n, n) for n in c)]
    assert len(cycles) == len(cyclic)
    for cycle in cycles:
        nodes = [a for a, _ in cycle]
        for (a, rule), b in zip(cycle, nodes[1:] + nodes[:1], strict=True):
            assert rule in graph[a][b], (cycle, graph)
        assert any(set(nodes) <= c for c in cyclic)
