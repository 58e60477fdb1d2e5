"""Build the DOT text of a decision graph (no program is run here; see `render`).

Layout: left to right; one cluster per guideline section holding its findings, its rules and the facts
they derive (see `place`), then the conclusions grouped by kind. Drawing attributes come only from `style`,
looked up by meaning (`node_meanings`, `edge_meanings`); a patient `Overlay` adds its states (fired,
fact-true, used...). Every node and edge carries a stable SVG `id` (`rule:<id>`, `fact:<name>`,
`<tail>-><head>`), a `class` listing its meanings, and a tooltip with the rule's text and the full titles of
its citations. The output depends only on the graph and the overlay: the same input gives the same bytes.
"""

from __future__ import annotations

import graphviz
import networkx as nx
from graphviz.quoting import attr_list, nohtml, quote

from lumbar_kb.visualize import legend, style
from lumbar_kb.visualize.graph import CONCLUSION_KINDS, pathway, restrict
from lumbar_kb.visualize.overlay import Overlay
from lumbar_kb.visualize.text import hours_phrase, show_value, wrap

CONCLUSION_TITLES = {
    "urgency": "Urgency",
    "action": "Actions",
    "warning": "Warnings",
    "differential": "Differential diagnosis",
}
RULE_WIDTH = 34  # characters per line of a rule's title
FACT_WIDTH = 30  # characters per line of a fact's meaning


def to_dot(g: nx.DiGraph, overlay: Overlay | None = None, focus: str | None = None) -> str:
    """The DOT source of the whole graph, or only of the pathway through `focus` (a node id of `g`).

    Tooltips always describe the whole model (every reader of a fact, every rule behind a conclusion),
    even in a pathway view.
    """
    view = restrict(g, pathway(g, focus)) if focus is not None else g
    dot = graphviz.Digraph(
        name=g.graph["name"],
        graph_attr=dict(style.GRAPH),
        node_attr=dict(style.NODE_DEFAULTS),
        edge_attr=dict(style.EDGE_DEFAULTS),
    )
    dot.attr(label=legend.heading(_title(g, focus), _lines(view, overlay, focus), overlay is not None))

    def draw(into: graphviz.Digraph, node: str) -> None:
        meanings = node_meanings(g, node, overlay)
        attrs = style.node_style(*meanings)
        if node == focus:
            meanings.append("focus")
            attrs.update(style.node_style("focus"))
        attrs.update(id=node, tooltip=_escape(tooltip(g, node, overlay)), **{"class": " ".join(meanings)})
        into.node(node, label=node_label(g, node, overlay), **attrs)

    placed = place(view)
    for section, title in g.graph["sections"]:
        nodes = placed.get(("section", section), [])
        if not nodes:
            continue
        with dot.subgraph(name=f"cluster_section_{section}") as c:
            top = any(g.nodes[n].get("top") for n in nodes)
            c.attr(
                label=title,
                id=f"section:{section}",
                **style.cluster_style(*(("section", "emergency_section") if top else ("section",))),
            )
            for node in nodes:
                draw(c, node)
    for node in placed.get(("section", ""), []):
        draw(dot, node)
    kinds = [k for k in CONCLUSION_KINDS if ("conclusion", k) in placed]
    if kinds:
        with dot.subgraph(name="cluster_conclusions") as outer:
            outer.attr(label="Conclusions", id="conclusions", **style.cluster_style("conclusions"))
            for kind in kinds:
                with outer.subgraph(name=f"cluster_conclusion_{kind}") as c:
                    c.attr(
                        label=CONCLUSION_TITLES[kind], id=f"conclusions:{kind}", **style.cluster_style("conclusions")
                    )
                    for node in placed[("conclusion", kind)]:
                        draw(c, node)
    for tail, head, data in view.edges(data=True):
        state = overlay.edge_state(tail, head) if overlay is not None else None
        meanings = edge_meanings(data, state)
        attrs = style.edge_style(*meanings)
        label = edge_label(data)
        if label:
            attrs["label"] = nohtml(label)
        attrs.update(
            id=f"{tail}->{head}", tooltip=_escape(_edge_tooltip(g, tail, head, data)), **{"class": " ".join(meanings)}
        )
        # graphviz's `edge()` reads "a:b" as node a, port b; the ids contain colons, so quote them whole.
        dot.body.append(f"\t{quote(tail)} -> {quote(head)}{attr_list(attributes=attrs)}\n")
    return dot.source


