"""Commands for analysts: `cohort` (many patients, every core, a decisions file, an audit store, a report),
`query` (named questions to the audit store) and `replay` (re-run a stored run with its own rules, certified).

Exit codes: 0 done; 1 done, but some rows were bad and skipped (cohort) or a replay differs; 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from itertools import chain, islice
from pathlib import Path
from typing import Any

from lumbar_kb.common import EXIT_FAILED, EXIT_OK, add_kb_option, dumps, feedback_rates, kb_from
from lumbar_kb.engine.errors import LumbarKBError, Problem


def add_commands(sub: argparse._SubParsersAction) -> None:
    for add in (_add_cohort, _add_query, _add_replay):
        add(sub)


# ---- cohort ------------------------------------------------------------------------------------------------
def _add_cohort(sub) -> None:
    p = sub.add_parser(
        "cohort",
        help="evaluate many patients: a row each, a summary, an audit store, a report",
        description="Evaluate every patient of the inputs (patient files, folders of them, JSON Lines, CSV, "
        "Parquet) exactly as `evaluate` would, and summarise: urgency counts, each action with the windows "
        "given, warnings, differential, how many patients each rule fired for, the rules no patient fired. "
        "Bad rows are reported by file and row and skipped (exit 1); they are never counted as patients.",
    )
    p.add_argument("paths", nargs="+", metavar="INPUT", type=Path)
    p.add_argument(
        "--format",
        choices=("text", "json", "csv"),
        default="text",
        help="the summary as text or JSON, or csv: one decision row per patient on stdout",
    )
    p.add_argument("--out", metavar="FILE", type=Path, help="decision rows to FILE (.jsonl, .csv or .parquet)")
    p.add_argument("--mapping", metavar="FILE", type=Path, help="YAML: an extract's column names and spellings")
    p.add_argument("--jobs", metavar="N", default="all", help="worker processes (default: all: every core)")
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        nargs="?",
        const=True,
        default=None,
        help="run on Dask distributed: the scheduler at ADDRESS (tcp://host:8786), or a LocalCluster of "
        "--jobs workers when no address is given",
    )
    p.add_argument("--chunk-size", metavar="N", type=int, default=1000, help="patients per task (default 1000)")
    p.add_argument("--db", metavar="FILE", type=Path, help="append the run to this DuckDB audit store")
    p.add_argument("--report", metavar="DIR", type=Path, help="write an HTML report with figures to DIR")
    p.add_argument(
        "--feedback",
        metavar="FILE",
        type=Path,
        help="with --report: the CDS service's store (lumbar-kb serve --db FILE), for override rates per rule",
    )
    p.add_argument(
        "--compare-kb",
        metavar="DIR",
        type=Path,
        help="what-if: also evaluate with this (older) knowledge base and list the decisions that change",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines and no final rate line on stderr")
    add_kb_option(p)
    p.set_defaults(run=_run_cohort)


def _jobs(value: str) -> int:
    from lumbar_kb.cohort.runner import cores

    if value == "all":
        return cores()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise LumbarKBError(Problem(f"--jobs must be a positive number or 'all', not '{value}'"))
    return n


def _run_cohort(args) -> int:
    # pyarrow's own allocator (mimalloc) keeps ~20 MB more resident over a run than the C library's, for the same
    # speed (`make bench`): this command and the worker processes it starts (they inherit the environment) use the
    # system's, unless the user chose one
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    from lumbar_kb.cohort import inputs as inp
    from lumbar_kb.cohort import runner
    from lumbar_kb.cohort.progress import Progress
    from lumbar_kb.cohort.summary import Summary
    from lumbar_kb.engine.loader import load

    jobs = _jobs(args.jobs)
    if args.chunk_size < 1:
        raise LumbarKBError(Problem("--chunk-size must be at least 1"))
    kb = kb_from(args)
    compare_kb = load(args.compare_kb) if args.compare_kb else None
    mapping = inp.Mapping.read(args.mapping, kb)
    listing = inp.Listing()  # the patient files in each input, listed once for the check, the total and the chunks
    inp.check_inputs(args.paths, kb, mapping, listing)
    # the feedback store is read before any work, so a bad one is refused before anything is written
    overrides = feedback_rates(args.feedback) if args.feedback is not None else None
    compared = compare_kb is not None
    out_writer = None
    if args.out:
        from lumbar_kb.cohort.output import Writer

        out_writer = Writer(args.out, compared)
    store = None
    if args.db:
        from lumbar_kb.cohort.store import Store

        try:
            store = Store(args.db)
        except LumbarKBError:
            if out_writer is not None:
                out_writer.close(keep=False)
            raise
    stdout_writer = None
    if args.format == "csv":
        from lumbar_kb.cohort.output import Writer

        stdout_writer = Writer(Path("-"), compared, stream=sys.stdout)
    job = runner.Job(
        kb.sha256,
        mapping,
        compare_kb.sha256 if compare_kb else None,
        rows=bool(stdout_writer or store),
        store=store is not None,
        out_kind=out_writer.kind if out_writer else None,
    )
    snapshots = {kb.sha256: runner.snapshot(kb)}
    if compare_kb is not None:
        snapshots[compare_kb.sha256] = runner.snapshot(compare_kb)
    total = inp.count_rows(args.paths, listing)  # before the chunks take each listing as they read it
    chunks = inp.chunks(args.paths, kb, mapping, args.chunk_size, listing)
    first = list(islice(chunks, 2))
    if len(first) < 2 and not args.dask:
        jobs = 1  # one chunk: a worker process would only add its start-up
    if jobs == 1 and not args.dask:
        runner.remember(kb)
        if compare_kb is not None:
            runner.remember(compare_kb)
        runner.for_throughput()  # this process evaluates (workers tune their own; a coordinator is left alone)
    run_id = None
    if store is not None:
        run_id = store.begin(kb, snapshots[kb.sha256], args.paths, _command(args), jobs, _backend(args, jobs))
    progress = Progress(total, quiet=args.quiet)
    summary = Summary()
    ok = False
    try:
        for out in runner.run(chain(first, chunks), job, snapshots, jobs, args.dask):
            for line in out.bad:
                print(f"skipped: {line}", file=sys.stderr)
            summary.merge(out.summary)
            if out_writer is not None and out.encoded is not None:
                out_writer.write_encoded(out.encoded)
            if stdout_writer is not None:
                stdout_writer.write(out.rows)
            if store is not None:
                store.add(run_id, out)
            progress.advance(out.summary.patients, out.summary.bad_rows)
        ok = True
    finally:
        for writer in (out_writer, stdout_writer):
            if writer is not None:
                writer.close(keep=ok)
        if store is not None:
            store.finish(run_id, summary, ok)
        rate = progress.close()  # also on failure: a progress bar must give the terminal back
    if args.report:
        from lumbar_kb.cohort.html_report import write_report

        write_report(args.report, kb, summary, compare_kb=compare_kb, run_id=run_id, rate=rate, overrides=overrides)
    if args.format == "json":
        data: dict[str, Any] = {"knowledge_base": kb.identity(), "summary": summary.to_dict(kb, compared)}
        if compare_kb is not None:
            data["compared_with"] = compare_kb.identity()
        if run_id:
            data["run_id"] = run_id
        sys.stdout.write(dumps(data))
    elif args.format == "text":
        text = summary.to_text(kb, compared, compare_kb)
        if run_id:
            text += f"Audit store {args.db}: run {run_id}\n"
        sys.stdout.write(text)
    return EXIT_FAILED if summary.bad_rows else EXIT_OK


def _command(args) -> str:
    return " ".join(sys.argv) if sys.argv and "lumbar" in Path(sys.argv[0]).name else "cohort"


def _backend(args, jobs: int) -> str:
    if args.dask:
        return "dask" if args.dask is True else f"dask {args.dask}"
    return f"processes x{jobs}" if jobs > 1 else "one process"


# ---- query -------------------------------------------------------------------------------------------------
def _add_query(sub) -> None:
    from_store = "the DuckDB audit store written by `cohort --db`"
    p = sub.add_parser(
        "query",
        help="named questions to the audit store (cohort --db)",
        description=f"Ask {from_store} a named question. runs: the runs stored. fired RULE: the patients for "
        "whom RULE fired. emergencies-by-window [ACTION]: emergency patients counted by the window of ACTION "
        "(default mri_whole_spine). never-fired: the rules of the run's knowledge base no patient fired. "
        "changed RUN_A RUN_B: the patients whose decision differs between two runs. "
        "Every question takes --run RUN_ID (default: the latest run).",
    )
    p.add_argument("db", metavar="DB", type=Path)
    p.add_argument(
        "question", choices=("runs", "fired", "emergencies-by-window", "never-fired", "changed"), metavar="QUESTION"
    )
    p.add_argument("arguments", nargs="*", metavar="ARG")
    p.add_argument("--run", dest="run_id", metavar="RUN_ID", help="the run asked about (default: the latest)")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--limit", type=int, default=None, help="at most this many rows")
    p.set_defaults(run=_run_query)


def _run_query(args) -> int:
    from lumbar_kb.cohort.store import Store, render

    store = Store(args.db, create=False)
    columns, rows = store.ask(args.question, args.arguments, args.run_id, args.limit)
    sys.stdout.write(render(columns, rows, args.format))
    return EXIT_OK


# ---- replay ------------------------------------------------------------------------------------------------
def _add_replay(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="re-evaluate a stored run with that run's own rules and certify identical decisions",
        description="Re-evaluate every stored input of RUN_ID with the knowledge base stored for that run "
        "(content-addressed by its sha256) and compare each decision with the stored one. Prints a "
        "certificate when every decision is identical (exit 0), else the differences (exit 1).",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="a run id (lumbar-kb query DB runs), or latest")
    p.add_argument("--db", metavar="FILE", type=Path, required=True, help="the DuckDB audit store")
    p.add_argument("--jobs", metavar="N", default="1", help="worker processes (default 1; all: every core)")
    p.add_argument("--limit", type=int, default=20, help="differences listed (default 20)")
    p.set_defaults(run=_run_replay)


def _run_replay(args) -> int:
    from lumbar_kb.cohort import runner
    from lumbar_kb.cohort.store import Store

    store = Store(args.db, create=False)
    if args.run_id == "latest":
        args.run_id = store.latest_run()
    run = store.run_info(args.run_id)
    snap = store.knowledge_base(run["kb_sha256"])
    kb = runner.from_snapshot(snap)
    jobs = _jobs(args.jobs)
    job = runner.Job(kb.sha256, rows=False, cache=False)  # every stored input evaluated afresh
    if jobs == 1:
        runner.remember(kb)
    checked = 0
    differing: list = []
    count = 0
    for out in runner.run(store.stored_chunks(args.run_id), job, {kb.sha256: snap}, jobs):
        checked += out.summary.patients
        count += len(out.replay_differences)
        differing.extend(out.replay_differences[: max(args.limit - len(differing), 0)])
    stored = run["patients"]
    if checked != stored:
        differing.append(("the run", ["patients"], {"patients": stored}, {"patients": checked}))
        count += 1
    from lumbar_kb.cohort.store import tool_version

    head = f"run {args.run_id}: knowledge base {kb.name} {kb.version} ({kb.sha256[:12]}), {checked} decision(s)"
    if run["tool_version"] != tool_version():
        head += f" (run by lumbar-kb {run['tool_version']}, replayed by {tool_version()})"
    if not count:
        print(f"{head}: replayed, every decision identical to the stored one (certified).")
        return EXIT_OK
    print(f"{head}: {count} decision(s) DIFFER from the stored ones:")
    for who, columns, expected, got in differing:
        for column in columns:
            print(f"  {who}: {column}: stored {expected.get(column)!r}, replayed {got.get(column)!r}")
    return EXIT_FAILED
