"""Progress of a long run on stderr: a rich progress bar on a terminal, a plain line every few seconds
otherwise (a log file, CI), and always a final line with the rate in patients per second."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

PLAIN_EVERY_S = 5.0


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
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]cohort"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} patients/s"),
                TimeElapsedColumn(),
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
            of = f" of {self.total:,}" if self.total else ""
            print(f"cohort: {self.patients + self.bad:,}{of} rows, {rate:,.0f} patients/s", file=self.stream)

    def close(self) -> str:
        if self._bar is not None:
            self._bar.stop()
        elapsed = time.perf_counter() - self.started
        skipped = f", {self.bad} bad row(s) skipped" if self.bad else ""
        line = (
            f"cohort: {self.patients:,} patient(s){skipped} in {elapsed:.2f} s: "
            f"{self.patients / max(elapsed, 1e-9):,.0f} patients/s"
        )
        if not self.quiet:
            print(line, file=self.stream)
        return line
