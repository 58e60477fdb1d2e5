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


def test_a_file_is_named_relative_to_the_working_directory_exactly_as_pathlib_would(tmp_path, monkeypatch):
    """Every file a cohort reads is named in its rows and messages (`source.display`), with string work: the
    names pathlib's definition gives (the absolute path relative to the working directory when below it, the
    name as given otherwise), for names relative and absolute, inside and outside, with "." and ".." parts,
    doubled and trailing separators, the working directory itself, a symbolic link (not followed), from the
    filesystem's root, and a name with a NUL."""
    import os
    from pathlib import Path

    from lumbar_kb.engine.source import display

    def definition(path):
        path = Path(path)
        try:
            return str(Path(os.path.abspath(path)).relative_to(Path.cwd()))
        except (ValueError, OSError):
            return str(path)

    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "link").symlink_to(tmp_path / "elsewhere")
    names = [
        "a.yaml", "./a.yaml", "sub/../a.yaml", "sub//b.json", "sub/", ".", "..", "../work/a.yaml", "../other/x.json",
        "link", "link/c.yaml", str(work / "sub" / "b.json"), str(work), str(tmp_path), "/", "/etc/../etc/hosts",
        "a\x00b", Path("sub") / "b.json", str(work) + "x/y.json",
    ]  # fmt: skip
    for cwd in (work, Path("/")):
        monkeypatch.chdir(cwd)
        for name in names:
            assert display(name) == definition(name), (cwd, name)
    monkeypatch.chdir(work)
    assert display(work / "sub" / "b.json") == "sub/b.json" and display(tmp_path / "x") == str(tmp_path / "x")
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # a working directory that no longer exists: every name as given
    for name in names:
        assert display(name) == definition(name) == str(Path(name)), name
