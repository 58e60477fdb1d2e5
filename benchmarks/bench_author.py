"""Benchmark: the author's loop, `make author-check KB=DIR` (validate, check, test --require-coverage), as an
author runs it: each command a new process on a fresh copy made with `lumbar-kb new-kb`, the loaded-knowledge
base cache cold (its folder new) and then warm (the second and later runs, as in an edit-check loop).

Prints figures; never fails on speed. Goal (issue 22): the whole loop under 10 s on a 2-core machine. Beside
it, for scale: `lumbar-kb --help` (the interpreter and the imports alone), measured in the same run.

    python benchmarks/bench_author.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = (["validate"], ["check"], ["test", "--require-coverage"])


def run(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lumbar_kb", *argv], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"lumbar-kb {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-author-"))
    try:
        env = dict(os.environ, LUMBAR_KB_CACHE=str(work / "cache"))
        kb = work / "my-kb"
        run(["new-kb", str(kb)], env)
        baseline = statistics.median(run(["--help"], env) for _ in range(args.repeat))
        rounds: list[list[float]] = []
        for _ in range(args.repeat + 1):  # the first round is the cold cache
            rounds.append([run([*step, "--kb", str(kb)], env) for step in STEPS])
        print(
            f"# make author-check on a copy made by new-kb ({os.cpu_count()} core(s), Python {sys.version.split()[0]})"
        )
        print(f"lumbar-kb --help (start-up alone): {baseline:.2f} s")
        names = [" ".join(s) for s in STEPS]
        for label, times in (("cold cache", rounds[0]), ("warm cache, median", None)):
            if times is None:
                times = [statistics.median(r[i] for r in rounds[1:]) for i in range(len(STEPS))]
            parts = ", ".join(f"{n} {t:.2f} s" for n, t in zip(names, times, strict=True))
            print(f"{label}: {parts}; the loop {sum(times):.2f} s (goal: under 10 s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
