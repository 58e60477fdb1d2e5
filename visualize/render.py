"""Run graphviz's `dot` on DOT text and write the result safely.

The only module that runs a program or writes a file. The format comes from the output file's extension;
the picture is made in memory first and then written to a temporary file beside the target and renamed
over it, so a failure never leaves a half-written or stale-looking file behind. The file gets the mode
open() would give (the umask honoured); a temporary left by a killed run is swept by the next write.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from lumbar_kb.engine.errors import Problem, did_you_mean
from lumbar_kb.engine.outputs import TEMP_MARK, file_mode, sweep_stale
from lumbar_kb.visualize.errors import GraphvizFailedError, GraphvizMissingError, OutputError
from lumbar_kb.visualize.svg import titles_from_tooltips

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
PNG_DPI = 110  # legible at screen size without a huge file
TIMEOUT_S = 120


def format_for(path: Path) -> str:
    """The output format named by a file's extension; OutputError for anything else."""
    ext = path.suffix.lower()
    if ext in FORMATS:
        return FORMATS[ext]
    allowed = ", ".join(sorted(FORMATS))
    hint = did_you_mean(ext, FORMATS) if ext else None
    raise OutputError(
        Problem(
            f"cannot tell the format from the extension '{ext or '(none)'}'",
            file=str(path),
            hint=f"{hint} Formats: {allowed}" if hint else f"formats: {allowed}",
        )
    )


def check_output(path: Path) -> str:
    """Refuse an output path before any work: its format (from the extension) and that its directory
    exists. Returns the format."""
    fmt = format_for(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(Problem("the output directory does not exist", file=str(directory)))
    return fmt


def find_dot(executable: str = "dot") -> str:
    """The path of graphviz's `dot`; GraphvizMissingError (with the install command) if it is not on PATH."""
    found = shutil.which(executable)
    if found is None:
        raise GraphvizMissingError(executable)
    return found


def run_dot(source: str, fmt: str) -> bytes:
    """Lay out and draw DOT text as svg, png or pdf; the bytes of the picture."""
    if fmt == "dot":
        return source.encode("utf-8")
    args = [find_dot(), f"-T{fmt}"]
    if fmt == "png":
        args.append(f"-Gdpi={PNG_DPI}")
    try:
        done = subprocess.run(args, input=source.encode("utf-8"), capture_output=True, timeout=TIMEOUT_S, check=False)
    except FileNotFoundError:  # removed between the lookup and the run
        raise GraphvizMissingError() from None
    except subprocess.TimeoutExpired:
        raise GraphvizFailedError(f"graphviz 'dot' took longer than {TIMEOUT_S} s and was stopped") from None
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode("utf-8", "replace").strip() or f"exit status {done.returncode}"
        raise GraphvizFailedError(f"graphviz 'dot' failed: {message}")
    return titles_from_tooltips(done.stdout) if fmt == "svg" else done.stdout


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename. Any OSError
    (no permission, a directory that cannot hold files, a full disk) is an OutputError naming `path`, and
    leaves neither the temporary file nor a half-written `path` behind."""
    directory = path.parent if str(path.parent) else Path(".")
    sweep_stale(directory)  # a killed run's leftovers
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), file_mode())  # what open() would give: the umask is honoured, never widened
            out.write(data)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise OutputError(Problem(f"cannot write the output: {exc.strerror or exc}", file=str(path))) from None
    finally:  # any other exit (an interrupt, SIGTERM made SystemExit) removes the temporary file too
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def render_to(path: Path, source: str, fmt: str) -> None:
    """Draw `source` in `fmt` (what `check_output(path)` returned, checked before any work) into `path`."""
    try:
        picture = run_dot(source, fmt)
    except GraphvizFailedError as exc:  # name the output being drawn: the message is graphviz's own
        raise GraphvizFailedError([Problem(p.message, file=str(path), hint=p.hint) for p in exc.problems]) from None
    write_atomic(path, picture)
