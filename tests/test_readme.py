"""The README runs as written, and its contract tables stay true to the knowledge base and the code.

Every ```sh and ```python block of README.md is run, in order, in one bash session, in a fresh clone of the
repository's last commit (HEAD), as a new user pasting them one after the other would: a `cd`, a file
written, or `source .venv/bin/activate` in one block holds for the next. The session starts WITHOUT the
venv on PATH, so a README that forgets to activate it fails here as it would for its reader. The first
failing block is reported with its README line and everything it printed.

The one block not run is the set-up (`make demo` / `make test`): it would install for minutes and run this
test from inside itself. The test checks that block is there unchanged and, in its place, leaves the clone
as `make setup` would: `.venv` is the venv running these tests (already built; its editable install is this
checkout's code) and the clone's files are older than its `.installed` stamp, so `make` targets see the
set-up done rather than reinstalling into it. ```text and ```console blocks are never run (servers, long
jobs, placeholders), but every `lumbar-kb` command line in them must still parse. YAML snippets that are
patients or scenarios are evaluated, and JSON snippets parsed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lumbar_kb.cohort.decisions import COLUMNS
from lumbar_kb.main import build_parser, main

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


def test_every_sh_and_python_block_runs_in_a_fresh_clone(tmp_path):
    text = README.read_text(encoding="utf-8")
    _, to_run = runnable(text)
    stamp = Path(sys.prefix) / ".installed"
    assert stamp.is_file(), f"run the tests in the venv `make setup` builds ({stamp} is missing)"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True)
    (clone / ".venv").symlink_to(sys.prefix)
    old = stamp.stat().st_mtime - 3600
    for path in clone.rglob("*"):
        if ".git" not in path.relative_to(clone).parts and not path.is_symlink():
            os.utime(path, (old, old))
    proc = subprocess.run(
        ["bash", "-c", script(to_run)],
        cwd=clone,
        env=_without_the_venv(dict(os.environ)),
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
            f"README.md line {line}: this ```{lang} block failed (exit status {proc.returncode}):\n{body}\n"
            f"--- its output ---\n{printed}"
        )


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


# ---- blocks that are not run --------------------------------------------------------------------------------
def _shown_commands(text: str) -> list[tuple[str, int]]:
    """Every `lumbar-kb ...` command line in a block that is not run (`$ ` prompts stripped)."""
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
    return found


def test_commands_shown_but_not_run_parse():
    shown = _shown_commands(README.read_text(encoding="utf-8"))
    assert len(shown) >= 3  # explain --why/--why-not, validate --kb my-kb, ...
    parser = build_parser()
    for cmd, line in shown:
        try:
            parser.parse_args(shlex.split(cmd)[1:])
        except SystemExit:
            pytest.fail(f"README.md line {line}: `{cmd}` is not a valid command")


def test_patient_and_scenario_snippets_are_valid(tmp_path, capsys, kb):
    snippets = [(body, line) for lang, body, line in blocks(README.read_text(encoding="utf-8")) if lang == "yaml"]
    names = {f.name for f in kb.input_facts} | {"id", "note"}
    patients = scenarios = 0
    for i, (body, line) in enumerate(snippets):
        data = yaml.safe_load(body)
        if isinstance(data, dict) and {"name", "patient", "expect"} <= set(data):
            folder = tmp_path / f"scenarios-{i}"
            folder.mkdir()
            (folder / "snippet.yaml").write_text(body)
            code = main(["test", "--scenarios", str(folder)])
            scenarios += 1
        elif isinstance(data, dict) and set(data) <= names:
            (tmp_path / "patient.yaml").write_text(body)
            code = main(["evaluate", str(tmp_path / "patient.yaml")])
            patients += 1
        else:
            continue
        out, err = capsys.readouterr()
        assert code == 0, f"README.md line {line}: this snippet fails:\n{body}\n{out}{err}"
    assert patients >= 1 and scenarios >= 1


def test_json_snippets_parse():
    for lang, body, line in blocks(README.read_text(encoding="utf-8")):
        if lang == "json":
            try:
                json.loads(body)
            except json.JSONDecodeError as exc:
                pytest.fail(f"README.md line {line}: invalid JSON ({exc})")


# ---- the contract tables ----------------------------------------------------------------------------------------
def test_readme_lists_every_input_fact_with_its_type(kb):
    readme = README.read_text()
    for fact in kb.input_facts:
        kind = "bool" if fact.type == "bool" else ", ".join(fact.values)
        assert f"| `{fact.name}` | {kind} |" in readme, fact.name


def test_readme_names_every_conclusion_code(kb):
    readme = README.read_text()
    for kind in ("action", "warning", "differential"):
        for code in kb.catalog[kind]:
            assert f"`{code}`" in readme, code


def test_readme_lists_the_cohort_decision_columns_in_order():
    readme = README.read_text()
    table = readme[readme.index("### The decision rows") :].split("\n\n", 2)[1]
    listed = [name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split(" | ")[0])]
    assert listed == [*COLUMNS, "changes"]  # `changes` only with --compare-kb


def test_ci_runs_the_readmes_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
