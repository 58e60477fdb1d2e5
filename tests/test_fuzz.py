"""Fuzzing the command line with hostile patient and rule files (strategies in tests/hostile.py).

Every generated file goes through the real entry point, `lumbar_kb.main.main`, in-process (and a few through
a real process): exit 0, 1 or 2 with a short message, never a traceback or an internal error, nothing but
JSON on standard output, bounded time and memory. The examples are derandomized so CI sees the same inputs
every run; `make fuzz` runs far more, at random (LUMBAR_KB_FUZZ_EXAMPLES) and with atheris when installed.
"""

import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings

from lumbar_kb.engine.loader import default_kb_dir

from .hostile import RAW_CONTROL, check, json_document, laughs, rule_file_edit, run_cli, yaml_document

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

EXAMPLES = int(os.environ.get("LUMBAR_KB_FUZZ_EXAMPLES", "0"))  # 0: the CI budget below
FUZZ = settings(
    max_examples=EXAMPLES or 120,
    derandomize=not EXAMPLES,
    deadline=None,  # time is bounded by the contract's hang guard, not per example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    database=None,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The folder the generated files are written to; an internal error's traceback file goes there too."""
    import tempfile

    folder = tmp_path_factory.mktemp("fuzz")
    saved, tempfile.tempdir = tempfile.tempdir, str(folder)
    yield folder
    tempfile.tempdir = saved


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory):
    target = tmp_path_factory.mktemp("fuzzkb") / "kb"
    shutil.copytree(default_kb_dir(), target)
    return target


@FUZZ
@given(document=yaml_document())
def test_hostile_yaml_patient_files(document, workdir):
    path = workdir / "p.yaml"
    path.write_bytes(document)
    run_cli(["evaluate", str(path), "--format", "json"], allowed=(0, 2))


@FUZZ
@given(document=json_document())
def test_hostile_json_patient_files(document, workdir):
    path = workdir / "p.json"
    path.write_bytes(document)
    run_cli(["evaluate", str(path), "--format", "json"], allowed=(0, 2))


@settings(FUZZ, max_examples=EXAMPLES or 60)
@given(data=rule_file_edit((default_kb_dir() / "rules" / "red_flags.yaml").read_text()))
def test_hostile_rule_files(data, kb_dir, workdir):
    target = kb_dir / "rules" / "red_flags.yaml"
    original = (default_kb_dir() / "rules" / "red_flags.yaml").read_bytes()
    target.write_bytes(data)
    try:
        code, _, _ = run_cli(["validate", "--kb", str(kb_dir)], allowed=(0, 2))
        patient = str(kb_dir / "patients" / "01-cauda-equina.yaml")
        run_cli(["evaluate", patient, "--kb", str(kb_dir), "--format", "json"], allowed=(0,) if code == 0 else (2,))
    finally:
        target.write_bytes(original)


HOSTILE_FILES = {
    "laughs.yaml": laughs(10, 10).encode(),
    "nul.yaml": b"leg_weakness: true\x00\n",
    "tags.yaml": b'leg_weakness: !!bool "0"\n',
    "digits.json": b'{"id": ' + b"9" * 5000 + b"}",
    "nan.json": b'{"id": NaN}',
    "deep.yaml": b"x: " + b"[" * 100_000 + b"\n",
    "random.yaml": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_files_in_a_real_process(name, tmp_path):
    """The same contract from outside: a real interpreter, real standard streams, a strict C locale."""
    (tmp_path / name).write_bytes(HOSTILE_FILES[name])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LANG", "PYTHONUTF8")}
    env.update(LC_ALL="C", PYTHONUTF8="0")
    proc = subprocess.run(
        [sys.executable, "-m", "lumbar_kb", "evaluate", name, "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        env=env,
        timeout=60,
    )
    stderr = proc.stderr.decode("ascii")  # under LC_ALL=C everything is escaped to ASCII
    check(proc.returncode, proc.stdout.decode(), stderr, (2,), json_out=True, elapsed=0.0)
    assert stderr.startswith(f"error: {name}") and not RAW_CONTROL.search(stderr)
