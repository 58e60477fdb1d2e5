"""`cohort --dask` on a real cluster: `dask scheduler` and two `dask worker` processes (each under its nanny) on
loopback, one worker killed with SIGKILL mid-run. The run must finish with output byte-identical to
`--jobs 1`: a lost worker costs a retry of its tasks, never the run, and never a partial answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lumbar_kb.engine.patient import random_patient

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

ROWS = 20_000
DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lumbar(*argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lumbar_kb", *map(str, argv)], **kwargs)


@pytest.fixture
def cluster(tmp_path):
    assert DASK, "the dask command (distributed) is not installed"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    # each in a session of its own, so that a worker's nanny and the worker it started end together
    common = {"cwd": tmp_path, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs = [
        subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **common)
    ]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        DASK,
                        "worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--death-timeout",
                        "30",
                    ],
                    **common,
                )
            )
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:  # killed outright: a graceful dask shutdown took 8 s, and nothing of the cluster outlives the test
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait()


def test_a_worker_killed_mid_run_costs_a_retry_not_the_run(kb, tmp_path, cluster):
    from distributed import Client

    rng = random.Random(17)
    patients = tmp_path / "p.jsonl"
    patients.write_text("".join(json.dumps(random_patient(kb, rng)) + "\n" for _ in range(ROWS)))
    one = tmp_path / "one.jsonl"
    assert lumbar("cohort", patients, "--jobs", "1", "--out", one, "--quiet", cwd=tmp_path).wait() == 0

    out = tmp_path / "dask.jsonl"
    run = lumbar(
        "cohort",
        patients,
        "--dask",
        cluster,
        "--chunk-size",
        "250",
        "--out",
        out,
        "--format",
        "json",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with Client(cluster, timeout="30s") as client:
        pids = list(client.run(os.getpid).values())
    assert len(pids) == 2
    deadline = time.monotonic() + 60
    partial = []
    while time.monotonic() < deadline and run.poll() is None:  # rows coming back: the run is under way
        partial = [p for p in tmp_path.glob(".dask.jsonl.cohort-*.tmp") if p.stat().st_size > 50_000]
        if partial:
            break
        time.sleep(0.02)
    assert partial and run.poll() is None, "the run ended before a worker could be killed"
    os.kill(pids[0], signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert "internal error" not in stderr and f"cohort: {ROWS:,} patient(s)" in stderr
    assert json.loads(stdout)["summary"]["patients"] == ROWS
    assert out.read_bytes() == one.read_bytes()
    with Client(cluster, timeout="30s") as client:  # the worker really was lost (its nanny started another)
        assert pids[0] not in client.run(os.getpid).values()
