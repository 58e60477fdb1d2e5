"""The one way the tests run a real `lumbar-kb serve`: on a free port of 127.0.0.1, waited for until it answers,
stopped by the test. Its standard error and output (uvicorn's access log) go to files (a pipe nobody reads would
fill up and stall the server)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    base: str  # http://127.0.0.1:PORT
    log: Path  # the server's standard error
    pid: int = 0  # the `lumbar-kb serve` process

    @property
    def stderr(self) -> str:
        return self.log.read_text()

    @property
    def stdout(self) -> str:
        return self.log.with_suffix(".stdout").read_text()


@contextmanager
def serving(folder: Path, *extra: str) -> Iterator[Served]:
    """`lumbar-kb serve --insecure-dev` with its store in `folder`, plus `extra` arguments."""
    port = free_port()
    served = Served(f"http://127.0.0.1:{port}", folder / "serve.stderr")
    argv = [sys.executable, "-m", "lumbar_kb", "serve", "--port", str(port), "--db", str(folder / "s.sqlite3")]
    with served.log.open("w") as log, served.log.with_suffix(".stdout").open("w") as out:
        proc = subprocess.Popen([*argv, "--insecure-dev", *extra], stdout=out, stderr=log)
        served.pid = proc.pid
        try:
            # a start-up bound generous enough for a loaded 2-core machine running the suite on every core;
            # a server that exits fails at once, with what it printed
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{served.base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the server did not start: {served.log.read_text()[-2000:]}")
            yield served
        finally:
            proc.terminate()
            proc.wait(timeout=20)
