"""Writing files safely: permissions from the umask (never widened), temporary names that say whose they are,
and the leftovers of a run killed mid-write (kill -9 runs no cleanup) swept by the next run.

Every temporary file or staging folder the tool makes beside a target carries TEMP_MARK in its name; one
older than STALE_AFTER_S is a leftover (a live write takes well under a second) and is removed the next time
anything is written into that folder.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

TEMP_MARK = ".lumbar-kb-tmp-"  # in the name of every temporary file and staging folder
STALE_AFTER_S = 600  # a temporary older than this is a killed run's leftover


def umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it; else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from open(): 0666 less the umask (0644 under umask 022, 0600 under 077)."""
    return 0o666 & ~umask()


def sweep_stale(directory: Path, now: float | None = None) -> list[Path]:
    """Remove this tool's temporaries in `directory` older than STALE_AFTER_S; the paths removed. Anything
    that cannot be removed is left (another user's, or already gone): sweeping never fails a command."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        candidates = [p for p in directory.iterdir() if TEMP_MARK in p.name]
    except OSError:
        return removed
    for path in candidates:
        try:
            info = path.lstat()
            if now - info.st_mtime < STALE_AFTER_S:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed
