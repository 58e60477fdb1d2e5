"""A knowledge base stays in its folder: a symbolic link or path leading outside it is refused before anything
is read, and no error quotes a file's content (an untrusted author's `rules/x.yaml -> /etc/passwd`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lumbar_kb.engine.loader import load
from lumbar_kb.main import main

SECRET = "s3cret-line-that-must-never-be-printed"


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("\n".join(f"{SECRET}:{i}:x:/root:/bin/bash" for i in range(20)) + "\n")
    return path


@pytest.mark.parametrize("name", ["rules/x.yaml", "codes.yaml", "guideline.yaml", "facts.yaml", "hazards.yaml"])
def test_a_symlink_out_of_the_folder_is_refused_and_nothing_of_it_is_printed(kb_copy, secret_file, capsys, name):
    target = kb_copy / name
    if target.exists():
        target.unlink()
    os.symlink(secret_file, target)
    sha_before = None
    assert main(["validate", "--kb", str(kb_copy)]) == 2
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert f"{name}: refused: a symbolic link or path leading outside the knowledge base folder" in err
    del sha_before


def test_a_relative_symlink_climbing_out_is_refused_too(kb_copy, secret_file, capsys):
    os.symlink(os.path.relpath(secret_file, kb_copy / "rules"), kb_copy / "rules" / "x.yaml")
    assert main(["validate", "--kb", str(kb_copy)]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "rules/x.yaml: refused" in err


def test_a_symlink_inside_the_folder_is_followed(kb_copy, capsys):
    """Containment is about where a link leads, not that it is a link: a shared file inside the folder loads."""
    rules = kb_copy / "rules"
    (kb_copy / "shared").mkdir()
    (rules / "pitfalls.yaml").rename(kb_copy / "shared" / "pitfalls.yaml")
    os.symlink("../shared/pitfalls.yaml", rules / "pitfalls.yaml")
    assert main(["validate", "--kb", str(kb_copy)]) == 0


def test_the_board_files_stay_in_the_folder(kb_copy, secret_file, capsys):
    for name in ("approvals.yaml", "decisions.yaml", "board.yaml", "guideline_text.yaml"):
        target = kb_copy / name
        if target.exists():
            target.unlink()
        os.symlink(secret_file, target)
        if name == "board.yaml":  # checked at load: the load itself refuses it
            assert main(["validate", "--kb", str(kb_copy)]) == 2
        else:
            assert main(["status", "--kb", str(kb_copy)]) == 2
        out, err = capsys.readouterr()
        assert SECRET not in out + err and "refused" in err, (name, err)
        target.unlink()


def test_a_file_that_is_not_a_mapping_is_named_not_quoted(kb_copy, capsys):
    (kb_copy / "rules" / "x.yaml").write_text(SECRET + " " + "and more text " * 50 + "\n")
    assert main(["validate", "--kb", str(kb_copy)]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "rules/x.yaml:1: must be a mapping at the top, not the string" in err


def test_the_identity_is_not_computed_over_a_file_outside(kb_copy, secret_file):
    from lumbar_kb.engine.loader import digest

    before = digest(kb_copy)
    os.symlink(secret_file, kb_copy / "codes.yaml.tmp")  # not a knowledge file: ignored
    assert digest(kb_copy) == before
    (kb_copy / "codes.yaml").unlink()
    os.symlink(secret_file, kb_copy / "codes.yaml")
    outside = digest(kb_copy)
    secret_file.write_text("other content\n")
    assert digest(kb_copy) == outside  # the file outside was never read into it
    with pytest.raises(Exception, match="refused"):
        load(kb_copy)


def test_approve_never_writes_through_a_planted_link(kb_copy, secret_file, capsys):
    from .board import make_board

    keys = make_board(kb_copy)
    before = secret_file.read_text()
    os.symlink(secret_file, kb_copy / ".approvals.yaml.tmp")  # where approve writes before renaming into place
    assert main(["approve", "cancer.none", "--key", str(keys["Dr A"]), "--kb", str(kb_copy)]) == 0
    assert secret_file.read_text() == before
    assert not (kb_copy / "approvals.yaml").is_symlink() and "cancer.none" in (kb_copy / "approvals.yaml").read_text()
    (kb_copy / "approvals.yaml").unlink()
    os.symlink(secret_file, kb_copy / "approvals.yaml")  # a link out is refused on reading, before any write
    assert main(["approve", "cancer.none", "--key", str(keys["Dr B"]), "--kb", str(kb_copy)]) == 2
    assert secret_file.read_text() == before and SECRET not in capsys.readouterr().err
