"""`lumbar-kb`: the argument parser built from the command modules, and the one place errors become exit codes.

Exit codes: 0 success; 1 a check found problems (validate, check, test); 2 bad input (a patient file, a
knowledge base, command-line usage). Bad input is reported one line per problem on stderr, never as a
traceback, and nothing is written to stdout or to an output file unless everything succeeded.
"""

from __future__ import annotations

import argparse
import sys

from lumbar_kb.engine.errors import LumbarKBError

from . import authoring, graph, patients, review
from .common import EXIT_BAD_INPUT, EXIT_OK

# each command family adds its subcommands, in the order `lumbar-kb --help` lists them
COMMAND_FAMILIES = (patients.add_commands, graph.add_commands, authoring.add_commands, review.add_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumbar-kb", description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMAND_FAMILIES:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 with argparse's message
    try:
        code: int = args.run(args)
        return code
    except LumbarKBError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # e.g. standard output on a full disk
        print(f"error: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
