"""The audit store: an embedded DuckDB database that `cohort --db FILE` appends each run to.

Tables (a run's rows are added in one transaction when it has finished; nothing is updated but a run's own
row, and a row that did not finish being marked abandoned):

* runs, one row per run: run_id, started, finished (UTC), status (running, done, failed, abandoned), kb_sha256,
  kb_name, kb_version, inputs (the paths given), command, backend, patients, bad_rows, tool_version (the
  lumbar-kb version that made the run), host and pid (the process that made it), digest (the run's rows
  chained, see below), signature and signer (an Ed25519 signature of the digest, and the signer's public key,
  when the run was signed with --sign-key);
* knowledge_bases, one row per knowledge base, content-addressed: kb_sha256, name, version, levels (urgency
  codes, highest first), rules (ids, definition order), files (JSON: relative path -> the file's text);
* decisions, one row per patient of a run: run_id, seq (input order from 1), the decision columns of
  `cohort --out` (decisions.COLUMNS), changes, kept (the --keep-columns cells), inputs (JSON: the validated
  answers);
* trace, one row per rule firing of a patient of a run: run_id, seq, step (1, 2, ...), rule, matched (JSON);
* bad_rows, one row per skipped row of a run: run_id, seq (input order), problem (file:row[:column]: what).

Views of finished runs for plain SQL: finished_runs, finished_decisions, finished_trace, finished_bad_rows.

While a run goes on its rows are staged beside the store (`.DB.RUN_ID.staging/`, 0700, held under a lock), so
the store is not locked for the run's length: `query` and `replay` read it meanwhile. A run that finishes adds
its rows and marks itself done in one transaction; one that fails is marked failed with no rows; one that was
killed stays `running` until the next `cohort --db` on the store finds its lock free and marks it
`abandoned` (and removes its staging folder). Only `done` runs have rows.

The digest: every decision row (its columns, stored inputs and trace, in `decisions.leaf`'s canonical form)
hashed in input order, every bad row likewise, and the run's id, knowledge base and counts: see `run_digest`.
`replay` recomputes it from what is stored, so a rewritten, deleted or added row, or an edited count, no
longer matches. It reads the rows back SEQS_AT_ONCE at a time, in memory bounded whatever the run's size; a
run's seqs are 1..N, and a run whose seqs are not (a row removed, added or renumbered) chains to nothing.
Anyone who can write the file can also recompute an unsigned digest: a signed run's digest is checked against
the public key given to `replay --public-key`, which only the private key's holder can forge.

A store is opened for reading read-only, with DuckDB's external access, extension auto-install and
auto-load off and its configuration locked; and a store whose catalogue (tables, views, columns, macros,
types, ...) is not exactly the one this module creates is refused before any of it is read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lumbar_kb.cohort.decisions import COLUMNS, leaf
from lumbar_kb.cohort.inputs import Chunk
from lumbar_kb.cohort.temporary import abandoned, hold, private_folder, sweep
from lumbar_kb.engine.errors import LumbarKBError, Problem, safe_text
from lumbar_kb.engine.model import KnowledgeBase
from lumbar_kb.engine.source import display

SCHEMA_VERSION = "3"  # 3: a row's digest link in two levels (decisions.leaf), inputs stored canonical
_ACTION = 'STRUCT(code VARCHAR, within_hours_min DOUBLE, within_hours DOUBLE, "window" VARCHAR, done BOOLEAN)[]'
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    """CREATE TABLE IF NOT EXISTS runs (run_id VARCHAR PRIMARY KEY, started TIMESTAMP, finished TIMESTAMP,
       status VARCHAR, kb_sha256 VARCHAR, kb_name VARCHAR, kb_version VARCHAR, inputs VARCHAR[], command VARCHAR,
       backend VARCHAR, patients BIGINT, bad_rows BIGINT, tool_version VARCHAR, host VARCHAR, pid BIGINT,
       digest VARCHAR, signature VARCHAR, signer VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS knowledge_bases (kb_sha256 VARCHAR PRIMARY KEY, name VARCHAR, version VARCHAR,
       levels VARCHAR[], rules VARCHAR[], files VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS decisions (run_id VARCHAR, seq BIGINT, source VARCHAR, "row" BIGINT,
       patient_id VARCHAR, input_sha256 VARCHAR, kb_sha256 VARCHAR, urgency VARCHAR, in_scope BOOLEAN,
       completeness VARCHAR, actions {_ACTION}, warnings VARCHAR[], differential VARCHAR[], fired VARCHAR[],
       unanswered_alarm VARCHAR[], could_escalate VARCHAR[], changes VARCHAR[], kept MAP(VARCHAR, VARCHAR),
       inputs VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS trace (run_id VARCHAR, seq BIGINT, step INTEGER, rule VARCHAR, matched VARCHAR)",
    "CREATE TABLE IF NOT EXISTS bad_rows (run_id VARCHAR, seq BIGINT, problem VARCHAR)",
    "CREATE VIEW IF NOT EXISTS finished_runs AS SELECT * FROM runs WHERE status = 'done'",
    "CREATE VIEW IF NOT EXISTS finished_decisions AS SELECT * FROM decisions "
    "WHERE run_id IN (SELECT run_id FROM runs WHERE status = 'done')",
    "CREATE VIEW IF NOT EXISTS finished_trace AS SELECT * FROM trace "
    "WHERE run_id IN (SELECT run_id FROM runs WHERE status = 'done')",
    "CREATE VIEW IF NOT EXISTS finished_bad_rows AS SELECT * FROM bad_rows "
    "WHERE run_id IN (SELECT run_id FROM runs WHERE status = 'done')",
]
TABLES = ("store_meta", "runs", "knowledge_bases", "decisions", "trace", "bad_rows")
# what a reading connection may do: nothing outside the store's own file, no extension fetched or loaded, and
# no setting changed by the SQL it runs (a query's time is bounded by `timeout`, its memory here)
READ_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "memory_limit": "2GB",
    "lock_configuration": True,
}
# a run's writes: its rows added from the staged Parquet in one transaction, streamed within a bounded memory
WRITE_CONFIG: dict[str, Any] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "memory_limit": "32MB",  # measured: the run's peak grows by ~35 MB adding its rows (by ~120 MB at 128 MB)
    "threads": 1,
}
LOCK_WAIT_S = 30.0  # how long a run waits for another process's short write (a run adding its rows) to end
# how long a run that has finished waits to add its rows while other processes hold the store: readers hold it
# for their query's own time (query spools its answer, a --timeout of at most QUERY_TIMEOUT_MAX_S), and the
# run's work is lost if it gives up
FINISH_WAIT_S = 900.0
WAIT_NOTICE_S = 2.0
QUERY_TIMEOUT_MAX_S = 600.0
READ_WAIT_S = 5.0  # how long `query` and `replay` wait for it
STAGED = ("decisions", "trace", "bad_rows")
SEQS_AT_ONCE = 10_000  # a run's rows are read back (replay) this many at a time: each read's sort and join bounded

