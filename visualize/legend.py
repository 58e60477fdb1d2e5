"""The picture's heading and legend, as one graphviz HTML-like label drawn from the style table.

Each legend entry names the meanings it stands for, and its swatch is composed by the same `style` lookup
the nodes and edges use, so the legend cannot disagree with the picture.
"""

from __future__ import annotations

from html import escape

from lumbar_kb.visualize import style

# (meanings to compose, what they mean). Node entries, then edge entries.
NODE_ENTRIES = (
    (("input_fact",), "finding asked of the patient"),
    (("input_fact", "alarm"), "alarm finding (asked first)"),
    (("derived_fact",), "fact the rules derive"),
    (("rule",), "rule: id [citations], then its title"),
    (("rule", "emergency"), "rule that concludes EMERGENCY"),
    (("urgency",), "urgency level"),
    (("urgency", "emergency_level"), "EMERGENCY"),
    (("action",), "action"),
    (("warning",), "warning"),
    (("differential",), "differential diagnosis"),
)
PATIENT_ENTRIES = (
    (("rule", "fired"), "rule fired (number = firing order)"),
    (("rule", "not-fired"), "rule did not fire"),
    (("input_fact", "fact-true"), "finding: yes"),
    (("input_fact", "fact-value"), "finding: answered (value shown)"),
    (("input_fact", "fact-false"), "finding: no"),
    (("input_fact", "fact-unknown"), "finding: not answered (unknown)"),
    (("input_fact", "alarm", "fact-unknown", "unanswered-alarm"), "alarm finding not answered: ask now"),
    (("action", "concluded"), "concluded for this patient"),
    (("action", "not-concluded"), "not concluded"),
)
EDGE_ENTRIES = (
    (("reads",), "rule reads the finding (label: the value it needs, if not yes or no)"),
    (("reads", "negative"), "rule needs a 'no' answer (or a not)"),
    (("derives",), "rule derives a fact"),
    (("action",), "rule recommends (label: the window)"),
    (("urgency", "emergency"), "rule concludes EMERGENCY"),
)
PATIENT_EDGE_ENTRIES = (
    (("reads", "used"), "used by a fired rule"),
    (("reads", "unused"), "not used"),
)
COLUMNS = 3


def heading(title: str, lines: list[str], with_patient: bool) -> str:
    """The HTML-like graph label: title, subtitle lines, legend."""
    rows = [f'<TR><TD ALIGN="LEFT"><B><FONT POINT-SIZE="24">{escape(title)}</FONT></B></TD></TR>']
    rows += [f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="13">{escape(line)}</FONT></TD></TR>' for line in lines]
    rows.append(f'<TR><TD ALIGN="LEFT">{legend_table(with_patient)}</TD></TR>')
    return '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2">' + "".join(rows) + "</TABLE>>"


def legend_table(with_patient: bool) -> str:
    cells = [_node_cell(m, text) for m, text in NODE_ENTRIES]
    cells += [_edge_cell(m, text) for m, text in EDGE_ENTRIES]
    if with_patient:
        cells += [_node_cell(m, text) for m, text in PATIENT_ENTRIES]
        cells += [_edge_cell(m, text) for m, text in PATIENT_EDGE_ENTRIES]
    rows = []
    for start in range(0, len(cells), COLUMNS):
        row = cells[start : start + COLUMNS]
        row += ["<TD></TD><TD></TD>"] * (COLUMNS - len(row))
        rows.append("<TR>" + "".join(row) + "</TR>")
    return (
        '<TABLE BORDER="1" COLOR="#c9cdd2" CELLBORDER="0" CELLSPACING="3" CELLPADDING="3" BGCOLOR="#ffffff">'
        f'<TR><TD COLSPAN="{2 * COLUMNS}" ALIGN="LEFT"><B>Legend</B></TD></TR>' + "".join(rows) + "</TABLE>"
    )


def _node_cell(meanings: tuple, text: str) -> str:
    s = style.node_style(*meanings)
    dashed = ' STYLE="dashed"' if "dashed" in s.get("style", "") else ""
    swatch = (
        f'<TD BGCOLOR="{s["fillcolor"]}" COLOR="{s["color"]}" BORDER="2"{dashed} WIDTH="40" HEIGHT="20">'
        f'<FONT POINT-SIZE="9" COLOR="{s["fontcolor"]}">Aa</FONT></TD>'
    )
    return swatch + f'<TD ALIGN="LEFT"><FONT POINT-SIZE="11">{escape(text)}</FONT></TD>'


def _edge_cell(meanings: tuple, text: str) -> str:
    s = style.edge_style(*meanings)
    line = "- - - &#9654;" if "dashed" in s.get("style", "") else "&#9473;&#9473;&#9473;&#9654;"
    bold = float(s.get("penwidth", "1")) >= 2.5
    mark = f"<B>{line}</B>" if bold else line
    swatch = f'<TD WIDTH="34"><FONT COLOR="{s["color"]}">{mark}</FONT></TD>'
    return swatch + f'<TD ALIGN="LEFT"><FONT POINT-SIZE="11">{escape(text)}</FONT></TD>'
