"""Data flows one way: no import cycle between our modules, and no lower layer importing a higher one.

Every `import` in every module of `lumbar_kb` (module level and inside functions: a lazy import is still a
dependency) is read with `ast`, resolved to the module it names, and checked against LAYERS, listed from the
bottom up. A module may import modules of its own layer or of lower ones, never higher; a module missing from
LAYERS fails the test, so a new module has to be given its place (docs/architecture.md says where things go).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent

# bottom up: each entry is a layer, each layer a tuple of module-name prefixes under lumbar_kb
LAYERS: list[tuple[str, ...]] = [
    ("engine.model", "engine.errors"),  # the typed model and the one exception tree
    # engine.outputs writes files safely, engine.discovery finds patient files
    ("engine.source", "engine.logic", "engine.trace", "engine.outputs", "engine.discovery"),  # files; logic; traces
    ("engine.loader", "engine.compiler", "engine.patient", "engine.guideline_text"),  # YAML -> model, rulesets, inputs
    # engine.prepared: a knowledge base worked out once for evaluating many patients (conditions as predicates)
    ("engine.prepared", "engine.session", "engine.reference"),  # evaluation: prepared form, durable engine, oracle
    ("engine.result", "engine.scenarios"),  # a trace made into the user's Result; expectations about Results
    ("engine.analysis",),  # look-ahead, proofs, explanations, coverage
    ("engine.api",),  # the small front door: load, evaluate
    # the views, one wing per audience: a Result's text, which every audience shares (engine.result_text); the
    # board's decision graph, review pack and hazard log (visualize); the analysts' cohort engine, store and
    # report (cohort); the CDS Hooks service and FHIR in and out (clinic)
    ("engine.result_text", "visualize", "cohort", "clinic"),  # views: a wing per audience
    ("",),  # the command line: the root package lumbar_kb itself (cli/)
]


def _modules() -> dict[str, Path]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    out: dict[str, Path] = {}
    for package in cfg["packages"]:
        parts = package.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in mapping:
                folder = ROOT / mapping[".".join(parts[:n])] / Path(*parts[n:])
                break
        for path in folder.glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The lumbar_kb modules `name` imports, resolved to modules (not packages where a module is meant)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in MODULES else stem for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("lumbar_kb") and target != name:
                found.add(target)
    return found


# package markers: __init__ modules that only document their package and import nothing (tested)
MARKERS = ("engine", "visualize", "knowledge", "engine.analysis")


def _layer(module: str) -> int:
    rest = module.removeprefix("lumbar_kb").lstrip(".")
    if rest in MARKERS:
        return 0
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if rest == prefix or rest.startswith(prefix + ".") or (prefix == "" and rest.count(".") == 0):
                if prefix == "" and rest.split(".")[0] in ("engine", "visualize", "knowledge"):
                    continue
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} has no layer: add it to LAYERS in {__file__}"
    return best[0]


GRAPH = nx.DiGraph()
for _name, _path in MODULES.items():
    GRAPH.add_node(_name)
    for _target in _imports(_name, _path):
        GRAPH.add_edge(_name, _target)


def test_the_walk_sees_the_real_imports():
    """Guards the walker itself: edges known to exist must be found, or the tests below prove nothing."""
    assert ("lumbar_kb.engine.session", "lumbar_kb.engine.compiler") in GRAPH.edges
    assert ("lumbar_kb.engine.analysis.checks", "lumbar_kb.engine.analysis.checks.safety") in GRAPH.edges
    assert ("lumbar_kb.main", "lumbar_kb.graph_cmd") in GRAPH.edges
    assert ("lumbar_kb.engine.api", "lumbar_kb.engine.analysis.escalation") in GRAPH.edges
    assert len(GRAPH) == len(MODULES) > 40


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)
    for marker in MARKERS:
        assert not list(GRAPH.successors(f"lumbar_kb.{marker}")), f"lumbar_kb.{marker} is a marker: it imports nothing"


def test_no_import_cycles():
    cycles = [sorted(c) for c in nx.strongly_connected_components(GRAPH) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})" for a, b in GRAPH.edges if _layer(b) > _layer(a)
    ]
    assert upward == [], "\n".join(upward)


def test_nothing_outside_the_command_line_imports_it():
    cli = {m for m in MODULES if _layer(m) == len(LAYERS) - 1}
    assert "lumbar_kb.main" in cli and "lumbar_kb.engine.api" not in cli
    outside = [(a, b) for a, b in GRAPH.edges if b in cli and a not in cli]
    assert outside == []


def test_the_engine_never_imports_durable_rules_outside_the_session():
    """durable-rules stays behind the engine's own small interface (session.py)."""
    users = sorted(
        name
        for name, path in MODULES.items()
        if any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and any("durable" in (a.name or "") for a in n.names) | ("durable" in (getattr(n, "module", "") or ""))
            for n in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert users == ["lumbar_kb.engine.session"]
