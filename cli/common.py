"""What every command shares: exit codes, the --kb option, the one JSON encoding, and argument helpers.

Command modules import from here and nowhere else in the CLI; nothing outside the CLI imports the CLI.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from lumbar_kb.engine.errors import LumbarKBError, Problem, did_you_mean
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.model import KnowledgeBase
from lumbar_kb.engine.source import Limits, limits

# 0 ok; 1 a finding (a check, a scenario or validation failed); 2 the input is bad (a file, an argument);
# 3 an internal error (a bug: "internal error, please report", the traceback saved to a file)
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a finding (check, test, a release gate or a replay found a problem); "
    "2 bad input (a file, an argument, or a knowledge base that does not load or "
    "contradicts itself), with `error:` lines naming where; 3 an internal error (a bug: please report it, "
    "the traceback is saved to a file)."
)


class Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for a misspelt option or choice; every subparser is one too.

    A misspelt option is caught by the subcommand's own parser, which knows that command's options, so the
    message names the command (`lumbar-kb evaluate: error: unrecognized arguments: --fromat (did you mean
    '--format'?)`); usage errors still exit 2.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("epilog", EXIT_CODES_HELP)  # every command's --help lists the exit codes
        super().__init__(*args, **kwargs)

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
    """The one JSON encoding of every JSON output: deterministic, byte-identical for the same input, and
    JSON (a NaN or an infinity is a ValueError, never printed)."""
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def dumps_line(data: Any) -> str:
    """One JSON object on one line (several patients' results, one per line); JSON only, like `dumps`."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n"


def print_problems(problems: Sequence[Problem], prefix: str = "error: ", stream: TextIO | None = None) -> None:
    """One line per problem, at most `Limits.max_errors` of them, then how many more there were. Each line
    is escaped (`Problem.__str__`), so nothing from a file or an argument reaches the terminal raw."""
    stream = stream or sys.stderr
    try:
        most = limits().max_errors
    except LumbarKBError:  # a bad LUMBAR_KB_LIMIT_* setting is itself the problem being printed
        most = Limits().max_errors
    for problem in problems[:most]:
        print(f"{prefix}{problem}", file=stream)
    if len(problems) > most:
        print(f"{prefix}... and {len(problems) - most} more problem(s) not shown", file=stream)


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


def feedback_rates(path: Path) -> dict:
    """Per rule, what clinicians did with the CDS cards it was behind, from `lumbar-kb serve --db FILE`'s store
    (for `review --feedback` and `cohort --report --feedback`)."""
    import sqlite3

    from lumbar_kb.clinic.service.store import override_rates
    from lumbar_kb.engine.source import display

    if not path.is_file():
        raise LumbarKBError(Problem("no such feedback store", file=display(path)))
    try:
        return override_rates(path)
    except sqlite3.DatabaseError as exc:
        raise LumbarKBError(Problem(f"not a feedback store of lumbar-kb serve: {exc}", file=display(path))) from None
