"""The audit store: an embedded DuckDB database that `cohort --db FILE` appends each run to.

Tables (every run appends; nothing is updated but a run's own row when it finishes):

* runs, one row per run: run_id, started, finished (UTC), status (running, done, failed), kb_sha256,
  kb_name, kb_version, inputs (the paths given), command, backend, patients, bad_rows, tool_version (the
  lumbar-kb version that made the run);
* knowledge_bases, one row per knowledge base, content-addressed: kb_sha256, name, version, levels (urgency
  codes, highest first), rules (ids, definition order), files (JSON: relative path -> the file's text);
* decisions, one row per patient of a run: run_id, seq (input order from 1), the decision columns of
  `cohort --out` (source, row, patient_id, input_sha256, kb_sha256, urgency, completeness, actions, warnings,
  differential, fired, unanswered_alarm, could_escalate, changes), inputs (JSON: the validated answers);
* trace, one row per rule firing of a patient of a run: run_id, seq, step (1, 2, ...), rule, matched (JSON:
  the facts the rule matched on);
* bad_rows, one row per skipped row of a run: run_id, problem (file:row[:column]: what is wrong).

`lumbar-kb replay RUN_ID --db FILE` re-evaluates a run's stored inputs with its stored knowledge base; the
named questions of `lumbar-kb query` are the SQL in QUESTIONS.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lumbar_kb.cohort.decisions import COLUMNS
from lumbar_kb.cohort.inputs import Chunk
from lumbar_kb.engine.errors import LumbarKBError, Problem
from lumbar_kb.engine.model import KnowledgeBase
from lumbar_kb.engine.source import display

_ACTION = 'STRUCT(code VARCHAR, within_hours_min DOUBLE, within_hours DOUBLE, "window" VARCHAR, done BOOLEAN)[]'
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (run_id VARCHAR PRIMARY KEY, started TIMESTAMP, finished TIMESTAMP,
       status VARCHAR, kb_sha256 VARCHAR, kb_name VARCHAR, kb_version VARCHAR, inputs VARCHAR[], command VARCHAR,
       backend VARCHAR, patients BIGINT, bad_rows BIGINT, tool_version VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS knowledge_bases (kb_sha256 VARCHAR PRIMARY KEY, name VARCHAR, version VARCHAR,
       levels VARCHAR[], rules VARCHAR[], files VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS decisions (run_id VARCHAR, seq BIGINT, source VARCHAR, "row" BIGINT,
       patient_id VARCHAR, input_sha256 VARCHAR, kb_sha256 VARCHAR, urgency VARCHAR, completeness VARCHAR,
       actions {_ACTION}, warnings VARCHAR[], differential VARCHAR[], fired VARCHAR[], unanswered_alarm VARCHAR[],
       could_escalate VARCHAR[], changes VARCHAR[], inputs VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS trace (run_id VARCHAR, seq BIGINT, step INTEGER, rule VARCHAR, matched VARCHAR)",
    "CREATE TABLE IF NOT EXISTS bad_rows (run_id VARCHAR, problem VARCHAR)",
]

_DECISION_COLUMNS = ", ".join(f'"{c}"' for c in COLUMNS)

# the named questions of `lumbar-kb query`: (number of arguments, defaults, SQL with $run and $arg1, $arg2 ...)
QUESTIONS: dict[str, tuple[int, tuple, str]] = {
    "runs": (
        0,
        (),
        "SELECT run_id, started, status, kb_name, kb_version, left(kb_sha256, 12) AS kb, patients, bad_rows, backend "
        "FROM runs ORDER BY started, run_id",
    ),
    "fired": (
        1,
        (),
        'SELECT seq, source, "row", patient_id, urgency FROM decisions '
        "WHERE run_id = $run AND list_contains(fired, $arg1) ORDER BY seq",
    ),
    "emergencies-by-window": (
        1,
        ("mri_whole_spine",),
        """SELECT coalesce(a."window", CASE WHEN a.within_hours IS NULL THEN NULL
                  ELSE 'within ' || CAST(a.within_hours AS VARCHAR) || ' h' END,
                  CASE WHEN a.code IS NULL THEN 'not recommended' ELSE 'no window' END) AS "window",
                  count(*) AS patients
           FROM (SELECT [x FOR x IN actions IF x.code = $arg1][1] AS a FROM decisions
                 WHERE run_id = $run AND urgency = (SELECT k.levels[1] FROM knowledge_bases k JOIN runs r
                                                     USING (kb_sha256) WHERE r.run_id = $run))
           GROUP BY ALL ORDER BY min(coalesce(a.within_hours, 1e308)), 1""",
    ),
    "never-fired": (
        0,
        (),
        """SELECT rule FROM (SELECT unnest(k.rules) AS rule, generate_subscripts(k.rules, 1) AS i
                             FROM knowledge_bases k JOIN runs r USING (kb_sha256) WHERE r.run_id = $run)
           WHERE rule NOT IN (SELECT DISTINCT unnest(fired) FROM decisions WHERE run_id = $run) ORDER BY i""",
    ),
    "changed": (
        2,
        (),
        """SELECT a.source, a."row", a.patient_id, a.urgency AS urgency_a, b.urgency AS urgency_b,
                  [x.code || coalesce('@' || CAST(x.within_hours AS VARCHAR), '') FOR x IN a.actions] AS actions_a,
                  [x.code || coalesce('@' || CAST(x.within_hours AS VARCHAR), '') FOR x IN b.actions] AS actions_b
           FROM decisions a JOIN decisions b
             ON a.source = b.source AND a."row" IS NOT DISTINCT FROM b."row" AND a.input_sha256 = b.input_sha256
           WHERE a.run_id = $arg1 AND b.run_id = $arg2
             AND (a.urgency <> b.urgency OR a.actions <> b.actions OR a.warnings <> b.warnings)
           ORDER BY a.seq""",
    ),
}


def tool_version() -> str:
    """The installed lumbar-kb's version: a replay names the one that made the run and the one replaying it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lumbar-kb")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
        return "unknown"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


