"""Run a cohort in chunks: in this process, on N worker processes, or on a Dask cluster; same output.

The input is read as a stream of chunks (`inputs.chunks`); each chunk is one task: its patients validated,
evaluated (durable-rules, then the Result with its could_escalate look-ahead, exactly as `lumbar-kb evaluate`),
and turned into decision rows plus the chunk's counts. Results are consumed in input order whatever finishes
first, and at most a few chunks per worker are in flight, so memory stays flat however long the input.

Each worker process compiles the knowledge base once (durable-rules state is per process): the knowledge base
travels as a content-addressed snapshot (its files, keyed by sha256), so a Dask worker on another machine
needs only `lumbar-kb` installed, not the files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumbar_kb.cohort.decisions import (
    Canonical,
    Steps,
    decided,
    decided_digest,
    differences,
    leaf_of,
    who,
)
from lumbar_kb.cohort.inputs import Chunk, Mapping, Patient, materialize, patients
from lumbar_kb.cohort.summary import Summary
from lumbar_kb.engine.errors import LumbarKBError, Problem
from lumbar_kb.engine.loader import kb_files, load
from lumbar_kb.engine.model import KnowledgeBase

IN_FLIGHT_PER_WORKER = 3
# Patients with the same answers get the same decision (a pure function of the answers and the rules), so each
# process keeps the last few thousand decisions by canonical answers: an extract of a few coded columns
# repeats itself a lot. Bounded, so memory stays flat; the rows are the same either way (tested).
DECIDED_KEPT = 10_000
_DECIDED: dict[tuple, tuple] = {}


# ---- the knowledge base as content ---------------------------------------------------------------------------
def snapshot(kb: KnowledgeBase) -> dict:
    """The files that define the knowledge base (what its sha256 is computed over), keyed by relative path."""
    root = Path(kb.root)
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in kb_files(root) if p.exists()}
    return {"sha256": kb.sha256, "name": kb.name, "version": kb.version, "files": files}


_LOADED: dict[str, Any] = {}  # per process: sha256 -> (KnowledgeBase, Engine)
_CANONICAL: dict[str, Canonical] = {}  # per process: sha256 -> its answers' canonical JSON
_STEPS: dict[str, Steps] = {}  # per process: sha256 -> its traces' steps, as the audit store keeps them


def remember(kb: KnowledgeBase, engine: Any = None) -> None:
    """Use an already loaded knowledge base in this process (jobs=1 saves loading it twice)."""
    if engine is None:
        from lumbar_kb.engine.session import Engine

        engine = Engine(kb)
    _LOADED[kb.sha256] = (kb, engine)
    _CANONICAL[kb.sha256] = Canonical(kb)
    _STEPS[kb.sha256] = Steps(kb)


def from_snapshot(snap: dict) -> KnowledgeBase:
    """Load a snapshot's knowledge base from a private folder; its content hash must be the snapshot's."""
    folder = Path(tempfile.mkdtemp(prefix=f"lumbar-kb-{snap['sha256'][:12]}-"))
    for name, data in snap["files"].items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    kb = load(folder)
    if kb.sha256 != snap["sha256"]:
        raise ValueError(f"knowledge base snapshot {snap['sha256'][:12]} loads as {kb.sha256[:12]}")
    return kb


def for_throughput() -> None:
    """Tune this process's garbage collector for a long run of small decisions: what is loaded so far (modules,
    knowledge bases, engines) is frozen out of collections, and the youngest generation is collected less often.
    A decision allocates many small containers but keeps none of them (no reference cycles), so the default
    threshold of 700 allocations runs a collection every few patients for nothing: about 7 % of the time
    (`make bench`). The older generations keep their default pace relative to it (a full collection every
    5 million allocations), so whatever cycles there are still go. Only for a process that evaluates: the
    cohort command with one process, and each worker process; never a coordinator (Dask's scheduler and
    client make cyclic garbage all the time: with full collections this rare, its memory grew ~2 MB a
    chunk), never by the library itself."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


def _engine(sha256: str, snapshots: dict | None) -> tuple:
    if sha256 not in _LOADED:
        if not snapshots or sha256 not in snapshots:
            raise RuntimeError(f"knowledge base {sha256[:12]} was not sent to this worker")
        remember(from_snapshot(snapshots[sha256]))
    return _LOADED[sha256]


