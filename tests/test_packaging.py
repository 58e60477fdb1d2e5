"""The distribution: one import root (`lumbar_kb`), every package listed, the knowledge base inside the wheel.

Built offline from this checkout (`pip wheel --no-build-isolation`), unpacked into a folder of its own and run
from there with `python -I` (no checkout, no site-packages of ours on the path).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("lumbar_kb-*.whl")
    return found


def test_every_package_folder_is_listed_under_its_import_name():
    """A folder of code with an __init__.py that pyproject.toml does not list would be left out of the wheel."""
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folder_of = {name: ROOT / folder for name, folder in mapping.items()}
    found = set()
    for name, folder in folder_of.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            dotted = ".".join((name, *rel.parts)) if rel.parts else name
            # a subfolder mapped under a name of its own (engine/cli is the root `lumbar_kb`) is listed by that name
            if any(init.parent == f for other, f in folder_of.items() if other != name):
                continue
            found.add(dotted)
    assert found == listed, (
        f"listed but missing: {sorted(listed - found)}; folders not listed: {sorted(found - listed)}"
    )


def test_the_wheel_has_one_import_root(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"lumbar_kb"}, roots
    for needed in (
        "lumbar_kb/knowledge/lumbar_mass/guideline.yaml",
        "lumbar_kb/knowledge/lumbar_mass/facts.yaml",
        "lumbar_kb/knowledge/lumbar_mass/rules/red_flags.yaml",
        "lumbar_kb/knowledge/schema/rules.schema.json",
        "lumbar_kb/knowledge/lumbar_mass/scenarios/saddle_anesthesia.yaml",
        "lumbar_kb/__main__.py",
        "lumbar_kb/main.py",
        "lumbar_kb/engine/session.py",
        "lumbar_kb/visualize/graph.py",
    ):
        assert needed in names, needed
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "lumbar-kb = lumbar_kb.main:main" in entry_points


def test_the_unpacked_wheel_runs_without_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    probe = (
        "import sys, lumbar_kb.knowledge as k; print(k.__file__); "
        "import importlib.util as u; print(u.find_spec('engine'), u.find_spec('visualize'))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith(str(site))
    assert second == "None None", "the wheel must not install top-level engine/visualize packages"
    proc = subprocess.run(
        [sys.executable, "-m", "lumbar_kb", "validate"], capture_output=True, text=True, cwd=elsewhere, env=env
    )
    assert proc.returncode == 0 and proc.stdout.startswith("ok: lumbar_mass"), proc.stderr