# ---- placement -------------------------------------------------------------------------------------------------
def place(g: nx.DiGraph) -> dict[tuple[str, str], list[str]]:
    """Which cluster each node is drawn in, keyed ("section", id) or ("conclusion", kind).

    A rule goes in its section. An input fact goes in the section whose rules read it most (ties: the earlier
    section), so each section reads like the guideline: its findings, its rules, what they conclude; a fact
    no rule reads goes in ("section", "") and is drawn outside every section. A derived fact goes in the
    section of the rules that derive it (outside when they span sections). Conclusions are grouped by kind.
    """
    order = {sid: i for i, (sid, _) in enumerate(g.graph["sections"])}
    placed: dict[tuple[str, str], list[str]] = {}
    for node, data in g.nodes(data=True):
        kind = data["kind"]
        if kind == "rule":
            where = ("section", data["section"])
        elif kind == "input_fact":
            counts: dict[str, int] = {}
            for reader in g.successors(node):
                section = g.nodes[reader]["section"]
                counts[section] = counts.get(section, 0) + 1
            where = ("section", min(counts, key=lambda s: (-counts[s], order[s])) if counts else "")
        elif kind == "derived_fact":
            sections = {g.nodes[r]["section"] for r in g.predecessors(node)}
            where = ("section", sections.pop() if len(sections) == 1 else "")
        else:
            where = ("conclusion", kind)
        placed.setdefault(where, []).append(node)
    return placed


# ---- meanings ----------------------------------------------------------------------------------------------------
def node_meanings(g: nx.DiGraph, node: str, overlay: Overlay | None) -> list[str]:
    """The meanings a node is drawn by, most general first (see `style`)."""
    data = g.nodes[node]
    kind = data["kind"]
    meanings = [kind]
    if data.get("alarm"):
        meanings.append("alarm")
    if kind == "rule" and data.get("top"):
        meanings.append("emergency")
    if kind == "urgency" and data.get("top"):
        meanings.append("emergency_level")
    if overlay is not None:
        state = overlay.node_state(g, node)
        meanings.append(state)
        if state == "fact-unknown" and data.get("alarm"):
            meanings.append("unanswered-alarm")
    return meanings


def edge_meanings(data: dict, state: str | None) -> list[str]:
    """The meanings an edge is drawn by: its relation, a negative test, the patient state, the emergency."""
    meanings = [data["relation"]]
    if data.get("negative"):
        meanings.append("negative")
    if state is not None:
        meanings.append(state)
    if data.get("top") and state != "unused":
        meanings.append("emergency")
    return meanings


# ---- words -------------------------------------------------------------------------------------------------------
def node_label(g: nx.DiGraph, node: str, overlay: Overlay | None) -> str:
    """An HTML-like label: a small first line (name, citations, firing order), then the readable text."""
    data = g.nodes[node]
    kind = data["kind"]
    if kind == "rule":
        cites = "[" + ", ".join(str(n) for n in data["citations"]) + "]"
        order = overlay.order(node) if overlay is not None else None
        head = f"<B>{order}.</B> " if order is not None else ""
        lines = [f'{head}<FONT POINT-SIZE="9">{_h(data["name"])}  {cites}</FONT>']
        lines += [_h(line) for line in wrap(data["title"], RULE_WIDTH)]
    elif kind in ("input_fact", "derived_fact"):
        lines = [f"<B>{_h(data['name'])}</B>"]
        lines += [f'<FONT POINT-SIZE="10">{_h(line)}</FONT>' for line in wrap(data["label"], FACT_WIDTH)]
        if overlay is not None:
            lines.append(f"<B>= {_h(show_value(None, overlay.values.get(node)))}</B>")
    elif kind == "urgency":
        lines = [f"<B>{_h(data['label'])}</B>"]
    else:
        lines = [_h(line) for line in wrap(data["label"], RULE_WIDTH)]
    return "<" + '<BR ALIGN="LEFT"/>'.join(lines) + '<BR ALIGN="LEFT"/>>'


def edge_label(data: dict) -> str:
    """A short label only where it adds meaning: a needed value other than yes/no, a derived value, a window."""
    relation = data["relation"]
    if relation == "reads":
        # a plain yes needs no words, and a plain no is already said by the dashed line
        return "" if data["needs"] in ("yes", "no") and not data["negated"] else data["needs"]
    if relation == "derives":
        return "= " + show_value(None, data["value"])
    if relation == "action":
        return data.get("window") or hours_phrase(data.get("within_hours"))
    return ""


