"""Which files `lumbar-kb cohort` evaluates is predictable (engine.discovery): extensions in any case, each file
once however it is named, and everything that cannot be a patient file reported by name while the rest run."""

from __future__ import annotations

import json
import os
import shutil

from lumbar_kb.engine.loader import default_kb_dir
from lumbar_kb.main import main

PATIENTS = default_kb_dir() / "patients"


def cohort(capsys, *argv):
    code = main(["cohort", *map(str, argv), "--format", "json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else None), err


def test_a_folder_and_a_file_inside_it_count_once_and_upper_case_extensions_are_read(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    bundled = sorted(p for p in PATIENTS.iterdir() if p.suffix in (".yaml", ".json"))
    for p in bundled:
        shutil.copy(p, folder / (p.stem + p.suffix.upper()))  # .YAML, .JSON
    first = next(folder.iterdir())
    os.symlink(first, tmp_path / "link.yaml")  # the same file a third time, through a link
    code, data, err = cohort(capsys, folder, first, tmp_path / "link.yaml")
    assert code == 0 and "skipped" not in err
    assert data["summary"]["patients"] == len(bundled)


def test_what_cannot_be_a_patient_file_is_named_and_the_rest_still_run(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in PATIENTS.iterdir():
        shutil.copy(p, folder / p.name)
    os.symlink(tmp_path / "gone.yaml", folder / "dangling.yaml")
    os.mkfifo(folder / "pipe.yaml")  # nobody writes: reading it would block forever
    (folder / "sub.yaml").mkdir()
    code, data, err = cohort(capsys, folder)
    assert code == 1  # done, but some inputs were skipped
    assert data["summary"]["patients"] == len(list(PATIENTS.iterdir()))
    assert data["summary"]["bad_rows"] == 3  # reported, never counted as patients
    lines = err.strip().splitlines()
    for name, why in (("dangling.yaml", "dangling symbolic link"), ("pipe.yaml", "FIFO"), ("sub.yaml", "folder")):
        assert any(name in line and why in line for line in lines), (name, err)
    assert "Traceback" not in err


def test_each_input_folder_is_listed_once_a_run_and_the_progress_total_counts_every_entry(
    tmp_path, capsys, monkeypatch
):
    """The check before the run (an empty folder is bad input), the progress bar's total and the chunks read one
    listing of each folder: listing a folder of a million files took ~25 s, and it was listed three times. The
    total still counts every entry the run reports (patient files and what cannot be one), and every patient
    file is still evaluated."""
    from lumbar_kb.engine import discovery

    folder = tmp_path / "in"
    folder.mkdir()
    bundled = sorted(p for p in PATIENTS.iterdir() if p.suffix in (".yaml", ".json"))
    for p in bundled:
        shutil.copy(p, folder / p.name)
    os.symlink(tmp_path / "gone.yaml", folder / "dangling.yaml")  # reported, and counted in the total
    from lumbar_kb.cohort import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0)  # a progress line after every chunk
    listed = []
    real = discovery.patient_files
    monkeypatch.setattr(discovery, "patient_files", lambda paths: listed.append(list(paths)) or real(paths))
    code = main(["cohort", str(folder), "--out", str(tmp_path / "rows.jsonl"), "--jobs", "1"])
    _, err = capsys.readouterr()
    assert code == 1 and listed == [[folder]]  # 1: a row was skipped (the dangling link)
    assert f"{len(bundled) + 1} of {len(bundled) + 1} rows" in err and "dangling.yaml" in err
    rows = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert len(rows) == len(bundled)
