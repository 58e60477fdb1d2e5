"""`lumbar-kb`: the argument parser built from the command modules, and the one place errors become exit codes.

Exit codes: 0 success; 1 a finding (validate, check or test found problems); 2 bad input (a patient file, a
knowledge base, command-line usage, an output that cannot be written); 3 an internal error (a bug: printed as
"internal error, please report" with the traceback saved to a file, never posing as the user's fault). Bad
input is reported one line per problem on stderr (at most `Limits.max_errors`, then how many more), escaped
so no control character reaches the terminal, never as a traceback; nothing is written to stdout or to an
output file unless everything succeeded.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import traceback

from lumbar_kb import authoring_cmd, clinic_cmd, cohort_cmd, graph_cmd, patients_cmd, review_cmd, safety_cmd
from lumbar_kb.common import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, Parser, print_problems
from lumbar_kb.engine.errors import EngineError, LumbarKBError, safe_text

# each command family adds its subcommands, in the order `lumbar-kb --help` lists them
COMMAND_FAMILIES = (
    patients_cmd.add_commands,
    cohort_cmd.add_commands,
    graph_cmd.add_commands,
    authoring_cmd.add_commands,
    review_cmd.add_commands,
    safety_cmd.add_commands,
    clinic_cmd.add_commands,
)

CRASH_PREFIX = "lumbar-kb-crash-"  # traceback files, in the temporary directory


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lumbar-kb",
        description="The lumbar region mass guideline as rules: evaluate patients, check and test the rules, "
        "explain a conclusion, draw the decision graph. `lumbar-kb COMMAND --help` describes each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMAND_FAMILIES:
        add(sub)
    return parser


_PARSER: list[argparse.ArgumentParser] = []


def _parser() -> argparse.ArgumentParser:
    """The parser, built once a process: building it is ~8 ms (every command's options, argparse's gettext
    lookups), which a process that runs `main` many times (a test, a script) would pay each call. Parsing
    leaves a parser as it was, provided no option's default is a value a call could change: an option left out
    gets the default object itself (so `serve --cors-origin` defaults to None, not a shared list; tested)."""
    if not _PARSER:
        _PARSER.append(build_parser())
    return _PARSER[0]


def _safe_streams() -> None:
    """Whatever the locale (LC_ALL=C, PYTHONIOENCODING unset), writing text never fails on a character the
    terminal's encoding lacks: it is written as a backslash escape instead."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # already written to, or not a real text stream
                pass


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds every `finally`: temporary files are removed on SIGTERM too


def save_traceback(exc: BaseException) -> str | None:
    """Write the traceback of an internal error to a private file (mode 0600) in the temporary directory;
    its path, or None when even that fails."""
    try:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        fd, path = tempfile.mkstemp(prefix=f"{CRASH_PREFIX}{stamp}-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as out:
            out.write(f"lumbar-kb {' '.join(sys.argv[1:])}\n")
            out.write("".join(traceback.format_exception(exc)))
        return path
    except OSError:
        return None


def internal_error(exc: BaseException) -> int:
    saved = save_traceback(exc)
    where = f"the traceback is saved in {safe_text(saved)}" if saved else "the traceback could not be saved"
    detail = safe_text(f"{type(exc).__name__}: {exc}")
    print(f"internal error, please report: {detail} ({where})", file=sys.stderr)
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    _safe_streams()
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (a test's worker): leave signals alone
        pass
    try:
        args = _parser().parse_args(argv)  # usage errors exit 2 with argparse's message
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.run(args)
        return code
    except EngineError as exc:  # the engine failed on valid input: a bug, not the user's fault
        return internal_error(exc)
    except LumbarKBError as exc:
        print_problems(exc.problems)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # e.g. standard output on a full disk
        if exc.filename is not None:  # a file the command touched that no reader or writer reported
            print(f"error: {safe_text(exc.filename)}: {safe_text(exc.strerror or exc)}", file=sys.stderr)
        else:
            print(f"error: cannot write: {safe_text(exc.strerror or exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # anything else is a bug
        return internal_error(exc)


if __name__ == "__main__":
    sys.exit(main())
