"""Load a knowledge base directory into the typed model, collecting every problem.

    knowledge/<kb>/guideline.yaml   metadata, references, sections, conclusion catalogue
    knowledge/<kb>/facts.yaml       fact vocabulary
    knowledge/<kb>/rules/*.yaml     rules, one section per file

Each file is read safely with positions (`source`), checked against its JSON Schema (`knowledge/schema/`),
then built into the model with the semantic checks a schema cannot make (unknown names, duplicate ids,
citations). All problems across all files are reported together, each with file, line and subject.

One module per thing built: `files` (where things are), `schema` (JSON Schema, errors with positions),
`conditions`, `facts`, `catalog`, `safety` (completeness, scope, floors), `rules`; this module reads the
files and assembles the KnowledgeBase.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lumbar_kb.engine.errors import KnowledgeBaseError, Problem, did_you_mean
from lumbar_kb.engine.loader import cache
from lumbar_kb.engine.loader.files import (
    OPTIONAL_FILES,
    default_kb_dir,
    kb_files,
    knowledge_root,
    outside,
    outside_problem,
    read_contained,
    schema_dir,
    stray_files,
)
from lumbar_kb.engine.model import KnowledgeBase, Reference, Rule, Section
from lumbar_kb.engine.source import DocumentError, Positions, display, is_json, limits, parse_document, read_bytes

if TYPE_CHECKING:
    from lumbar_kb.engine.loader.catalog import CATALOG_KINDS
    from lumbar_kb.engine.loader.conditions import CONDITION_HEADS
    from lumbar_kb.engine.loader.facts import RESERVED_FACT_NAMES
    from lumbar_kb.engine.loader.rules import CONCLUSION_HEADS
    from lumbar_kb.engine.loader.schema import load_schema, schema_problems

# imported when first used: the builders bring jsonschema (~35 ms), which a knowledge base read back from the
# cache never needs
_LAZY = {
    "CATALOG_KINDS": "catalog",
    "CONDITION_HEADS": "conditions",
    "RESERVED_FACT_NAMES": "facts",
    "CONCLUSION_HEADS": "rules",
    "load_schema": "schema",
    "schema_problems": "schema",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CATALOG_KINDS",
    "CONCLUSION_HEADS",
    "CONDITION_HEADS",
    "OPTIONAL_FILES",
    "RESERVED_FACT_NAMES",
    "default_kb_dir",
    "digest",
    "kb_files",
    "knowledge_root",
    "load",
    "load_schema",
    "outside",
    "outside_problem",
    "read_contained",
    "schema_dir",
    "schema_problems",
    "stray_files",
]


def load(kb_dir: Path | str | None = None) -> KnowledgeBase:
    """Load and check a knowledge base; raise KnowledgeBaseError listing every problem found."""
    root = Path(kb_dir) if kb_dir is not None else default_kb_dir()
    cache_key = cache.key(root) if cache.directory() is not None else None
    if cache_key is not None and (kept := cache.get(cache_key)) is not None:
        return kept  # loaded before, from the same bytes, by the same code (engine/loader/cache.py)
    problems: list[Problem] = []
    kb = _build(root, problems)
    if problems:
        raise KnowledgeBaseError(problems)
    assert kb is not None
    if cache_key is not None:
        cache.put(cache_key, kb)
    return kb


# documents that read and matched their schema without a problem, kept a process by what determines them (their
# schema, the reading limits, JSON or YAML by the name, their bytes) as pickles: a knowledge base loaded again
# with one file edited (an author's next `check`, `diff` of two versions, a copy with one defect seeded) reads
# and validates only that file. Each use unpickles its own data, so no load can change another's.
_DOCUMENTS: dict[tuple, bytes] = {}
DOCUMENTS_KEPT = 512  # ~5 KB each


def _read(problems: list[Problem], path: Path, schema: str, root: Path) -> tuple[Any, Positions] | None:
    """One document, safely read with positions and checked against its schema (None when unreadable)."""
    import pickle

    from lumbar_kb.engine.loader.schema import schema_problems, subject_of, typename

    if outside(root, path):  # never read: a knowledge base stays in its folder
        problems.append(outside_problem(path))
        return None
    bounds = limits()
    try:
        raw = read_bytes(path, bounds)
        key = (schema, bounds, is_json(path.name), raw)
        kept = _DOCUMENTS.get(key)
        if kept is not None:
            data, lines, keys = pickle.loads(kept)
            return data, Positions(display(path), lines, keys)
        data, pos = parse_document(raw, path, bounds)
    except DocumentError as exc:
        problems.append(exc.problem)
        return None
    if not isinstance(data, dict):
        # the kind only, never the value: the file may be anything (a password file behind a symlink)
        kind = typename(data).split(" '")[0]
        problems.append(Problem(f"must be a mapping at the top, not {kind}", file=pos.file, line=1))
        return None
    found = schema_problems(data, schema, pos, lambda p: subject_of(data, p))
    problems.extend(found)
    if found:
        return None, pos
    if DOCUMENTS_KEPT:  # 0: none kept
        if len(_DOCUMENTS) >= DOCUMENTS_KEPT:
            _DOCUMENTS.clear()
        _DOCUMENTS[key] = pickle.dumps((data, pos.lines, pos.keys), pickle.HIGHEST_PROTOCOL)
    return data, pos


def _build(root: Path, problems: list[Problem]) -> KnowledgeBase | None:
    from lumbar_kb.engine.loader.catalog import build_catalog
    from lumbar_kb.engine.loader.facts import build_facts
    from lumbar_kb.engine.loader.governance import build_hazards, build_inconsistencies, build_relations
    from lumbar_kb.engine.loader.rules import build_rule
    from lumbar_kb.engine.loader.safety import build_safety

    if not root.is_dir():
        what = "is not a directory" if root.exists() else "knowledge base directory not found"
        problems.append(Problem(what, file=display(root)))
        return None
    guideline = _read(problems, root / "guideline.yaml", "guideline", root)
    facts_doc = _read(problems, root / "facts.yaml", "facts", root)
    rule_files = sorted((root / "rules").glob("*.yaml"))
    for stray in stray_files(root / "rules"):
        problems.append(Problem("not loaded: rule files end in .yaml", file=display(stray)))
    if not rule_files:
        problems.append(Problem("no rule files (rules/*.yaml)", file=display(root / "rules")))
    rule_docs = []
    for path in rule_files:
        doc = _read(problems, path, "rules", root)
        if doc is not None:
            rule_docs.append(doc)
    if guideline is None or facts_doc is None or guideline[0] is None or facts_doc[0] is None:
        return None  # nothing more can be checked without the catalogue and vocabulary
    g, gpos = guideline
    references = {
        int(n): Reference(int(n), r["title"], r["source"], r.get("year"), r["kind"]) for n, r in g["references"].items()
    }
    sections = {sid: Section(sid, s["title"]) for sid, s in g["sections"].items()}
    facts = build_facts(*facts_doc, problems)
    relations = build_relations(facts_doc[0], facts_doc[1], facts, problems)
    catalog = build_catalog(g, gpos, facts, problems)
    safety = build_safety(g, gpos, facts, catalog, problems)
    rules: list[Rule] = []
    seen_ids: dict[str, Problem] = {}
    # Rules are ordered as the guideline orders its sections, then by file name and position in the file.
    section_index = {sid: i for i, sid in enumerate(sections)}
    rule_docs.sort(key=lambda doc: section_index.get((doc[0] or {}).get("section"), len(section_index)))
    for data, pos in rule_docs:
        if data is None:
            continue
        section = data["section"]
        if section not in sections:
            problems.append(
                pos.problem(("section",), f"unknown section '{section}'", None, did_you_mean(section, sections))
            )
        for i, raw in enumerate(data["rules"]):
            rule = build_rule(raw, ("rules", i), pos, section, facts, catalog, references, len(rules), problems)
            if rule is None:
                continue
            if rule.id in seen_ids:
                first = seen_ids[rule.id]
                problems.append(
                    pos.problem(
                        ("rules", i, "id"),
                        f"duplicate rule id (first defined at {first.file}:{first.line})",
                        f"rule {rule.id}",
                    )
                )
                continue
            seen_ids[rule.id] = pos.problem(("rules", i), "")
            rules.append(rule)
    # rules are named by every id the rule files declare, built or not, so one broken rule is one problem
    # (None, so nothing is named unknown, when a rule file could not be read: its problem is already reported)
    unread = len(rule_docs) < len(rule_files) or any(data is None for data, _ in rule_docs)
    declared = None if unread else {str(r.get("id")) for data, _ in rule_docs if data for r in data["rules"]}
    inconsistencies: tuple = ()
    hazards: tuple = ()
    for name in ("inconsistencies", "hazards"):
        path = root / f"{name}.yaml"
        if not os.path.lexists(path):
            continue  # optional: a knowledge base without them loads (`check` says they are missing)
        doc = _read(problems, path, name, root)
        if doc is None or doc[0] is None:
            continue
        if name == "inconsistencies":
            inconsistencies = build_inconsistencies(doc[0], doc[1], declared, problems)
        else:
            hazards = build_hazards(doc[0], doc[1], declared, relations, problems)
    if os.path.lexists(root / "board.yaml"):  # optional: who signs; part of the identity, so checked here
        from lumbar_kb.engine.loader.board import load_board

        try:
            load_board(root)
        except KnowledgeBaseError as exc:
            problems.extend(exc.problems)
    if os.path.lexists(root / "codes.yaml"):  # optional: the terminology bindings, checked like the rest
        from lumbar_kb.engine.loader.codes import check_codes

        codes_doc = _read(problems, root / "codes.yaml", "codes", root)
        if codes_doc is not None and codes_doc[0] is not None:
            check_codes(codes_doc[0], codes_doc[1], facts, catalog, problems)
    return KnowledgeBase(
        name=g["name"],
        title=g["title"],
        version=str(g["version"]),
        last_updated=str(g["last_updated"]),
        review_status=g["review_status"],
        publisher=g.get("publisher", ""),
        disclaimer=g.get("disclaimer", ""),
        question=g.get("question", ""),
        root=str(root),
        sha256=digest(root),
        facts=facts,
        rules=tuple(rules),
        references=references,
        sections=sections,
        catalog=catalog,
        relations=relations,
        inconsistencies=inconsistencies,
        hazards=hazards,
        **safety,
    )


def digest(root: Path) -> str:
    """The knowledge base's identity: sha256 over every file that defines its behaviour."""
    h = hashlib.sha256()
    for path in kb_files(root):
        if outside(root, path):
            continue  # never read: the load reports it
        try:
            data = read_bytes(path)  # bounded, regular files only: the reading front door
        except DocumentError:
            continue  # missing or unreadable: reported by the load itself
        h.update(path.relative_to(root).as_posix().encode("utf-8", "surrogateescape") + b"\0")
        h.update(data + b"\0")
    return h.hexdigest()