_DECISION_COLUMNS = ", ".join(f'"{c}"' for c in COLUMNS)


def _hours_sql(column: str) -> str:
    """SQL for hours as text, a whole number without a fraction (336, not 336.0), as `evaluate` shows them."""
    return (
        f"CASE WHEN {column} = trunc({column}) THEN CAST(CAST({column} AS BIGINT) AS VARCHAR) "
        f"ELSE CAST({column} AS VARCHAR) END"
    )


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
                  ELSE 'within ' || """
        + _hours_sql("a.within_hours")
        + """ || ' h' END,
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
                  [x.code || coalesce('@' || """
        + _hours_sql("x.within_hours")
        + """, '') FOR x IN a.actions] AS actions_a,
                  [x.code || coalesce('@' || """
        + _hours_sql("x.within_hours")
        + """, '') FOR x IN b.actions] AS actions_b
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
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(6)


# ---- opening -----------------------------------------------------------------------------------------------
@contextmanager
def owner_only() -> Iterator[None]:
    """Files made meanwhile are their owner's only: what DuckDB writes beside the store while a run writes to it
    (the WAL, its spill folder) holds patients' answers as the store does. The umask is the process's: only
    around a run's own short writes, in the thread that runs the command."""
    mask = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(mask)


def _connect(path: Path, read_only: bool, wait: float, waiting: Callable[[], None] | None = None) -> Any:
    """A connection, waiting up to `wait` seconds while another process holds the file's lock (`waiting` is
    called once when the wait has lasted WAIT_NOTICE_S, for a line to the user)."""
    import duckdb

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # DuckDB fails on it with a C++ bad_cast
        raise LumbarKBError(
            Problem("DuckDB cannot open a file whose name is not UTF-8: rename it", file=display(path))
        ) from None
    started = time.monotonic()
    while True:
        try:  # a write connection is made under `owner_only`: the file and its WAL are the owner's only
            # an absolute path: never one of DuckDB's special names (":memory:", "md:..."), always the file named
            target = os.path.abspath(path)
            return duckdb.connect(target, read_only=read_only, config=READ_CONFIG if read_only else WRITE_CONFIG)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise LumbarKBError(Problem(f"cannot open as a DuckDB database: {exc}", file=display(path))) from None
            if waiting is not None and time.monotonic() >= started + WAIT_NOTICE_S:
                waiting()
                waiting = None
            if time.monotonic() >= started + wait:
                raise LumbarKBError(
                    Problem(
                        "the audit store is being written by another process",
                        file=display(path),
                        hint="a cohort run adding its rows, or another program: try again when it has finished",
                    )
                ) from None
            time.sleep(0.2)
        except duckdb.Error as exc:
            raise LumbarKBError(Problem(f"cannot open as a DuckDB database: {exc}", file=display(path))) from None


