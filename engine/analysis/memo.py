"""Analyses kept by the knowledge base's content, for a process that asks again (`diff` checks both versions;
`review` and the release gate check what `check` just checked; the review pack and `check` build the same
clinical algorithm).

Keyed by a digest of the whole model as pickled (~0.5 ms for the bundled guideline), not by the files' sha256,
so a knowledge base edited in memory (`dataclasses.replace`) is analysed afresh. Pickling is faithful, so equal
digests are equal models; a model that pickles differently only misses the memo.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from lumbar_kb.engine.model import KnowledgeBase

T = TypeVar("T")


def digest(kb: KnowledgeBase) -> str:
    """The model's fields as pickled (not its cached properties, which appear once read), hashed."""
    fields = tuple(getattr(kb, f.name) for f in dataclasses.fields(kb))
    return hashlib.sha256(pickle.dumps(fields, protocol=5)).hexdigest()


class ByContent(Generic[T]):
    """The last `kept` results of one analysis, by content. `private=True` hands each caller its own deep copy
    (for results a caller may change); otherwise the result is shared and read-only."""

    def __init__(self, kept: int = 4, private: bool = False):
        self._kept, self._private = kept, private
        self._results: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, kb: KnowledgeBase, build: Callable[[], T]) -> T:
        key = digest(kb)
        with self._lock:
            found = key in self._results
            if found:
                self._results.move_to_end(key)
                result = self._results[key]
        if not found:
            result = build()
            with self._lock:
                self._results[key] = result
                while len(self._results) > self._kept:
                    self._results.popitem(last=False)
        return copy.deepcopy(result) if self._private else result
