"""Where a knowledge base's files are: the bundled one, its schemas, the files hashed into its identity, and
the rule that every file a knowledge base names stays inside its folder."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from lumbar_kb.engine.errors import Problem
from lumbar_kb.engine.source import DocumentError, Positions, display, read_document

# the files besides guideline.yaml, facts.yaml and rules/*.yaml whose content decides what a patient gets (the
# code bindings decide which record makes a fact known): hashed into the identity when present. The governance
# files (hazards, inconsistencies, guideline_text, board) are not behaviour: the board's approvals and
# decisions hash their items one by one (engine/analysis/approvals.py)
OPTIONAL_FILES = ("codes.yaml",)


def knowledge_root() -> Path:
    """The bundled `knowledge/` directory, from a checkout or an installed wheel."""
    return Path(str(resources.files("lumbar_kb.knowledge")))


def default_kb_dir() -> Path:
    return knowledge_root() / "lumbar_mass"


def schema_dir() -> Path:
    return knowledge_root() / "schema"


def stray_files(directory: Path) -> list[Path]:
    """Files that look like YAML or JSON but would not be loaded (`*.yml`, `*.YAML`, `*.json`): an author's
    rule or scenario silently skipped would be worse than an error."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in (".yaml", ".yml", ".json") and p.suffix != ".yaml"
    )


def kb_files(root: Path) -> list[Path]:
    """The files that define a knowledge base's behaviour and texts (hashed into its sha256): guideline, facts,
    rules, and the code bindings when present."""
    optional = [root / name for name in OPTIONAL_FILES if os.path.lexists(root / name)]
    return [root / "guideline.yaml", root / "facts.yaml", *sorted((root / "rules").glob("*.yaml")), *optional]


def outside(root: Path | str, path: Path | str) -> bool:
    """Whether `path`, its symbolic links followed, leads outside the folder `root` (itself resolved): a
    knowledge base from an untrusted author must not make the tools read, hash or quote /etc/passwd.
    A dangling link or a link loop inside the folder is not outside (reading it reports what it is)."""
    base = os.path.realpath(root)
    target = os.path.realpath(path)
    return os.path.commonpath([base, target]) != base


OUTSIDE = "refused: a symbolic link or path leading outside the knowledge base folder (nothing of it was read)"


def outside_problem(path: Path) -> Problem:
    return Problem(OUTSIDE, file=display(path))


def read_contained(root: Path, path: Path) -> tuple[Any, Positions]:
    """One document of the knowledge base in `root`, read only when it stays inside that folder (a
    DocumentError otherwise, naming the file and never quoting its content)."""
    if outside(root, path):
        raise DocumentError(outside_problem(path))
    return read_document(path)