_REFERENCE: dict | None = None


def _catalog(con: Any) -> dict:
    """Every object of the database's catalogue that could run SQL or hold data, without the database's name."""
    here = "database_name = current_database()"
    queries = {
        "schemas": f"SELECT schema_name, sql FROM duckdb_schemas() WHERE {here} AND NOT internal",
        "tables": f"SELECT schema_name, table_name, temporary, sql FROM duckdb_tables() WHERE {here}",
        "columns": "SELECT schema_name, table_name, column_name, column_index, data_type, column_default, "
        f"is_generated, generation_expression FROM duckdb_columns() WHERE {here}",
        "views": f"SELECT schema_name, view_name, temporary, sql FROM duckdb_views() WHERE {here} AND NOT internal",
        "functions": "SELECT schema_name, function_name, function_type, macro_definition FROM duckdb_functions() "
        f"WHERE {here} AND NOT internal",
        "sequences": f"SELECT schema_name, sequence_name, sql FROM duckdb_sequences() WHERE {here}",
        "indexes": f"SELECT schema_name, index_name, table_name, sql FROM duckdb_indexes() WHERE {here}",
        "types": f"SELECT schema_name, type_name, logical_type FROM duckdb_types() WHERE {here} AND NOT internal",
        "constraints": "SELECT schema_name, table_name, constraint_type, constraint_text FROM duckdb_constraints() "
        f"WHERE {here}",
    }
    return {name: sorted(map(repr, con.execute(sql).fetchall())) for name, sql in queries.items()}


def _reference() -> dict:
    global _REFERENCE
    if _REFERENCE is None:
        import duckdb

        con = duckdb.connect(":memory:", config=WRITE_CONFIG)
        for statement in SCHEMA:
            con.execute(statement)
        _REFERENCE = _catalog(con)
        con.close()
    return _REFERENCE


def _check_catalog(con: Any, path: Path) -> None:
    """Refuse a database that is not exactly an audit store of this version (a crafted one: views over files,
    macros, altered tables), before anything in it runs."""
    import duckdb

    try:
        found = _catalog(con)
        version = None
        if found == _reference():
            row = con.execute("SELECT value FROM store_meta WHERE key = 'schema'").fetchone()
            version = row[0] if row else None
    except duckdb.Error as exc:
        raise LumbarKBError(Problem(f"cannot read the store's catalogue: {exc}", file=display(path))) from None
    if version == SCHEMA_VERSION:
        return
    if version is not None:
        raise LumbarKBError(
            Problem(
                f"an audit store of schema {version}, which this lumbar-kb (schema {SCHEMA_VERSION}) does not read",
                file=display(path),
                hint="its rows chain to their digests another way: read it with the lumbar-kb that wrote it "
                "(runs.tool_version), or start a new store",
            )
        )
    tables = {t.split("'")[3] for t in found["tables"] if t.count("'") >= 4}
    if not tables & set(TABLES):
        hint = "it has none of the tables runs, decisions, trace, bad_rows"
    else:
        hint = (
            "its tables, views or macros are not exactly those `cohort --db` makes (a store of another "
            f"lumbar-kb version, schema {SCHEMA_VERSION} here, or one altered by hand): refused, nothing in it was run"
        )
    raise LumbarKBError(Problem("not an audit store written by `lumbar-kb cohort --db`", file=display(path), hint=hint))


def _is_empty(con: Any) -> bool:
    return not any(_catalog(con).values())


def staging_folder(path: Path, run_id: str) -> Path:
    return path.parent / f".{path.name}.{run_id}.staging"


# ---- writing a run -----------------------------------------------------------------------------------------
def load_signing_key(path: Path) -> Any:
    """An Ed25519 private key from a PEM file (unencrypted PKCS#8: `openssl genpkey -algorithm ed25519`)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise LumbarKBError(Problem(f"cannot read an Ed25519 private key: {exc}", file=display(path))) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LumbarKBError(Problem("not an Ed25519 private key", file=display(path)))
    return key


def load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise LumbarKBError(Problem(f"cannot read an Ed25519 public key: {exc}", file=display(path))) from None
    if not isinstance(key, Ed25519PublicKey):
        raise LumbarKBError(Problem("not an Ed25519 public key", file=display(path)))
    return key


def public_hex(key: Any) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def run_digest(run_id: str, kb_sha256: str, patients: int, bad_rows: int, rows: str, bad: str) -> str:
    """What a run's digest is: sha256 over its id, knowledge base, counts and the two chains of its rows."""
    text = f"lumbar-kb run v{SCHEMA_VERSION}\n{run_id}\n{kb_sha256}\n{patients}\n{bad_rows}\n{rows}\n{bad}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def _decisions_schema() -> Any:
    import pyarrow as pa

    from lumbar_kb.cohort.output import arrow_schema

    schema = arrow_schema(compared=True)
    schema = schema.append(pa.field("kept", pa.map_(pa.string(), pa.string())))
    return schema.append(pa.field("seq", pa.int64())).append(pa.field("inputs", pa.string()))


