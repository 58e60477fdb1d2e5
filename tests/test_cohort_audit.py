"""The audit store after failure, under attack, and asked an analyst's own SQL.

Each test plants what the issue found (a killed run, a store being written, a crafted or forged store) and
expects what the store's contract says (cohort/store.py): a killed run is never read as finished, a forged row
or count is an integrity failure (exit 1), a crafted catalogue is refused before any of it runs, and SQL of
one's own cannot reach past the store's file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from lumbar_kb.engine.errors import LumbarKBError
from lumbar_kb.engine.patient import random_patient

from .commands import cli

N = 60


@pytest.fixture
def people(kb, tmp_path):
    rng = random.Random(11)
    rows = [{"id": f"p{i}", **random_patient(kb, rng)} for i in range(N)]
    rows[0] = {"id": "p0", "leg_weakness": True}  # an emergency (a neurological red flag)
    rows[1] = {"id": "p1"}  # nothing answered
    path = tmp_path / "people.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stored_run(capsys, people, db, *extra):
    code, out, _ = cli(capsys, "cohort", people, "--db", db, "--format", "json", "--quiet", *extra)
    assert code == 0
    return json.loads(out)


# ---- a run that did not finish ---------------------------------------------------------------------------------
def test_a_killed_run_is_abandoned_never_read_and_its_leftovers_are_swept(capsys, kb, people, tmp_path):
    db = tmp_path / "audit.duckdb"
    first = stored_run(capsys, people, db)["run_id"]
    rng = random.Random(5)
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(random_patient(kb, rng)) + "\n" for _ in range(40_000)))
    out_file = tmp_path / "rows.jsonl"
    argv = ["-m", "lumbar_kb", "cohort", str(big), "--db", str(db), "--out", str(out_file), "--jobs", "1"]
    proc = subprocess.Popen([sys.executable, *argv, "--chunk-size", "200", "--quiet"], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        staged = []
        while time.monotonic() < deadline and proc.poll() is None:  # rows staged: the run is under way
            staged = [p for p in tmp_path.glob(".audit.duckdb.*.staging/decisions.parquet") if p.stat().st_size > 4096]
            if staged:
                break
            time.sleep(0.02)
        assert staged and proc.poll() is None, "the run ended before it could be killed"
        # while it runs the store is not locked: a query reads it, and sees the run as running
        code, out, err = cli(capsys, "query", db, "runs", "--format", "json")
        assert code == 0 and sorted(r["status"] for r in json.loads(out)) == ["done", "running"], err
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not out_file.exists() and list(tmp_path.glob(".rows.jsonl.cohort-*.tmp"))  # half-written, not named

    # before any write: the killed run shows as abandoned, and a named question reads the finished run, saying so
    code, out, err = cli(capsys, "query", db, "runs", "--format", "json")
    statuses = {r["run_id"]: r["status"] for r in json.loads(out)}
    killed = next(r for r in statuses if r != first)
    assert statuses == {first: "done", killed: "abandoned"}
    code, out, err = cli(capsys, "query", db, "fired", "red_flag.leg_weakness", "--format", "json")
    assert code == 0 and f"latest finished run, {first}" in err
    weak = [r["id"] for r in map(json.loads, people.read_text().splitlines()) if r.get("leg_weakness") is True]
    assert [r["patient_id"] for r in json.loads(out)] == weak  # the finished run's patients, none of the killed
    code, _, err = cli(capsys, "query", db, "never-fired", "--run", killed)
    assert code == 2 and "did not finish (status abandoned)" in err
    code, _, err = cli(capsys, "replay", killed, "--db", db)
    assert code == 2 and "did not finish" in err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM decisions WHERE run_id = ?", [killed]).fetchone() == (0,)
    con.close()

    # the next run marks it abandoned for good, and sweeps its staging folder and the half-written --out
    stored_run(capsys, people, db, "--out", out_file)
    assert out_file.exists()
    assert not list(tmp_path.glob(".audit.duckdb.*.staging")) and not list(tmp_path.glob(".rows.jsonl.*.tmp"))
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM runs WHERE run_id = ?", [killed]).fetchone() == ("abandoned",)
    assert con.execute("SELECT count(DISTINCT run_id) FROM finished_decisions").fetchone() == (2,)
    con.close()


def test_a_failed_run_is_marked_failed_with_no_rows_and_no_rate_line(capsys, people, tmp_path, monkeypatch):
    from lumbar_kb.cohort import runner

    db = tmp_path / "audit.duckdb"
    real = runner.evaluate_chunk
    calls = []

    def breaks_on_the_second_chunk(chunk, job, snapshots=None):
        calls.append(chunk.index)
        if len(calls) == 2:
            raise RuntimeError("a worker failed")
        return real(chunk, job, snapshots)

    monkeypatch.setattr(runner, "evaluate_chunk", breaks_on_the_second_chunk)
    code, out, err = cli(capsys, "cohort", people, "--db", db, "--jobs", "1", "--chunk-size", "10")
    assert code == 3 and "patients/s" not in err and "patient(s)" not in err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("failed",)]
    assert con.execute("SELECT count(*) FROM decisions").fetchone() == (0,)
    con.close()
    assert not list(tmp_path.glob(".audit.duckdb.*"))


def test_a_query_while_another_process_writes_says_so(capsys, people, tmp_path, monkeypatch):
    from lumbar_kb.cohort import store

    db = tmp_path / "audit.duckdb"
    stored_run(capsys, people, db)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True); time.sleep(60)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        monkeypatch.setattr(store, "READ_WAIT_S", 0.3)
        code, out, err = cli(capsys, "query", db, "runs")
        assert (code, out) == (2, "") and "being written by another process" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()


def test_a_run_meeting_a_reader_of_the_store_waits_for_it_and_says_so(capsys, people, tmp_path):
    """A reader (a query, a replay) holds the store while DuckDB works for it: a run waits for it to start, and
    to add its rows once finished, saying so on stderr, rather than failing and losing its work."""
    db = tmp_path / "audit.duckdb"
    stored_run(capsys, people, db)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); print('ok', flush=True); "
            "time.sleep(4)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        argv = ["-m", "lumbar_kb", "cohort", str(people), "--db", str(db), "--out", str(tmp_path / "o.jsonl")]
        done = subprocess.run([sys.executable, *argv, "--quiet"], capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 0, done.stderr
    assert "waiting for" in done.stderr and "another process holds it" in done.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == N


def test_a_query_whose_reader_is_slow_releases_the_store_before_writing(capsys, people, tmp_path):
    """query writes its answer to a private temporary file and closes the store before the answer goes out: a
    reader that does not read (a full pipe, a paused pager) keeps no finishing run from adding its rows."""
    db = tmp_path / "audit.duckdb"
    stored_run(capsys, people, db)
    sql = "SELECT * FROM finished_trace, range(20) ORDER BY seq, step"  # more than a pipe holds (64 KB)
    argv = [sys.executable, "-m", "lumbar_kb", "query", str(db), "--sql", sql, "--format", "csv"]
    reader = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(3)  # the query has run and is blocked writing to the pipe nobody reads
        assert reader.poll() is None
        cohort = ["-m", "lumbar_kb", "cohort", str(people), "--db", str(db), "--quiet"]
        done = subprocess.run([sys.executable, *cohort], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "waiting for" not in done.stderr, done.stderr
        out, _ = reader.communicate(timeout=60)
    finally:
        reader.kill()
        reader.wait()
    assert reader.returncode == 0 and len(out.decode().splitlines()) > 1000


@pytest.mark.parametrize("timeout", ["1e300", "inf", "nan", "0", "601"])
def test_a_query_timeout_out_of_bounds_is_bad_input(capsys, people, tmp_path, timeout):
    db = tmp_path / "audit.duckdb"
    stored_run(capsys, people, db)
    code, out, err = cli(capsys, "query", db, "--sql", "SELECT 1", "--timeout", timeout)
    assert (code, out) == (2, "") and "--timeout must be" in err and "Traceback" not in err


# ---- SQL of one's own ------------------------------------------------------------------------------------------
def test_own_sql_reads_finished_runs_and_nothing_beyond_the_store(capsys, people, tmp_path):
    db = tmp_path / "audit.duckdb"
    run = stored_run(capsys, people, db)
    code, out, err = cli(
        capsys,
        "query",
        db,
        "--sql",
        "SELECT urgency, count(*) AS n FROM finished_decisions GROUP BY 1",
        "--format",
        "json",
    )
    assert code == 0
    assert sum(r["n"] for r in json.loads(out)) == N == run["summary"]["patients"]
    assert {r["urgency"]: r["n"] for r in json.loads(out)} == {k: v for k, v in run["summary"]["urgency"].items() if v}
    target = tmp_path / "leak.csv"
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",  # a file outside the store
        f"COPY (SELECT * FROM decisions) TO '{target}'",  # writing a file
        "INSTALL httpfs",  # fetching an extension
        "LOAD httpfs",
        "SET enable_external_access = true",  # the locked configuration
        "DELETE FROM decisions",  # the store is read-only
        "CREATE TABLE x AS SELECT 1",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
    ):
        code, out, err = cli(capsys, "query", db, "--sql", sql)
        assert code == 2 and out == "" and err.startswith("error: SQL: "), sql
        assert "root:" not in err and "Traceback" not in err
    assert not target.exists() and not (tmp_path / "other.duckdb").exists()
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM decisions").fetchone() == (N,)
    con.close()
    code, _, err = cli(
        capsys,
        "query",
        db,
        "--sql",
        "SELECT sum(a * b) FROM range(100000) r(a), range(100000) s(b)",
        "--timeout",
        "0.5",
    )
    assert code == 2 and "longer than 0.5 s" in err
    code, _, err = cli(capsys, "query", db, "SELECT 1")
    assert code == 2 and "--sql" in err


class _Recording:
    """An output that notes, at each write, how many batches of rows had been read by then."""

    def __init__(self, read: list):
        self.read, self.parts, self.when = read, [], []

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.when.append(len(self.read))

    def writelines(self, lines) -> None:
        for text in lines:
            self.write(text)


@pytest.mark.parametrize("fmt", ["csv", "json", "text"])
def test_a_querys_rows_are_written_as_they_are_read(capsys, people, tmp_path, monkeypatch, fmt):
    """A query's answer can be millions of rows (every trace row of a large run): its rows are read a batch at a
    time and each batch written before the next is read, so memory holds a batch. The text is the whole
    answer's: JSON as json.dumps writes the array, CSV row by row, the text table aligned on its first rows."""
    from lumbar_kb.cohort import store as audit

    db = tmp_path / "audit.duckdb"
    stored_run(capsys, people, db)
    monkeypatch.setattr(audit, "FETCH_ROWS", 7)
    monkeypatch.setattr(audit, "TEXT_ALIGNED", 7)
    opened = audit.Store(db)
    try:
        columns, batches = opened.sql("SELECT seq, patient_id, urgency FROM finished_decisions ORDER BY seq", None, 60)
        read: list = []

        def reading():
            for batch in batches:
                assert len(batch) <= 7
                read.append(batch)
                yield batch

        out = _Recording(read)
        assert audit.write_rows(columns, reading(), fmt, out) == N
    finally:
        opened.close()
    rows = [r for batch in read for r in batch]
    assert len(read) == -(-N // 7) and [r[0] for r in rows] == list(range(1, N + 1))
    text = "".join(out.parts)
    first_row = next(i for i, part in enumerate(out.parts) if "p0" in part)
    assert out.when[first_row] == 1  # the first batch was written before the second was read
    if fmt == "json":
        assert text == json.dumps([dict(zip(columns, r, strict=True)) for r in rows], indent=2) + "\n"
    elif fmt == "csv":
        assert text.splitlines() == [",".join(columns)] + [",".join(str(v) for v in r) for r in rows]
    else:
        lines = text.splitlines()
        widths = [max(len(str(v)) for v in [c] + [r[i] for r in rows[:7]]) for i, c in enumerate(columns)]
        assert lines[1] == "  ".join("-" * w for w in widths) and lines[-1] == f"({N} row(s))"
        assert [line.split() for line in lines[2:-1]] == [[str(v) for v in r] for r in rows]
        assert all(line.index(str(r[1])) == widths[0] + 2 for line, r in zip(lines[2:9], rows, strict=False))


def test_a_querys_time_is_the_time_duckdb_works_not_the_time_its_reader_takes(capsys, people, tmp_path, monkeypatch):
    """--timeout bounds the query: a reader slower than the timeout (a pipe, a pager) still gets every row, and
    a query that works longer than it, one whose rows come a few at a time, is stopped while they are read."""
    from lumbar_kb.cohort import store as audit

    db = tmp_path / "audit.duckdb"
    stored_run(capsys, people, db)
    monkeypatch.setattr(audit, "FETCH_ROWS", 20)
    opened = audit.Store(db)
    try:
        columns, batches = opened.sql("SELECT * FROM finished_decisions", None, 0.5)
        got = 0
        for batch in batches:
            time.sleep(0.4)  # 3 batches: 1.2 s of reading, more than the query's 0.5 s
            got += len(batch)
        assert got == N
        monkeypatch.setattr(audit, "FETCH_ROWS", 10_000)
        columns, batches = opened.sql("SELECT a FROM range(10000000000000) r(a) WHERE a % 1000 = 0", None, 0.5)
        read = 0
        with pytest.raises(LumbarKBError, match="longer than 0.5 s"):
            for _ in batches:
                read += 1
        assert read > 0  # stopped after some of its rows were read
    finally:
        opened.close()


@pytest.mark.parametrize(
    "craft",
    [
        "DROP TABLE bad_rows; CREATE VIEW bad_rows AS SELECT '' AS run_id, 0::BIGINT AS seq, "
        "column0 AS problem FROM read_csv('/etc/passwd', header = false)",
        "CREATE MACRO problem(x) AS x",
        "CREATE VIEW extra AS SELECT 1",
        "ALTER TABLE decisions ADD COLUMN note VARCHAR",
    ],
)
def test_a_store_whose_catalogue_is_not_the_programs_own_is_refused(capsys, people, tmp_path, craft):
    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    con = duckdb.connect(str(db))
    con.execute(craft)
    con.close()
    for argv in (
        ("query", db, "runs"),
        ("query", db, "--sql", "SELECT * FROM bad_rows"),
        ("replay", run_id, "--db", db),
        ("cohort", people, "--db", db, "--quiet"),
    ):
        code, out, err = cli(capsys, *argv)
        assert code == 2 and "not an audit store written by `lumbar-kb cohort --db`" in err, argv
        assert "root:" not in out + err


# ---- tamper evidence -------------------------------------------------------------------------------------------
def test_a_consistently_forged_emergency_is_found(capsys, people, tmp_path):
    """An emergency patient's inputs, decision and trace replaced by a routine patient's: every stored decision
    still re-evaluates to itself, so only the chain of rows can tell."""
    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    con = duckdb.connect(str(db))
    emergency = con.execute(
        "SELECT seq FROM decisions WHERE run_id = ? AND patient_id = 'p0' AND urgency = 'emergency'", [run_id]
    ).fetchone()[0]
    donor = con.execute("SELECT seq FROM decisions WHERE run_id = ? AND patient_id = 'p1'", [run_id]).fetchone()[0]
    columns = (
        "input_sha256, urgency, in_scope, completeness, actions, warnings, differential, fired, "
        "unanswered_alarm, could_escalate, inputs"
    ).split(", ")
    con.execute(
        f"UPDATE decisions SET {', '.join(f'{c} = d.{c}' for c in columns)} FROM (SELECT * FROM decisions "
        "WHERE run_id = $r AND seq = $d) d WHERE decisions.run_id = $r AND decisions.seq = $e",
        {"r": run_id, "d": donor, "e": emergency},
    )
    con.execute("DELETE FROM trace WHERE run_id = $r AND seq = $e", {"r": run_id, "e": emergency})
    con.execute(
        "INSERT INTO trace SELECT run_id, $e, step, rule, matched FROM trace WHERE run_id = $r AND seq = $d",
        {"r": run_id, "d": donor, "e": emergency},
    )
    con.close()
    code, out, _ = cli(capsys, "replay", run_id, "--db", db)
    assert code == 1 and "INTEGRITY FAILURE" in out and "do not chain to the run's digest" in out
    assert "DIFFER" not in out  # the forgery re-evaluates to itself: the chain is what found it


@pytest.mark.parametrize(
    "edit",
    [
        # a row removed and the count edited to match
        "DELETE FROM decisions WHERE run_id = $r AND seq = 3; UPDATE runs SET patients = patients - 1",
        # a row added (a copy of another) and the count edited to match
        "INSERT INTO decisions SELECT * REPLACE (seq + 1000 AS seq) FROM decisions WHERE run_id = $r AND seq = 3; "
        "UPDATE runs SET patients = patients + 1",
        # only the count
        "UPDATE runs SET patients = patients + 5",
        # a trace step rewritten
        "UPDATE trace SET rule = 'red_flag.leg_weakness' WHERE run_id = $r AND seq = 5 AND step = 1",
        # two rows swapped in order
        "UPDATE decisions SET seq = CASE seq WHEN 4 THEN 6 WHEN 6 THEN 4 ELSE seq END WHERE run_id = $r",
    ],
)
def test_a_removed_added_or_reordered_row_or_an_edited_count_is_found(capsys, people, tmp_path, edit):
    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    con = duckdb.connect(str(db))
    for statement in edit.split("; "):
        con.execute(statement, {"r": run_id} if "$r" in statement else None)
    con.close()
    code, out, err = cli(capsys, "replay", run_id, "--db", db)
    assert code == 1 and "INTEGRITY FAILURE" in out, out + err


@pytest.mark.parametrize(
    "edit",
    [
        None,  # as written: certified, read back a range at a time
        # two rows in different ranges swapped
        "UPDATE decisions SET seq = CASE seq WHEN 3 THEN 19 WHEN 19 THEN 3 ELSE seq END WHERE run_id = $r",
        # a trace row of no decision (a seq past the last), which a join by seq would never read
        "INSERT INTO trace SELECT run_id, seq + 100000, step, rule, matched FROM trace WHERE run_id = $r AND seq = 1",
        # a row renumbered far away (a read by ranges must not walk to it)
        "UPDATE decisions SET seq = 9000000000000000 WHERE run_id = $r AND seq = 5",
    ],
)
def test_replay_reads_a_run_a_range_of_rows_at_a_time_and_still_sees_every_edit(
    capsys, people, tmp_path, monkeypatch, edit
):
    """Replay reads a run's rows back SEQS_AT_ONCE at a time, so that memory stays bounded at a million rows
    (reading them at once took 2.1 GB); here seven at a time, so that edits fall in different ranges."""
    from lumbar_kb.cohort import store

    monkeypatch.setattr(store, "SEQS_AT_ONCE", 7)
    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    if edit is not None:
        con = duckdb.connect(str(db))
        con.execute(edit, {"r": run_id})
        con.close()
    code, out, err = cli(capsys, "replay", run_id, "--db", db)
    if edit is None:
        assert code == 0 and "certified" in out and f"{N} decision(s)" in out, out + err
    else:
        assert code == 1 and "INTEGRITY FAILURE" in out and "do not chain to the run's digest" in out, out + err


def test_an_edited_stored_knowledge_base_is_an_integrity_failure_not_an_internal_error(capsys, people, tmp_path):
    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    con = duckdb.connect(str(db))
    files = json.loads(con.execute("SELECT files FROM knowledge_bases").fetchone()[0])
    name = next(n for n in files if "within_hours: 12\n" in files[n])
    for text in (files[name].replace("within_hours: 12", "within_hours: 120", 1), "{ not: yaml: at all"):
        con.execute("UPDATE knowledge_bases SET files = ?", [json.dumps({**files, name: text})])
        con.close()
        code, out, err = cli(capsys, "replay", run_id, "--db", db)
        assert code == 1 and "INTEGRITY FAILURE" in out and "stored knowledge base was altered" in out, out + err
        con = duckdb.connect(str(db))
    con.close()


def test_a_signed_run_detects_a_forger_who_recomputes_the_digest(capsys, people, tmp_path):
    """Anyone who can write the store can recompute an unsigned digest after a forgery (the documented limit);
    a signature made with a private key they do not hold cannot be recomputed."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lumbar_kb.cohort import store

    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "key.pem", tmp_path / "pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    db = tmp_path / "audit.duckdb"
    run = stored_run(capsys, people, db, "--sign-key", private)
    run_id, digest = run["run_id"], run["digest"]
    code, out, _ = cli(capsys, "replay", run_id, "--db", db, "--public-key", public, "--digest", digest)
    assert code == 0 and "signature valid" in out and "certified" in out

    # the forger deletes a row, edits the count and recomputes the digest from the store as it now is
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM decisions WHERE run_id = ? AND seq = 1", [run_id])
    con.execute("DELETE FROM trace WHERE run_id = ? AND seq = 1", [run_id])
    con.execute("UPDATE runs SET patients = patients - 1 WHERE run_id = ?", [run_id])
    con.close()
    reader = store.Store(db)
    patients, bad, rows, bad_chain = reader.recompute(run_id)
    reader.close()
    forged = store.run_digest(run_id, run["knowledge_base"]["sha256"], patients, bad, rows, bad_chain)
    con = duckdb.connect(str(db))
    con.execute("UPDATE runs SET digest = ? WHERE run_id = ?", [forged, run_id])
    con.close()
    code, out, _ = cli(capsys, "replay", run_id, "--db", db)
    assert code == 0  # unsigned checking cannot see a recomputed digest: what the docs say
    code, out, _ = cli(capsys, "replay", run_id, "--db", db, "--public-key", public)
    assert code == 1 and "signature is not valid" in out
    code, out, _ = cli(capsys, "replay", run_id, "--db", db, "--digest", digest)
    assert code == 1 and "not the one recorded" in out


def test_the_store_is_its_owners_only(capsys, people, tmp_path, monkeypatch):
    """It holds patients' answers: 0600 whatever the umask, as its staging folder is 0700, and so is what DuckDB
    writes beside it while a run adds its rows (its WAL, holding those rows until the checkpoint)."""
    from lumbar_kb.cohort import store

    db = tmp_path / "audit.duckdb"
    seen: dict[str, int] = {}
    now = store._now

    def looking() -> object:  # called within a run's writes, its rows added but not yet committed
        for path in tmp_path.glob("audit.duckdb*"):
            for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
                seen[item.name] = item.stat().st_mode & 0o777
        return now()

    monkeypatch.setattr(store, "_now", looking)
    old = os.umask(0o022)
    try:
        stored_run(capsys, people, db)
        stored_run(capsys, people, db)
    finally:
        os.umask(old)
    assert db.stat().st_mode & 0o777 == 0o600
    assert "audit.duckdb.wal" in seen, seen
    assert all(mode & 0o077 == 0 for mode in seen.values()), seen


def test_a_store_of_another_schema_is_refused_naming_both_schemas(capsys, people, tmp_path):
    """A store an older lumbar-kb wrote chains its rows another way: reading it as this version's would report a
    forgery that never happened, so every command refuses it, saying which schema it is and what to do."""
    from lumbar_kb.cohort.store import SCHEMA_VERSION

    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    con = duckdb.connect(str(db))
    con.execute("UPDATE store_meta SET value = '2' WHERE key = 'schema'")
    con.close()
    for argv in (("replay", run_id, "--db", db), ("query", db, "runs"), ("cohort", people, "--db", db, "--quiet")):
        code, out, err = cli(capsys, *argv)
        assert code == 2 and f"audit store of schema 2, which this lumbar-kb (schema {SCHEMA_VERSION})" in err, argv
        assert "INTEGRITY" not in out + err


# ---- what an auditor tried on the store (each reproduced before its fix) ---------------------------------------
@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE runs SET kb_sha256 = NULL",
        "UPDATE knowledge_bases SET files = NULL",
        "UPDATE knowledge_bases SET files = 'not json'",
        "UPDATE knowledge_bases SET files = '[1, 2]'",
        """UPDATE knowledge_bases SET files = '{"guideline.yaml": 1}'""",
        "UPDATE decisions SET inputs = NULL WHERE seq = 2",
        "UPDATE decisions SET inputs = '{bad' WHERE seq = 2",
        "UPDATE decisions SET inputs = '[1]' WHERE seq = 2",
        """UPDATE decisions SET inputs = '{"palpable_mass": 1e999}' WHERE seq = 2""",
        "UPDATE decisions SET inputs = repeat('[', 100000) WHERE seq = 2",
        "UPDATE trace SET step = NULL WHERE seq = 1 AND step = 1",
        "UPDATE decisions SET actions = [NULL] WHERE seq = 2",
    ],
)
def test_a_value_no_run_writes_is_an_integrity_failure_never_a_crash(capsys, people, tmp_path, edit):
    """The catalogue is the program's own, but a value in it was altered to one no run writes (NULL, not JSON,
    inputs the vocabulary refuses): replay says INTEGRITY FAILURE (exit 1), never a traceback (exit 3)."""
    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    con = duckdb.connect(str(db))
    con.execute(edit)
    con.close()
    code, out, err = cli(capsys, "replay", run_id, "--db", db)
    assert code == 1 and "INTEGRITY FAILURE" in out and "Traceback" not in out + err, out + err


def test_what_the_queries_read_of_a_knowledge_base_beside_its_files_is_certified_too(capsys, people, tmp_path):
    """The named questions read a stored knowledge base's levels (emergencies-by-window) and rule list
    (never-fired), and a run's knowledge-base name: altered, a run is not certified, even signed and with its
    digest recorded; and no later run chains its rows to the altered copy."""
    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    for edit in (
        "UPDATE knowledge_bases SET levels = ['prompt', 'emergency', 'routine']",
        "UPDATE knowledge_bases SET rules = list_append(rules, 'ed.never_existed')",
        "UPDATE runs SET kb_name = 'other_kb', kb_version = '9.9'",
    ):
        copy = tmp_path / "copy.duckdb"
        copy.write_bytes(db.read_bytes())
        con = duckdb.connect(str(copy))
        con.execute(edit)
        con.close()
        code, out, err = cli(capsys, "replay", run_id, "--db", copy)
        assert code == 1 and "INTEGRITY FAILURE" in out and "not what its files say" in out, edit + out + err
        if "knowledge_bases" in edit:
            code, out, err = cli(capsys, "cohort", people, "--db", copy, "--quiet")
            assert code == 2 and "is not the knowledge base: the store was altered" in err, err
        copy.unlink()


def test_renumbered_bad_rows_are_found(capsys, kb, tmp_path):
    """A run numbers its bad rows 1..N, as its decisions: renumbered ones chain to nothing."""
    rng = random.Random(4)
    people = tmp_path / "people.jsonl"
    lines = [json.dumps(random_patient(kb, rng)) for _ in range(10)] + ["{not json", '{"leg_weakness": "maybe"}']
    people.write_text("\n".join(lines) + "\n")
    db = tmp_path / "audit.duckdb"
    code, out, _ = cli(capsys, "cohort", people, "--db", db, "--format", "json", "--quiet")
    assert code == 1  # bad rows are a finding
    run_id = json.loads(out)["run_id"]
    code, out, _ = cli(capsys, "replay", run_id, "--db", db)
    assert code == 0, out
    con = duckdb.connect(str(db))
    assert con.execute("SELECT count(*) FROM bad_rows").fetchone() == (2,)
    con.execute("UPDATE bad_rows SET seq = seq * 1000 + 7")
    con.close()
    code, out, _ = cli(capsys, "replay", run_id, "--db", db)
    assert code == 1 and "INTEGRITY FAILURE" in out


def test_stored_text_reaches_the_terminal_escaped(capsys, people, tmp_path):
    """A store's text is its writer's: a run id or tool version holding escape sequences (a line erased and a
    forged "certified" printed over an INTEGRITY FAILURE) is shown escaped by replay and query."""
    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    forged = "R\x1b]0;pwned\x07\x1b[2K\r\u202eevil"
    con = duckdb.connect(str(db))
    con.execute("UPDATE runs SET tool_version = ?, finished = NULL", ["0.1\x1b[2K\rcertified\x1b[8m"])
    for table in ("runs", "decisions", "trace", "bad_rows"):
        con.execute(f"UPDATE {table} SET run_id = ? WHERE run_id = ?", [forged, run_id])
    con.close()
    code, out, err = cli(capsys, "replay", "latest", "--db", db)
    assert code == 1 and "INTEGRITY FAILURE" in out
    code2, out2, err2 = cli(capsys, "query", db, "never-fired")
    assert code2 == 0 and "latest finished run" in err2
    for text in (out, err, out2, err2):
        assert not any(ch in text for ch in "\x1b\x07\r\u202e"), repr(text)
    assert "\\x1b" in out and "\\x1b" in err2


def test_a_lock_that_is_not_a_runs_own_file_never_blocks(capsys, people, tmp_path):
    """A FIFO where a run's staging lock should be would block an open() until someone opened its other end:
    query, replay and the next cohort must answer, not wait."""
    db = tmp_path / "audit.duckdb"
    run_id = stored_run(capsys, people, db)["run_id"]
    staging = tmp_path / f".audit.duckdb.{run_id}-x.staging"
    staging.mkdir(mode=0o700)
    os.mkfifo(staging / "lock")
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO runs (run_id, status) VALUES (?, 'running')", [f"{run_id}-x"])
    con.close()
    for argv in (["query", db, "runs"], ["replay", run_id, "--db", db], ["cohort", people, "--db", db, "--quiet"]):
        done = subprocess.run(
            [sys.executable, "-m", "lumbar_kb", *map(str, argv)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (argv, done.stderr)


def test_a_store_name_that_is_not_utf8_is_bad_input(capsys, people, tmp_path):
    db = tmp_path / os.fsdecode(b"bad\xff.duckdb")
    code, _, err = cli(capsys, "cohort", people, "--db", db, "--quiet")
    assert code == 2 and "not UTF-8" in err and "Traceback" not in err