class Store:
    def __init__(self, path: Path, create: bool = True):
        import duckdb

        self.path = path
        if not create and not path.exists():
            raise LumbarKBError(Problem("no such audit store", file=display(path)))
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # query and replay only read: several may look at a store at once
            self.con = duckdb.connect(str(path), read_only=not create)
        except duckdb.Error as exc:
            raise LumbarKBError(Problem(f"cannot open as a DuckDB database: {exc}", file=display(path))) from None
        if create:
            for statement in SCHEMA:
                self.con.execute(statement)
        else:
            tables = {row[0] for row in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            missing = {"runs", "knowledge_bases", "decisions", "trace", "bad_rows"} - tables
            if missing:
                raise LumbarKBError(
                    Problem(
                        "not an audit store written by `lumbar-kb cohort --db`",
                        file=display(path),
                        hint="no table " + ", ".join(sorted(missing)),
                    )
                )
        self._seq = 0

    # ---- writing a run -------------------------------------------------------------------------------------
    def begin(self, kb: KnowledgeBase, snap: dict, inputs: list, command: str, jobs: int, backend: str) -> str:
        run_id = new_run_id()
        files = json.dumps({name: data.decode("utf-8") for name, data in sorted(snap["files"].items())})
        levels = [e.code for e in sorted(kb.catalog["urgency"].values(), key=lambda e: -e.rank)]
        self.con.execute(
            "INSERT INTO knowledge_bases SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM knowledge_bases WHERE kb_sha256 = ?)",
            [kb.sha256, kb.name, kb.version, levels, [r.id for r in kb.rules], files, kb.sha256],
        )
        self.con.execute(
            "INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?, ?, ?, ?, ?, 0, 0, ?)",
            [
                run_id,
                _now(),
                kb.sha256,
                kb.name,
                kb.version,
                [str(p) for p in inputs],
                command,
                backend,
                tool_version(),
            ],
        )
        self._seq = 0
        return run_id

    def add(self, run_id: str | None, out: Any) -> None:
        """One chunk's decisions, inputs, traces and bad rows (a runner.ChunkOut)."""
        import pyarrow as pa

        from lumbar_kb.cohort.output import arrow_schema

        if out.bad:
            self.con.executemany("INSERT INTO bad_rows VALUES (?, ?)", [[run_id, line] for line in out.bad])
        if not out.rows:
            return
        n = len(out.rows)
        seqs = list(range(self._seq + 1, self._seq + n + 1))
        self._seq += n
        schema = arrow_schema(compared=True)
        table = pa.Table.from_pylist(
            [{**r, "completeness": _text(r.get("completeness")), "changes": r.get("changes")} for r in out.rows],
            schema,
        )
        table = table.append_column("run_id", pa.array([run_id] * n, pa.string()))
        table = table.append_column("seq", pa.array(seqs, pa.int64()))
        table = table.append_column(
            "inputs", pa.array([json.dumps(i, ensure_ascii=False) for i in out.inputs], pa.string())
        )
        steps = [(s, step, rule, matched) for s, tr in zip(seqs, out.traces, strict=True) for step, rule, matched in tr]
        trace = pa.table(
            {
                "run_id": pa.array([run_id] * len(steps), pa.string()),
                "seq": pa.array([s[0] for s in steps], pa.int64()),
                "step": pa.array([s[1] for s in steps], pa.int32()),
                "rule": pa.array([s[2] for s in steps], pa.string()),
                "matched": pa.array([s[3] for s in steps], pa.string()),
            }
        )
        self.con.register("chunk_decisions", table)
        self.con.register("chunk_trace", trace)
        try:
            self.con.execute(
                f"INSERT INTO decisions (run_id, seq, {_DECISION_COLUMNS}, changes, inputs) SELECT run_id, seq, "
                f"{_DECISION_COLUMNS}, changes, inputs FROM chunk_decisions"
            )
            self.con.execute("INSERT INTO trace SELECT run_id, seq, step, rule, matched FROM chunk_trace")
        finally:
            self.con.unregister("chunk_decisions")
            self.con.unregister("chunk_trace")

    def finish(self, run_id: str | None, summary: Any, ok: bool) -> None:
        self.con.execute(
            "UPDATE runs SET finished = ?, status = ?, patients = ?, bad_rows = ? WHERE run_id = ?",
            [_now(), "done" if ok else "failed", summary.patients, summary.bad_rows, run_id],
        )
        self.con.close()

    # ---- reading ---------------------------------------------------------------------------------------------
    def run_info(self, run_id: str) -> dict:
        found = self.con.execute(
            "SELECT run_id, status, kb_sha256, patients, tool_version FROM runs WHERE run_id = ?", [run_id]
        ).fetchone()
        if found is None:
            known = [r[0] for r in self.con.execute("SELECT run_id FROM runs ORDER BY started DESC LIMIT 5").fetchall()]
            hint = ("latest runs: " + ", ".join(known)) if known else "the store has no runs"
            raise LumbarKBError(Problem(f"no run '{run_id}'", file=display(self.path), hint=hint))
        info = dict(zip(("run_id", "status", "kb_sha256", "patients", "tool_version"), found, strict=True))
        if info["status"] != "done":
            raise LumbarKBError(
                Problem(f"run '{run_id}' did not finish (status {info['status']})", file=display(self.path))
            )
        return info

    def knowledge_base(self, sha256: str) -> dict:
        found = self.con.execute(
            "SELECT name, version, files FROM knowledge_bases WHERE kb_sha256 = ?", [sha256]
        ).fetchone()
        if found is None:
            raise LumbarKBError(Problem(f"knowledge base {sha256[:12]} is not stored", file=display(self.path)))
        name, version, files = found
        return {
            "sha256": sha256,
            "name": name,
            "version": version,
            "files": {k: v.encode("utf-8") for k, v in json.loads(files).items()},
        }

    def stored_chunks(self, run_id: str, size: int = 1000) -> Iterator[Chunk]:
        """A run's stored inputs with their stored decisions, in input order, as chunks for the runner."""
        cursor = self.con.cursor()
        cursor.execute(
            f"SELECT inputs, {_DECISION_COLUMNS} FROM decisions WHERE run_id = ? ORDER BY seq",
            [run_id],
        )
        index = 0
        while True:
            batch = cursor.fetchmany(size)
            if not batch:
                break
            items = []
            for inputs, *values in batch:
                expected = dict(zip(COLUMNS, values, strict=True))
                who = (expected["source"], expected["row"], expected["patient_id"])
                items.append((*who, json.loads(inputs), expected))
            yield Chunk(index, "stored", "", items)
            index += 1

    def latest_run(self) -> str:
        found = self.con.execute("SELECT run_id FROM runs ORDER BY started DESC, run_id DESC LIMIT 1").fetchone()
        if found is None:
            raise LumbarKBError(Problem("the audit store has no runs", file=display(self.path)))
        return str(found[0])

    def ask(self, question: str, arguments: list, run_id: str | None, limit: int | None) -> tuple[list, list]:
        count, defaults, sql = QUESTIONS[question]
        arguments = list(arguments) + list(defaults[len(arguments) - count :] if len(arguments) < count else [])
        if len(arguments) != count:
            raise LumbarKBError(Problem(f"query {question} takes {count} argument(s), not {len(arguments)}"))
        params: dict[str, Any] = {f"arg{i}": a for i, a in enumerate(arguments, 1)}
        if "$run" in sql:
            params["run"] = run_id or self.latest_run()
            if run_id:
                self.run_info(run_id)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cursor = self.con.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return columns, cursor.fetchall()


def render(columns: list, rows: list, fmt: str) -> str:
    if fmt == "json":
        return json.dumps([dict(zip(columns, map(_plain, r), strict=True)) for r in rows], indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(v) for v in r] for r in rows)
        return out.getvalue()
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()
    body = [line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join(body) + f"\n({len(rows)} row(s))\n"


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
