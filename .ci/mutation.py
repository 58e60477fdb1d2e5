"""`make mutation`: mutmut over the engine's core modules, on a copy of the tree, with a report.

mutmut (2.x) mutates files in place and runs a test command per mutant. So that a run never edits the working
tree, everything git knows of is copied to build/mutation/tree and mutated there; the copy is imported as
`lumbar_kb` through build/mutation/site, a tree of symbolic links laid out from pyproject.toml's package-dir (as
.ci/typecheck does), put first on PYTHONPATH.

The report prints killed / survived / equivalent and lists every survivor with its diff. A survivor judged
equivalent (no decision, trace or JSON can change) is listed in tests/mutation-equivalent.txt as three lines
(file | the original line | the mutated line, each stripped) followed by a `#` line giving the reason; this
script reads that file. Exit 0 when every survivor is listed there, 1 otherwise.

Environment: MUTATE (comma-separated files), MUTATION_TESTS (the pytest arguments), MUTATION_REUSE=1 (keep
mutmut's cache: resume an interrupted run, or re-test only the survivors after adding tests).
`python .ci/mutation.py report` prints the report of the last run again.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
TREE, SITE = WORK / "tree", WORK / "site"
MUTATE = os.environ.get("MUTATE", "engine/logic.py,engine/compiler.py,engine/session.py,engine/result.py")
TESTS = os.environ.get(
    "MUTATION_TESTS",
    "tests/test_logic.py tests/test_differential.py tests/test_engine.py tests/test_safety_properties.py",
)
EQUIVALENT = ROOT / "tests" / "mutation-equivalent.txt"
PYTHON = sys.executable
MUTMUT = str(Path(sys.executable).with_name("mutmut"))


def copy_tree(keep_cache: bool = False) -> None:
    """A fresh copy; `keep_cache` keeps mutmut's results, which it reconciles with the new sources and tests
    (killed mutants stay killed; the others are tested again when the tests changed)."""
    cache = TREE / ".mutmut-cache"
    saved = cache.read_bytes() if keep_cache and cache.exists() else None
    shutil.rmtree(WORK, ignore_errors=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (TREE / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, TREE / name)
    # the import layout: lumbar_kb's own folder entry by entry, each mapped subpackage as one folder link
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    root_package = SITE / "lumbar_kb"
    root_package.mkdir(parents=True)
    for entry in (TREE / mapping["lumbar_kb"]).iterdir():
        (root_package / entry.name).symlink_to(entry)
    for package, folder in mapping.items():
        if package != "lumbar_kb":
            (SITE / package.replace(".", "/")).symlink_to(TREE / folder)
    if saved is not None:
        cache.write_bytes(saved)


def run_mutmut() -> None:
    # the same examples every run, fewer of them (LUMBAR_KB_QUICK): mutmut runs the tests once per mutant
    env = {**os.environ, "PYTHONPATH": str(SITE), "PYTHONDONTWRITEBYTECODE": "1", "LUMBAR_KB_DERANDOMIZE": "1"}
    env.setdefault("LUMBAR_KB_QUICK", "1")
    runner = f"{PYTHON} -m pytest -x -q -p no:cacheprovider {TESTS}"
    command = [MUTMUT, "run", "--paths-to-mutate", MUTATE, "--runner", runner, "--tests-dir", "tests/"]
    subprocess.run([*command, "--no-progress", "--simple-output"], cwd=TREE, env=env, check=False)


def diff_of(mutant_id: int) -> tuple[str, str, str]:
    """(file, original line, mutated line) of a mutant, from `mutmut show`."""
    shown = subprocess.run([MUTMUT, "show", str(mutant_id)], cwd=TREE, capture_output=True, text=True).stdout
    lines = shown.splitlines()
    path = next((line[4:].strip() for line in lines if line.startswith("--- ")), "?")
    old = " ".join(line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---"))
    new = " ".join(line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++"))
    return path.removeprefix("a/"), old, new


def read_equivalents() -> dict[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    block: list[str] = []
    for line in EQUIVALENT.read_text(encoding="utf-8").splitlines() if EQUIVALENT.exists() else []:
        if not line.strip() or (line.startswith("#") and not block):
            continue
        if line.startswith("#"):
            path, old, new = block
            out[path.strip(), old.strip(), new.strip()] = line.lstrip("# ").strip()
            block = []
        else:
            block.append(line)
    return out


def report() -> int:
    db = sqlite3.connect(TREE / ".mutmut-cache")
    rows = db.execute("SELECT id, status FROM Mutant ORDER BY id").fetchall()
    equivalents = read_equivalents()
    counts = {"killed": 0, "survived": 0, "equivalent": 0, "timeout": 0, "suspicious": 0, "untested": 0}
    survivors = []
    for mutant_id, status in rows:
        if status == "ok_killed":
            counts["killed"] += 1
        elif status == "bad_timeout":
            counts["timeout"] += 1  # the tests hung or ran away: the mutant was detected
        elif status == "ok_suspicious":
            counts["suspicious"] += 1  # the tests passed but slowly: counted as detected by mutmut
        elif status == "bad_survived":
            key = diff_of(mutant_id)
            if key in equivalents:
                counts["equivalent"] += 1
            else:
                counts["survived"] += 1
                survivors.append((mutant_id, key))
        else:
            counts["untested"] += 1
    total = len(rows)
    detected = counts["killed"] + counts["timeout"] + counts["suspicious"]
    judged = total - counts["equivalent"]
    score = 100 * detected / judged if judged else 100.0
    print(f"mutants: {total} over {MUTATE}")
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"score: {score:.1f}% of the {judged} non-equivalent mutants detected")
    for mutant_id, (path, old, new) in survivors:
        print(f"\nsurvived #{mutant_id} in {path}\n  - {old}\n  + {new}")
    return 0 if not survivors and not counts["untested"] else 1


def main() -> int:
    copy_tree(keep_cache=os.environ.get("MUTATION_REUSE") == "1")
    run_mutmut()
    return report()


if __name__ == "__main__":
    if sys.argv[1:] == ["report"]:
        sys.exit(report())
    sys.exit(main())
