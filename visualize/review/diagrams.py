"""DOT for the review pack's diagrams, small enough to read on a screen, every rule a link to its card.

    overview      the guideline's sections as nodes, in guideline order top to bottom, each with its number of
                  rules and the most urgent level it can conclude; an arrow where one section's derived fact is
                  read by another's rules
    section       one section: the findings its rules read, its rules, what they conclude (left to right)
    patient path  the rules one patient fired, in firing order, with the facts they matched and what they
                  concluded; a conclusion the result overrides (an urgency below the result's, a window
                  later than the result's) is drawn dashed and grey and labelled "overridden"

Nodes are drawn by meaning through `visualize.style` and labelled by `visualize.dot`, the same as
`lumbar-kb graph`; a rule node carries `href` to its rule card, so graphviz's SVG makes it a link.
"""

from __future__ import annotations

import graphviz
import networkx as nx
from graphviz.quoting import attr_list, nohtml, quote

from lumbar_kb.engine.model import KnowledgeBase
from lumbar_kb.engine.result import Result
from lumbar_kb.visualize import style
from lumbar_kb.visualize.dot import edge_label, edge_meanings, node_label, node_meanings, tooltip
from lumbar_kb.visualize.graph import conclusion_id, fact_id, rule_id
from lumbar_kb.visualize.review.content import rule_anchor, section_page
from lumbar_kb.visualize.text import hours_phrase, wrap

RULES_PAGE = "rules.html"
OVERRIDDEN = {"style": "filled,dashed", "fillcolor": "#f4f4f4", "color": "#9e9e9e", "fontcolor": "#757575"}


def _escape(text: str) -> str:
    return nohtml(text.replace("\\", "\\\\").replace("\n", "\\n"))


def _digraph(name: str, rankdir: str) -> graphviz.Digraph:
    graph_attr = dict(style.GRAPH)
    graph_attr.update(rankdir=rankdir, ranksep="0.6", nodesep="0.25", fontsize="14")
    return graphviz.Digraph(
        name=name, graph_attr=graph_attr, node_attr=dict(style.NODE_DEFAULTS), edge_attr=dict(style.EDGE_DEFAULTS)
    )


def _node(
    dot: graphviz.Digraph, g: nx.DiGraph, node: str, extra: list[str] | None = None, href_prefix: str = ""
) -> None:
    meanings = node_meanings(g, node, None) + (extra or [])
    attrs = style.node_style(*(m for m in meanings if m != "overridden"))
    if "overridden" in meanings:  # a conclusion the result overrides: greyed and dashed, never highlighted
        attrs.update(OVERRIDDEN)
    attrs.update(id=node, tooltip=_escape(tooltip(g, node)), **{"class": " ".join(meanings)})
    if g.nodes[node]["kind"] == "rule":
        attrs.update(href=f"{href_prefix}{RULES_PAGE}#{rule_anchor(g.nodes[node]['name'])}", target="_top")
    label = node_label(g, node, None)
    if "overridden" in meanings:
        label = label[:-1] + '<FONT POINT-SIZE="9">overridden</FONT><BR ALIGN="LEFT"/>>'
    dot.node(node, label=label, **attrs)


def _edge(dot: graphviz.Digraph, tail: str, head: str, attrs: dict) -> None:
    dot.body.append(f"\t{quote(tail)} -> {quote(head)}{attr_list(attributes=attrs)}\n")


