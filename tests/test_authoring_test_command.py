"""`lumbar-kb test`: pass/fail with diffs, rule and conclusion coverage, exit codes, and the minimal scenarios
`--write-missing` writes (they load, fire their rule, and confirm nothing else by default)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lumbar_kb.engine.analysis.coverage import run_scenarios
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.engine.scenarios import load_scenarios
from lumbar_kb.main import main

from .bundled import KB


def copy_kb(tmp_path: Path) -> Path:
    target = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), target)
    return target


SCENARIOS = len(list((default_kb_dir() / "scenarios").glob("*.yaml")))
RULES = len(KB.rules)


def test_bundled_scenarios_pass_with_full_coverage(capsys):
    assert main(["test"]) == 0
    out = capsys.readouterr().out
    assert f"{SCENARIOS} passed, 0 failed" in out
    assert f"Rule coverage: {RULES} of {RULES} rules fired by some scenario" in out
    assert "Conclusion coverage: 18 of 18 conclusions checked by some scenario's expect" in out
    assert "FAIL" not in out


def test_a_failing_scenario_prints_a_diff_and_exits_1(tmp_path, capsys):
    kb_dir = copy_kb(tmp_path)
    (kb_dir / "scenarios" / "wrong.yaml").write_text(
        "name: Radiating numbness wrongly expected\n"
        "patient: {radiating_numbness: true}\n"
        "expect:\n"
        "  urgency: prompt\n"
        "  actions: {emergency_department: 24, xray_lumbar: null}\n"
        "  warnings: []\n"
        "  fired: [ed.leg_weakness_or_walking]\n"
        "  not_fired: [neuro.present]\n"
    )
    assert main(["test", "--kb", str(kb_dir)]) == 1
    out = capsys.readouterr().out
    block = out[out.index("  FAIL") :]
    assert (
        block.splitlines()[0] == f"  FAIL  {kb_dir / 'scenarios' / 'wrong.yaml'}:1: Radiating numbness wrongly expected"
    )
    assert block.splitlines()[1:14] == [
        "          urgency:",
        "            - prompt",
        "            + emergency",
        "          actions:",
        "            - emergency_department: 24 (within 24 hours)",
        "            + emergency_department: 0 (immediately)",
        "            - xray_lumbar: null (no fixed window)",
        "            + mri_whole_spine: 12 (within 12 hours)",
        "          warnings:",
        "            + imaging_alone_insufficient",
        "          fired:",
        "            - ed.leg_weakness_or_walking (did not fire)",
        "          not_fired:",
    ]
    assert "            + neuro.present (fired)" in block
    assert f"{SCENARIOS} passed, 1 failed" in out


def test_coverage_names_unfired_rules_and_unchecked_conclusions(tmp_path, capsys):
    kb_dir = copy_kb(tmp_path)
    for name in (
        "progressive_deficit.yaml",
        "red_flag_bowel_bladder.yaml",
        "cord_compression_confirmed.yaml",
        "cord_compression_confirmed_alone.yaml",
        "cancer_progressive_deficit.yaml",
        "compression_with_mass_on_imaging.yaml",
    ):
        (kb_dir / "scenarios" / name).unlink()
    report = run_scenarios(load(kb_dir))
    assert [r.id for r in report.unfired_rules] == [
        "red_flag.bowel_bladder",
        "imaging.mri_window.progressive",
        "cancer.treatment_24h",
        "ed.bowel_bladder",
        "after.specialist_with_compression",
    ]
    assert report.unchecked_conclusions == ["action:start_treatment"]
    assert main(["test", "--kb", str(kb_dir)]) == 0  # coverage gaps alone do not fail ...
    out = capsys.readouterr().out
    assert f"Rule coverage: {RULES - 5} of {RULES} rules fired by some scenario" in out
    assert "  not fired: imaging.mri_window.progressive" in out
    assert "  not checked: action:start_treatment" in out
    assert main(["test", "--kb", str(kb_dir), "--require-coverage"]) == 1  # ... unless asked to
    capsys.readouterr()


def test_write_missing_writes_minimal_scenarios_that_load_and_pass(tmp_path, capsys):
    kb_dir = kb_missing_two_scenarios(tmp_path)
    target = tmp_path / "new"
    assert main(["test", "--kb", str(kb_dir), "--write-missing", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"imaging.mri_window.progressive: {target / 'imaging_mri_window_progressive.yaml'} - 1 answered fact" in out
    written = sorted(p.name for p in target.glob("*.yaml"))
    assert written == [
        "after_specialist_with_compression.yaml",
        "cancer_treatment_24h.yaml",
        "imaging_mri_window_progressive.yaml",
    ]
    text = (target / "imaging_mri_window_progressive.yaml").read_text()
    assert "patient:\n  progressive_neuro_deficit: true\n" in text
    assert "  fired: [imaging.mri_window.progressive]\n  # urgency: emergency\n" in text
    assert "  # actions: {emergency_department: 0, mri_whole_spine: 48}\n" in text
    kb = load(kb_dir)
    scenarios = load_scenarios(kb, target)
    assert [s.expect for s in scenarios] == [
        {"fired": ["after.specialist_with_compression"]},
        {"fired": ["cancer.treatment_24h"]},
        {"fired": ["imaging.mri_window.progressive"]},
    ]
    # moved into the scenario directory they pass, and the rules are covered again
    for path in target.glob("*.yaml"):
        shutil.copy(path, kb_dir / "scenarios" / path.name)
    report = run_scenarios(kb)
    assert not report.failed and report.unfired_rules == []
    # a second run never overwrites
    (target / "cancer_treatment_24h.yaml").write_text("edited by the author\n")
    (kb_dir / "scenarios" / "cancer_treatment_24h.yaml").unlink()
    (kb_dir / "scenarios" / "after_specialist_with_compression.yaml").unlink()  # it fires cancer.treatment_24h too
    assert main(["test", "--kb", str(kb_dir), "--write-missing", str(target)]) == 0
    assert "exists already; left as it is" in capsys.readouterr().out
    assert (target / "cancer_treatment_24h.yaml").read_text() == "edited by the author\n"


def kb_missing_two_scenarios(tmp_path: Path) -> Path:
    kb_dir = copy_kb(tmp_path)
    for name in (
        "progressive_deficit.yaml",
        "cord_compression_confirmed.yaml",
        "cord_compression_confirmed_alone.yaml",
        "cancer_progressive_deficit.yaml",
        "compression_with_mass_on_imaging.yaml",
    ):
        (kb_dir / "scenarios" / name).unlink()
    return kb_dir


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_write_missing_into_an_unwritable_place_is_one_line_naming_it(tmp_path, capsys, where):
    kb_dir = kb_missing_two_scenarios(tmp_path)
    if where == "proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc, where no directory can be created")
        target = Path("/proc/lumbar-kb-write-missing")
    else:
        (tmp_path / "a_file").write_text("not a directory\n")
        target = tmp_path / "a_file" / "new"
    assert main(["test", "--kb", str(kb_dir), "--write-missing", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {target}: cannot write the scenarios") and err.count("\n") == 1
    assert not target.exists()


@pytest.mark.parametrize("exists", [True, False])
def test_write_missing_writes_all_or_nothing(tmp_path, capsys, monkeypatch, exists):
    kb_dir = kb_missing_two_scenarios(tmp_path)
    target = tmp_path / "new" / "scenarios"
    if exists:
        target.mkdir(parents=True)
    replace = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    assert main(["test", "--kb", str(kb_dir), "--write-missing", str(target)]) == 2
    monkeypatch.undo()
    assert capsys.readouterr().err == (
        f"error: {calls[1]}: cannot write the scenarios, none written: No space left on device\n"
    )
    if exists:
        assert list(target.iterdir()) == []  # the first file moved in is gone again, and the staging directory
    else:
        assert not (tmp_path / "new").exists()  # the directories it made are gone too


def test_json_format(capsys):
    assert main(["test", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] == SCENARIOS and data["failed"] == 0
    assert data["rules_not_fired"] == [] and data["conclusions_not_checked"] == []


def test_a_broken_scenario_file_is_exit_2(tmp_path, capsys):
    kb_dir = copy_kb(tmp_path)
    (kb_dir / "scenarios" / "typo.yaml").write_text("name: typo\npatient: {leg_weaknes: true}\nexpect: {}\n")
    assert main(["test", "--kb", str(kb_dir)]) == 2
    assert "did you mean 'leg_weakness'?" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["test", "--scenarios", "/nonexistent/dir"]])
def test_missing_scenario_directory_is_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "scenario directory not found" in capsys.readouterr().err


def test_no_scenarios_is_not_a_pass(tmp_path, capsys):
    kb_dir = copy_kb(tmp_path)
    for path in (kb_dir / "scenarios").glob("*.yaml"):
        path.unlink()
    assert main(["test", "--kb", str(kb_dir)]) == 1
    assert "no scenario files" in capsys.readouterr().err
