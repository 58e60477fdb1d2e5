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
# shards (`;`-separated) of comma-separated files: each shard is mutated in its own copy, the shards concurrently
MUTATE = os.environ.get(
    "MUTATE", "engine/logic.py,engine/compiler.py,engine/prepared.py;engine/session.py,engine/result.py,engine/trace.py"
)
SHARDS = [shard for shard in MUTATE.split(";") if shard]
# the tests of the core: the unit tests, the differential test, the engine's (the safety properties test the
# bundled guideline's content through the same engine, and are left out to keep a run within the hour)
TESTS = os.environ.get(
    "MUTATION_TESTS", "tests/test_logic.py tests/test_prepared.py tests/test_differential.py tests/test_engine.py"
)
EQUIVALENT = ROOT / "tests" / "mutation-equivalent.txt"
PYTHON = sys.executable
MUTMUT = str(Path(sys.executable).with_name("mutmut"))


def paths(shard: int) -> tuple[Path, Path]:
    return WORK / f"shard{shard}" / "tree", WORK / f"shard{shard}" / "site"


def copy_tree(shard: int, keep_cache: bool = False) -> None:
    """A fresh copy; `keep_cache` keeps mutmut's results, which it reconciles with the new sources and tests
    (killed mutants stay killed; the others are tested again when the tests changed)."""
    tree, site = paths(shard)
    cache = tree / ".mutmut-cache"
    saved = cache.read_bytes() if keep_cache and cache.exists() else None
    shutil.rmtree(tree.parent, ignore_errors=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    # the import layout: lumbar_kb's own folder entry by entry, each mapped subpackage as one folder link
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    root_package = site / "lumbar_kb"
    root_package.mkdir(parents=True)
    for entry in (tree / mapping["lumbar_kb"]).iterdir():
        (root_package / entry.name).symlink_to(entry)
    for package, folder in mapping.items():
        if package != "lumbar_kb":
            (site / package.replace(".", "/")).symlink_to(tree / folder)
    if saved is not None:
        cache.write_bytes(saved)
    (tree / "mutmut_config.py").write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\nfrom mutation import pre_mutation\n"
    )


def untested(shard: int) -> list[int]:
    with sqlite3.connect(paths(shard)[0] / ".mutmut-cache") as db:
        return [row[0] for row in db.execute("SELECT id FROM Mutant WHERE status = 'untested' ORDER BY id")]


def start_mutmut(shard: int, mutant: int | None = None) -> subprocess.Popen:
    """mutmut over the shard's files, or over one mutant: a full run leaves some untested (mutmut 2 mixes up
    identical lines such as the `@dataclass` of three classes), which are then run one by one."""
    tree, site = paths(shard)
    # the same examples every run, fewer of them (LUMBAR_KB_QUICK): mutmut runs the tests once per mutant
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1", "LUMBAR_KB_DERANDOMIZE": "1"}
    env.setdefault("LUMBAR_KB_QUICK", "1")
    # through this script (pytest_any_failure_is_1): mutmut counts only exit code 1 as "killed"
    runner = f"{PYTHON} {Path(__file__).resolve()} pytest {TESTS}"
    command = [MUTMUT, "run", *([str(mutant)] if mutant else [])]
    command += ["--paths-to-mutate", SHARDS[shard], "--runner", runner, "--tests-dir", "tests/"]
    log = open(tree.parent / "mutmut.log", "a" if mutant else "w")  # the process keeps it open
    return subprocess.Popen([*command, "--no-progress", "--simple-output"], cwd=tree, env=env, stdout=log, stderr=log)


def mutant_key(filename: str, source: str, line: str, index: int, line_number: int) -> tuple[str, str, str]:
    """(file, original line, mutated line), each stripped: how tests/mutation-equivalent.txt names a mutant.
    Computed with mutmut's own mutation code, not `mutmut show` (which rewrites the cache's line numbers)."""
    import difflib

    from mutmut import Context, RelativeMutationID, mutate

    mutation_id = RelativeMutationID(filename=filename, line=line, index=index, line_number=line_number)
    mutated, _ = mutate(Context(source=source, mutation_id=mutation_id, filename=filename))
    diff = list(difflib.unified_diff(source.splitlines(), mutated.splitlines(), lineterm="", n=0))[2:]
    old = " ".join(d[1:].strip() for d in diff if d.startswith("-"))
    new = " ".join(d[1:].strip() for d in diff if d.startswith("+"))
    return filename, old, new


