"""Commands for analysts: `cohort` (many patients, every core, a decisions file, an audit store, a report),
`query` (named questions to the audit store) and `replay` (re-run a stored run with its own rules, certified).

Exit codes: 0 done; 1 done, but some rows were bad and skipped (cohort) or a replay differs; 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from itertools import chain, islice
from pathlib import Path
from typing import Any

from lumbar_kb.common import EXIT_FAILED, EXIT_OK, add_kb_option, dumps, feedback_rates, kb_from
from lumbar_kb.engine.errors import LumbarKBError, Problem, safe_text


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
    p.add_argument(
        "--keep-columns",
        metavar="COLS",
        default="",
        help="comma-separated columns of a CSV or Parquet extract (e.g. ward,admit_date) carried as they are into "
        "--out, the audit store and the report, for results by subgroup and over time",
    )
    p.add_argument("--by", metavar="COLUMN", help="with --report: break every figure down by this kept column")
    p.add_argument("--trend", metavar="COLUMN", help="with --report: a kept date column to show a trend over")
    p.add_argument(
        "--csv-raw",
        action="store_true",
        help="CSV cells exactly as they are: by default a cell a spreadsheet would run as a formula (starting "
        "with = + - @, a tab or a carriage return) is prefixed with ' (OWASP)",
    )
    p.add_argument(
        "--sign-key",
        metavar="PEM",
        type=Path,
        help="with --db: sign the run's digest with this Ed25519 private key (replay --public-key checks it)",
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


def _keep(value: str) -> tuple:
    names = tuple(c.strip() for c in value.split(",") if c.strip())
    if len(set(names)) != len(names):
        raise LumbarKBError(Problem(f"--keep-columns names a column twice: {value}"))
    from lumbar_kb.cohort.decisions import COLUMNS

    clash = [n for n in names if n in (*COLUMNS, "changes", "kept")]
    if clash:
        raise LumbarKBError(
            Problem(f"--keep-columns: '{clash[0]}' is the name of a decision column", hint="rename it in the extract")
        )
    return names


def _run_cohort(args) -> int:
    # pyarrow's own allocator (mimalloc) keeps ~20 MB more resident over a run than the C library's, for the same
    # speed (`make bench`): this command and the worker processes it starts (they inherit the environment) use the
    # system's, unless the user chose one
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    from dataclasses import replace

    from lumbar_kb.cohort import inputs as inp
    from lumbar_kb.cohort import runner
    from lumbar_kb.cohort.progress import Progress
    from lumbar_kb.cohort.summary import Summary
    from lumbar_kb.engine.loader import load

    jobs = _jobs(args.jobs)
    if args.chunk_size < 1:
        raise LumbarKBError(Problem("--chunk-size must be at least 1"))
    keep = _keep(args.keep_columns)
    for option, column in (("--by", args.by), ("--trend", args.trend)):
        if column is not None and column not in keep:
            raise LumbarKBError(Problem(f"{option} {column}: not a kept column", hint="add it to --keep-columns"))
    if args.sign_key is not None and args.db is None:
        raise LumbarKBError(Problem("--sign-key signs a run of the audit store: give --db too"))
    key = None
    if args.sign_key is not None:
        from lumbar_kb.cohort.store import load_signing_key

        key = load_signing_key(args.sign_key)
    kb = kb_from(args)
    compare_kb = load(args.compare_kb) if args.compare_kb else None
    mapping = replace(inp.Mapping.read(args.mapping, kb), keep=keep)
    listing = inp.Listing()  # the patient files in each input, listed once for the check, the total and the chunks
    inp.check_inputs(args.paths, kb, mapping, listing)
    # the feedback store is read before any work, so a bad one is refused before anything is written
    overrides = feedback_rates(args.feedback) if args.feedback is not None else None
    compared = compare_kb is not None
    from lumbar_kb.cohort.output import whole_hours

    whole = whole_hours(kb, compare_kb)
    out_writer = None
    if args.out:
        from lumbar_kb.cohort.output import Writer

        out_writer = Writer(args.out, compared, kept=keep, raw=args.csv_raw, whole_hours=whole)
    stdout_writer = None
    if args.format == "csv":
        from lumbar_kb.cohort.output import Writer

        stdout_writer = Writer(Path("-"), compared, stream=sys.stdout, kept=keep, raw=args.csv_raw)
    job = runner.Job(
        kb.sha256,
        mapping,
        compare_kb.sha256 if compare_kb else None,
        rows=stdout_writer is not None,
        store=args.db is not None,
        out_kind=out_writer.kind if out_writer else None,
        raw=args.csv_raw,
        by=args.by,
        trend=args.trend,
        whole_hours=whole,
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
    run = None
    if args.db:
        from lumbar_kb.cohort import store as audit

        try:
            run = audit.begin(
                args.db,
                kb,
                snapshots[kb.sha256],
                args.paths,
                _command(args),
                _backend(args, jobs),
                key,
                lambda: print(
                    f"cohort: waiting for {safe_text(args.db)}: another process holds it (a query, a replay, a run)",
                    file=sys.stderr,
                ),
            )
        except BaseException:
            if out_writer is not None:
                out_writer.close(keep=False)
            raise
    progress = Progress(total, quiet=args.quiet)
    summary = Summary(by=args.by, trend=args.trend)
    ok = False
    digest = None
    try:
        for out in runner.run(chain(first, chunks), job, snapshots, jobs, args.dask):
            for line in out.bad:
                print(f"skipped: {line}", file=sys.stderr)
            summary.merge(out.summary)
            if out_writer is not None and out.encoded is not None:
                out_writer.write_encoded(out.encoded)
            if stdout_writer is not None:
                stdout_writer.write(out.rows)
            if run is not None:
                run.add(out)
            progress.advance(out.summary.patients, out.summary.bad_rows)
        ok = True
    finally:
        try:
            if run is not None:
                digest = run.finish(summary, ok)
        except BaseException:
            ok = False
            raise
        finally:
            for writer in (out_writer, stdout_writer):
                if writer is not None:
                    writer.close(keep=ok)
            # also on failure: a progress bar must give the terminal back; the rate line only for a whole run
            rate = progress.close(ok)
    run_id = run.run_id if run is not None else None
    if args.report:
        from lumbar_kb.cohort.html_report import write_report

        write_report(args.report, kb, summary, compare_kb=compare_kb, run_id=run_id, rate=rate, overrides=overrides)
    if args.format == "json":
        data: dict[str, Any] = {"knowledge_base": kb.identity(), "summary": summary.to_dict(kb, compared)}
        if compare_kb is not None:
            data["compared_with"] = compare_kb.identity()
        if run_id:
            data["run_id"] = run_id
            data["digest"] = digest
        sys.stdout.write(dumps(data))
    elif args.format == "text":
        text = summary.to_text(kb, compared, compare_kb)
        if run_id:
            text += f"Audit store {safe_text(args.db)}: run {run_id}, digest {digest}\n"
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
        help="named questions, or your own read-only SQL, to the audit store (cohort --db)",
        description=f"Ask {from_store} a named question, or your own SQL with --sql. runs: the runs stored "
        "(status done, running, failed or abandoned). fired RULE: the patients for whom RULE fired. "
        "emergencies-by-window [ACTION]: emergency patients counted by the window of ACTION (default "
        "mri_whole_spine). never-fired: the rules of the run's knowledge base no patient fired. changed RUN_A "
        "RUN_B: the patients whose decision differs between two runs. A question reads one finished run: "
        "--run RUN_ID, else the latest finished one (named on stderr). --sql runs one query read-only: no file "
        "outside the store, no extension, no setting can be changed; the views finished_runs, "
        "finished_decisions, finished_trace and finished_bad_rows hold finished runs only.",
    )
    p.add_argument("db", metavar="DB", type=Path)
    p.add_argument("question", nargs="?", metavar="QUESTION", help=", ".join(_QUESTIONS))
    p.add_argument("arguments", nargs="*", metavar="ARG")
    p.add_argument("--sql", metavar="SQL", help="your own query, read-only (e.g. SELECT ... FROM finished_decisions)")
    p.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=60.0,
        help="--sql: stop once DuckDB has worked S seconds on it (60)",
    )
    p.add_argument("--run", dest="run_id", metavar="RUN_ID", help="the run asked about (default: the latest finished)")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--csv-raw", action="store_true", help="CSV cells as they are (default: formulas neutralised)")
    p.add_argument("--limit", type=int, default=None, help="at most this many rows")
    p.set_defaults(run=_run_query)


_QUESTIONS = ("runs", "fired", "emergencies-by-window", "never-fired", "changed")


def _run_query(args) -> int:
    from lumbar_kb.cohort.store import QUERY_TIMEOUT_MAX_S, Store, write_rows

    if args.limit is not None and args.limit < 0:
        raise LumbarKBError(Problem("--limit must be 0 or more"))
    if args.sql is not None:
        if args.question is not None:
            raise LumbarKBError(Problem("give a named question or --sql, not both"))
        if not 0 < args.timeout <= QUERY_TIMEOUT_MAX_S:  # a reader holds the store for its query's time
            raise LumbarKBError(Problem(f"--timeout must be more than 0 and at most {QUERY_TIMEOUT_MAX_S:g} seconds"))
    elif args.question not in _QUESTIONS:
        looks_like_sql = (
            args.question is not None
            and args.question.split()[:1]
            and args.question.split()[0].upper() in ("SELECT", "WITH", "FROM", "DESCRIBE", "SHOW", "SUMMARIZE", "PIVOT")
        )
        raise LumbarKBError(
            Problem(
                f"no question '{safe_text(args.question)}'" if args.question else "which question?",
                hint=('your own SQL goes in --sql "..."; ' if looks_like_sql else "")
                + "questions: "
                + ", ".join(_QUESTIONS),
            )
        )
    # the rows are written as they are read, a batch at a time, to a private temporary file (0600, unlinked):
    # memory holds a batch however many rows there are, and the store is closed before the answer goes to
    # stdout, so a slow reader (a pager, a full pipe) never keeps a finishing cohort run from adding its rows
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as spool:
        store = Store(args.db)
        try:
            if args.sql is not None:
                columns, batches = store.sql(args.sql, args.limit, args.timeout)
            else:
                columns, batches, read = store.ask(args.question, args.arguments, args.run_id, args.limit)
                if read:
                    print(f"query: {read}", file=sys.stderr)
            write_rows(columns, batches, args.format, spool, raw=args.csv_raw)
        finally:
            store.close()
        spool.seek(0)
        shutil.copyfileobj(spool, sys.stdout)
    return EXIT_OK


# ---- replay ------------------------------------------------------------------------------------------------
def _add_replay(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="check a stored run's integrity and re-evaluate it with that run's own rules, certified",
        description="Check RUN_ID in the audit store: its stored knowledge base must hash to the run's "
        "kb_sha256, its rows (decisions, inputs, trace, bad rows) and counts must chain to the run's digest "
        "(and, with --public-key, the digest must carry a valid Ed25519 signature of that key; with --digest, "
        "equal the one you recorded), and every stored input re-evaluated with the stored knowledge base must "
        "give the stored decision. Prints a certificate when all hold (exit 0), else each failure (exit 1).",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="a run id (lumbar-kb query DB runs), or latest (finished)")
    p.add_argument("--db", metavar="FILE", type=Path, required=True, help="the DuckDB audit store")
    p.add_argument("--public-key", metavar="PEM", type=Path, help="the Ed25519 public key the run must be signed by")
    p.add_argument("--digest", metavar="HEX", help="the digest the run printed when it finished, to compare")
    p.add_argument("--jobs", metavar="N", default="1", help="worker processes (default 1; all: every core)")
    p.add_argument("--limit", type=int, default=20, help="differences listed (default 20)")
    p.set_defaults(run=_run_replay)


def _integrity(store: Any, run: dict, public_key: Any, recorded: str | None) -> tuple[list[str], Any]:
    """What is wrong with a stored run's integrity (lines for the user), and its knowledge base's snapshot."""
    import tempfile

    from lumbar_kb.cohort import store as audit
    from lumbar_kb.engine.loader import digest as kb_digest

    failures: list[str] = []
    if not isinstance(run["kb_sha256"], str):
        raise ValueError("the run names no knowledge base")
    snap = store.knowledge_base(run["kb_sha256"])
    with tempfile.TemporaryDirectory(prefix="lumbar-kb-replay-") as folder:
        for name, data in snap["files"].items():
            target = Path(folder) / name
            if ".." in Path(name).parts or Path(name).is_absolute():
                failures.append(f"the stored knowledge base names a file outside itself: {safe_text(name)}")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        stored_hash = kb_digest(Path(folder))
    if stored_hash != run["kb_sha256"]:
        failures.append(
            f"the stored knowledge base was altered: its files hash to {stored_hash[:12]}, not {run['kb_sha256'][:12]}"
        )
    patients, bad_rows, rows_chain, bad_chain = store.recompute(run["run_id"])
    if patients != run["patients"]:
        failures.append(f"the run counts {run['patients']} patient(s) but {patients} decision row(s) are stored")
    if bad_rows != run["bad_rows"]:
        failures.append(f"the run counts {run['bad_rows']} bad row(s) but {bad_rows} are stored")
    digest = audit.run_digest(run["run_id"], run["kb_sha256"], patients, bad_rows, rows_chain, bad_chain)
    if run["digest"] is None:
        failures.append("the run has no digest")
    elif digest != run["digest"]:
        failures.append("the stored rows do not chain to the run's digest: a row was rewritten, removed or added")
    if recorded is not None and recorded.strip().lower() != (run["digest"] or ""):
        failures.append(f"the run's digest is not the one recorded ({safe_text(recorded)[:16]}...)")
    if public_key is not None:
        from cryptography.exceptions import InvalidSignature

        if not run["signature"]:
            failures.append("the run is not signed")
        else:
            try:
                public_key.verify(bytes.fromhex(run["signature"]), str(run["digest"]).encode())
            except (InvalidSignature, ValueError):
                failures.append("the run's signature is not valid for the public key given")
    sound = stored_hash == run["kb_sha256"] and not any("outside itself" in f for f in failures)
    return failures, snap if sound else None


def _run_replay(args) -> int:
    from lumbar_kb.cohort.store import Store, load_public_key

    public_key = load_public_key(args.public_key) if args.public_key is not None else None
    jobs = _jobs(args.jobs)
    store = Store(args.db)
    try:
        if args.run_id == "latest":
            args.run_id = store.latest_run()[0]
        run = store.run_info(args.run_id)
        name = safe_text(args.run_id)  # the store's text reaches the terminal escaped, as every stored value
        try:
            return _replay(store, run, name, public_key, args, jobs)
        except STORED_DATA_ERRORS as exc:  # a value no run writes (NULL, not JSON, ...): an altered store
            print(f"run {name}: INTEGRITY FAILURE: the stored run cannot be read as a run writes it: {_said(exc)}")
            return EXIT_FAILED
    finally:
        store.close()


# what reading an altered store's values raises (the catalogue is checked first: these are values no run writes)
STORED_DATA_ERRORS = (TypeError, ValueError, AttributeError, KeyError, UnicodeError, RecursionError, OverflowError)


def _said(exc: BaseException) -> str:
    return safe_text(f"{type(exc).__name__}: {exc}")[:300]


def _replay(store: Any, run: dict, name: str, public_key: Any, args: Any, jobs: int) -> int:
    from lumbar_kb.cohort import runner
    from lumbar_kb.cohort.store import knowledge_base_row, tool_version

    failures, snap = _integrity(store, run, public_key, args.digest)
    if snap is None:
        print(f"run {name}: INTEGRITY FAILURE, not replayed:")
        for line in failures:
            print(f"  {line}")
        return EXIT_FAILED
    try:
        kb = runner.from_snapshot(snap)
    except (LumbarKBError, ValueError) as exc:
        print(f"run {name}: INTEGRITY FAILURE: the stored knowledge base does not load: {safe_text(exc)}")
        return EXIT_FAILED
    # what the queries read of it beside its files (name, version, levels, rules) must be what the files say
    if snap["row"] != knowledge_base_row(kb, snap) or (run["kb_name"], run["kb_version"]) != (kb.name, kb.version):
        failures.append(
            "the stored knowledge base's name, version, urgency levels or rule list, or the run's, were altered: "
            "they are not what its files say"
        )
    job = runner.Job(kb.sha256, rows=False, cache=False)  # every stored input evaluated afresh
    if jobs == 1:
        runner.remember(kb)
    checked = 0
    differing: list = []
    count = 0
    unreadable: list[str] = []
    for out in runner.run(store.stored_chunks(run["run_id"]), job, {kb.sha256: snap}, jobs):
        checked += out.summary.patients
        count += len(out.replay_differences)
        differing.extend(out.replay_differences[: max(args.limit - len(differing), 0)])
        unreadable.extend(out.bad)
    if unreadable:
        failures.append(f"{len(unreadable)} stored input(s) are not inputs a run stores, e.g. {unreadable[0]}")
    head = f"run {name}: knowledge base {safe_text(kb.name)} {safe_text(kb.version)} ({kb.sha256[:12]}), "
    head += f"{checked} decision(s)"
    if run["tool_version"] != tool_version():
        head += f" (run by lumbar-kb {safe_text(run['tool_version'])}, replayed by {tool_version()})"
    if failures:
        print(f"{head}: INTEGRITY FAILURE:")
        for line in failures:
            print(f"  {line}")
    if not count and not failures:
        signed = ", signature valid" if public_key is not None else ""
        print(
            f"{head}: rows chain to digest {run['digest']}{signed}; replayed, every decision identical to the "
            "stored one (certified)."
        )
        return EXIT_OK
    if count:
        print(f"{head}: {count} decision(s) DIFFER from the stored ones:")
        for who, columns, expected, got in differing:
            for column in columns:
                print(
                    f"  {safe_text(who)}: {column}: stored {safe_text(repr(expected.get(column)))}, "
                    f"replayed {safe_text(repr(got.get(column)))}"
                )
    return EXIT_FAILED
