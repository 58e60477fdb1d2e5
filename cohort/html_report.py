"""`cohort --report DIR`: an HTML report of a cohort, self-contained (figures inline, no network, no script),
and the same figures as PNG and SVG files beside it.

DIR/index.html, DIR/figures/{urgency,windows,rules,pathways,alarm_questions[,changes]}.{png,svg}. Figures:
the urgency distribution, the windows given per action, how many patients each rule fired for, the most
common pathways (rules fired, in order) as a flow diagram drawn by graphviz, the unanswered alarm questions by
frequency, and with --compare-kb the decisions a rule change changes. Every label comes from the knowledge
base's catalogue or the counts; nothing here decides anything.
"""

from __future__ import annotations

import html
import io
import os
import re
from pathlib import Path
from typing import Any

from lumbar_kb.cohort.summary import Summary, levels, window_words
from lumbar_kb.engine.model import KnowledgeBase

URGENCY_COLOURS = ("#b2182b", "#ef8a62", "#fddbc7", "#d1e5f0", "#67a9cf", "#2166ac")
WINDOW_COLOURS = ("#67001f", "#b2182b", "#d6604d", "#f4a582", "#92c5de", "#4393c3", "#2166ac", "#053061")
PATHWAY_COVERAGE = 0.9  # the pathway diagram draws the commonest pathways until they cover this share of patients


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "lumbar-kb"  # the same SVG for the same counts
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, folder: Path, name: str) -> str:
    """Write NAME.png and NAME.svg; return the SVG text for inlining."""
    fig.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    (folder / f"{name}.svg").write_text(svg, encoding="utf-8")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return svg


def _label(text: Any) -> str:
    """Text from the data (a ward's name) as a plain chart label: a `$` would start matplotlib's math mode."""
    return str(text).replace("$", r"\$")