def pre_mutation(context) -> None:
    """mutmut's hook (through the mutmut_config.py written into each copy): a mutant listed as equivalent is
    skipped instead of costing a whole test run; the report counts it as equivalent."""
    source = Path(context.filename).read_text(encoding="utf-8")
    mid = context.mutation_id
    if mutant_key(context.filename, source, mid.line, mid.index, mid.line_number) in read_equivalents():
        context.skip = True


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
    if (WORK / "running").exists():  # the copies hold a mutated file while mutmut runs: report once it is done
        print(f"a mutation run is in progress ({WORK / 'running'}); report when it is done")
        return 1
    rows = []
    for shard in range(len(SHARDS)):
        tree = paths(shard)[0]
        if (tree / ".mutmut-cache").exists():
            db = sqlite3.connect(tree / ".mutmut-cache")
            query = (
                'SELECT m.id, m.status, s.filename, l.line, m."index", l.line_number FROM Mutant m '
                "JOIN Line l ON m.line = l.id JOIN SourceFile s ON l.sourcefile = s.id ORDER BY m.id"
            )
            # only this shard's files: a reused cache keeps mutants of files an earlier run's shards held
            files = set(SHARDS[shard].split(","))
            rows += [(tree, *row) for row in db.execute(query) if row[2] in files]
    equivalents = read_equivalents()
    counts = {"killed": 0, "survived": 0, "equivalent": 0, "timeout": 0, "suspicious": 0, "untested": 0}
    survivors = []
    for tree, mutant_id, status, filename, line, index, line_number in rows:
        if status == "ok_killed":
            counts["killed"] += 1
        elif status == "bad_timeout":
            counts["timeout"] += 1  # the tests hung or ran away: the mutant was detected
        elif status == "ok_suspicious":
            counts["suspicious"] += 1  # killed, though the tests took unusually long
        elif status in ("bad_survived", "skipped"):  # skipped: listed as equivalent by pre_mutation
            key = mutant_key(filename, (tree / filename).read_text(encoding="utf-8"), line, index, line_number)
            if key in equivalents:
                counts["equivalent"] += 1
            else:
                counts["survived"] += 1
                survivors.append((f"{tree.parent.name}#{mutant_id}", key))
        else:
            counts["untested"] += 1
    total = len(rows)
    detected = counts["killed"] + counts["timeout"] + counts["suspicious"]
    judged = total - counts["equivalent"]
    score = 100 * detected / judged if judged else 100.0
    print(f"mutants: {total} over {', '.join(MUTATE.replace(';', ',').split(','))}")
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"score: {score:.1f}% of the {judged} non-equivalent mutants detected")
    for mutant_id, (path, old, new) in survivors:
        print(f"\nsurvived {mutant_id} in {path}\n  - {old}\n  + {new}")
    return 0 if not survivors and not counts["untested"] else 1


def main() -> int:
    for shard in range(len(SHARDS)):
        copy_tree(shard, keep_cache=os.environ.get("MUTATION_REUSE") == "1")
    (WORK / "running").write_text(str(os.getpid()))
    try:
        running = [start_mutmut(shard) for shard in range(len(SHARDS))]
        for process in running:
            process.wait()
        for shard in range(len(SHARDS)):
            for mutant in untested(shard):
                start_mutmut(shard, mutant).wait()
    finally:
        (WORK / "running").unlink()
    return report()


def _die_with_parent() -> None:
    """In the pytest child: die when the runner dies (mutmut kills the runner when a mutant's tests time out)."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def pytest_any_failure_is_1(tests: list[str]) -> int:
    """mutmut counts only exit code 1 as "killed": a mutant that breaks loading the knowledge base at import makes
    pytest exit 2 (a collection error), one that crashes durable-rules kills it with a signal (SIGABRT); both
    must count as killed, so pytest runs in a child and any failure becomes 1."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return 0 if subprocess.call(command, preexec_fn=_die_with_parent) == 0 else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["report"]:
        sys.exit(report())
    if sys.argv[1:2] == ["pytest"]:
        sys.exit(pytest_any_failure_is_1(sys.argv[2:]))
    sys.exit(main())
