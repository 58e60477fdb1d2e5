"""Loaded knowledge bases kept on disk by content, so a new process skips the loader's work.

Loading the bundled guideline composes every file with positions, checks it against its JSON Schema and builds
the model: ~45 ms, plus ~35 ms importing jsonschema, in every `lumbar-kb evaluate`, worker or service start.
A knowledge base that loaded without a problem is kept here and read back in ~2 ms when the same load would
give the same model. The key is a sha256 over everything the load reads or depends on: every file in the
knowledge base folder and its rules folder (names and bytes, so a stray file that would be an error is a new
key), the folder as named and the working directory (messages and `file` fields are relative to it), the
reading limits in force, the Python version, and this package's loader, model and schema sources (an edited
loader never reads a model made by the old one). A knowledge base with a problem is never kept: its errors are
always the loader's own.

Where: `$LUMBAR_KB_CACHE` (a directory; `off` turns the cache off), else `$XDG_CACHE_HOME/lumbar-kb`, else
`~/.cache/lumbar-kb`. The folder is made private (0700), each entry is written whole (a temporary file renamed
into place) and private (0600), and an entry is read only from a folder and file owned by this user that no one
else can write (an entry is a pickle: whoever can write it could run code as the reader). The newest
`KEPT` entries are kept. Any failure to read or write the cache only means a full load.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import sys
import tempfile
from pathlib import Path

from lumbar_kb.engine.model import KnowledgeBase
from lumbar_kb.engine.source import DocumentError, limits, read_bytes

ENV = "LUMBAR_KB_CACHE"
KEPT = 32  # entries kept; the oldest beyond these are removed when one is written
_ENGINE = Path(__file__).resolve().parent.parent  # engine/
# the sources a loaded model depends on: the loader, the model and what builds and checks it
_CODE = ("loader/*.py", "model.py", "source.py", "logic.py", "errors.py")
_fingerprint: str | None = None


def directory() -> Path | None:
    """The cache folder in force, or None when the cache is off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "no", "false") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lumbar-kb"


def _code_fingerprint() -> str:
    global _fingerprint
    if _fingerprint is None:
        h = hashlib.sha256(f"{sys.version}\0{pickle.HIGHEST_PROTOCOL}\0".encode())
        schemas = _ENGINE.parent / "knowledge" / "schema"
        files = [p for pattern in _CODE for p in sorted(_ENGINE.glob(pattern))] + sorted(schemas.glob("*.json"))
        for path in files:
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        _fingerprint = h.hexdigest()
    return _fingerprint


def key(root: Path) -> str | None:
    """The content key of loading `root` here and now, or None when something cannot be read (the full load
    then reports it)."""
    try:
        h = hashlib.sha256(_code_fingerprint().encode())
        h.update(f"\0{root}\0{os.getcwd()}\0{limits()!r}\0".encode("utf-8", "surrogateescape"))
        for folder in (root, root / "rules"):
            for path in sorted(folder.iterdir()):
                h.update(path.relative_to(root).as_posix().encode("utf-8", "surrogateescape") + b"\0")
                if path.suffix in (".yaml", ".yml") and path.is_file():
                    h.update(read_bytes(path) + b"\0")
        return h.hexdigest()
    except (OSError, DocumentError, ValueError):
        return None


def _private(path: Path, folder: bool) -> bool:
    """Owned by this user and writable by no one else (and, for an entry, a regular file)."""
    st = os.lstat(path)
    kind = stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)
    return kind and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def get(cache_key: str) -> KnowledgeBase | None:
    folder = directory()
    if folder is None:
        return None
    entry = folder / f"{cache_key}.pickle"
    try:
        if not (_private(folder, True) and _private(entry, False)):
            return None
        with open(entry, "rb") as f:
            kb = pickle.load(f)
    except Exception:  # missing, unreadable or from another version: load afresh
        return None
    return kb if isinstance(kb, KnowledgeBase) else None


def put(cache_key: str, kb: KnowledgeBase) -> None:
    folder = directory()
    if folder is None:
        return
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(folder, True):
            return
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".entry-", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(kb, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temp, folder / f"{cache_key}.pickle")
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        entries = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEPT:]:
            old.unlink(missing_ok=True)
    except Exception:  # a read-only or full disk: the cache is only a shortcut
        return
