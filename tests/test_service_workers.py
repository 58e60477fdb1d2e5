"""`lumbar-kb serve --workers 2`, run for real: a listening socket per worker, so a burst of keep-alive
connections spreads over both; a worker that dies is replaced; a port taken by another program is bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from .servers import serving

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

CONNECTIONS = 16


def workers(pid: int) -> list[psutil.Process]:
    """The worker processes (multiprocessing's resource tracker, also a child, left out)."""
    out = []
    for c in psutil.Process(pid).children():
        try:
            if c.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(c.cmdline()):
                out.append(c)
        except psutil.NoSuchProcess:
            pass
    return out


def listening(pid: int, port: int, n: int = 2) -> list[psutil.Process]:
    """Wait until `n` workers listen on `port`."""
    deadline = time.monotonic() + 90
    while True:
        found = workers(pid)
        ready = [
            w for w in found if any(c.status == "LISTEN" and c.laddr.port == port for c in w.net_connections("tcp"))
        ]
        if len(ready) == n or time.monotonic() > deadline:
            return ready
        time.sleep(0.1)


def established_on(proc: psutil.Process, port: int) -> int:
    return sum(1 for c in proc.net_connections("tcp") if c.status == "ESTABLISHED" and c.laddr.port == port)


def test_a_burst_of_keep_alive_connections_reaches_both_workers(tmp_path):
    """Five bursts of 16 connections opened at once, as a record system's pool opens them. With one shared
    listening socket, all 16 landed on one worker in two bursts of five; with a socket per worker the kernel
    spreads them by their addresses (all 16 on one worker: odds of 2 in 65,536 a burst)."""
    spread = []
    with serving(tmp_path, "--workers", "2") as served:
        port = int(served.base.rsplit(":", 1)[1])
        assert len(listening(served.pid, port)) == 2
        for _ in range(5):
            held = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
            try:
                for s in held:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                for s in held:
                    assert s.recv(4096).startswith(b"HTTP/1.1 200")
                spread.append(sorted(established_on(w, port) for w in workers(served.pid)))
            finally:
                for s in held:
                    s.close()
            time.sleep(0.2)
    assert all(len(counts) == 2 and sum(counts) == CONNECTIONS for counts in spread), spread
    assert all(counts[0] >= 1 for counts in spread), spread


def test_a_worker_that_dies_is_replaced_and_the_service_answers(tmp_path):
    with serving(tmp_path, "--workers", "2") as served:
        port = int(served.base.rsplit(":", 1)[1])
        first = {w.pid for w in listening(served.pid, port)}
        assert len(first) == 2
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            now = {w.pid for w in listening(served.pid, port)}
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.2)
        assert len(now) == 2 and victim not in now, (first, now)
        for _ in range(20):  # every connection is answered, whichever worker takes it; a client's forwarded
            # address is not taken as its own in any worker's access log
            headers = {"X-Forwarded-For": "203.0.113.9"}
            assert httpx.get(served.base + "/healthz", timeout=30, headers=headers).status_code == 200
        assert "starting another" in served.stderr
        assert "GET /healthz" in served.stdout and "203.0.113.9" not in served.stdout


def test_a_port_another_program_listens_on_is_bad_input(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lumbar_kb",
                "serve",
                "--insecure-dev",
                "--workers",
                "2",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "s.sqlite3"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
