"""The Dask worker plugin of `cohort --dask` (imported only when Dask is used: distributed is optional)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class KnowledgeBases(WorkerPlugin):
    """Loads the run's knowledge bases on every worker, including one that joins or is restarted mid-run (the
    scheduler keeps the plugin and sets it up on each new worker): so any task can run, and run again, on any
    worker."""

    name = "lumbar-kb-knowledge-bases"

    def __init__(self, snapshots: dict, prepare: Callable[[dict], None]):
        self.snapshots = snapshots
        self.prepare = prepare  # runner._init_worker (given, not imported: the runner imports this module)

    def setup(self, worker: Any) -> None:
        self.prepare(self.snapshots)
