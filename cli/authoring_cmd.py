"""The author toolkit's subcommands: `check`, `test` and `explain` (found by `main` through `add_commands`).

Glue only: parse arguments, call `engine.analysis`, print, choose the exit code (0 ok, 1 a check or a
scenario failed, 2 bad input). The work lives in `lumbar_kb.engine.analysis`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from lumbar_kb.common import EXIT_FAILED, EXIT_OK, add_kb_option, dumps, kb_from
from lumbar_kb.engine.errors import LumbarKBError


def add_commands(sub) -> None:
    _add_check(sub)
    _add_test(sub)
    _add_explain(sub)


def _need_solver() -> None:
    if importlib.util.find_spec("z3") is None:
        raise LumbarKBError("this command needs the z3 solver: pip install z3-solver")


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
