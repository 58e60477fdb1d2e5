"""The author toolkit's subcommands: `validate`, `check`, `test`, `explain` and `new-kb` (found by `main`
through `add_commands`).

Glue only: parse arguments, call `engine.analysis`, print, choose the exit code (0 ok, 1 a check or a
scenario failed, 2 bad input: a knowledge base that does not load is bad input for every command). The work
lives in `lumbar_kb.engine.analysis`.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from lumbar_kb.common import EXIT_FAILED, EXIT_OK, add_kb_option, dumps, kb_from
from lumbar_kb.engine.errors import LumbarKBError


def add_commands(sub) -> None:
    _add_validate(sub)
    _add_new_kb(sub)
    _add_check(sub)
    _add_test(sub)
    _add_explain(sub)


def _need_solver() -> None:
    if importlib.util.find_spec("z3") is None:
        raise LumbarKBError("this command needs the z3 solver: pip install z3-solver")


# ---- validate ------------------------------------------------------------------------------------------------
def _add_validate(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="load and compile a knowledge base, report every problem",
        description="Load, check and compile a knowledge base into durable-rules, and look for two rules that "
        "derive one fact with two values for one patient. Prints every problem as `error: file:line: subject: "
        "message` and exits 2 if there is any (a knowledge base that does not load is bad input, for every "
        "command).",
    )
    add_kb_option(p)
    p.set_defaults(run=_run_validate)


def _run_validate(args) -> int:
    from lumbar_kb.common import EXIT_BAD_INPUT, print_problems
    from lumbar_kb.engine.errors import KnowledgeBaseError, safe_text
    from lumbar_kb.engine.loader import default_kb_dir
    from lumbar_kb.engine.session import Engine

    where = args.kb or default_kb_dir()
    if not where.is_dir():
        kb_from(args)  # a missing folder: the same one-line error as every command
    try:
        kb = kb_from(args)
        engine = Engine(kb)
        engine.run({})  # one empty evaluation proves the compiled ruleset runs
        _no_contradictions(kb)
    except KnowledgeBaseError as exc:  # bad input, as for every command, with how many problems and where
        print_problems(exc.problems)
        print(f"{len(exc.problems)} problem(s) in {safe_text(where)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"ok: {kb.name} {kb.version}: {len(kb.rules)} rules, {len(kb.input_facts)} input facts, "
        f"{len(kb.derived_facts)} derived facts, {len(kb.references)} references; compiled to durable-rules "
        f"({kb.sha256[:12]})"
    )
    if engine.compiled.never_true:
        print("note: these rules' conditions can never be true: " + ", ".join(engine.compiled.never_true))
    return EXIT_OK


def _no_contradictions(kb) -> None:
    """Two rules that derive one fact with two values for one patient (the engine would stop for that patient),
    named with such a patient."""
    from lumbar_kb.engine.errors import KnowledgeBaseError, Problem
    from lumbar_kb.engine.logic import exclusive_derivers

    if exclusive_derivers(kb):
        return  # every two rules deriving one fact both ways test one input fact for values that cannot meet
    from lumbar_kb.engine.analysis.checks import contradictions  # the solver, only when the quick look cannot tell

    problems = []
    for finding in contradictions(kb):
        patient = ", ".join(f"{k}: {_yaml_value(v)}" for k, v in sorted((finding.patient or {}).items()))
        problems.append(
            Problem(
                f"{finding.message} (for example the patient {{{patient}}}); the engine would stop for such a "
                "patient: make the two rules' conditions exclusive",
                finding.file,
                finding.line,
                subject=finding.subject,
            )
        )
    if problems:
        raise KnowledgeBaseError(problems)


def _yaml_value(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


# ---- new-kb ------------------------------------------------------------------------------------------------
SCHEMA_LINE = re.compile(r"^(# yaml-language-server: \$schema=)(\S+)$", re.M)
NOT_COPIED = ("approvals.yaml",)  # the board's sign-off belongs to the knowledge base it signed


def _add_new_kb(sub) -> None:
    p = sub.add_parser(
        "new-kb",
        help="start a knowledge base of your own as a copy of another, with working editor schemas",
        description="Copy a knowledge base (the bundled lumbar_mass unless --from) into DIR, which must not "
        "exist yet, with the JSON Schemas in DIR/schema/ and every `$schema=` line pointing at them, so an "
        "editor keeps checking the copy wherever it lives. The board's approvals are not copied: a new "
        "knowledge base starts unapproved. Then: `make author-check KB=DIR`.",
    )
    p.add_argument("dir", metavar="DIR", type=Path)
    p.add_argument("--from", dest="source", metavar="KB", type=Path, default=None, help="the knowledge base to copy")
    p.set_defaults(run=_run_new_kb)


def _run_new_kb(args) -> int:
    import os
    import shutil
    import tempfile

    from lumbar_kb.engine.errors import Problem
    from lumbar_kb.engine.loader import default_kb_dir, load
    from lumbar_kb.engine.loader.files import schema_dir
    from lumbar_kb.engine.outputs import umask
    from lumbar_kb.engine.source import display

    source = args.source or default_kb_dir()
    load(source)  # only a knowledge base that loads is copied (bad input otherwise: exit 2)
    target: Path = args.dir
    if target.exists() or target.is_symlink():
        raise LumbarKBError(Problem("already exists: choose a new folder", file=display(target)))
    parent = target.absolute().parent
    if not parent.is_dir():
        raise LumbarKBError(Problem("no such folder to create it in", file=display(parent)))
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))  # renamed into place when whole
    try:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if path.is_symlink():
                raise LumbarKBError(Problem("a symbolic link: not copied", file=display(path)))
            if path.is_dir():
                (staging / rel).mkdir(parents=True, exist_ok=True)
            elif path.is_file() and rel.as_posix() not in NOT_COPIED and "__pycache__" not in rel.parts:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                data = path.read_bytes()
                if path.suffix == ".yaml":
                    data = _point_at(data.decode(), os.path.relpath(staging / "schema", (staging / rel).parent))
                (staging / rel).write_bytes(data)
        (staging / "schema").mkdir(exist_ok=True)
        for schema in sorted(schema_dir().glob("*.json")):
            shutil.copyfile(schema, staging / "schema" / schema.name)
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp's 0700 widened to what the umask allows, as mkdir gives
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(
        f"new knowledge base: {display(target)} (a copy of {display(source)}; schemas in {display(target / 'schema')})"
    )
    print(f"next: edit its rules, then `make author-check KB={display(target)}` (validate, check, test)")
    return EXIT_OK


def _point_at(text: str, schemas: str) -> bytes:
    """The file's `$schema=` lines pointed at the copy's own schema folder (`schemas`, relative to the file)."""

    def point(match: re.Match) -> str:
        return f"{match.group(1)}{schemas}/{Path(match.group(2)).name}"

    return SCHEMA_LINE.sub(point, text).encode()


# ---- check ---------------------------------------------------------------------------------------------------
def _add_check(sub) -> None:
    p = sub.add_parser(
        "check",
        help="prove the rules safe over every input state (z3), with counterexamples",
        description="Static analysis over every input state (each input fact unknown or one of its "
        "values): rules that never fire or are redundant, unused or unreachable facts and "
        "conclusions, derivation cycles and contradictions, contradictory windows, and the "
        "safety invariants. Every finding comes with a patient the engine reproduces it "
        "on. Exits 1 on any problem; notes do not fail. The time taken goes to stderr.",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument(
        "--release",
        action="store_true",
        help="the release gate: also run the scenarios (`test`), and fail while any scenario fails, any item "
        "lacks the board's quorum of valid signatures on its current content, or any decision is open",
    )
    p.add_argument(
        "--against",
        metavar="PREVIOUS_KB",
        type=Path,
        default=None,
        help="with --release: the previous release; fail when the content changed but the version label did not",
    )
    add_kb_option(p)
    p.set_defaults(run=_run_check)


def _run_check(args) -> int:
    _need_solver()
    from lumbar_kb.engine.analysis.checks import render, run_checks

    report = run_checks(kb_from(args))
    sys.stdout.write(dumps(report.to_dict()) if args.format == "json" else render(report))
    print(f"checked in {report.elapsed:.2f} s", file=sys.stderr)
    if args.release:
        from lumbar_kb.engine.analysis.approvals import record_problems, unapproved_lines
        from lumbar_kb.engine.analysis.coverage import run_scenarios

        pending = []
        if report.problems:
            pending.append(f"check found {len(report.problems)} problem(s) (above)")
        scenarios = run_scenarios(report.kb)
        if scenarios.failed or not scenarios.outcomes:
            failed = (
                ", ".join(f"{o.scenario.file} ({o.scenario.name})" for o in scenarios.failed)
                if scenarios.failed
                else "none ran"
            )
            pending.append(f"test: {len(scenarios.failed)} scenario(s) fail: {failed}")
        pending += unapproved_lines(report.kb)
        if args.against is not None:
            from lumbar_kb.engine.analysis.approvals import items
            from lumbar_kb.engine.loader import load

            previous = load(args.against)
            before = {i: item.content_hash for i, item in items(previous).items()}
            now = {i: item.content_hash for i, item in items(report.kb).items()}
            changed = previous.sha256 != report.kb.sha256 or before != now
            if changed and previous.version == report.kb.version:
                pending.append(
                    f"the content changed since {args.against} but the version label is still "
                    f"{report.kb.version}: a release must carry a new one"
                )
        for line in record_problems(report.kb):
            print(f"release: not counted: {line}", file=sys.stderr)
        for line in pending:
            print(f"release: {line}", file=sys.stderr)
        if pending:
            return EXIT_FAILED
    return EXIT_FAILED if report.problems else EXIT_OK


# ---- test ----------------------------------------------------------------------------------------------------
def _add_test(sub) -> None:
    p = sub.add_parser(
        "test",
        help="run the scenario files; report failures with a diff, and rule coverage",
        description="Run every scenario (scenarios/*.yaml of the knowledge base, or --scenarios DIR) "
        "through the engine, print pass/fail with expected-vs-actual diffs, then the rules "
        "no scenario fires and the conclusions no scenario checks. Exits 1 if any scenario "
        "fails (or, with --require-coverage, if anything is uncovered).",
    )
    p.add_argument(
        "--scenarios",
        metavar="DIR",
        type=Path,
        default=None,
        help="scenario directory (default: the knowledge base's scenarios/)",
    )
    p.add_argument(
        "--write-missing",
        metavar="DIR",
        type=Path,
        default=None,
        help="for each rule no scenario fires, write a minimal scenario that fires it (fewest answered "
        "facts, found by the solver) into DIR, for the author to complete",
    )
    p.add_argument(
        "--require-coverage",
        action="store_true",
        help="also exit 1 when a rule is fired by no scenario or a conclusion checked by none",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    add_kb_option(p)
    p.set_defaults(run=_run_test)


def _run_test(args) -> int:
    from lumbar_kb.engine.analysis.coverage import render, run_scenarios, write_missing

    kb = kb_from(args)
    report = run_scenarios(kb, args.scenarios)
    written = None
    if args.write_missing is not None:
        _need_solver()
        written = write_missing(kb, report, args.write_missing)
    sys.stdout.write(dumps(report.to_dict(written)) if args.format == "json" else render(report, written))
    if not report.outcomes:
        print("error: no scenario files (*.yaml) to run: a test run that checks nothing is not a pass", file=sys.stderr)
        return EXIT_FAILED
    if report.failed or (args.require_coverage and (report.unfired_rules or report.unchecked_conclusions)):
        return EXIT_FAILED
    return EXIT_OK


# ---- explain -------------------------------------------------------------------------------------------------
def _add_explain(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="why a conclusion was reached for a patient, or why not",
        description="For a conclusion reached (--why), the chain of rules and matched facts back to the "
        "patient's answers, with citations. For one not reached (--why-not), the nearest "
        "rules, which of their conditions were false or unknown, and the smallest change of "
        "answers that reaches it (solver). CODE is kind:code (urgency:emergency, "
        "action:mri_whole_spine, warning:..., differential:...), rule:<id>, or a bare code "
        "or rule id; case does not matter where that is unambiguous.",
    )
    p.add_argument("patient", metavar="PATIENT", type=Path)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--why", metavar="CODE")
    what.add_argument("--why-not", metavar="CODE")
    p.add_argument("--format", choices=("text", "json"), default="text")
    add_kb_option(p)
    p.set_defaults(run=_run_explain)


def _run_explain(args) -> int:
    from lumbar_kb.engine.analysis.explain import explain, render, resolve_target
    from lumbar_kb.engine.patient import load_patient

    kb = kb_from(args)
    # a typo (or an empty CODE) exits 2 before the patient is read
    target = resolve_target(kb, args.why if args.why is not None else args.why_not)
    patient = load_patient(args.patient, kb)
    _need_solver()  # why-not, and why for something not reached, search for the smallest change
    explanation = explain(kb, patient, target, want=args.why is not None)
    sys.stdout.write(dumps(explanation.to_dict()) if args.format == "json" else render(explanation, kb))
    return EXIT_OK