def _trace_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("seq", pa.int64()), ("step", pa.int32()), ("rule", pa.string()), ("matched", pa.string())])


def _bad_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("seq", pa.int64()), ("problem", pa.string())])


class Run:
    """One run being written: its rows staged as Parquet beside the store, added to it when it finishes."""

    def __init__(
        self,
        path: Path,
        run_id: str,
        kb_sha256: str,
        staging: Path,
        lock: Any,
        key: Any = None,
        waiting: Callable[[], None] | None = None,  # called when finishing has to wait for the store
    ):
        import pyarrow.parquet as pq

        self.path, self.run_id, self.kb_sha256, self.staging, self._lock, self.key = (
            path,
            run_id,
            kb_sha256,
            staging,
            lock,
            key,
        )
        self.waiting = waiting
        self._writers = {
            "decisions": pq.ParquetWriter(str(staging / "decisions.parquet"), _decisions_schema()),
            "trace": pq.ParquetWriter(str(staging / "trace.parquet"), _trace_schema()),
            "bad_rows": pq.ParquetWriter(str(staging / "bad_rows.parquet"), _bad_schema()),
        }
        self._rows = hashlib.sha256()
        self._bad = hashlib.sha256()
        self._seq = 0
        self._bad_seq = 0
        self.digest: str | None = None

    def add(self, out: Any) -> None:
        """One chunk's decisions, inputs, traces and bad rows (a runner.ChunkOut), in input order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if out.bad:
            bad_seqs = range(self._bad_seq + 1, self._bad_seq + len(out.bad) + 1)
            self._bad_seq += len(out.bad)
            self._writers["bad_rows"].write_table(
                pa.table(
                    {"seq": pa.array(bad_seqs, pa.int64()), "problem": pa.array(out.bad, pa.string())}, _bad_schema()
                )
            )
            for line in out.bad:
                self._bad.update(hashlib.sha256(line.encode("utf-8", "backslashreplace")).digest())
        if out.stored is None:
            return
        n = out.stored.num_rows
        seqs = list(range(self._seq + 1, self._seq + n + 1))
        self._seq += n
        table = out.stored.append_column("seq", pa.array(seqs, pa.int64()))
        table = table.append_column("inputs", pa.array(out.inputs, pa.string()))
        self._writers["decisions"].write_table(table)
        trace = out.trace  # row (in the chunk), step, rule, matched: the row's seq for its row
        seq = pc.add(trace.column("row"), pa.scalar(self._seq - n + 1, pa.int64()))
        self._writers["trace"].write_table(pa.Table.from_arrays([seq, *trace.columns[1:]], schema=_trace_schema()))
        self._rows.update(out.leaves)

    def finish(self, summary: Any, ok: bool) -> str | None:
        """Add the staged rows and mark the run done, in one transaction; or mark it failed, with no rows. The
        run's digest (done) or None."""
        for writer in self._writers.values():
            writer.close()
        try:
            with owner_only():
                self._finish(summary, ok)
        finally:
            self._release()
        return self.digest

    def _finish(self, summary: Any, ok: bool) -> None:
        con = _connect(self.path, False, FINISH_WAIT_S, self.waiting)
        try:
            _check_catalog(con, self.path)
            if ok:
                self.digest = run_digest(
                    self.run_id,
                    self.kb_sha256,
                    summary.patients,
                    summary.bad_rows,
                    self._rows.hexdigest(),
                    self._bad.hexdigest(),
                )
                self._add_rows(con, summary)
            else:
                con.execute(
                    "UPDATE runs SET finished = ?, status = 'failed' WHERE run_id = ? AND status = 'running'",
                    [_now(), self.run_id],
                )
        finally:
            con.close()

    def _add_rows(self, con: Any, summary: Any) -> None:
        signature = signer = None
        if self.key is not None:
            signature = self.key.sign(str(self.digest).encode()).hex()
            signer = public_hex(self.key.public_key())
        con.execute("BEGIN TRANSACTION")
        try:
            # DuckDB reads the staged Parquet itself, streaming: a fraction of the memory of handing it Arrow
            # batches from Python (measured: ~90 MB against ~300 MB for 50,000 patients)
            for name in STAGED:
                if name == "decisions":
                    columns = f"seq, {_DECISION_COLUMNS}, changes, kept, inputs"
                else:
                    columns = "seq, step, rule, matched" if name == "trace" else "seq, problem"
                con.execute(
                    f"INSERT INTO {name} SELECT $run, {columns} FROM read_parquet($file)",
                    {"run": self.run_id, "file": str(self.staging / f"{name}.parquet")},
                )
            updated = con.execute(
                "UPDATE runs SET finished = ?, status = 'done', patients = ?, bad_rows = ?, digest = ?, "
                "signature = ?, signer = ? WHERE run_id = ? AND status = 'running' RETURNING run_id",
                [_now(), summary.patients, summary.bad_rows, self.digest, signature, signer, self.run_id],
            ).fetchall()
            if not updated:  # marked abandoned meanwhile: its lock was lost (not by this process's choice)
                lost = f"run {self.run_id} was marked abandoned while it ran"
                raise LumbarKBError(Problem(lost, file=display(self.path)))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _release(self) -> None:
        import shutil

        shutil.rmtree(self.staging, ignore_errors=True)
        self._lock.close()


