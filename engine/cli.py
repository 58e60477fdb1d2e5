"""`lumbar-kb`: evaluate patients, validate a knowledge base, list the fact vocabulary, and more.

Exit codes: 0 success; 1 a check found problems (validate, check, test); 2 bad input (a patient file, a
knowledge base, command-line usage). Bad input is reported one line per problem on stderr, never as a
traceback, and nothing is written to stdout or to an output file unless everything succeeded.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from .errors import KnowledgeBaseError, LumbarKBError, Problem
from .loader import default_kb_dir, load

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def dumps(data) -> str:
    """The one JSON encoding of every JSON output: deterministic, byte-identical for the same input."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def add_kb_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kb", metavar="DIR", type=Path, default=None,
                        help="knowledge base directory (default: the bundled lumbar_mass)")


def kb_from(args):
    return load(args.kb)


# ---- evaluate ----------------------------------------------------------------------------------------------
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate patient files against the guideline",
                       description="Evaluate one or more patient files (YAML or JSON mapping of fact: value). "
                                   "One file gives one JSON object; several give one JSON object per line.")
    p.add_argument("patients", nargs="+", metavar="PATIENT", type=Path)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--audience", choices=("clinician", "patient"), default="clinician")
    add_kb_option(p)
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    from .api import Evaluator
    from .report import render
    from .result import build

    evaluator = Evaluator(kb_from(args))
    kb = evaluator.kb
    inputs = _load_all(args.patients, kb)
    chunks = []
    for path, facts in zip(args.patients, inputs):
        result = build(kb, evaluator.engine.run(facts), args.audience)
        if args.format == "json":
            data = result.to_dict()
            if len(args.patients) > 1:
                chunks.append(json.dumps({"patient_file": str(path), **data}, ensure_ascii=False) + "\n")
            else:
                chunks.append(dumps(data))
        else:
            header = f"== {path} ==\n" if len(args.patients) > 1 else ""
            chunks.append(header + render(result, kb))
    sys.stdout.write(("\n" if args.format == "text" else "").join(chunks))
    return EXIT_OK


# ---- cohort ------------------------------------------------------------------------------------------------
def _add_cohort(sub) -> None:
    p = sub.add_parser("cohort", help="evaluate many patients: one row each and a summary",
                       description="Evaluate patient files (or every *.yaml/*.yml/*.json in the directories named) "
                                   "and summarise: urgency counts, each action with the windows given, warnings, "
                                   "differential, how many patients each rule fired for, and the rules no patient "
                                   "fired. --format csv gives one row per patient for a spreadsheet.")
    p.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    add_kb_option(p)
    p.set_defaults(run=_run_cohort)


def _run_cohort(args) -> int:
    from .api import Evaluator
    from .cohort import Cohort, patient_files
    from .result import build

    evaluator = Evaluator(kb_from(args))
    files = patient_files(args.paths)
    if not files:
        raise LumbarKBError([Problem("no patient files (*.yaml, *.yml, *.json) found", file=str(p))
                             for p in args.paths])
    facts = _load_all(files, evaluator.kb)
    rows = [(path, build(evaluator.kb, evaluator.engine.run(f))) for path, f in zip(files, facts)]
    cohort = Cohort(evaluator.kb, rows)
    text = {"json": lambda: dumps(cohort.to_dict()), "csv": cohort.to_csv, "text": cohort.to_text}[args.format]()
    sys.stdout.write(text)
    return EXIT_OK


def _load_all(paths: list[Path], kb) -> list[dict]:
    """Every patient file validated before any is evaluated: one bad file means nothing is written."""
    from .patient import load_patient

    problems: list[Problem] = []
    inputs = []
    for path in paths:
        try:
            inputs.append(load_patient(path, kb))
        except LumbarKBError as exc:
            problems.extend(exc.problems)
    if problems:
        raise LumbarKBError(problems)
    return inputs


# ---- validate ----------------------------------------------------------------------------------------------
def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="load and compile a knowledge base, report every problem",
                       description="Load, check and compile a knowledge base into durable-rules. Prints every "
                                   "problem (file:line: subject: message) and exits 1 if there is any.")
    add_kb_option(p)
    p.set_defaults(run=_run_validate)


def _run_validate(args) -> int:
    from .session import Engine

    where = args.kb or default_kb_dir()
    try:
        kb = load(args.kb)
        engine = Engine(kb)
        engine.run({})  # one empty evaluation proves the compiled ruleset runs
    except KnowledgeBaseError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {where}", file=sys.stderr)
        return EXIT_FAILED
    inputs = len(kb.input_facts)
    print(f"ok: {kb.name} {kb.version}: {len(kb.rules)} rules, {inputs} input facts, {len(kb.derived_facts)} derived "
          f"facts, {len(kb.references)} references; compiled to durable-rules ({kb.sha256[:12]})")
    if engine.compiled.never_true:
        print("note: these rules' conditions can never be true: " + ", ".join(engine.compiled.never_true))
    return EXIT_OK


# ---- facts -------------------------------------------------------------------------------------------------
def _add_facts(sub) -> None:
    p = sub.add_parser("facts", help="the fact vocabulary and its questions")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--audience", choices=("clinician", "patient"), default="clinician")
    p.add_argument("--derived", action="store_true", help="also list the facts the rules derive")
    add_kb_option(p)
    p.set_defaults(run=_run_facts)


def _run_facts(args) -> int:
    kb = kb_from(args)
    facts = [f for f in kb.facts.values() if args.derived or not f.derived]
    if args.format == "json":
        sys.stdout.write(dumps([{"name": f.name, "type": f.type, "values": list(f.values), "alarm": f.alarm,
                                 "derived": f.derived, "meaning": f.meaning, "question": f.question,
                                 "patient_question": f.patient_question} for f in facts]))
        return EXIT_OK
    width = max(len(f.name) for f in facts)
    for f in facts:
        kind = "yes/no" if f.type == "bool" else " | ".join(map(str, f.values))
        ask = f.patient_question if args.audience == "patient" else f.question
        flag = "ALARM " if f.alarm else ("derived " if f.derived else "")
        print(f"{f.name:<{width}}  {flag}{kind}")
        print(f"{'':<{width}}  {ask or f.meaning}")
    return EXIT_OK


# ---- the command table: each entry adds one subcommand -----------------------------------------------------
COMMANDS: list[Callable] = [_add_evaluate, _add_cohort, _add_validate, _add_facts]


def _extra_commands() -> list[Callable]:
    """Subcommands that live beside their own modules: the diagrams and the author tools."""
    from visualize.cli import add_graph

    from .authoring import add_commands

    return [add_graph, add_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumbar-kb", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS + _extra_commands():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 with argparse's message
    try:
        return args.run(args)
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
