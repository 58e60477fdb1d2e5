"""Write the review pack: render the templates over the model, draw the diagrams, copy the local assets.

The folder opens from disk (`file://`): every link is relative, the style sheet and the script are local
files, SVGs are inlined into their pages (so their rule nodes are links within the pack), nothing is fetched
from a network. Pages are written through `render.write_atomic`; the same knowledge base gives the same bytes.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jinja2

from lumbar_kb.engine.errors import Problem
from lumbar_kb.visualize.errors import OutputError
from lumbar_kb.visualize.graph import build_graph
from lumbar_kb.visualize.render import run_dot, write_atomic
from lumbar_kb.visualize.review import diagrams
from lumbar_kb.visualize.review.content import Pack, rule_anchor, sentence_anchor

ASSETS = ("pack.css", "pack.js")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lumbar_kb.visualize.review", "templates"),
        autoescape=jinja2.select_autoescape(("html",), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["rule_anchor"] = rule_anchor
    env.filters["sentence_anchor"] = sentence_anchor
    return env


def _svg(dot_source: str) -> str:
    """graphviz's SVG without the XML prolog, ready to inline into a page."""
    text = run_dot(dot_source, "svg").decode("utf-8")
    return text[text.index("<svg") :]


def write_pack(pack: Pack, out: Path) -> list[Path]:
    """Write every page of the pack into `out` (created if missing); the files written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            Problem(f"cannot create the output directory: {exc.strerror or exc}", file=str(out))
        ) from None
    env = _environment()
    kb, data = pack.kb, pack.data
    g = build_graph(kb)
    svgs = {
        "overview": _svg(diagrams.overview_dot(kb, g)),
        **{f"section:{s['id']}": _svg(diagrams.section_dot(kb, g, s["id"])) for s in data["sections"]},
        **{f"patient:{ex.id}": _svg(diagrams.patient_dot(kb, g, ex.result, ex.id)) for ex in pack.examples},
        **{f"algorithm:{d.id}": _svg(diagrams.algorithm_dot(kb, d)) for d in pack.algorithm},
    }
    pages: dict[str, tuple[str, dict]] = {
        "index.html": ("index.html", {}),
        "guideline.html": ("guideline.html", {}),
        "rules.html": ("rules.html", {}),
        "patients.html": ("patients.html", {}),
        "issues.html": ("issues.html", {}),
        "algorithm.html": ("algorithm.html", {}),
    }
    for s in data["sections"]:
        pages[s["page"]] = ("section.html", {"section": s})
    if data["diff"] is not None:
        pages["diff.html"] = ("diff.html", {})
    written = []
    for name, (template, extra) in pages.items():
        html = env.get_template(template).render(page=name, svgs=svgs, **data, **extra)
        path = out / name
        write_atomic(path, html.encode("utf-8"))
        written.append(path)
    for asset in ASSETS:
        path = out / asset
        write_atomic(path, (resources.files("lumbar_kb.visualize.review") / "static" / asset).read_bytes())
        written.append(path)
    return written
