"""Which patient files a list of paths names: predictable, each file once, nothing skipped silently.

`patient_files(paths)` -> (files, problems):
  * a path naming a file is taken as it is (the reader refuses it by name if it is not a patient file);
  * a path naming a folder contributes its entries (not its subfolders' entries) whose extension is .yaml,
    .yml or .json in any case (.YAML, .Json), sorted by name; hidden entries (a name starting with ".", an
    editor's or this tool's temporaries) are left out;
  * every symbolic link is resolved once, and a file reached twice (a folder and a file inside it, two links
    to one file, a hard link) is counted once, at its first mention;
  * what cannot be a patient file is reported by name, never skipped silently: a path that does not exist,
    a dangling symbolic link or a loop, a FIFO, device or socket, a folder named like a patient file, a
    subfolder, a folder that cannot be listed. The caller evaluates the files and reports the problems.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from lumbar_kb.engine.errors import Problem
from lumbar_kb.engine.source import display

PATIENT_SUFFIXES = (".yaml", ".yml", ".json")


def _is_patient_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(PATIENT_SUFFIXES)


def _what(mode: int) -> str | None:
    """Why a file of this mode cannot be a patient file (None: a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder, not a patient file: skipped"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a regular file: skipped"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file: skipped"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file: skipped"
    return "not a regular file: skipped"


def _broken(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "a dangling symbolic link: skipped" if os.path.islink(path) else "no such file or folder"
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop: skipped"
    return f"cannot be read: {exc.strerror or exc}"


def patient_files(paths: Iterable[Path | str]) -> tuple[list[Path], list[Problem]]:
    """The patient files `paths` name, each once and in a predictable order, and a Problem for every path
    or folder entry that cannot be one (see the module's docstring)."""
    files: list[Path] = []
    problems: list[Problem] = []
    seen: set[tuple[int, int]] = set()  # (device, inode): one file however it is reached

    def take(path: Path, info: os.stat_result) -> None:
        key = (info.st_dev, info.st_ino)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for given in paths:
        path = Path(given)
        try:
            info = path.stat()  # follows symbolic links, once
        except OSError as exc:
            problems.append(Problem(_broken(path, exc), file=display(path)))
            continue
        except ValueError:  # a NUL in the name
            problems.append(Problem("not a valid file name", file=display(path)))
            continue
        if stat.S_ISREG(info.st_mode):
            take(path, info)
        elif stat.S_ISDIR(info.st_mode):
            _folder(path, take, problems)
        else:
            problems.append(Problem(_what(info.st_mode) or "", file=display(path)))
    return files, problems


def _folder(folder: Path, take, problems: list[Problem]) -> None:
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        problems.append(Problem(f"the folder cannot be listed: {exc.strerror or exc}", file=display(folder)))
        return
    for name in entries:
        path = folder / name
        if name.startswith("."):
            continue
        try:
            info = path.stat()
        except OSError as exc:
            if _is_patient_name(name) or os.path.islink(path):
                problems.append(Problem(_broken(path, exc), file=display(path)))
            continue
        if stat.S_ISDIR(info.st_mode):
            folder_kind = (
                "a folder, not a patient file: skipped" if _is_patient_name(name) else "a subfolder: not searched"
            )
            problems.append(Problem(folder_kind, file=display(path)))
        elif _is_patient_name(name):
            why = _what(info.st_mode)
            if why:
                problems.append(Problem(why, file=display(path)))
            else:
                take(path, info)