def begin(
    path: Path,
    kb: KnowledgeBase,
    snap: dict,
    inputs: list,
    command: str,
    backend: str,
    key: Any = None,
    waiting: Callable[[], None] | None = None,
) -> Run:
    """Start a run in the store at `path` (made if missing): its knowledge base stored, its row `running`, its
    staging folder held. Runs that were killed are marked abandoned first, and their staging folders removed.
    `waiting` is called when opening the store (now, or to finish) has to wait for another process."""
    run_id = new_run_id()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = private_folder(staging_folder(path, run_id))
        lock = hold(staging / "lock")  # held before the run's row exists: never taken for an abandoned run
    except OSError as exc:
        raise LumbarKBError(
            Problem(f"cannot write beside the audit store: {exc.strerror or exc}", file=display(path))
        ) from None
    try:
        with owner_only():
            con = _connect(path, False, LOCK_WAIT_S, waiting)
            _begin_run(con, path, kb, snap, run_id, inputs, command, backend)
        return Run(path, run_id, kb.sha256, staging, lock, key, waiting)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        lock.close()
        raise


def _begin_run(
    con: Any, path: Path, kb: KnowledgeBase, snap: dict, run_id: str, inputs: list, command: str, backend: str
) -> None:
    """The store made if empty, checked, killed runs marked, the knowledge base stored, the run's row added;
    the connection closed."""
    try:
        if _is_empty(con):
            for statement in SCHEMA:
                con.execute(statement)
            con.execute("INSERT INTO store_meta VALUES ('schema', ?)", [SCHEMA_VERSION])
        _check_catalog(con, path)
        _mark_abandoned(con, path)
        row = knowledge_base_row(kb, snap)
        stored = con.execute(
            "SELECT name, version, levels, rules, files FROM knowledge_bases WHERE kb_sha256 = ?", [kb.sha256]
        ).fetchone()
        if stored is None:
            con.execute("INSERT INTO knowledge_bases VALUES (?, ?, ?, ?, ?, ?)", [kb.sha256, *row])
        elif tuple(stored) != row:  # a later run's rows would be chained to an altered copy: refused
            raise LumbarKBError(
                Problem(
                    f"the audit store's copy of knowledge base {kb.sha256[:12]} is not the knowledge base: "
                    "the store was altered; nothing was run",
                    file=display(path),
                    hint="`lumbar-kb replay RUN_ID --db` names the runs it affects; start a new store",
                )
            )
        con.execute(
            "INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, NULL, NULL, NULL)",
            [
                run_id,
                _now(),
                kb.sha256,
                kb.name,
                kb.version,
                [display(p) for p in inputs],
                command,
                backend,
                tool_version(),
                socket.gethostname(),
                os.getpid(),
            ],
        )
    finally:
        con.close()


def knowledge_base_row(kb: KnowledgeBase, snap: dict) -> tuple:
    """The knowledge_bases row of a knowledge base (after its sha256): name, version, levels (urgency codes,
    highest first), rules (ids, definition order), files (JSON). What a run stores, and what replay expects."""
    files = json.dumps({name: data.decode("utf-8") for name, data in sorted(snap["files"].items())})
    levels = [e.code for e in sorted(kb.catalog["urgency"].values(), key=lambda e: -e.rank)]
    return (kb.name, kb.version, levels, [r.id for r in kb.rules], files)


def _mark_abandoned(con: Any, path: Path) -> None:
    """Runs still `running` whose process is gone (their staging lock is free) become `abandoned`; staging
    folders of gone runs are removed."""
    running = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchall()]
    for run_id in running:
        if abandoned(staging_folder(path, run_id) / "lock"):
            con.execute(
                "UPDATE runs SET status = 'abandoned', finished = ? WHERE run_id = ? AND status = 'running'",
                [_now(), run_id],
            )
    sweep(path.parent, f".{path.name}.", ".staging")


# ---- reading -----------------------------------------------------------------------------------------------
class Store:
    """A store opened for reading: read-only, no access beyond its file, its catalogue checked first."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            raise LumbarKBError(Problem("no such audit store", file=display(path)))
        self.con = _connect(path, True, READ_WAIT_S)
        _check_catalog(self.con, path)

    def close(self) -> None:
        self.con.close()

    def status(self, run_id: str, stored: str) -> str:
        """A run's status, `abandoned` for a `running` one whose process is gone (marked so by the next write)."""
        if stored == "running" and abandoned(staging_folder(self.path, run_id) / "lock"):
            return "abandoned"
        return stored

    def run_info(self, run_id: str) -> dict:
        names: tuple[str, ...] = ("run_id", "status", "kb_sha256", "kb_name", "kb_version", "patients")
        names += ("bad_rows", "tool_version", "digest", "signature")
        found = self.con.execute(f"SELECT {', '.join(names)}, signer FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if found is None:
            known = [r[0] for r in self.con.execute("SELECT run_id FROM runs ORDER BY started DESC LIMIT 5").fetchall()]
            hint = ("latest runs: " + ", ".join(known)) if known else "the store has no runs"
            raise LumbarKBError(Problem(f"no run '{run_id}'", file=display(self.path), hint=hint))
        info = dict(zip((*names, "signer"), found, strict=True))
        status = self.status(run_id, info["status"])
        if status != "done":
            raise LumbarKBError(
                Problem(
                    f"run '{run_id}' did not finish (status {status}): it has no rows to read",
                    file=display(self.path),
                )
            )
        return info

    def knowledge_base(self, sha256: str) -> dict:
        """A stored knowledge base as a snapshot (`runner.snapshot`), with its row as stored (`row`). Raises
        ValueError or TypeError when its files are not a JSON object of texts (an altered store)."""
        found = self.con.execute(
            "SELECT name, version, levels, rules, files FROM knowledge_bases WHERE kb_sha256 = ?", [sha256]
        ).fetchone()
        if found is None:
            raise LumbarKBError(Problem(f"knowledge base {str(sha256)[:12]} is not stored", file=display(self.path)))
        name, version, levels, rules, files = found
        texts = json.loads(files)
        if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
            raise ValueError("its files are not a JSON object of file texts")
        return {
            "sha256": sha256,
            "name": name,
            "version": version,
            "files": {k: v.encode("utf-8") for k, v in texts.items()},
            "row": tuple(found),
        }

    def _seq_ranges(self, run_id: str) -> list[tuple[int, int]] | None:
        """A run's decision rows as ranges of seq, SEQS_AT_ONCE each, so that each read sorts and joins one range
        (a read of the whole run at once took 2.1 GB at a million rows). None when the seqs are not exactly
        1..N, as a run writes them (a row removed, added or renumbered): the caller then reads without ranges."""
        count, low, high, distinct = self.con.execute(
            "SELECT count(*), min(seq), max(seq), count(DISTINCT seq) FROM decisions WHERE run_id = ?", [run_id]
        ).fetchone()
        if count == 0:
            return []
        if low != 1 or high != count or distinct != count:
            return None
        return [(start, min(start + SEQS_AT_ONCE - 1, count)) for start in range(1, count + 1, SEQS_AT_ONCE)]

    def stored_chunks(self, run_id: str, size: int = 1000) -> Iterator[Chunk]:
        """A run's stored inputs with their stored decisions, in input order, as chunks for the runner."""
        cursor = self.con.cursor()
        ranges = self._seq_ranges(run_id)
        select = f"SELECT inputs, {_DECISION_COLUMNS} FROM decisions WHERE run_id = $run"
        queries: list[tuple[str, dict[str, Any]]]
        if ranges is None:  # not as written (the digest check says so): every row, in the order they are kept
            queries = [(select, {"run": run_id})]
        else:
            queries = [
                (select + " AND seq BETWEEN $low AND $high ORDER BY seq", {"run": run_id, "low": a, "high": b})
                for a, b in ranges
            ]
        index = 0
        for sql, params in queries:
            cursor.execute(sql, params)
            while batch := cursor.fetchmany(size):
                items = []
                for inputs, *values in batch:  # the inputs as stored: the runner reads and checks them
                    expected = dict(zip(COLUMNS, values, strict=True))
                    who = (expected["source"], expected["row"], expected["patient_id"])
                    items.append((*who, inputs, expected))
                yield Chunk(index, "stored", "", items)
                index += 1

    def recompute(self, run_id: str) -> tuple[int, int, str, str]:
        """(patients, bad rows, rows chained, bad rows chained) of a run as stored now: each row read back and
        chained as it was written (`decisions.leaf`): any row rewritten, removed or added shows. Rows whose seqs
        are not 1..N are not chained at all (their chain is one no run writes), so the digest fails."""
        rows = hashlib.sha256()
        cursor = self.con.cursor()
        ranges = self._seq_ranges(run_id)
        names = (*COLUMNS, "changes", "kept", "inputs", "steps")
        patients = 0
        if ranges is None:
            rows.update(b"seq is not 1..N")
            patients = self.con.execute("SELECT count(*) FROM decisions WHERE run_id = ?", [run_id]).fetchone()[0]
        for low, high in ranges or []:
            cursor.execute(
                f"""SELECT {_DECISION_COLUMNS}, changes, kept, inputs, steps FROM decisions d
                    LEFT JOIN (SELECT seq, list([CAST(step AS VARCHAR), rule, matched] ORDER BY step) AS steps
                               FROM trace WHERE run_id = $run AND seq BETWEEN $low AND $high GROUP BY seq) t
                    USING (seq)
                    WHERE d.run_id = $run AND d.seq BETWEEN $low AND $high ORDER BY seq""",
                {"run": run_id, "low": low, "high": high},
            )
            while batch := cursor.fetchmany(2000):
                for values in batch:
                    row = dict(zip(names, values, strict=True))
                    steps = [(int(s), r, m) for s, r, m in row.pop("steps") or []]
                    rows.update(leaf(row, row.pop("inputs"), steps))
                    patients += 1
        if ranges is not None:  # a trace row of no decision of the run (a seq outside 1..N) is no row's trace
            stray = self.con.execute(
                "SELECT count(*) FROM trace WHERE run_id = ? AND (seq IS NULL OR seq < 1 OR seq > ?)",
                [run_id, patients],
            ).fetchone()[0]
            if stray:
                rows.update(b"trace rows of no decision")
        bad = hashlib.sha256()
        count, low, high, distinct = self.con.execute(
            "SELECT count(*), min(seq), max(seq), count(DISTINCT seq) FROM bad_rows WHERE run_id = ?", [run_id]
        ).fetchone()
        if count and (low != 1 or high != count or distinct != count):  # a run numbers its bad rows 1..N
            bad.update(b"seq is not 1..N")
        cursor.execute("SELECT problem FROM bad_rows WHERE run_id = ? ORDER BY seq", [run_id])
        count = 0
        while batch := cursor.fetchmany(2000):
            for (line,) in batch:
                bad.update(hashlib.sha256(line.encode("utf-8", "backslashreplace")).digest())
                count += 1
        return patients, count, rows.hexdigest(), bad.hexdigest()

    def latest_run(self) -> tuple[str, Any]:
        """The latest finished run: (run_id, finished)."""
        found = self.con.execute(
            "SELECT run_id, finished FROM runs WHERE status = 'done' ORDER BY started DESC, run_id DESC LIMIT 1"
        ).fetchone()
        if found is None:
            raise LumbarKBError(Problem("the audit store has no finished runs", file=display(self.path)))
        return str(found[0]), found[1]

    def ask(
        self, question: str, arguments: list, run_id: str | None, limit: int | None
    ) -> tuple[list, Iterator[list], str]:
        """A named question's columns, its rows as batches read as they are wanted (`_batches`), and which run it
        read (a line for the user)."""
        count, defaults, sql = QUESTIONS[question]
        arguments = list(arguments) + list(defaults[len(arguments) - count :] if len(arguments) < count else [])
        if len(arguments) != count:
            raise LumbarKBError(Problem(f"query {question} takes {count} argument(s), not {len(arguments)}"))
        params: dict[str, Any] = {f"arg{i}": a for i, a in enumerate(arguments, 1)}
        read = ""
        if "$run" in sql:
            if run_id:
                self.run_info(run_id)
                read = f"run {safe_text(run_id)}"
            else:
                run_id, finished = self.latest_run()
                when = f"{finished:%Y-%m-%d %H:%M:%S} UTC" if isinstance(finished, datetime) else "at no stored time"
                read = f"the latest finished run, {safe_text(run_id)} (finished {when})"
            params["run"] = run_id
        elif question == "changed":
            for other in arguments:
                self.run_info(other)
            read = f"runs {safe_text(arguments[0])} and {safe_text(arguments[1])}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        deadline = _Deadline(self.con, None, "")
        cursor = deadline.run(self.con.execute, sql, params)
        columns = [d[0] for d in cursor.description]
        batches = _batches(deadline, cursor, None)
        if question == "runs":
            batches = ([(r[0], r[1], self.status(r[0], r[2]), *r[3:]) for r in batch] for batch in batches)
        return columns, batches, read

    def sql(self, text: str, limit: int | None, timeout: float) -> tuple[list, Iterator[list]]:
        """An analyst's own SQL, read-only: its columns, and its rows (at most `limit`) as batches read as they
        are wanted, so that memory holds a batch, not the answer. Stopped once DuckDB has worked on it for
        `timeout` seconds (`_Deadline`)."""
        deadline = _Deadline(self.con, timeout, SQL_HINT)
        cursor = deadline.run(self.con.execute, text)
        if cursor.description is None:
            return [], iter(())
        return [d[0] for d in cursor.description], _batches(deadline, cursor, limit)


SQL_HINT = "read-only; the views: finished_runs, finished_decisions, finished_trace, finished_bad_rows"
FETCH_ROWS = 10_000  # a query's rows are read and written this many at a time
TEXT_ALIGNED = 1_000  # a text table's columns are as wide as its first this many rows need


class _Deadline:
    """A query's time, counted only while DuckDB works on it (its execution and each fetch), not while its rows
    are written out between fetches. None: no limit. DuckDB's errors become one-line problems."""

    def __init__(self, con: Any, timeout: float | None, hint: str):
        self.con, self.timeout, self.left, self.hint = con, timeout, timeout, hint

    def run(self, call: Any, *args: Any) -> Any:
        import duckdb

        timer = None
        if self.left is not None:
            if self.left <= 0:
                raise self._stopped()
            timer = threading.Timer(self.left, self.con.interrupt)
            timer.start()
        start = time.monotonic()
        try:
            return call(*args)
        except duckdb.InterruptException:
            raise self._stopped() from None
        except duckdb.Error as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LumbarKBError(Problem(f"SQL: {message}", hint=self.hint or None)) from None
        finally:
            if timer is not None:
                timer.cancel()
                self.left = (self.left or 0.0) - (time.monotonic() - start)

    def _stopped(self) -> LumbarKBError:
        return LumbarKBError(Problem(f"the query ran longer than {self.timeout:g} s and was stopped"))


def _batches(deadline: _Deadline, cursor: Any, limit: int | None) -> Iterator[list]:
    """A query's rows, FETCH_ROWS at a time (at most `limit` in all), each fetch within the deadline."""
    left = limit
    while left is None or left > 0:
        batch = deadline.run(cursor.fetchmany, FETCH_ROWS if left is None else min(FETCH_ROWS, left))
        if not batch:
            return
        if left is not None:
            left -= len(batch)
        yield batch


# ---- showing rows ------------------------------------------------------------------------------------------
def write_rows(columns: list, batches: Iterable[list], fmt: str, out: Any, raw: bool = False) -> int:
    """Write rows as they come, batch by batch, and return how many: a text table (every cell escaped for a
    terminal; its columns as wide as the first TEXT_ALIGNED rows need, a longer cell later pushing its line
    out, never cut), JSON (an array, as `json.dumps(rows, indent=2)` writes it), or CSV (cells a spreadsheet
    would run neutralised, unless `raw`). Memory holds one batch, whatever the number of rows."""
    from lumbar_kb.cohort.output import spreadsheet_safe

    count = 0
    if fmt == "json":
        out.write("[")
        for batch in batches:
            for r in batch:
                text = json.dumps(dict(zip(columns, map(_plain, r), strict=True)), indent=2, default=str)
                out.write(("\n  " if count == 0 else ",\n  ") + text.replace("\n", "\n  "))
                count += 1
        out.write("\n]\n" if count else "]\n")
        return count
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        cell = _cell if raw else (lambda v: spreadsheet_safe(_cell(v)))
        writer.writerow([cell(c) for c in columns])
        for batch in batches:
            writer.writerows([cell(v) for v in r] for r in batch)
            count += len(batch)
        return count
    rows = iter(batches)
    first: list = []  # the rows the columns' widths are taken from
    for batch in rows:
        first.extend(batch)
        if len(first) >= TEXT_ALIGNED:
            break
    header = [safe_text(c) for c in columns]
    cells = [[safe_text(_cell(v)) for v in r] for r in first]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(header)]

    def line(values: list) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip() + "\n"

    out.write(line(header) + line(["-" * w for w in widths]))
    out.writelines(line(r) for r in cells)
    count = len(cells)
    for batch in rows:
        out.writelines(line([safe_text(_cell(v)) for v in r]) for r in batch)
        count += len(batch)
    out.write(f"({count} row(s))\n")
    return count


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