# ---- one chunk -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    kb_sha256: str
    mapping: Mapping = field(default_factory=Mapping)
    compare_sha256: str | None = None  # --compare-kb: the other knowledge base
    rows: bool = True  # return the decision rows (CSV on stdout; --out and the store get them encoded)
    store: bool = False  # also the validated inputs and the trace (the audit store)
    out_kind: str | None = None  # --out: the rows encoded here for the file (parquet, csv, jsonl)
    cache: bool = True  # reuse the decision of the same answers (replay says False: it re-evaluates every one)
    raw: bool = False  # --csv-raw: CSV cells as they are, formulas included
    by: str | None = None  # --by: the kept column the summary is broken down by
    trend: str | None = None  # --trend: the kept date column the summary counts by month
    whole_hours: bool = False  # Parquet --out: hours as integers (output.whole_hours)


@dataclass
class ChunkOut:
    index: int
    summary: Summary
    rows: list  # decision rows, input order
    inputs: list  # store only: the validated inputs of each row, as the JSON text stored (decisions.canonical)
    bad: list  # [str]: one line per problem of each bad row
    replay_differences: list = field(default_factory=list)  # stored chunks: [(who, [what differs])]
    encoded: Any = None  # job.out_kind: the chunk's rows in that format (output.encode)
    stored: Any = None  # store only: the rows as the audit store's Arrow table, without seq and inputs
    trace: Any = None  # store only: the rows' trace rows as an Arrow table (Steps.table: row in the chunk, ...)
    leaves: bytes = b""  # store only: each row's link in the run's digest (decisions.leaf), in order


def evaluate_chunk(chunk: Chunk, job: Job, snapshots: dict | None = None) -> ChunkOut:
    """Validate and evaluate one chunk's patients; the rows are what `lumbar-kb evaluate` shows for each."""
    from lumbar_kb.engine.analysis.escalation import decision

    kb, engine = _engine(job.kb_sha256, snapshots)
    chunk = materialize(chunk)
    other = _engine(job.compare_sha256, snapshots) if job.compare_sha256 else None
    out = ChunkOut(chunk.index, Summary(job.by, job.trend), [], [], [])
    leaves: list[bytes] = []
    traces: list[tuple[int, ...]] = []  # store only: each row's trace, as its step numbers
    sha = kb.sha256
    canonical = _CANONICAL[sha]
    steps_of = _STEPS[sha]
    if steps_of.full():  # between chunks, so that a chunk's step numbers all mean the steps of one generation
        steps_of.renew()
    for item, patient in zip(chunk.items, patients(chunk, kb, job.mapping), strict=True):
        if not isinstance(patient, Patient):
            out.summary.add_bad(patient)
            out.bad.extend(str(p) for p in patient)
            continue
        text = canonical(patient.inputs)
        # a decision kept for the store holds step numbers: it is kept by the generation they belong to
        key = (job.kb_sha256, job.compare_sha256, steps_of.generation if job.store else None, text)
        known = _DECIDED.get(key) if job.cache else None
        if known is None:
            trace = engine.run(patient.inputs)
            part = decided(decision(kb, trace), sha)
            changes = None
            if other is not None:
                old_kb, old_engine = other
                changes = differences(decided(decision(old_kb, old_engine.run(patient.inputs)), old_kb.sha256), part)
            steps, steps_text = steps_of(trace) if job.store else (None, "")
            known = (
                hashlib.sha256(text.encode()).hexdigest(),
                part,
                changes,
                steps,
                decided_digest(part, changes, text, steps_text) if job.store else None,  # the leaf's first level
            )
            if job.cache:
                if len(_DECIDED) >= DECIDED_KEPT:
                    _DECIDED.clear()
                _DECIDED[key] = known
        digest, part, changes, steps, decided_hex = known
        row = {**who(patient, digest), **part}
        if changes is not None:
            row["changes"] = changes
        if patient.kept is not None:
            row["kept"] = patient.kept
        out.summary.add(row)
        if chunk.kind == "stored":
            expected = item[4]
            differs = [c for c in expected if c in row and not _same(expected[c], row[c])]
            if differs:
                out.replay_differences.append(
                    (row["source"] if row["row"] is None else f"{row['source']}:{row['row']}", differs, expected, row)
                )
        if job.rows or job.out_kind or job.store:
            out.rows.append(row)
        if job.store:
            out.inputs.append(text)  # the answers as canonical JSON, the same for the same answers
            traces.append(steps)
            leaves.append(leaf_of(row, decided_hex))
    out.leaves = b"".join(leaves)
    compared = job.compare_sha256 is not None
    if job.store and out.rows:  # the audit store's table, encoded here (on the worker, not the coordinator)
        from lumbar_kb.cohort.output import encode_table

        out.stored = encode_table(out.rows, compared=True, kept=True)
        out.trace = steps_of.table(traces)
    if job.out_kind and out.rows:
        from lumbar_kb.cohort.output import encode, from_stored

        if job.out_kind == "parquet" and out.stored is not None:  # the same rows: Arrow selects, not a 2nd encoding
            out.encoded = from_stored(out.stored, compared, job.mapping.keep, job.whole_hours)
        else:
            out.encoded = encode(out.rows, job.out_kind, compared, job.mapping.keep, job.raw, job.whole_hours)
    if not job.rows:
        out.rows = []
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# ---- running the chunks --------------------------------------------------------------------------------------
def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run(
    chunks: Iterable[Chunk],
    job: Job,
    snapshots: dict,
    jobs: int = 1,
    dask: str | bool | None = None,
) -> Iterator[ChunkOut]:
    """Each chunk's output, in input order: here (jobs=1), on `jobs` processes, or on Dask (`dask` True for a
    LocalCluster of `jobs` workers, or a scheduler address)."""
    if dask:
        yield from _run_dask(chunks, job, snapshots, jobs, None if dask is True else str(dask))
    elif jobs <= 1:
        for chunk in chunks:
            yield evaluate_chunk(chunk, job, snapshots)
    else:
        yield from _run_processes(chunks, job, snapshots, jobs)


