"""`lumbar-kb cohort`: many patients at once, for analysts."""

import csv
import io
import json

from lumbar_kb.engine.loader import default_kb_dir
from lumbar_kb.main import main

PATIENTS = default_kb_dir() / "patients"


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_counts_agree_with_evaluating_each_patient(capsys, evaluator):
    code, out, err = cli(capsys, "cohort", PATIENTS, "--format", "json")
    assert code == 0 and err == ""
    data = json.loads(out)
    files = sorted(p for p in PATIENTS.iterdir())
    assert [p["patient_file"] for p in data["patients"]] == [str(f) for f in files]
    results = [evaluator.evaluate_file(f) for f in files]
    summary = data["summary"]
    assert summary["patients"] == len(files)
    for level, count in summary["urgency"].items():
        assert count == sum(r.urgency == level for r in results)
    for rule, count in summary["rules"].items():
        assert count == sum(rule in r.fired_ids() for r in results)
    assert summary["never_fired"] == [rule for rule, count in summary["rules"].items() if count == 0]
    mri = summary["actions"]["mri_whole_spine"]
    assert mri["patients"] == sum(any(a.code == "mri_whole_spine" for a in r.actions) for r in results)
    assert sum(w["patients"] for w in mri["within_hours"]) == mri["patients"]
    for row, result in zip(data["patients"], results, strict=False):
        assert row["urgency"] == result.urgency and row["fired"] == result.fired_ids()
        assert row["actions"] == {a.code: a.within_hours for a in result.actions}


def test_csv_has_one_row_per_patient(capsys):
    code, out, _ = cli(capsys, "cohort", PATIENTS, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len(list(PATIENTS.iterdir()))
    cauda = next(r for r in rows if r["patient_file"].endswith("01-cauda-equina.yaml"))
    assert cauda["urgency"] == "emergency"
    assert cauda["actions"].split(";") == ["emergency_department@0", "mri_whole_spine@12"]


def test_text_summary_reads_urgency_first(capsys):
    code, out, _ = cli(capsys, "cohort", PATIENTS)
    lines = out.splitlines()
    # derived, not copied: every bundled patient file is counted; one of them (01-cauda-equina) is an emergency
    count = len(list(PATIENTS.iterdir()))
    assert code == 0 and lines[0].startswith(f"Cohort of {count} patient(s)")
    assert lines[2].startswith(f"Urgency: EMERGENCY 1 ({100 / count:.0f}%)")
    assert "Rules this cohort never fired:" in out


def test_one_bad_file_means_nothing_is_written(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("leg_weakness: true\n")
    (tmp_path / "b.yaml").write_text("leg_weakness: sometimes\n")
    code, out, err = cli(capsys, "cohort", tmp_path)
    assert (code, out) == (2, "") and "b.yaml:1:15" in err


def test_an_empty_directory_is_bad_input(tmp_path, capsys):
    code, out, err = cli(capsys, "cohort", tmp_path)
    assert (code, out) == (2, "") and "no patient files" in err


def test_windows_without_a_figure_keep_their_words(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("leg_weakness: true\n")
    (tmp_path / "b.yaml").write_text("primary_cancer: lung\n")
    (tmp_path / "c.yaml").write_text("suspected_cord_compression: true\n")
    code, out, _ = cli(capsys, "cohort", tmp_path, "--format", "json")
    mri = json.loads(out)["summary"]["actions"]["mri_whole_spine"]
    assert mri["within_hours"] == [
        {"within_hours": 12, "window": None, "patients": 1},
        {"within_hours": None, "window": "urgently", "patients": 2},
    ]
    code, out, _ = cli(capsys, "cohort", tmp_path)
    assert "MRI of the whole spine: 3 (100%); within 12 hours x1, urgently x2" in out