def overview_dot(kb: KnowledgeBase, g: nx.DiGraph) -> str:
    dot = _digraph(f"{kb.name}_overview", "TB")
    dot.attr(ranksep="0.22", nodesep="0.2")
    top = max(kb.catalog["urgency"].values(), key=lambda e: e.rank).code
    previous = None
    for n, section in enumerate(kb.sections.values(), 1):
        rules = [r for r in kb.rules if r.section == section.id]
        levels = {c for r in rules for c in (g.nodes[rule_id(r.id)].get("urgency"),) if c}
        worst = max(levels, key=kb.urgency_rank) if levels else None
        label = f"{n}. {section.title}\\n{len(rules)} rule{'s' if len(rules) != 1 else ''}" + (
            f" · up to {kb.catalog['urgency'][worst].label}" if worst else " · no urgency"
        )
        meanings = ["rule", "emergency"] if worst == top else ["rule"]
        attrs = style.node_style(*meanings)
        attrs.update(
            id=f"section:{section.id}",
            href=section_page(section.id),
            target="_top",
            tooltip=_escape(f"{section.title}: open the section's diagram and decision table"),
            fontsize="13",
            width="4.2",
        )
        dot.node(f"section:{section.id}", label=label, **attrs)
        if previous is not None:
            _edge(dot, previous, f"section:{section.id}", {"style": "invis", "weight": "10"})
        previous = f"section:{section.id}"
    flows: dict[tuple[str, str], list[str]] = {}
    for fact in kb.derived_facts:
        node = fact_id(fact.name)
        sources = {g.nodes[r]["section"] for r in g.predecessors(node)}
        targets = {g.nodes[r]["section"] for r in g.successors(node)}
        for s in sorted(sources):
            for t in sorted(targets):
                if s != t:
                    flows.setdefault((s, t), []).append(fact.name)
    for (s, t), facts in flows.items():
        _edge(
            dot,
            f"section:{s}",
            f"section:{t}",
            {
                "label": nohtml(", ".join(facts)),
                "constraint": "false",
                "color": "#6a4c93",
                "fontcolor": "#4a2f73",
                "tooltip": _escape(f"{', '.join(facts)}: derived in one section, read in the other"),
            },
        )
    return dot.source


def section_dot(kb: KnowledgeBase, g: nx.DiGraph, section_id: str) -> str:
    rules = [rule_id(r.id) for r in kb.rules if r.section == section_id]
    inputs: list[str] = []
    outputs: list[str] = []
    for r in rules:
        for p in g.predecessors(r):
            if p not in inputs:
                inputs.append(p)
        for s in g.successors(r):
            if s not in outputs:
                outputs.append(s)
    order = {n: i for i, n in enumerate(g.nodes)}
    inputs.sort(key=order.__getitem__)
    outputs.sort(key=order.__getitem__)
    dot = _digraph(f"section_{section_id}", "LR")
    with dot.subgraph(name="cluster_in") as c:
        c.attr(label="What the rules read", **style.cluster_style("section"))
        for n in inputs:
            if n not in outputs:
                _node(c, g, n)
    with dot.subgraph(name="cluster_rules") as c:
        c.attr(label=kb.sections[section_id].title, **style.cluster_style("section"))
        for n in rules:
            _node(c, g, n)
    with dot.subgraph(name="cluster_out") as c:
        c.attr(label="What they conclude", **style.cluster_style("conclusions"))
        for n in outputs:
            _node(c, g, n)
    for r in rules:
        for tail, head, data in [*g.in_edges(r, data=True), *g.out_edges(r, data=True)]:
            meanings = edge_meanings(data, None)
            attrs = style.edge_style(*meanings)
            label = edge_label(data)
            if label:
                attrs["label"] = nohtml(label)
            attrs.update(id=f"{tail}->{head}", **{"class": " ".join(meanings)})
            _edge(dot, tail, head, attrs)
    return dot.source


def patient_dot(kb: KnowledgeBase, g: nx.DiGraph, result: Result, name: str) -> str:
    """The fired path of one patient: matched facts -> fired rules (numbered) -> conclusions."""
    dot = _digraph(f"path_{name}", "LR")
    final = {a.code: a.within_hours for a in result.actions}
    top_rank = kb.urgency_rank(result.urgency)
    facts: list[str] = []
    heads: list[str] = []
    edges = []
    for f in result.fired:
        r = rule_id(f.rule)
        for fact in f.matched:
            if fact_id(fact) not in facts:
                facts.append(fact_id(fact))
            edges.append((fact_id(fact), r, g.edges[fact_id(fact), r], False, ""))
        for _, head, data in g.out_edges(r, data=True):
            if g.nodes[head]["kind"] == "derived_fact":
                continue  # shown as a matched fact of the rules that read it
            over = ""
            if data["relation"] == "urgency" and kb.urgency_rank(g.nodes[head]["name"]) < top_rank:
                over = f"overridden by {kb.catalog['urgency'][result.urgency].label}"
            if data["relation"] == "action":
                mine, best = data.get("within_hours"), final.get(g.nodes[head]["name"])
                if best is not None and (mine is None or mine > best):
                    over = f"overridden: {hours_phrase(best)} wins"
            if head not in heads:
                heads.append(head)
            edges.append((r, head, data, bool(over), over))
    for n in facts:
        _node(dot, g, n, _fact_state(result, g.nodes[n]["name"]), href_prefix="")
    for f in result.fired:
        _node(dot, g, rule_id(f.rule), ["fired"])
    for h in heads:
        kind = g.nodes[h]["kind"]
        overridden = kind == "urgency" and h != conclusion_id("urgency", result.urgency)
        _node(dot, g, h, ["overridden"] if overridden else ["concluded"])
    for tail, head, data, overridden_edge, why in edges:
        meanings = edge_meanings(data, "used")
        attrs = style.edge_style(*meanings)
        label = edge_label(data)
        if overridden_edge:
            attrs.update(style="dashed", color="#9e9e9e", fontcolor="#616161")
            label = f"{label} ({why})" if label else why
        if label:
            attrs["label"] = nohtml("\n".join(wrap(label, 28)))
        attrs.update(
            id=f"{tail}->{head}", **{"class": " ".join(meanings + (["overridden"] if overridden_edge else []))}
        )
        _edge(dot, tail, head, attrs)
    return dot.source


