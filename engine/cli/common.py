"""What every command shares: exit codes, the --kb option, the one JSON encoding, and argument helpers.

Command modules import from here and nowhere else in the CLI; nothing outside the CLI imports the CLI.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, NoReturn

from lumbar_kb.engine.errors import did_you_mean
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.model import KnowledgeBase

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for a misspelt option or choice; every subparser is one too.

    A misspelt option is caught by the subcommand's own parser, which knows that command's options, so the
    message names the command (`lumbar-kb evaluate: error: unrecognized arguments: --fromat (did you mean
    '--format'?)`); usage errors still exit 2.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if not self._subparsers:  # a command's own parser: its leftovers can only be mistakes
            names = [o[2:] for o in self._option_string_actions if o.startswith("--") and o != "--help"]
            for arg in extras:  # compared without the dashes, which every option shares
                if arg.startswith("--") and (close := did_you_mean(arg.partition("=")[0][2:], names)):
                    hint = close.replace("'", "'--", 1)
                    self.error(f"unrecognized arguments: {' '.join(extras)} ({hint})")
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if wrong and (hint := did_you_mean(wrong.group(1), re.findall(r"'([^']*)'", wrong.group(2)))):
            message = f"{message} ({hint})"
        super().error(message)


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