def tooltip(g: nx.DiGraph, node: str, overlay: Overlay | None = None) -> str:
    """Hover text: for a rule its condition, conclusions, rationale and the full titles of its citations."""
    data = g.nodes[node]
    kind = data["kind"]
    if kind == "rule":
        then = [_conclusion_phrase(g, head, d) for _, head, d in g.out_edges(node, data=True)]
        parts = [
            f"{data['name']}: {data['title']}",
            f"Section: {data['section_title']}",
            "When:\n" + data["condition"],
            "Then:\n" + "\n".join(f"  {t}" for t in then),
            "Why: " + data["rationale"],
        ]
        if data.get("interpretation"):
            parts.append("Interpretation: " + data["interpretation"])
        parts.append("Cites:\n" + "\n".join(f"  {ref}" for ref in data["references"]))
        if overlay is not None:
            order = overlay.order(node)
            parts.append(f"This patient: fired {_ordinal(order)}" if order else "This patient: did not fire")
        return "\n".join(parts)
    if kind in ("input_fact", "derived_fact"):
        parts = [f"{data['name']}: {data['label']}"]
        if data.get("question"):
            parts.append(f"Question: {data['question']}")
        if kind == "derived_fact":
            parts.append("Derived by: " + ", ".join(g.nodes[r]["name"] for r in g.predecessors(node)))
        parts.append("Read by: " + (", ".join(g.nodes[r]["name"] for r in g.successors(node)) or "no rule"))
        if overlay is not None:
            parts.append("This patient: " + show_value(None, overlay.values.get(node)))
        return "\n".join(parts)
    rules = [g.nodes[r]["name"] for r in g.predecessors(node)]
    return f"{data['label']}: {data['text']}\nConcluded by: " + (", ".join(rules) or "no rule (the default)")


def _conclusion_phrase(g: nx.DiGraph, head: str, data: dict) -> str:
    target = g.nodes[head]
    relation = data["relation"]
    if relation == "derives":
        return f"derive {target['name']} = {show_value(None, data['value'])}"
    if relation == "action" and data.get("within_hours") is not None:
        return f"action: {target['label']}, {data.get('window') or hours_phrase(data['within_hours'])}"
    return f"{relation}: {target['label']}"


def _edge_tooltip(g: nx.DiGraph, tail: str, head: str, data: dict) -> str:
    t, h = g.nodes[tail], g.nodes[head]
    if data["relation"] == "reads":
        return f"{h['name']} needs {t['name']}: {data['needs']}"
    return f"{t['name']} -> {_conclusion_phrase(g, head, data)}"


def _title(g: nx.DiGraph, focus: str | None) -> str:
    return f"{g.graph['title']} — " + (f"pathway through {focus}" if focus is not None else "decision graph")


def _lines(view: nx.DiGraph, overlay: Overlay | None, focus: str | None) -> list[str]:
    kinds = [k for _, k in view.nodes(data="kind")]
    counts = ", ".join(
        _count(n, word)
        for n, word in (
            (kinds.count("rule"), "rule"),
            (kinds.count("input_fact"), "finding"),
            (kinds.count("derived_fact"), "derived fact"),
            (sum(kinds.count(k) for k in CONCLUSION_KINDS), "conclusion"),
        )
    )
    what = "only what leads to it and what it leads to: " if focus is not None else ""
    lines = [
        f"Knowledge base {view.graph['name']} {view.graph['version']} (review status: "
        f"{view.graph['review_status'].replace('_', ' ')}); {what}{counts}. Drawn from the rules the engine runs."
    ]
    if overlay is not None:
        who = f"Patient {overlay.patient}" if overlay.patient else "Patient"
        lines.append(
            f"{who}: urgency {overlay.urgency.upper()}; {_count(len(overlay.fired), 'rule')} fired, "
            "numbered in firing order; what this patient's answers did not use is greyed out."
        )
    cited = sorted({n for _, d in view.nodes(data=True) if d["kind"] == "rule" for n in d["citations"]})
    lines += [f"Reference {view.graph['references'][n]}" for n in cited]
    return lines


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _h(text: str) -> str:
    """Escape text for a graphviz HTML-like label."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _escape(text: str) -> str:
    """Text for a quoted DOT attribute: backslashes doubled, line breaks as graphviz's \\n."""
    return nohtml(text.replace("\\", "\\\\").replace("\n", "\\n"))
