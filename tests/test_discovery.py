"""Patient-file discovery (engine/discovery.py): each file once, extensions in any case, nothing skipped silently.

Every case is built from real files, links and FIFOs in a temporary folder.
"""

import os

from lumbar_kb.engine.discovery import patient_files


def touch(path, text="leg_weakness: true\n"):
    path.write_text(text)
    return path


def found(tmp_path, monkeypatch, *paths):
    monkeypatch.chdir(tmp_path)
    files, problems = patient_files(paths)
    return [str(f) for f in files], [str(p) for p in problems]


def test_extensions_in_any_case_sorted_by_name(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    folder.mkdir()
    for name in ("b.YAML", "a.json", "C.Json", "d.yml", "notes.txt", "README"):
        touch(folder / name)
    files, problems = found(tmp_path, monkeypatch, "c")
    assert files == ["c/C.Json", "c/a.json", "c/b.YAML", "c/d.yml"] and problems == []


def test_a_folder_and_a_file_inside_it_count_the_file_once(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    folder.mkdir()
    touch(folder / "p.yaml")
    files, problems = found(tmp_path, monkeypatch, "c", "c/p.yaml", "c", "./c/p.yaml")
    assert files == ["c/p.yaml"] and problems == []


def test_links_are_resolved_once_and_a_file_reached_twice_counts_once(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    folder.mkdir()
    touch(folder / "p.yaml")
    os.symlink("p.yaml", folder / "q.yaml")  # a second name for the same file
    os.link(folder / "p.yaml", folder / "r.yaml")  # a hard link: the same file again
    os.symlink(folder, tmp_path / "alias")  # the folder through a link
    files, problems = found(tmp_path, monkeypatch, "c", "alias", "alias/q.yaml")
    assert files == ["c/p.yaml"] and problems == []


def test_what_cannot_be_a_patient_file_is_reported_by_name(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    folder.mkdir()
    touch(folder / "good.yaml")
    os.symlink("gone.yaml", folder / "dangling.yaml")
    os.mkfifo(folder / "pipe.json")
    (folder / "sub").mkdir()
    touch(folder / "sub" / "deep.yaml")
    (folder / "dir.yaml").mkdir()
    os.symlink("loop2.yml", folder / "loop1.yml")
    os.symlink("loop1.yml", folder / "loop2.yml")
    touch(folder / ".hidden.yaml")
    files, problems = found(tmp_path, monkeypatch, "c", "missing.yaml")
    assert files == ["c/good.yaml"]
    assert problems == [
        "c/dangling.yaml: a dangling symbolic link: skipped",
        "c/dir.yaml: a folder, not a patient file: skipped",
        "c/loop1.yml: a symbolic link loop: skipped",
        "c/loop2.yml: a symbolic link loop: skipped",
        "c/pipe.json: a FIFO (named pipe), not a regular file: skipped",
        "c/sub: a subfolder: not searched",
        "missing.yaml: no such file or folder",
    ]


def test_paths_named_directly(tmp_path, monkeypatch):
    touch(tmp_path / "p.txt")  # named by the user: taken as it is, the reader judges it
    os.mkfifo(tmp_path / "q.yaml")
    os.symlink("nowhere.json", tmp_path / "r.json")
    files, problems = found(tmp_path, monkeypatch, "p.txt", "q.yaml", "r.json", "/dev/null")
    assert files == ["p.txt"]
    assert problems == [
        "q.yaml: a FIFO (named pipe), not a regular file: skipped",
        "r.json: a dangling symbolic link: skipped",
        "/dev/null: a device, not a regular file: skipped",
    ]


def test_a_file_name_that_is_not_utf8_is_found_and_shown_escaped(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.yaml")
    with open(raw, "w") as out:
        out.write("leg_weakness: true\n")
    os.symlink(b"gone\xff.yaml", os.path.join(os.fsencode(folder), b"z\xff.yaml"))
    files, problems = found(tmp_path, monkeypatch, "c")
    assert [os.fsencode(f) for f in files] == [b"c/caf\xe9.yaml"]
    assert problems == ["c/z\\xff.yaml: a dangling symbolic link: skipped"]