def _init_worker(snapshots: dict) -> None:
    for snap in snapshots.values():
        _engine(snap["sha256"], snapshots)
    for_throughput()


def _evaluate_here(chunk: Chunk, job: Job) -> ChunkOut:
    return evaluate_chunk(chunk, job, None)


def _ordered(submit: Callable, chunks: Iterable[Chunk], limit: int, result: Callable) -> Iterator[ChunkOut]:
    pending: deque = deque()
    for chunk in chunks:
        pending.append(submit(chunk))
        if len(pending) >= limit:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


def _run_processes(chunks: Iterable[Chunk], job: Job, snapshots: dict, jobs: int) -> Iterator[ChunkOut]:
    import multiprocessing

    # spawn, not fork: a forked child would inherit durable-rules' C state and any threads of this process
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs, initializer=_init_worker, initargs=(snapshots,)) as pool:
        yield from _ordered(
            lambda c: pool.apply_async(_evaluate_here, (c, job)),
            chunks,
            jobs * IN_FLIGHT_PER_WORKER,
            lambda r: r.get(),
        )


def _evaluate_on_worker(chunk: Chunk, job: Job) -> ChunkOut:
    return evaluate_chunk(chunk, job, None)


def _run_dask(chunks: Iterable[Chunk], job: Job, snapshots: dict, jobs: int, address: str | None) -> Iterator[ChunkOut]:
    """Each chunk a task whose data travels with it (the chunk is its argument, never data scattered to one
    worker), so the scheduler can run it again on another worker when its worker is lost: a lost worker costs a
    retry, not the run. The knowledge bases reach every worker, new ones too, by a worker plugin. At most a few
    tasks per worker are in flight and each is released once its result is read, so the coordinator's memory
    stays flat."""
    import logging

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise LumbarKBError(
            Problem("--dask needs Dask distributed", hint="pip install 'lumbar-kb[dask]' (or distributed)")
        ) from None

    logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = None
    if address is None:
        cluster = LocalCluster(
            n_workers=max(jobs, 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        try:
            client = Client(address, timeout="15s")
        except (OSError, TimeoutError) as exc:
            raise LumbarKBError(
                Problem(f"cannot reach the Dask scheduler at {address}: {exc}", hint="e.g. --dask tcp://host:8786")
            ) from None
    try:
        from lumbar_kb.cohort.dask_plugin import KnowledgeBases

        client.register_plugin(KnowledgeBases(snapshots, _init_worker), name=KnowledgeBases.name)
        workers = max(len(client.scheduler_info().get("workers", {})), 1)

        def submit(chunk: Chunk) -> Any:
            return client.submit(_evaluate_on_worker, chunk, job, pure=False, retries=2)

        def result(future: Any) -> ChunkOut:
            out = future.result()
            future.release()
            return out

        yield from _ordered(submit, chunks, workers * IN_FLIGHT_PER_WORKER, result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
