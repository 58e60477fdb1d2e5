"""The decision graph of a knowledge base as a networkx DiGraph, and the questions it answers.

Nodes (stable string ids):
    fact:<name>            input facts (kind "input_fact") and derived facts (kind "derived_fact")
    rule:<id>              rules (kind "rule")
    urgency:<level>        urgency levels
    action:<code>          actions, warning:<code> warnings, differential:<code> differential entries

Edges:
    fact -> rule           relation "reads": the rule's condition tests the fact: the values it needs
                           (`values`, in words `needs`), whether a test sits under a `not` (`negated`),
                           and whether a "no" or a `not` satisfies it (`negative`)
    rule -> fact           relation "derives": the rule concludes a derived fact (value, negative)
    rule -> conclusion     relation "urgency" / "action" (within_hours, window) / "warning" / "differential"

Graph attributes: name, title, version, review_status, sections ((id, title) in guideline order),
references (number -> full citation), top_urgency (the most urgent level, e.g. "emergency"). Rules, urgency
levels and the edges between them carry `top` when they conclude / are that level.

Every attribute here is a *meaning* (kind, label, section, citations, texts); how anything is drawn is
decided elsewhere (`style`, `dot`). Node and edge order follows the knowledge base (vocabulary order,
guideline order of rules, catalogue order), so everything built from the graph is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from lumbar_kb.engine.analysis.structure import resolve_name
from lumbar_kb.engine.model import All, AnyOf, Condition, Derive, KnowledgeBase, Not, Recommend, Rule, SetUrgency, Test
from lumbar_kb.visualize.errors import UnknownNodeError
from lumbar_kb.visualize.text import describe_condition, values_phrase

FACT, RULE = "fact", "rule"
CONCLUSION_KINDS = ("urgency", "action", "warning", "differential")
NODE_KINDS = ("input_fact", "derived_fact", "rule", *CONCLUSION_KINDS)


def fact_id(name: str) -> str:
    return f"{FACT}:{name}"


def rule_id(rid: str) -> str:
    return f"{RULE}:{rid}"


def conclusion_id(kind: str, code: str) -> str:
    return f"{kind}:{code}"


# ---- building --------------------------------------------------------------------------------------------------
def build_graph(kb: KnowledgeBase) -> nx.DiGraph:
    """Every fact, rule and catalogue entry a node; every fact a condition tests, and every conclusion, an edge."""
    top = max(kb.catalog["urgency"].values(), key=lambda e: e.rank).code
    g = nx.DiGraph(
        name=kb.name,
        title=kb.title,
        version=kb.version,
        review_status=kb.review_status,
        sections=tuple((s.id, s.title) for s in kb.sections.values()),
        references={n: r.cite() for n, r in sorted(kb.references.items())},
        top_urgency=top,
    )
    for fact in kb.facts.values():
        g.add_node(
            fact_id(fact.name),
            kind="derived_fact" if fact.derived else "input_fact",
            name=fact.name,
            label=fact.meaning,
            question=fact.question,
            type=fact.type,
            values=tuple(fact.values),
            alarm=fact.alarm,
        )
    for rule in kb.rules:
        g.add_node(rule_id(rule.id), **_rule_meaning(rule, kb, top))
    for kind in CONCLUSION_KINDS:
        for entry in sorted(kb.catalog[kind].values(), key=lambda e: (-e.rank, e.order)):
            extra = {"rank": entry.rank, "top": entry.code == top} if kind == "urgency" else {}
            g.add_node(
                conclusion_id(kind, entry.code), kind=kind, name=entry.code, label=entry.label, text=entry.text, **extra
            )
    for rule in kb.rules:
        r = rule_id(rule.id)
        for name, tests in _tests_by_fact(rule.when).items():
            fact = kb.facts[name]
            required: set = set()
            for test, negated in tests:
                required |= (set(fact.values) - set(test.values)) if negated else set(test.values)
            negated = any(n for _, n in tests)
            values = tuple(v for v in fact.values if v in required)
            g.add_edge(
                fact_id(name),
                r,
                relation="reads",
                values=values,
                needs=values_phrase(fact, values),
                negated=negated,
                negative=negated or values == (False,),
            )
        for c in rule.then:
            if isinstance(c, SetUrgency):
                g.add_edge(r, conclusion_id("urgency", c.level), relation="urgency", top=c.level == top)
            elif isinstance(c, Recommend):
                attrs = {"within_hours": c.within_hours, "window": c.window} if c.kind == "action" else {}
                g.add_edge(r, conclusion_id(c.kind, c.code), relation=c.kind, **attrs)
            elif isinstance(c, Derive):
                g.add_edge(r, fact_id(c.fact), relation="derives", value=c.value, negative=c.value is False)
            else:  # pragma: no cover - the model has no other conclusion
                raise TypeError(c)
    return g


def _rule_meaning(rule: Rule, kb: KnowledgeBase, top: str) -> dict:
    levels = [c.level for c in rule.then if isinstance(c, SetUrgency)]
    urgency = max(levels, key=kb.urgency_rank) if levels else None
    return {
        "kind": "rule",
        "name": rule.id,
        "label": rule.title,
        "title": rule.title,
        "section": rule.section,
        "section_title": kb.sections[rule.section].title,
        "citations": tuple(sorted(rule.cites)),
        "references": tuple(kb.references[n].cite() for n in sorted(rule.cites)),
        "rationale": rule.rationale,
        "interpretation": rule.interpretation,
        "condition": "\n".join(describe_condition(rule.when, kb.facts)),
        "urgency": urgency,
        "top": urgency == top,
    }


def _tests_by_fact(cond: Condition) -> dict[str, list[tuple[Test, bool]]]:
    """Each fact the condition tests, with every test of it and whether that test sits under a `not`."""
    out: dict[str, list[tuple[Test, bool]]] = {}

    def walk(c: Condition, negated: bool) -> None:
        if isinstance(c, Test):
            out.setdefault(c.fact, []).append((c, negated))
        elif isinstance(c, (All, AnyOf)):
            for item in c.items:
                walk(item, negated)
        elif isinstance(c, Not):
            walk(c.item, not negated)
        else:  # pragma: no cover - the model has no other condition
            raise TypeError(c)

    walk(cond, False)
    return out


# ---- questions ---------------------------------------------------------------------------------------------------
def ordered(g: nx.DiGraph, nodes: Iterable[str]) -> list[str]:
    """Nodes in the graph's own (knowledge base) order."""
    keep = set(nodes)
    return [n for n in g.nodes if n in keep]


