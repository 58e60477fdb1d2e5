"""`lumbar-kb serve --workers N`: N worker processes, each with a listening socket of its own on the one port
(SO_REUSEPORT), and a supervisor that restarts a worker that dies.

Why not uvicorn's own workers: they share one listening socket, and the kernel hands a burst of new connections
to whichever worker wakes first, so a record system that opens its keep-alive connections at once could land
them all on one worker (measured: 16 of 16 in two tries of five), which then carried the load alone. With a
socket per worker the kernel spreads the connections by their addresses. Linux lets only processes of the same
user bind a port with SO_REUSEPORT beside these.

Each worker builds the app from the settings in LUMBAR_KB_SERVICE (`app.app_from_env`); the parent has already
built it once, so a knowledge base, codes or trust file that cannot load fails before any worker starts.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from lumbar_kb.engine.errors import LumbarKBError

log = logging.getLogger("lumbar_kb.service")
QUICK_DEATHS = 5  # a worker that dies this many times in a row within START_GRACE_S of starting: give up
START_GRACE_S = 10.0


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    certfile: str | None = None
    keyfile: str | None = None
    access_log: bool = True


def listening_socket(listen: Listen) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT (its worker listens on it)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((listen.host, listen.port))
    return sock


def _worker(env: str, listen: Listen) -> None:  # pragma: no cover - runs in the worker process
    import uvicorn

    os.environ["LUMBAR_KB_SERVICE"] = env
    sock = listening_socket(listen)
    config = uvicorn.Config(
        "lumbar_kb.clinic.service.app:app_from_env",
        factory=True,
        ssl_certfile=listen.certfile,
        ssl_keyfile=listen.keyfile,
        access_log=listen.access_log,
        proxy_headers=False,  # X-Forwarded-For/-Proto are a client's word: never the address or scheme
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the group: uvicorn has shut down, then re-raised
        pass


def serve(env: str, listen: Listen, workers: int) -> None:
    """Run `workers` worker processes until SIGINT or SIGTERM; restart one that dies."""
    try:  # the port is free for us (another program listening there without SO_REUSEPORT is refused here)
        listening_socket(listen).close()
    except OSError as exc:
        raise LumbarKBError(f"cannot listen on {listen.host}:{listen.port}: {exc.strerror}") from None
    spawn = multiprocessing.get_context("spawn")
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[Any, float]:
        proc = spawn.Process(target=_worker, args=(env, listen), daemon=False)
        proc.start()
        return proc, time.monotonic()

    procs = [start() for _ in range(workers)]
    log.info("serving on %s:%d with %d workers (pids %s)", listen.host, listen.port, workers, [p.pid for p, _ in procs])
    quick = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for i, (proc, started) in enumerate(procs):
                if proc.is_alive() or stopping:
                    continue
                quick = quick + 1 if time.monotonic() - started < START_GRACE_S else 0
                if quick >= QUICK_DEATHS:
                    raise LumbarKBError(
                        f"a worker died {QUICK_DEATHS} times in a row on starting (last exit status {proc.exitcode})"
                    )
                log.warning("worker %s ended (exit status %s): starting another", proc.pid, proc.exitcode)
                procs[i] = start()
    finally:
        for proc, _ in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc, _ in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for s, handler in previous.items():
            signal.signal(s, handler)
