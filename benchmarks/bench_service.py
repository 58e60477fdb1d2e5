"""Benchmark: the CDS Hooks service under loopback load. Prints figures; never fails on speed.

Starts `lumbar-kb serve --workers 2` (the issue's goal: 16 concurrent clients, p99 under 100 ms, at least 400
requests/s on a 2-core machine; --insecure-dev so the figure is the service's own work; the JWT check is timed
apart below) on a free 127.0.0.1 port, sends patient-view calls at a fixed concurrency, and reports requests/s,
latency percentiles, the server's CPU per request and its resident memory (all worker processes together)
every 2,500 requests (flat memory over 10k requests is the goal). Patients are random valid fact sets sent as
QuestionnaireResponses. The load generator shares the machine's cores with the server (and with whatever else
runs): the load average is printed beside the figures.

    python benchmarks/bench_service.py [--requests 10000] [--concurrency 16] [--workers 2] [--seed 1]
        [--serve-option=--engine-threads=4 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from lumbar_kb.clinic.fhir.codes import load_codes
from lumbar_kb.clinic.fhir.export import questionnaire_response
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.patient import random_patient

GOAL = "p99 under 100 ms, at least 400 requests/s, flat memory over 10,000 calls"


def family(pid: int) -> list[int]:
    """The process and its descendants (uvicorn's supervisor and its worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of the server: every process of it together."""
    total = 0.0
    for p in family(pid):
        try:
            with open(f"/proc/{p}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server's processes: its own cost, whatever else the machine is doing."""
    total = 0.0
    for p in family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def bodies(n: int, seed: int) -> list[bytes]:
    kb = load()
    codes = load_codes(kb)
    rng = random.Random(seed)
    out = []
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for i in range(min(n, 500)):
        qr = questionnaire_response(kb, codes, random_patient(kb, rng), "Patient/p1", f"q{i}")
        body = {
            "hook": "patient-view",
            "hookInstance": "",
            "context": {"userId": "Practitioner/u1", "patientId": "p1"},
            "prefetch": {
                "conditions": empty,
                "observations": empty,
                "questionnaireResponses": {"resourceType": "Bundle", "entry": [{"resource": qr}]},
            },
        }
        out.append(json.dumps(body))
    return [
        (out[i % len(out)].replace('"hookInstance": ""', f'"hookInstance": "{uuid.uuid4()}"')).encode()
        for i in range(n)
    ]


async def read_response(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 response off a keep-alive connection: its status; the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def load_test(
    port: int, path: str, payloads: list[bytes], concurrency: int, pid: int
) -> tuple[list[float], list, float, float]:
    """`concurrency` keep-alive connections, each sending its next request as soon as the last is answered.
    A bare HTTP/1.1 client on asyncio streams, requests built before the clock starts: about a tenth of the
    CPU httpx takes per call, so on a 2-core machine the figures are the server's, not the load generator's
    (the client's own CPU per request is printed too)."""
    latencies: list[float] = []
    memory: list[tuple[int, float]] = []
    queue = iter(enumerate(payloads))
    errors = 0
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: "
    ).encode()
    requests = [head + str(len(p)).encode() + b"\r\n\r\n" + p for p in payloads]

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i, _ in queue:
                if i % 2500 == 0:
                    memory.append((i, rss_mb(pid)))
                t0 = time.perf_counter()
                writer.write(requests[i])
                status = await read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    cpu0 = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    client_cpu = time.process_time() - cpu0
    memory.append((len(payloads), rss_mb(pid)))
    if errors:
        print(f"!! {errors} responses were not 200")
    return latencies, memory, elapsed, client_cpu


def jwt_check_cost(n: int = 2000) -> float:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from lumbar_kb.clinic.service.security import Issuer, Verifier
    from lumbar_kb.clinic.service.store import Store

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "k1"
    with tempfile.TemporaryDirectory() as tmp:
        verifier = Verifier({"iss": Issuer("iss", jwt.PyJWKSet.from_dict({"keys": [jwk]}))}, Store(Path(tmp) / "s.db"))
        now = int(time.time())
        tokens = [
            jwt.encode(
                {"iss": "iss", "aud": "a", "exp": now + 300, "iat": now, "jti": str(i)},
                key,
                algorithm="RS256",
                headers={"kid": "k1"},
            )
            for i in range(n)
        ]
        t0 = time.perf_counter()
        for t in tokens:
            verifier.verify(f"Bearer {t}", "a")
        return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (the issue's goal: 2)")
    parser.add_argument("--access-log", action="store_true", help="keep uvicorn's line per request (off by default)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--serve-option",
        action="append",
        default=[],
        help="passed to `lumbar-kb serve`, e.g. --serve-option=--engine-threads=4 (repeatable)",
    )
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lumbar_kb",
                "serve",
                "--port",
                str(port),
                "--db",
                f"{tmp}/s.sqlite3",
                "--workers",
                str(args.workers),
                "--insecure-dev",
                *args.serve_option,
                *([] if args.access_log else ["--no-access-log"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(400):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            path = "/cds-services/lumbar-mass-patient-view"
            asyncio.run(load_test(port, path, bodies(300, args.seed + 1), args.concurrency, proc.pid))  # warm-up
            payloads = bodies(args.requests, args.seed)
            cpu0 = cpu_seconds(proc.pid)
            latencies, memory, elapsed, client_cpu = asyncio.run(
                load_test(port, path, payloads, args.concurrency, proc.pid)
            )
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    ms = sorted(x * 1000 for x in latencies)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    print(
        f"patient-view over loopback, {args.workers} uvicorn worker(s), concurrency {args.concurrency}, "
        f"{len(ms)} requests (goal: {GOAL})"
    )
    print(f"  machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (the client shares them)")
    print(f"  throughput: {len(ms) / elapsed:,.0f} requests/s")
    print(
        f"  server CPU: {cpu / len(ms) * 1000:.2f} ms per request "
        f"(a bound of {len(ms) / cpu:,.0f} requests/s per core); "
        f"the load generator's: {client_cpu / len(ms) * 1000:.2f} ms"
    )
    print(
        f"  latency ms: p50 {p(0.50):.1f}  p90 {p(0.90):.1f}  p99 {p(0.99):.1f}  max {ms[-1]:.1f}  "
        f"mean {statistics.mean(ms):.1f}"
    )
    print("  server RSS (MB) by request: " + ", ".join(f"{i}: {mb:.1f}" for i, mb in memory))
    half = next((mb for i, mb in memory if i >= len(ms) // 2), memory[-1][1])
    print(
        f"  RSS growth after warm-up: {memory[-1][1] - memory[0][1]:+.1f} MB "
        f"(second half of the run: {memory[-1][1] - half:+.1f} MB)"
    )
    print(f"JWT check (RS256 signature, claims, jti in SQLite): {jwt_check_cost():.0f} µs per call")


if __name__ == "__main__":
    main()
