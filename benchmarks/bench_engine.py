"""Benchmark: the durable-rules engine with the full trace, next to the plain-Python reference evaluator.

Prints figures; never fails on speed. Goals (issue 2): >= 8,000 patients/s on one core, within 3x of the
reference evaluator measured in the same run, RSS growth < 5 MB over 100k evaluations.

    python benchmarks/bench_engine.py [--patients 10000] [--soak 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import time

from lumbar_kb.engine.analysis.escalation import decide
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.patient import random_patient
from lumbar_kb.engine.reference import ReferenceEvaluator
from lumbar_kb.engine.result import build
from lumbar_kb.engine.session import Engine


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(label: str, fn, patients: list) -> dict:
    for p in patients[:500]:  # warm-up
        fn(p)
    gc.collect()
    times = []
    clock = time.perf_counter_ns
    start = clock()
    for p in patients:
        t0 = clock()
        fn(p)
        times.append(clock() - t0)
    total = (clock() - start) / 1e9
    times.sort()
    return {
        "label": label,
        "median_us": statistics.median(times) / 1000,
        "p99_us": times[int(len(times) * 0.99)] / 1000,
        "per_s": len(patients) / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--soak", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    kb = load()
    t0 = time.perf_counter()
    engine = Engine(kb)
    build_ms = (time.perf_counter() - t0) * 1000
    reference = ReferenceEvaluator(kb)
    rng = random.Random(args.seed)
    patients = [random_patient(kb, rng) for _ in range(args.patients)]
    fired = [len(reference.run(p).firings) for p in patients]

    print(
        f"lumbar-kb benchmark: {len(kb.rules)} rules, {len(patients):,} random patients (seed {args.seed}), "
        f"{statistics.mean(fired):.1f} rules fired on average; Python {platform.python_version()}, "
        f"one core (pid {os.getpid()}); engine build {build_ms:.1f} ms"
    )
    rows = [
        measure("reference evaluator (trace)", reference.run, patients),
        measure("durable-rules engine (trace)", engine.run, patients),
        measure("reference + Result", lambda p: build(kb, reference.run(p)), patients),
        measure("engine + Result", lambda p: build(kb, engine.run(p)), patients),
        measure("engine + Result + could_escalate", lambda p: decide(kb, engine.run(p)), patients),
    ]
    print(f"\n{'evaluation':<34} {'median µs':>10} {'p99 µs':>10} {'patients/s':>12}")
    for r in rows:
        print(f"{r['label']:<34} {r['median_us']:>10.1f} {r['p99_us']:>10.1f} {r['per_s']:>12,.0f}")
    ratio_trace = rows[0]["per_s"] / rows[1]["per_s"]
    ratio_result = rows[2]["per_s"] / rows[3]["per_s"]
    print(
        f"\nengine vs reference, throughput ratio: {ratio_trace:.2f}x (trace), {ratio_result:.2f}x (with Result)"
        f"  [goal: within 3x]"
    )
    print(
        f"engine with the full trace: {rows[1]['per_s']:,.0f} patients/s, with the Result "
        f"{rows[3]['per_s']:,.0f}  [goal: >= 8,000]"
    )
    print(
        f"the could_escalate look-ahead adds {rows[4]['median_us'] - rows[3]['median_us']:.0f} µs a patient "
        f"(median), {rows[4]['per_s']:,.0f} patients/s with it"
    )

    # the soak also checks every evaluation against the reference's trace for the same patient
    expected = [reference.run(p).firings for p in patients]
    gc.collect()
    before = rss_mb()
    wrong = 0
    t0 = time.perf_counter()
    for i in range(args.soak):
        trace = engine.run(patients[i % len(patients)])
        decide(kb, trace)  # with the look-ahead, as the CLI does
        wrong += trace.firings != expected[i % len(patients)]
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_mb()
    print(
        f"\nsoak: {args.soak:,} evaluations in {elapsed:.1f} s, {wrong} disagreeing with the reference; "
        f"RSS {before:.1f} MB -> {after:.1f} MB (growth {after - before:+.2f} MB)  [goal: < 5 MB]"
    )


if __name__ == "__main__":
    main()
