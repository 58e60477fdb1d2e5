"""Benchmark: how fast, and in how little memory, each hostile file of issue 11 is refused.

Every case runs through the real command line (`lumbar_kb.main.main`, in-process, standard streams captured);
the figure is the best of three wall-clock times of the whole command (loading the bundled knowledge base
included), then the process's peak RSS. Prints figures; never fails on speed. Goal: each refused "in well
under a second" with a one-line message.

    python benchmarks/bench_hostile.py
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from lumbar_kb.engine.loader import default_kb_dir
from lumbar_kb.main import main

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)

PATIENTS = {
    "billion laughs (446 bytes)": ("p.yaml", LAUGHS.encode()),
    "NUL byte": ("p.yaml", b"leg_weakness: true\x00\n"),
    "5,000-digit integer": ("p.yaml", b"id: " + b"9" * 5000 + b"\n"),
    '!!bool "0"': ("p.yaml", b'leg_weakness: !!bool "0"\n'),
    "!!timestamp 2024-13-45": ("p.yaml", b"id: !!timestamp 2024-13-45\n"),
    "NaN in JSON": ("p.json", b'{"id": NaN}'),
    "nested 100,000 deep": ("p.yaml", b"x: " + b"[" * 100_000 + b"\n"),
    "JSON nested 100,000 deep": ("p.json", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "ANSI escape in a key": ("p.yaml", b'"\\e[2Jleg": true\n'),
    "a 50 MB file": ("p.yaml", None),
}


def run(argv: list[str]) -> tuple[int, str, float]:
    best = float("inf")
    code, err = -1, ""
    for _ in range(3):
        out, errors = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        with redirect_stdout(out), redirect_stderr(errors):
            code = main(argv)
        best = min(best, time.perf_counter() - started)
        err = errors.getvalue()
    return code, err, best


def report(label: str, code: int, err: str, seconds: float) -> None:
    first = err.splitlines()[0] if err else ""
    print(f"{label:<34} exit {code}  {seconds * 1000:7.1f} ms  {len(err.splitlines())} line(s)  {first[:70]}")


def main_bench() -> None:
    work = Path(tempfile.mkdtemp(prefix="lumbar-kb-bench-"))
    try:
        code, err, seconds = run(["validate"])
        report("(baseline: validate the bundled KB)", code, "", seconds)
        for label, (name, data) in PATIENTS.items():
            path = work / name
            if data is None:
                with open(path, "wb") as out:  # sparse: 50 MB without writing them
                    out.truncate(50 * 1024 * 1024)
            else:
                path.write_bytes(data)
            report(label, *run(["evaluate", str(path), "--format", "json"]))
        report("/dev/zero", *run(["evaluate", "/dev/zero"]))
        fifo = work / "fifo.yaml"
        os.mkfifo(fifo)
        report("a FIFO nobody writes to", *run(["evaluate", str(fifo)]))
        kb = work / "kb"
        shutil.copytree(default_kb_dir(), kb)
        rules = kb / "rules" / "concerning.yaml"
        one = "{any: [{fact: leg_weakness, is: true}, {fact: gait_difficulty, is: true}, {fact: night_pain, is: true}]}"
        text = rules.read_text()
        rules.write_text(
            text.replace("when: {fact: night_pain, is: true}", "when: {all: [" + ", ".join([one] * 10) + "]}")
        )
        report("rule: all of ten any-of-three", *run(["validate", "--kb", str(kb)]))
        deep = "{fact: night_pain, is: true}"
        for _ in range(250):
            deep = "{not: " + deep + "}"
        rules.write_text(text.replace("when: {fact: night_pain, is: true}", f"when: {deep}"))
        report("rule: not nested 250 deep", *run(["validate", "--kb", str(kb)]))
        rules.write_text(text + "x" + LAUGHS.replace("\n", "\nx")[:-1])
        report("rule file: billion laughs", *run(["validate", "--kb", str(kb)]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole run: {peak:.0f} MB")


if __name__ == "__main__":
    main_bench()
