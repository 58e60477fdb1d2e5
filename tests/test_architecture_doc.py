"""docs/architecture.md's picture and module table are what docs/tools/architecture.py makes of the code now.

The picture is drawn from tests/test_architecture.py's LAYERS and import walk; a new module, a changed import
or a changed first docstring line makes the committed DOT, SVG, PNG or table stale, and `make architecture`
regenerates them.
"""

from __future__ import annotations

import importlib.util
import re

import networkx as nx
import pytest

from . import test_architecture as arch
from .conftest import ROOT

_spec = importlib.util.spec_from_file_location("architecture_tool", ROOT / "docs" / "tools" / "architecture.py")
assert _spec and _spec.loader
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

STALE = "docs/architecture.md's picture or table is stale: run `make architecture` and commit what it writes"


def test_the_committed_dot_is_what_the_code_gives_now():
    assert tool.DOT_FILE.read_text(encoding="utf-8") == tool.build_dot(), STALE


def test_the_committed_svg_and_png_were_rendered_from_that_dot():
    sha = tool.dot_sha(tool.DOT_FILE.read_text(encoding="utf-8"))
    assert tool.svg_sha(tool.SVG_FILE.read_text(encoding="utf-8")) == sha, STALE
    assert tool.png_text(tool.PNG_FILE.read_bytes()).get(tool.SHA_KEY) == sha, STALE


def test_the_module_table_of_the_page_is_current():
    doc = tool.DOC.read_text(encoding="utf-8")
    assert tool.doc_with_table(doc, tool.module_table()) == doc, STALE


def test_every_module_is_in_a_box_with_its_job():
    found = tool.boxes()
    drawn = {m for entry in found.values() for m in entry["members"]}
    markers = {f"lumbar_kb.{m}" for m in arch.MARKERS}
    assert drawn == set(arch.MODULES) - markers
    dot = tool.build_dot()
    for key, entry in found.items():
        assert entry["job"], f"{entry['title']}: its module should open with one line on its job"
        assert f'"{key or "cli"}" [label=' in dot


def test_every_import_between_boxes_is_drawn_or_implied_by_a_path():
    found = tool.boxes()
    drawn = nx.DiGraph(tool.flows(found))
    drawn.add_nodes_from(found)
    for importer, imported in arch.GRAPH.edges:
        a, b = tool.box(imported), tool.box(importer)
        if a is not None and b is not None and a != b:
            assert nx.has_path(drawn, a, b), f"{importer} imports {imported}, but no arrow path leads {a} -> {b}"
    for a, b in drawn.edges:  # and nothing is drawn that is not an import
        assert found[a]["layer"] <= found[b]["layer"]
        assert any(tool.box(x) == a and tool.box(y) == b for y, x in arch.GRAPH.edges), (a, b)


def test_each_layer_is_one_column_captioned_by_its_comment_in_layers():
    dot = tool.build_dot()
    captions = tool.layer_captions()
    assert captions[0] == "the typed model and the one exception tree"
    for rank, caption in enumerate(captions):
        cluster = re.search(rf"subgraph cluster_layer{rank} {{(.*?)\n  }}", dot, re.S)
        assert cluster, rank
        assert caption.split()[0] in cluster.group(1)
        members = [k or "cli" for k, v in tool.boxes().items() if v["layer"] == rank]
        assert "rank=same; " + " ".join(f'"{m}";' for m in members) in cluster.group(1)


@pytest.mark.parametrize("section", ["Where a change goes", "Invariants a change must keep"])
def test_the_page_has_its_sections(section):
    assert f"## {section}" in tool.DOC.read_text(encoding="utf-8").splitlines()
