"""Temporary files and folders a cohort writes beside its outputs while it runs, held under a lock.

A run writes `--out FILE` to `.FILE.cohort-PID.tmp` and stages its audit-store rows in `.DB.RUN_ID.staging/`;
each holds an exclusive `flock` on it (on the file itself, or on the folder's `lock`) for as long as the run
lives. The kernel drops the lock when the process ends however it ends (kill -9 included), so a temporary
whose lock can be taken belongs to a run that is gone: the next run writing beside it removes it. A live
run's temporaries are never touched, however long it runs (an age limit would remove a slow run's).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from pathlib import Path
from typing import IO


def _open_regular(path: Path, flags: int) -> int:
    """A descriptor of `path` when it is a regular file (never following a symlink, never waiting: a FIFO planted
    there would block an open for as long as nobody opens its other end); OSError otherwise."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)  # made: mode from the umask
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(f"{path} is not a regular file")
    return fd


def hold(path: Path) -> IO[bytes]:
    """Open `path` (created if missing) and hold an exclusive lock on it until the returned file is closed."""
    handle = os.fdopen(_open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def abandoned(lock: Path) -> bool:
    """Whether the process that held `lock` is gone (its lock can be taken, or the file is missing). A lock that
    is not a regular file (a FIFO, a symlink) was not made by a run: not ours to judge, so never abandoned."""
    try:
        fd = _open_regular(lock, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # not ours to judge (another user's, or not a run's lock)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: a live run
    finally:
        os.close(fd)
    return True


def sweep(directory: Path, prefix: str, suffix: str) -> list[Path]:
    """Remove the temporaries `prefix*suffix` in `directory` whose run is gone; the paths removed. A folder's
    lock is its `lock` file. Sweeping never fails a command: what cannot be removed is left."""
    removed: list[Path] = []
    try:
        candidates = [p for p in directory.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)]
    except OSError:
        return removed
    for path in candidates:
        try:
            if path.is_symlink():
                continue  # never ours
            folder = path.is_dir()
            if not abandoned(path / "lock" if folder else path):
                continue
            shutil.rmtree(path) if folder else path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


def private_folder(path: Path) -> Path:
    """Make `path` as a folder only its owner can open (0700)."""
    os.mkdir(path, 0o700)
    return path
