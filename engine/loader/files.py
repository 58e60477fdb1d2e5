"""Where a knowledge base's files are: the bundled one, its schemas, the files hashed into its identity."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


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
    """The files that define a knowledge base's behaviour (hashed into its sha256)."""
    return [root / "guideline.yaml", root / "facts.yaml", *sorted((root / "rules").glob("*.yaml"))]
