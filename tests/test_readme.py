"""The README runs as written, promises what a newcomer needs, and shows only commands that exist.

Every ```sh and ```python block of README.md is run, in order, in one bash session, in a fresh clone of the
repository's last commit (HEAD), as a new user pasting them one after the other would: a `cd`, a file
written, or `source .venv/bin/activate` in one block holds for the next. The session starts WITHOUT the
venv on PATH, so a README that forgets to activate it fails here as it would for its reader. The first
failing block is reported with its README line and everything it printed.

The one block not run is the set-up (`make demo` / `make test`): it would install for minutes and run this
test from inside itself. The test checks that block is there unchanged and, in its place, leaves the clone
as `make setup` would: `.venv` is the venv running these tests (already built; its editable install is this
checkout's code) and the clone's files are older than its `.installed` stamp, so `make` targets see the
set-up done rather than reinstalling into it. ```text and ```console blocks are not run in the clone, but
every `lumbar-kb` command line in them, and every one written inline in the text, must still parse.

tests/test_docs.py does the same for each page under docs/ and checks, for the README and the pages alike,
the ```console blocks against what the commands print, the YAML and JSON snippets, the relative links, the
figures, and the contract tables (facts, conclusion codes, decision columns) against the code.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lumbar_kb.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERNAL, EXIT_OK
from lumbar_kb.main import build_parser

from .conftest import ROOT

README = ROOT / "README.md"
SETUP = ["make demo", "make test"]  # the set-up block's commands (comments aside), in this order
MARK = "@@README-BLOCK@@"
FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)


def blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line of the opening fence) of every fenced block, in order."""
    return [(m["lang"], m["body"], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def commands(body: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in body.splitlines() if line.split("#", 1)[0].strip()]


def runnable(text: str) -> tuple[tuple[str, str, int], list[tuple[str, str, int]]]:
    """The set-up block, and the blocks to run after it."""
    found = [b for b in blocks(text) if b[0] in ("sh", "python")]
    setup = [b for b in found if b[0] == "sh" and any(c.startswith("make demo") for c in commands(b[1]))]
    assert len(setup) == 1, "README.md should have one ```sh set-up block with `make demo` and `make test`"
    assert found[0] is setup[0], "the set-up block should be the README's first ```sh block"
    return setup[0], found[1:]


def script(to_run: list[tuple[str, str, int]]) -> str:
    lines = ["set -e -o pipefail"]
    for i, (lang, body, _) in enumerate(to_run):
        lines.append(f"echo '{MARK}{i}'")
        if lang == "python":
            lines += ["python - <<'README_PYTHON_EOF'", body.rstrip("\n"), "README_PYTHON_EOF"]
        else:
            lines.append(body.rstrip("\n"))
    lines.append(f"echo '{MARK}end'")
    return "\n".join(lines) + "\n"


def _without_the_venv(env: dict[str, str]) -> dict[str, str]:
    venv_bin = {str(Path(sys.prefix) / "bin"), str(Path(sys.executable).parent)}
    env = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p not in venv_bin)
    return env


def test_the_set_up_block_is_the_two_make_commands():
    setup, _ = runnable(README.read_text(encoding="utf-8"))
    assert commands(setup[1]) == SETUP, setup[1]


def run_in_a_fresh_clone(tmp_path: Path, to_run: list[tuple[str, str, int]], name: str, prelude: str = "") -> None:
    """Runs the blocks in one bash session in a fresh clone of HEAD (the venv linked, as `make setup` leaves
    it); fails naming the first failing block's line in `name` and what it printed."""
    stamp = Path(sys.prefix) / ".installed"
    assert stamp.is_file(), f"run the tests in the venv `make setup` builds ({stamp} is missing)"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True)
    (clone / ".venv").symlink_to(sys.prefix)
    old = stamp.stat().st_mtime - 3600
    for path in clone.rglob("*"):
        if ".git" not in path.relative_to(clone).parts and not path.is_symlink():
            os.utime(path, (old, old))
    env = _without_the_venv(dict(os.environ))
    # as a reader's commands run, with the knowledge-base cache on, in a folder of this clone's own: the first
    # command meets the loader and the others read what it kept
    env["LUMBAR_KB_CACHE"] = str(tmp_path / "kb-cache")
    proc = subprocess.run(
        ["bash", "-c", prelude + script(to_run)],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    last = max((int(m) for m in re.findall(rf"^{MARK}(\d+)$", out, re.M)), default=None)
    if proc.returncode != 0 or f"{MARK}end" not in out:
        assert last is not None, out
        lang, body, line = to_run[last]
        printed = out.rsplit(f"{MARK}{last}\n", 1)[1].splitlines()
        if len(printed) > 60:  # the failure is at the end
            printed = [f"[... {len(printed) - 60} lines cut ...]"] + printed[-60:]
        printed = "\n".join(printed)
        pytest.fail(
            f"{name} line {line}: this ```{lang} block failed (exit status {proc.returncode}):\n{body}\n"
            f"--- its output ---\n{printed}"
        )


def test_every_sh_and_python_block_runs_in_a_fresh_clone(tmp_path):
    _, to_run = runnable(README.read_text(encoding="utf-8"))
    assert to_run, "README.md should have ```sh or ```python blocks after the set-up block"
    run_in_a_fresh_clone(tmp_path, to_run, "README.md")


def test_a_failing_block_is_reported_with_its_output(tmp_path):
    """Guards the runner itself: a failing command stops the run and names its block."""
    to_run = [("sh", "echo one\n", 1), ("sh", "echo two\nfalse\necho never\n", 5), ("sh", "echo three\n", 9)]
    proc = subprocess.run(["bash", "-c", script(to_run)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout == f"{MARK}0\none\n{MARK}1\ntwo\n"
    proc = subprocess.run(["bash", "-c", script(to_run[:1] + to_run[2:])], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.endswith(f"{MARK}end\n")


def test_the_clone_starts_without_the_venv(tmp_path):
    env = _without_the_venv(dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}/usr/bin"))
    found = shutil.which("lumbar-kb", path=env["PATH"])
    assert found is None, found


# ---- blocks that are not run, and commands in the text ------------------------------------------------------
INLINE = re.compile(r"(?<!`)`(lumbar-kb [^`]+)`(?!`)")


def shown_commands(text: str) -> list[tuple[str, int]]:
    """Every `lumbar-kb ...` command line in a block that is not run (`$ ` prompts stripped), and every one
    written inline in the text (`lumbar-kb ...` in backticks) that is a command rather than a synopsis (a
    synopsis has `[`, `|` or `...` in it) or the bare name of a command that exists."""
    names = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    found = []
    for lang, body, line in blocks(text):
        if lang in ("sh", "python"):
            continue
        for offset, raw in enumerate(body.splitlines(), 1):
            cmd = raw.removeprefix("$ ").split(" #", 1)[0].split(" | ", 1)[0].strip()
            words = cmd.split()
            if len(words) > 1 and words[0] == "lumbar-kb" and words[1] in names:
                found.append((cmd, line + offset))
    outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # fenced blocks blanked, lines kept
    for m in INLINE.finditer(outside):
        cmd = m.group(1).replace("\\|", "|")
        words = cmd.split()
        if len(words) < 2 or words[1].startswith("-") or any(s in cmd for s in ("[", "|", "...")):
            continue
        if words[1] not in names or len(words) > 2:  # `lumbar-kb evaluate` alone names a command
            found.append((cmd, outside.count("\n", 0, m.start()) + 1))
    return found


def assert_commands_parse(shown: list[tuple[str, int]], name: str) -> None:
    parser = build_parser()
    for cmd, line in shown:
        try:
            parser.parse_args(shlex.split(cmd)[1:])
        except SystemExit:
            pytest.fail(f"{name} line {line}: `{cmd}` is not a valid command")


def test_commands_shown_but_not_run_parse():
    shown = shown_commands(README.read_text(encoding="utf-8"))
    assert len(shown) >= 20  # the four audiences' tables, the examples
    assert_commands_parse(shown, "README.md")


def test_a_misspelt_command_is_caught():
    """Guards the parse check itself: a misspelt option or a synopsis-free typo fails it."""
    text = "Run `lumbar-kb check --relase`, `lumbar-kb chekc` or\n\n```text\n$ lumbar-kb evaluate\n```\n"
    shown = shown_commands(text)
    assert [c for c, _ in shown] == ["lumbar-kb evaluate", "lumbar-kb check --relase", "lumbar-kb chekc"]
    for cmd in shown:
        with pytest.raises(pytest.fail.Exception):
            assert_commands_parse([cmd], "x.md")


# ---- what the README promises a newcomer ---------------------------------------------------------------------
def test_the_readme_reads_in_ten_minutes():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines: move detail to a page under docs/"


def test_the_readme_links_a_page_per_audience():
    readme = README.read_text(encoding="utf-8")
    contents = readme[readme.index("## Contents") :].split("\n## ", 1)[0]
    for page in ("authors", "board", "analysts", "clinic", "security-and-limits", "benchmarks", "architecture"):
        assert f"](docs/{page}.md)" in contents, page


def test_the_layout_names_every_file_of_the_bundled_knowledge_base():
    readme = README.read_text(encoding="utf-8")
    layout = readme[readme.index("## The folder layout") :].split("\n## ", 1)[0]
    kb = ROOT / "knowledge" / "lumbar_mass"
    names = {p.name + ("/" if p.is_dir() else "") for p in kb.iterdir() if p.name != "__pycache__"}
    names |= {"approvals.yaml"}  # written by `lumbar-kb approve`
    for name in sorted(names):
        shown = {"rules/": "rules/*.yaml", "scenarios/": "scenarios/*.yaml"}.get(name, name)
        assert re.search(rf"^\s+{re.escape(shown)}\s", layout, re.M), name
    for folder in ("engine", "visualize", "cohort", "clinic", "cli", "knowledge", "tests", "benchmarks", "docs"):
        assert (ROOT / folder).is_dir() and re.search(rf"^{folder}/\s", layout, re.M), folder


def test_ci_runs_lint_then_the_readmes_test_command():
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert steps == ["make lint", "make test"]
    assert "CI (`.ci/run`) runs `make lint`, then `make test`" in README.read_text(encoding="utf-8")


def test_the_exit_codes_are_the_ones_the_commands_use():
    readme = README.read_text(encoding="utf-8")
    table = readme[readme.index("| exit code | meaning |") :].split("\n\n", 1)[0]
    meanings = {row.split(" | ")[0].strip("| "): row.split(" | ")[1].rstrip(" |") for row in table.splitlines()[2:]}
    assert list(meanings) == [str(c) for c in (EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL)]
    assert meanings[str(EXIT_OK)] == "success"
    assert meanings[str(EXIT_FAILED)].startswith("a finding")
    assert meanings[str(EXIT_BAD_INPUT)].startswith("bad input")
    assert meanings[str(EXIT_INTERNAL)].startswith("an internal error")