def _thousands(axis: Any) -> None:
    """Whole numbers with thousands separators on a count axis (12,000, not 12000 or 1.2e4)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}"))


def _barh(plt: Any, labels: list, values: list, title: str, colour: str = "#4a6fa5", xlabel: str = "patients"):
    height = max(1.6, 0.32 * len(labels) + 0.9)
    fig, ax = plt.subplots(figsize=(8.5, height))
    positions = range(len(labels))
    ax.barh(list(positions), values, color=colour)
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    _thousands(ax.xaxis)
    ax.set_title(title, loc="left", fontsize=11)
    for y, v in zip(positions, values, strict=True):
        ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(x=0.12)
    return fig


def _urgency(plt, kb, s) -> Any:
    codes = levels(kb)
    fig, ax = plt.subplots(figsize=(8.5, 2.8))
    values = [s["urgency"][c] for c in codes]
    bars = ax.bar([kb.catalog["urgency"][c].label for c in codes], values, color=URGENCY_COLOURS[: len(codes)])
    for bar, v in zip(bars, values, strict=True):
        share = f" ({100 * v / s['patients']:.0f}%)" if s["patients"] else ""
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:,}{share}", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("patients")
    _thousands(ax.yaxis)
    ax.set_title("Urgency", loc="left", fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(y=0.15)
    return fig


def _windows(plt, kb, s) -> Any:
    actions = list(s["actions"].items())
    fig, ax = plt.subplots(figsize=(8.5, max(1.8, 0.55 * len(actions) + 1.2)))
    # colours by how soon: the shortest window darkest red, the longest blue, a window in words only grey;
    # the legend in that order
    windows = sorted(
        {
            (w["within_hours"], w.get("within_hours_min"), window_words(w))
            for _c, a in actions
            for w in a["within_hours"]
        },
        key=lambda t: (t[0] is None, t[0] or 0, t[1] or 0, t[2]),
    )
    timed = [t for t in windows if t[0] is not None]
    colours = {}
    for i, (hours, _low, words) in enumerate(windows):
        if hours is None:
            colours[words] = "#bbbbbb"
        else:
            colours[words] = WINDOW_COLOURS[min(i * len(WINDOW_COLOURS) // max(len(timed), 1), len(WINDOW_COLOURS) - 1)]
    most = max((sum(w["patients"] for w in a["within_hours"]) for _c, a in actions), default=1)
    for y, (_code, a) in enumerate(actions):
        left = 0
        for w in sorted(a["within_hours"], key=lambda w: (w["within_hours"] is None, w["within_hours"] or 0)):
            words = window_words(w)
            ax.barh(y, w["patients"], left=left, color=colours[words], edgecolor="white", label=words)
            if w["patients"] >= most * 0.06:  # a label only where it fits inside its segment
                ax.text(left + w["patients"] / 2, y, f"{w['patients']:,}", ha="center", va="center", fontsize=7)
            left += w["patients"]
    ax.set_yticks(range(len(actions)), [kb.catalog["action"][code].label for code, _ in actions])
    ax.invert_yaxis()
    ax.set_xlabel("patients")
    _thousands(ax.xaxis)
    ax.set_title("Windows given, per action (soonest first)", loc="left", fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    ordered = [words for _h, _l, words in windows if words in unique]
    if ordered:
        ax.legend(
            [unique[w] for w in ordered], ordered, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False
        )
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _flow_svg(kb: KnowledgeBase, summary: Summary, folder: Path) -> str | None:
    """The most common pathways as one flow diagram (graphviz): each pathway a path from the start through
    its rules, edge width by patients. None when graphviz's `dot` cannot be run."""
    import graphviz

    ranked = sorted(summary.pathways.items(), key=lambda kv: (-kv[1], kv[0]))
    top, covered = [], 0
    for pathway, n in ranked:
        if covered >= PATHWAY_COVERAGE * summary.patients:
            break
        top.append((pathway, n))
        covered += n
    rest = summary.patients - covered
    edges: dict[tuple, int] = {}
    titles = {r.id: r.title for r in kb.rules}
    for pathway, n in top:
        nodes = ["start", *pathway, "end"]
        for a, b in zip(nodes, nodes[1:], strict=False):
            edges[(a, b)] = edges.get((a, b), 0) + n
    most = max(edges.values(), default=1)
    dot = graphviz.Digraph(
        "pathways", graph_attr={"rankdir": "TB", "fontname": "Helvetica", "bgcolor": "white", "nodesep": "0.3"}
    )
    dot.attr("node", shape="box", style="rounded,filled", fillcolor="#eef2f8", fontname="Helvetica", fontsize="10")
    share = f"{100 * covered / summary.patients:.0f}%" if summary.patients else "0%"
    dot.node("start", f"{covered:,} patients ({share})\nthe {len(top)} commonest pathways", shape="oval")
    dot.node("end", "decision", shape="oval")
    if rest > 0:
        dot.node(
            "other", f"{rest:,} patients on {len(ranked) - len(top):,}+ rarer pathways\n(listed in --out)", shape="note"
        )
    for rule in sorted({r for p, _ in top for r in p}):
        dot.node(rule, rule, tooltip=titles.get(rule, rule))
    for (a, b), n in sorted(edges.items()):
        dot.edge(a, b, label=f"{n:,}", penwidth=f"{1 + 7 * n / most:.2f}", color="#4a6fa5", fontsize="9")
    try:
        svg = dot.pipe(format="svg").decode("utf-8")
        (folder / "pathways.png").write_bytes(dot.pipe(format="png"))
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, OSError):
        return None
    (folder / "pathways.svg").write_text(svg, encoding="utf-8")
    return svg