def _fact_state(result: Result, name: str) -> list[str]:
    value = {**result.inputs, **result.derived}.get(name)
    if value is True:
        return ["fact-true"]
    if value is False:
        return ["fact-false"]
    return ["fact-value"] if value is not None else ["fact-unknown"]


# ---- the clinical algorithm ------------------------------------------------------------------------------------
LEAF_STYLE = {
    "emergency": {"fillcolor": "#c62828", "color": "#8e0000", "fontcolor": "#ffffff"},
    "prompt": {"fillcolor": "#fff3cd", "color": "#b7791f", "fontcolor": "#3d2a00"},
    "routine": {"fillcolor": "#eceff1", "color": "#78909c", "fontcolor": "#263238"},
    "not recommended": {"fillcolor": "#f4f4f4", "color": "#9e9e9e", "fontcolor": "#616161"},
}
ACTION_LEAF = {"fillcolor": "#e3f4e6", "color": "#2e7d32", "fontcolor": "#0f3613"}


def algorithm_dot(kb: KnowledgeBase, decision) -> str:
    """A decision diagram read top to bottom: each question once per distinct situation (identical subtrees
    drawn once), answers on the arrows, the decision in the coloured boxes at the bottom."""
    from lumbar_kb.engine.analysis.algorithm import NOT_RECOMMENDED, Leaf

    dot = _digraph(f"algorithm_{decision.id}", "TB")
    dot.attr(ranksep="0.45", nodesep="0.3")
    ids: dict[tuple, str] = {}

    def key(node) -> tuple:
        if isinstance(node, Leaf):
            return ("leaf", node.outcome, tuple(node.certain))
        return (node.fact, tuple((b.answers, key(b.to)) for b in node.branches))

    def draw(node) -> str:
        k = key(node)
        if k in ids:
            return ids[k]
        nid = f"q{len(ids)}"
        ids[k] = nid
        if isinstance(node, Leaf):
            # an action the patient does not need is "not required" (never "not recommended": that reads as advice
            # against it)
            shown = "not required" if node.outcome == NOT_RECOMMENDED else node.label
            lines = [f"<B>{_html(shown)}</B>"]
            lines += [f'<FONT POINT-SIZE="11">{_html(a)}: {_html(w)}</FONT>' for a, w in node.certain]
            attrs = {"shape": "box", "style": "rounded,filled,bold", "penwidth": "2", "fontsize": "13"}
            attrs.update(LEAF_STYLE.get(node.outcome, ACTION_LEAF))
            dot.node(nid, label="<" + "<BR/>".join(lines) + ">", id=f"leaf:{nid}", **attrs)
            return nid
        fact = kb.facts[node.fact]
        text = "<BR/>".join(_html(line) for line in wrap(node.question, 36))
        label = f'<{text}<BR/><FONT POINT-SIZE="9" COLOR="#5b6672">{_html(node.fact)}</FONT>>'
        meanings = ["input_fact", "alarm"] if fact.alarm else ["input_fact"]
        attrs = style.node_style(*meanings)
        attrs.update(shape="box", style="rounded,filled", fontsize="12")
        dot.node(nid, label=label, id=f"question:{nid}:{node.fact}", tooltip=_escape(node.question), **attrs)
        for b in node.branches:
            child = draw(b.to)
            colour = "#c62828" if True in b.answers and fact.alarm else "#5c7594"
            _edge(
                dot,
                nid,
                child,
                {"label": nohtml(b.words), "color": colour, "fontcolor": colour, "fontsize": "11", "penwidth": "1.4"},
            )
        return nid

    draw(decision.root)
    return dot.source


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
