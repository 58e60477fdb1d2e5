"""The one style table: how each *meaning* is drawn.

Every colour, shape and line style of the pictures lives here, keyed by what it means (a kind of node, a
kind of edge, a patient state), never by where it is used. A node or edge is drawn by looking up its list of
meanings, most general first, and letting later meanings override earlier ones:

    node:  kind [, "alarm"] [, "emergency" | "emergency_level"] [, patient state [, "unanswered-alarm"]]
           [, "focus"]
    edge:  relation [, "negative"] [, patient state] [, "emergency"]

so highlighting a patient's path is a lookup, and the legend is drawn from the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

FONT = "Helvetica,Arial,sans-serif"

RED, DARK_RED = "#c62828", "#8e0000"
FIRED, FIRED_DARK = "#1f4e9c", "#0b2a5b"
DIM_LINE, DIM_TEXT, DIM_FILL = "#d3d6da", "#a3a8ae", "#f6f7f8"


def _frozen(table: dict) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType({key: MappingProxyType(dict(value)) for key, value in table.items()})


NODE = _frozen(
    {
        # ---- kinds (what a node is) ----
        "input_fact": {
            "shape": "box",
            "style": "rounded,filled",
            "fillcolor": "#e8f0fb",
            "color": "#3b6ea8",
            "fontcolor": "#10233f",
            "penwidth": "1.2",
        },
        "derived_fact": {
            "shape": "box",
            "style": "rounded,filled,bold",
            "fillcolor": "#efe6fa",
            "color": "#6a4c93",
            "fontcolor": "#2a1747",
            "penwidth": "2",
        },
        "rule": {
            "shape": "box",
            "style": "filled",
            "fillcolor": "#ffffff",
            "color": "#6b7785",
            "fontcolor": "#1d232b",
            "penwidth": "1",
        },
        "urgency": {
            "shape": "box",
            "style": "filled,bold",
            "fillcolor": "#fff3cd",
            "color": "#b7791f",
            "fontcolor": "#3d2a00",
            "penwidth": "2",
            "fontsize": "14",
        },
        "action": {
            "shape": "box",
            "style": "rounded,filled",
            "fillcolor": "#e3f4e6",
            "color": "#2e7d32",
            "fontcolor": "#0f3613",
            "penwidth": "1.6",
        },
        "warning": {
            "shape": "box",
            "style": "filled",
            "fillcolor": "#fff4d6",
            "color": "#b7791f",
            "fontcolor": "#3d2a00",
            "penwidth": "1.2",
        },
        "differential": {
            "shape": "box",
            "style": "rounded,filled",
            "fillcolor": "#f1f1f1",
            "color": "#757575",
            "fontcolor": "#212121",
            "penwidth": "1.2",
        },
        # ---- qualities ----
        "focus": {"peripheries": "2"},  # the node a pathway view is drawn through
        "alarm": {"color": RED, "penwidth": "2.2"},  # an alarm question, asked first
        "emergency": {"color": RED, "penwidth": "2.4", "fillcolor": "#fdecea"},  # concludes / is the top urgency
        "emergency_level": {
            "fillcolor": RED,
            "color": DARK_RED,
            "fontcolor": "#ffffff",
            "penwidth": "3",
            "fontsize": "16",
        },
        # ---- one patient's path ----
        "fired": {"fillcolor": FIRED, "color": FIRED_DARK, "fontcolor": "#ffffff", "penwidth": "3"},
        "not-fired": {"fillcolor": DIM_FILL, "color": DIM_LINE, "fontcolor": DIM_TEXT, "penwidth": "1"},
        "fact-true": {"fillcolor": "#ffd54f", "color": "#7a5c00", "fontcolor": "#1d1d1d", "penwidth": "2.5"},
        "fact-value": {"fillcolor": "#ffe9a8", "color": "#7a5c00", "fontcolor": "#1d1d1d", "penwidth": "2.5"},
        "fact-false": {"fillcolor": "#cfd8dc", "color": "#546e7a", "fontcolor": "#263238", "penwidth": "1.5"},
        "fact-unknown": {
            "fillcolor": "#ffffff",
            "color": "#bdbdbd",
            "fontcolor": DIM_TEXT,
            "penwidth": "1",
            "style": "rounded,filled,dashed",
        },
        "unanswered-alarm": {"color": RED, "fontcolor": DARK_RED},  # an alarm question nobody answered: ask now
        "concluded": {"penwidth": "3.5"},
        "not-concluded": {"fillcolor": DIM_FILL, "color": DIM_LINE, "fontcolor": DIM_TEXT, "penwidth": "1"},
    }
)

EDGE = _frozen(
    {
        "reads": {"color": "#5c7594", "fontcolor": "#3b4f66", "arrowsize": "0.7", "penwidth": "1.1"},
        "derives": {"color": "#6a4c93", "fontcolor": "#4a2f73", "arrowsize": "0.8", "penwidth": "1.8"},
        "urgency": {"color": "#b7791f", "fontcolor": "#7a4f0a", "arrowsize": "0.7", "penwidth": "1.1"},
        "action": {"color": "#2e7d32", "fontcolor": "#1b5e20", "arrowsize": "0.7", "penwidth": "1.1"},
        "warning": {"color": "#b7791f", "fontcolor": "#7a4f0a", "arrowsize": "0.7", "penwidth": "1.1"},
        "differential": {"color": "#757575", "fontcolor": "#424242", "arrowsize": "0.7", "penwidth": "1.1"},
        # a condition satisfied by a "no" answer or under a `not`, and a derived "no"
        "negative": {"style": "dashed"},
        "used": {"color": FIRED_DARK, "fontcolor": FIRED_DARK, "penwidth": "2.8", "arrowsize": "1"},
        "unused": {"color": DIM_LINE, "fontcolor": DIM_TEXT, "penwidth": "1"},
        "emergency": {"color": RED, "fontcolor": DARK_RED, "penwidth": "2.8"},
    }
)

CLUSTER = _frozen(
    {
        "section": {"style": "rounded,filled", "fillcolor": "#fafafa", "color": "#b9bec5", "fontcolor": "#1d232b"},
        "emergency_section": {"color": RED, "fontcolor": DARK_RED, "penwidth": "2"},
        "conclusions": {"style": "rounded,filled", "fillcolor": "#fbfbf7", "color": "#c2bfa8", "fontcolor": "#3d3a22"},
    }
)

GRAPH = MappingProxyType(
    {
        "rankdir": "LR",
        "splines": "spline",
        "nodesep": "0.12",
        "ranksep": "1.1",
        "fontname": FONT,
        "fontsize": "20",
        "labelloc": "t",
        "labeljust": "l",
        "pad": "0.3",
        "compound": "true",
        "bgcolor": "#ffffff",
    }
)
NODE_DEFAULTS = MappingProxyType({"fontname": FONT, "fontsize": "11", "margin": "0.10,0.05"})
EDGE_DEFAULTS = MappingProxyType({"fontname": FONT, "fontsize": "10"})
CLUSTER_DEFAULTS = MappingProxyType({"fontname": FONT, "fontsize": "14", "margin": "10"})


def _compose(table: Mapping[str, Mapping[str, str]], meanings) -> dict[str, str]:
    out: dict[str, str] = {}
    for meaning in meanings:
        out.update(table[meaning])  # an unknown meaning is a programming error: KeyError
    return out


def node_style(*meanings: str) -> dict[str, str]:
    return _compose(NODE, meanings)


def edge_style(*meanings: str) -> dict[str, str]:
    return _compose(EDGE, meanings)


def cluster_style(*meanings: str) -> dict[str, str]:
    return {**CLUSTER_DEFAULTS, **_compose(CLUSTER, meanings)}
