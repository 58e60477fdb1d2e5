"""`lumbar-kb cohort`: many patients at once, for analysts."""

import csv
import io
import json

from lumbar_kb.engine.loader import default_kb_dir
from lumbar_kb.engine.source import display

from .commands import cli

PATIENTS = default_kb_dir() / "patients"


def test_summary_counts_agree_with_evaluating_each_patient(capsys, evaluator, tmp_path):
    out_file = tmp_path / "rows.jsonl"
    code, out, err = cli(capsys, "cohort", PATIENTS, "--format", "json", "--out", out_file, "--quiet")
    assert code == 0 and err == ""
    data = json.loads(out)
    files = sorted(p for p in PATIENTS.iterdir())
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["source"] for r in rows] == [display(f) for f in files]
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
    for row, result in zip(rows, results, strict=True):
        assert row["urgency"] == result.urgency and row["fired"] == result.fired_ids()
        assert [(a["code"], a["within_hours"]) for a in row["actions"]] == [
            (a.code, a.within_hours) for a in result.actions
        ]


def test_csv_has_one_row_per_patient_with_windows_and_done(capsys):
    code, out, _ = cli(capsys, "cohort", PATIENTS, "--format", "csv", "--quiet")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len(list(PATIENTS.iterdir()))
    cauda = next(r for r in rows if r["source"].endswith("01-cauda-equina.yaml"))
    assert cauda["urgency"] == "emergency" and cauda["patient_id"] == "example-01"
    # cauda equina: the emergency department now, an MRI of the whole spine within 12 hours
    actions = [(a["code"], a["within_hours"], a["done"]) for a in json.loads(cauda["actions"])]
    assert actions == [("emergency_department", 0, False), ("mri_whole_spine", 12, False)]
    # abnormal radiographs are given for patient 03: the X-ray is already done, and the row says so
    soft = next(r for r in rows if r["source"].endswith("03-soft-lump-no-neuro.json"))
    xray = next(a for a in json.loads(soft["actions"]) if a["code"] == "xray_lumbar")
    # its window is the "prompt evaluation (within days to 2 weeks)" the imaging rule reads for a lump: 2 weeks
    assert xray["done"] is True and xray["within_hours"] == 14 * 24


def test_text_summary_reads_urgency_first(capsys):
    code, out, _ = cli(capsys, "cohort", PATIENTS, "--quiet")
    lines = out.splitlines()
    # derived, not copied: every bundled patient file is counted; one of them (01-cauda-equina) is an emergency
    count = len(list(PATIENTS.iterdir()))
    assert code == 0 and lines[0].startswith(f"Cohort of {count} patient(s)")
    assert lines[2].startswith(f"Urgency: EMERGENCY 1 ({100 / count:.0f}%)")
    assert "Rules this cohort never fired:" in out


def test_a_bad_file_is_reported_and_skipped_never_counted(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("leg_weakness: true\n")
    (tmp_path / "b.yaml").write_text("leg_weakness: sometimes\n")
    code, out, err = cli(capsys, "cohort", tmp_path, "--quiet")
    assert code == 1 and "b.yaml:1:15" in err
    assert out.startswith("Cohort of 1 patient(s)") and "Skipped 1 bad row(s)" in out


def test_an_empty_directory_is_bad_input(tmp_path, capsys):
    code, out, err = cli(capsys, "cohort", tmp_path)
    assert (code, out) == (2, "") and "no patient files" in err


def test_windows_without_a_figure_keep_their_words(kb_copy, tmp_path, capsys):
    # the bundled rules give every imaging action a figure (lumbar-kb check proves it); an author's copy may not
    rules = kb_copy / "rules" / "cancer_history.yaml"
    text = rules.read_text()
    figure = "        within_hours: 336\n        window: urgently, within 2 weeks at the latest\n"
    assert figure in text
    rules.write_text(text.replace(figure, "        window: urgently\n"))
    patients = tmp_path / "patients"
    patients.mkdir()
    (patients / "a.yaml").write_text("leg_weakness: true\n")
    (patients / "b.yaml").write_text("primary_cancer: lung\n")
    (patients / "c.yaml").write_text("cancer_history: true\n")
    code, out, _ = cli(capsys, "cohort", patients, "--kb", kb_copy, "--format", "json")
    mri = json.loads(out)["summary"]["actions"]["mri_whole_spine"]
    assert mri["within_hours"] == [
        {"within_hours": 12, "window": None, "patients": 1},
        {"within_hours": None, "window": "urgently", "patients": 2},
    ]
    code, out, _ = cli(capsys, "cohort", patients, "--kb", kb_copy)
    assert "MRI of the whole spine: 3 (100%); within 12 hours x1, urgently x2" in out