def _inline(svg: str) -> str:
    """An SVG file's text as an element of the page: no XML prolog or doctype, scaled to the page's width."""
    svg = re.sub(r"^\s*<\?xml[^>]*>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg)
    svg = re.sub(r"<!--.*?-->\s*", "", svg, flags=re.S)
    return svg.replace("<svg ", '<svg class="figure" preserveAspectRatio="xMinYMin meet" ', 1)


def write_report(
    folder: Path,
    kb: KnowledgeBase,
    summary: Summary,
    compare_kb: KnowledgeBase | None = None,
    run_id: str | None = None,
    rate: str = "",
    overrides: dict | None = None,
) -> Path:
    """`overrides`: per rule, the CDS cards it was behind and what clinicians did with them (`--feedback`)."""
    plt = _pyplot()
    figures_dir = folder / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    s = summary.to_dict(kb, compared=compare_kb is not None)
    s["overrides"] = overrides
    sections: list[tuple[str, str, str]] = []  # (id, title, inline svg or a note)

    sections.append(("urgency", "Urgency distribution", _save(_urgency(plt, kb, s), figures_dir, "urgency")))
    if s.get("completeness"):
        done = list(s["completeness"].items())
        fig = _barh(plt, [c for c, _ in done], [n for _, n in done], "Completeness: every alarm question answered?")
        sections.append(("completeness", "Completeness", _save(fig, figures_dir, "completeness")))
    if s["actions"]:
        sections.append(("windows", "Windows per action", _save(_windows(plt, kb, s), figures_dir, "windows")))
    rules = list(s["rules"].items())
    fig = _barh(plt, [r for r, _ in rules], [n for _, n in rules], "Patients each rule fired for")
    sections.append(("rules", "Rule firing counts", _save(fig, figures_dir, "rules")))
    flow = _flow_svg(kb, summary, figures_dir)
    sections.append(
        ("pathways", "Most common pathways", flow if flow else "<p>graphviz's dot is not installed: no diagram.</p>")
    )
    alarms = list(s["unanswered_alarm"].items())
    if alarms:
        questions = {f.name: f.name for f in kb.input_facts}
        fig = _barh(
            plt, [questions[f] for f, _ in alarms], [n for _, n in alarms], "Unanswered alarm questions", "#b2182b"
        )
        sections.append(("alarm_questions", "Unanswered alarm questions", _save(fig, figures_dir, "alarm_questions")))
    for kind, title, colour in (
        ("warnings", "Warnings given", "#e08214"),
        ("differential", "Differential diagnoses listed", "#5e3c99"),
        ("could_escalate", "Unanswered questions whose answer could escalate", "#b2182b"),
    ):
        counts = list(s[kind].items())[:25]
        if counts:
            fig = _barh(plt, [c for c, _ in counts], [n for _, n in counts], title, colour)
            sections.append((kind, title, _save(fig, figures_dir, kind)))
    if s.get("bad_rows_by_cause"):
        causes = list(s["bad_rows_by_cause"].items())
        sections.append(
            ("bad_rows", "Bad rows by cause", _table(["cause", "rows"], [[c, f"{k:,}"] for c, k in causes]))
        )
    if "by" in s:
        sections.append(("by", f"By {s['by']['column']}", _by_group(plt, kb, s, figures_dir)))
    if "trend" in s:
        sections.append(("trend", f"Over time, by month of {s['trend']['column']}", _trend(plt, kb, s, figures_dir)))
    if compare_kb is not None:
        changes = list(s["changed"]["changes"].items())[:20]
        if changes:
            fig = _barh(
                plt, [c for c, _ in changes], [n for _, n in changes], "Decisions changed, by change", "#7b3294"
            )
            sections.append(("changes", "What the rule change changes", _save(fig, figures_dir, "changes")))

    page = _page(kb, summary, s, sections, compare_kb, run_id, rate)
    target = folder / "index.html"
    tmp = folder / f".index.html.{os.getpid()}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _shares(plt: Any, kb: KnowledgeBase, names: list, rows: list, title: str) -> Any:
    """A 100 % stacked bar per name (a group or a month): the urgency levels, most urgent first and darkest."""
    codes = levels(kb)
    fig, ax = plt.subplots(figsize=(8.5, max(1.8, 0.34 * len(names) + 1.2)))
    for y, counts in enumerate(rows):
        total = sum(counts[c] for c in codes) or 1
        left = 0.0
        for i, code in enumerate(codes):
            width = 100 * counts[code] / total
            ax.barh(
                y,
                width,
                left=left,
                color=URGENCY_COLOURS[i],
                edgecolor="white",
                label=kb.catalog["urgency"][code].label,
            )
            if width >= 7:
                ax.text(left + width / 2, y, f"{width:.0f}%", ha="center", va="center", fontsize=7)
            left += width
    ax.set_yticks(
        range(len(names)), [f"{_label(n)} ({sum(r[c] for c in codes):,})" for n, r in zip(names, rows, strict=True)]
    )
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of the group's patients")
    ax.set_title(title, loc="left", fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _by_group(plt: Any, kb: KnowledgeBase, s: dict, folder: Path) -> str:
    """Every figure of the report per value of the --by column: urgency as a chart, the rest as tables."""
    e = html.escape
    groups = s["by"]["groups"]
    names = list(groups)
    svg = _save(
        _shares(plt, kb, names, [g["urgency"] for g in groups.values()], f"Urgency by {s['by']['column']}"),
        folder,
        "by_group",
    )
    parts = [svg]
    pct = lambda k, n: f"{k:,} ({100 * k / n:.0f}%)" if n else "0"
    codes = levels(kb)
    parts.append("<h3>Urgency and completeness</h3>")
    parts.append(
        _table(
            [s["by"]["column"], "patients", *[kb.catalog["urgency"][c].label for c in codes], "incomplete"],
            [
                [
                    name,
                    f"{g['patients']:,}",
                    *[pct(g["urgency"][c], g["patients"]) for c in codes],
                    pct(g.get("completeness", {}).get("incomplete", 0), g["patients"]),
                ]
                for name, g in groups.items()
            ],
        )
    )
    for kind, title in (
        ("actions", "Actions"),
        ("warnings", "Warnings"),
        ("differential", "Differential"),
        ("could_escalate", "Questions that could escalate"),
        ("rules", "Rules fired"),
    ):
        keys = list(dict.fromkeys(k for g in groups.values() for k, v in g[kind].items() if v))
        if kind == "rules":
            keys = [k for k in s["rules"] if k in keys]
        if not keys:
            continue
        parts.append(f"<h3>{e(title)} by {e(s['by']['column'])}</h3><div class='wide'>")
        parts.append(
            _table(
                [kind.replace("_", " "), *names],
                [[k, *[pct(_count(g, kind, k), g["patients"]) for g in groups.values()]] for k in keys],
            )
        )
        parts.append("</div>")
    return "\n".join(parts)


def _count(group: dict, kind: str, key: str) -> int:
    """Patients of a group's summary (to_dict) with `key` among `kind` (an action, a warning, a rule, ...)."""
    if kind == "actions":
        return int(group["actions"][key]["patients"]) if key in group["actions"] else 0
    return int(group[kind].get(key, 0))


def _trend(plt: Any, kb: KnowledgeBase, s: dict, folder: Path) -> str:
    """Patients per month by urgency (stacked, most urgent at the bottom), with the share incomplete."""
    months = s["trend"]["months"]
    names = list(months)
    codes = levels(kb)
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    bottom = [0] * len(names)
    for i, code in enumerate(codes):
        values = [months[m]["urgency"][code] for m in names]
        ax.bar(names, values, bottom=bottom, color=URGENCY_COLOURS[i], label=kb.catalog["urgency"][code].label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("patients")
    _thousands(ax.yaxis)
    ax.set_title(f"Patients per month of {s['trend']['column']}, by urgency", loc="left", fontsize=11)
    step = max(1, len(names) // 12)  # at most about 12 month labels: never overlapping
    ax.set_xticks(range(len(names)), [n if i % step == 0 else "" for i, n in enumerate(names)], rotation=90)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    svg = _save(fig, folder, "trend")
    pct = lambda k, n: f"{100 * k / n:.0f}%" if n else "-"
    table = _table(
        ["month", "patients", *[kb.catalog["urgency"][c].label for c in codes], "incomplete"],
        [
            [m, f"{v['patients']:,}", *[f"{v['urgency'][c]:,}" for c in codes], pct(v["incomplete"], v["patients"])]
            for m, v in months.items()
        ],
    )
    return svg + "\n" + table


def _table(head: list[str], rows: list[list]) -> str:
    e = html.escape
    out = ["<table><thead><tr>", *(f"<th>{e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _page(kb, summary: Summary, s: dict, sections: list, compare_kb, run_id, rate: str) -> str:
    e = html.escape
    n = s["patients"]
    share = (lambda k: f"{k:,} ({100 * k / n:.0f}%)") if n else (lambda k: f"{k:,}")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">',
        f"<title>Cohort report: {n:,} patients</title><style>{CSS}</style></head><body>",
        f"<h1>Cohort report: {n:,} patient(s)</h1>",
        f"<p class='meta'>Knowledge base {e(kb.name)} {e(kb.version)} ({e(kb.sha256[:12])})"
        + (f"; audit store run {e(run_id)}" if run_id else "")
        + (f"; {e(rate)}" if rate else "")
        + "</p>",
    ]
    if s["bad_rows"]:
        parts.append(f"<p class='warn'>{s['bad_rows']:,} bad row(s) were skipped and are not counted.</p>")
    parts.append("<nav>" + " · ".join(f"<a href='#{i}'>{e(t)}</a>" for i, t, _ in sections) + "</nav>")
    parts.append(
        _table(
            ["urgency", "patients"],
            [[kb.catalog["urgency"][code].label, share(k)] for code, k in s["urgency"].items()],
        )
    )
    for ident, title, body in sections:
        parts.append(f"<section id='{ident}'><h2>{e(title)}</h2>")
        parts.append(_inline(body) if body.lstrip().startswith(("<?xml", "<svg", "<!--")) else body)
        if ident == "windows":
            rows = [
                [kb.catalog["action"][code].label, window_words(w), f"{w['patients']:,}"]
                for code, a in s["actions"].items()
                for w in a["within_hours"]
            ]
            parts.append(_table(["action", "window", "patients"], rows))
        if ident == "pathways":
            rows = [[f"{p['patients']:,}", " → ".join(p["fired"]) or "(no rule fired)"] for p in s["pathways"]]
            parts.append(_table(["patients", "rules fired, in order"], rows))
        if ident == "rules" and s["never_fired"]:
            parts.append("<p>Rules this cohort never fired: " + e(", ".join(s["never_fired"])) + "</p>")
        if ident == "rules" and s["overrides"] is not None:
            parts.append("<h3>In the clinic: the CDS cards each rule was behind</h3>")
            rows = []
            for rule, patients in s["rules"].items():
                o = s["overrides"].get(rule) or {"cards": 0, "accepted": 0, "overridden": 0, "override_rate": None}
                rate_text = "" if o["override_rate"] is None else f"{o['override_rate']:.0%}"
                rows.append([rule, f"{patients:,}", o["cards"], o["accepted"], o["overridden"], rate_text])
            parts.append(_table(["rule", "patients", "CDS cards", "accepted", "overridden", "override rate"], rows))
        parts.append("</section>")
    if compare_kb is not None:
        parts.append("<section id='compare'><h2>Compared knowledge bases</h2>")
        parts.append(
            f"<p>{e(kb.name)} {e(kb.version)} ({e(kb.sha256[:12])}) against {e(compare_kb.name)} "
            f"{e(compare_kb.version)} ({e(compare_kb.sha256[:12])}): {share(s['changed']['patients'])} "
            "decision(s) change.</p>"
        )
        parts.append(_table(["change", "patients"], [[c, f"{k:,}"] for c, k in s["changed"]["changes"].items()]))
        if summary.changed_patients:
            parts.append(
                _table(
                    ["patient (first changed)", "how"],
                    [[who, "; ".join(changes)] for who, changes in summary.changed_patients],
                )
            )
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:1.5rem auto;max-width:1000px;color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;margin-top:0}.warn{background:#fff3cd;padding:.4rem .6rem;border-left:4px solid #e0a800}
nav{margin:.8rem 0 1rem;font-size:.9rem}a{color:#2a5db0}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}th{background:#f3f5f8}
svg.figure{max-width:100%;height:auto;display:block;margin:.4rem 0}
.wide{overflow-x:auto}
section{margin-bottom:2rem}
"""
