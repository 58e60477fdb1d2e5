"""Benchmark: the medical board's review pack and the behaviour diff on the bundled knowledge base.

Prints figures; never fails on speed. Goal (issue 12): `review` and `diff` take seconds.

    python benchmarks/bench_review.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from lumbar_kb.engine.analysis.algorithm import build_algorithm
from lumbar_kb.engine.analysis.diff import compare
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.visualize.review.content import build_pack
from lumbar_kb.visualize.review.pack import write_pack


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    kb = load()
    with tempfile.TemporaryDirectory() as tmp:
        new_dir = Path(tmp) / "kb"
        shutil.copytree(default_kb_dir(), new_dir)
        imaging = new_dir / "rules" / "imaging.yaml"
        imaging.write_text(imaging.read_text().replace("within_hours: 336", "within_hours: 168"))
        new = load(new_dir)
        figures = {
            "algorithm (build, 7 decision diagrams)": [timed(lambda: build_algorithm(kb)) for _ in range(args.repeat)],
            "review (model + pages + diagrams)": [
                timed(lambda: write_pack(build_pack(kb), Path(tmp) / "pack")) for _ in range(args.repeat)
            ],
            "diff (one window edited, every input state)": [
                timed(lambda: compare(kb, new)) for _ in range(args.repeat)
            ],
            "review --against (with the diff)": [
                timed(lambda: write_pack(build_pack(new, compare(kb, new)), Path(tmp) / "pack2"))
                for _ in range(args.repeat)
            ],
        }
    print(f"review pack and diff on {kb.name} {kb.version}: {len(kb.rules)} rules, best and median of {args.repeat}")
    for label, times in figures.items():
        print(f"  {label:<48} best {min(times):6.2f} s   median {statistics.median(times):6.2f} s")


if __name__ == "__main__":
    main()
