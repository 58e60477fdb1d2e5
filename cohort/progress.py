"""Progress of a long run on stderr: a rich progress bar on a terminal, a plain line every few seconds
otherwise (a log file, CI), each with the total and the time left when the total is known (every input kind:
patient files are listed, Parquet says in its metadata, JSON Lines and CSV are counted before the run), and a
final line with the rate in patients per second only when the run has succeeded."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

PLAIN_EVERY_S = 5.0


def time_left(done: int, total: int | None, elapsed: float) -> str:
    """The time left at the rate so far, as h:mm:ss ("-" until something is done or without a total)."""
    if not total or done <= 0 or elapsed <= 0:
        return "-"
    seconds = max(total - done, 0) * elapsed / done
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class Progress:
    def __init__(self, total: int | None = None, stream: IO[str] | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.total = total
        self.patients = 0
        self.bad = 0
        self.started = time.perf_counter()
        self._last = self.started
        self._bar: Any = None
        self._task: Any = None
        if not quiet and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]cohort"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} patients/s"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("cohort", total=total, rate="-")

    def advance(self, patients: int, bad: int = 0) -> None:
        self.patients += patients
        self.bad += bad
        now = time.perf_counter()
        rate = self.patients / max(now - self.started, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, advance=patients + bad, rate=f"{rate:,.0f}")
        elif not self.quiet and now - self._last >= PLAIN_EVERY_S:
            self._last = now
            done = self.patients + self.bad
            of = f" of {self.total:,}" if self.total else ""
            left = f", {time_left(done, self.total, now - self.started)} left" if self.total else ""
            print(f"cohort: {done:,}{of} rows, {rate:,.0f} patients/s{left}", file=self.stream)

    def close(self, ok: bool = True) -> str:
        """Stop the bar (the terminal given back); the final line, printed only for a run that succeeded (a
        failed one must not look finished)."""
        if self._bar is not None:
            self._bar.stop()
        elapsed = time.perf_counter() - self.started
        skipped = f", {self.bad:,} bad row(s) skipped" if self.bad else ""
        line = (
            f"cohort: {self.patients:,} patient(s){skipped} in {elapsed:.2f} s: "
            f"{self.patients / max(elapsed, 1e-9):,.0f} patients/s"
        )
        if not self.quiet and ok:
            print(line, file=self.stream)
        return line
