"""What every command shares: exit codes, the --kb option, the one JSON encoding, and argument helpers.

Command modules import from here and nowhere else in the CLI; nothing outside the CLI imports the CLI.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lumbar_kb.engine.loader import load
from lumbar_kb.engine.model import KnowledgeBase

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def dumps(data: Any) -> str:
    """The one JSON encoding of every JSON output: deterministic, byte-identical for the same input."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def add_kb_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kb",
        metavar="DIR",
        type=Path,
        default=None,
        help="knowledge base directory (default: the bundled lumbar_mass)",
    )


def kb_from(args: argparse.Namespace) -> KnowledgeBase:
    return load(args.kb)