def upstream(g: nx.DiGraph, node: str) -> list[str]:
    """The pathway to a node: the node and everything that can lead to it (facts, rules, derived facts)."""
    return ordered(g, nx.ancestors(g, node) | {node})


def influence(g: nx.DiGraph, node: str) -> list[str]:
    """What a node can influence: the node and everything reachable from it (rules, derived facts, conclusions)."""
    return ordered(g, nx.descendants(g, node) | {node})


def pathway(g: nx.DiGraph, node: str) -> list[str]:
    """What leads to a node and what it leads to: the review view of one pathway."""
    return ordered(g, nx.ancestors(g, node) | nx.descendants(g, node) | {node})


def restrict(g: nx.DiGraph, nodes: Iterable[str]) -> nx.DiGraph:
    """An independent copy of the subgraph on `nodes`, keeping the graph's node and edge order.

    (networkx's `subgraph` views iterate a set of the kept nodes, whose order changes between runs.)
    """
    keep = set(nodes)
    sub = nx.DiGraph(**g.graph)
    sub.add_nodes_from((n, g.nodes[n]) for n in g.nodes if n in keep)
    sub.add_edges_from((u, v, d) for u, v, d in g.edges(data=True) if u in keep and v in keep)
    return sub


def resolve(g: nx.DiGraph, name: str) -> str:
    """A node id from what a user typed: a full id (`action:mri_whole_spine`) or a bare name that only one
    node has (`mri_whole_spine`, `red_flag.leg_weakness`), case ignored where unambiguous. The resolver
    `explain` uses too (`engine.analysis.structure.resolve_name`). Raises UnknownNodeError with a suggestion,
    for an empty name too."""
    return resolve_name(
        g.nodes, name, subject="--focus", unknown="no node '{}' in the decision graph", error=UnknownNodeError
    )
