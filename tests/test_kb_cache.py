"""The on-disk cache of loaded knowledge bases (engine/loader/cache.py): a hit is the model a full load gives,
anything the load reads or depends on changing is a miss, a knowledge base with a problem is never kept, and an
entry someone else could have written is never read (an entry is a pickle).

The rest of the suite runs with the cache on, as users have it, in a folder of the run's own (tests/conftest.py):
each content is loaded in full once a run, and a knowledge base with a problem every time. Here it is tested in
folders of the tests' own.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

from lumbar_kb.engine import loader
from lumbar_kb.engine.errors import KnowledgeBaseError
from lumbar_kb.engine.loader import cache, default_kb_dir, load


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """The cache on, in a private folder; a copy of the bundled knowledge base; counts the full loads."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV, str(folder))
    kb_dir = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), kb_dir)
    builds = []
    real = loader._build

    def counting(root, problems):
        builds.append(root)
        return real(root, problems)

    monkeypatch.setattr(loader, "_build", counting)
    return folder, kb_dir, builds


def test_a_second_load_is_read_back_and_is_the_model_a_full_load_gives(cached, monkeypatch):
    folder, kb_dir, builds = cached
    first = load(kb_dir)
    second = load(kb_dir)
    assert len(builds) == 1  # the second came from the cache
    assert second == first and second is not first
    assert [r.line for r in second.rules] == [r.line for r in first.rules]  # positions kept for messages
    monkeypatch.setenv(cache.ENV, "off")
    assert load(kb_dir) == second  # and a full load with the cache off agrees
    assert len(builds) == 2


def test_the_folder_and_its_entries_are_private(cached):
    folder, kb_dir, _ = cached
    load(kb_dir)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    [entry] = folder.iterdir()
    assert entry.suffix == ".pickle" and stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_an_edited_rule_file_is_loaded_afresh(cached):
    _, kb_dir, builds = cached
    before = load(kb_dir)
    rules = kb_dir / "rules" / "red_flags.yaml"
    rules.write_text(rules.read_text().replace("title: Decreased strength", "title: Less strength", 1))
    after = load(kb_dir)
    assert len(builds) == 2 and after.sha256 != before.sha256
    assert after.rules[0].title.startswith("Less strength")


def test_governance_files_outside_the_content_hash_still_make_a_new_key(cached):
    _, kb_dir, builds = cached
    before = load(kb_dir)
    hazards = kb_dir / "hazards.yaml"
    hazards.write_text(hazards.read_text() + "\n# a comment changes the bytes, not the model\n")
    load(kb_dir)
    assert len(builds) == 2 and before.sha256 == load(kb_dir).sha256  # sha256 covers behaviour only


def test_a_stray_file_that_is_an_error_is_reported_after_a_cached_load(cached):
    _, kb_dir, _ = cached
    load(kb_dir)
    (kb_dir / "rules" / "extra.yml").write_text("section: red_flags\nrules: []\n")
    with pytest.raises(KnowledgeBaseError, match="rule files end in .yaml"):
        load(kb_dir)


def test_a_knowledge_base_with_a_problem_is_never_kept(cached):
    folder, kb_dir, builds = cached
    facts = kb_dir / "facts.yaml"
    facts.write_text(facts.read_text().replace("type: bool", "type: boolean", 1))
    for _ in range(2):
        with pytest.raises(KnowledgeBaseError):
            load(kb_dir)
    assert len(builds) == 2 and not list(folder.glob("*.pickle"))


@pytest.mark.parametrize("who", ["entry", "folder"])
def test_an_entry_others_could_write_is_not_read(cached, who):
    folder, kb_dir, builds = cached
    load(kb_dir)
    [entry] = folder.glob("*.pickle")
    target = entry if who == "entry" else folder
    target.chmod(stat.S_IMODE(target.stat().st_mode) | stat.S_IWOTH)
    load(kb_dir)
    assert len(builds) == 2


def test_a_damaged_entry_means_a_full_load(cached):
    folder, kb_dir, builds = cached
    good = load(kb_dir)
    [entry] = folder.glob("*.pickle")
    entry.write_bytes(b"not a pickle")
    assert load(kb_dir) == good and len(builds) == 2


def test_other_code_or_another_working_directory_is_another_key(cached, monkeypatch, tmp_path):
    _, kb_dir, builds = cached
    load(kb_dir)
    monkeypatch.setattr(cache, "_fingerprint", "an edited loader")
    load(kb_dir)
    assert len(builds) == 2
    monkeypatch.chdir(tmp_path)
    load(kb_dir)
    assert len(builds) == 3


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.directory() is None
    load()
    assert not any(tmp_path.iterdir())


def test_only_the_newest_entries_are_kept(cached, monkeypatch):
    folder, kb_dir, _ = cached
    monkeypatch.setattr(cache, "KEPT", 2)
    for n in range(4):
        (kb_dir / "rules" / f"notes{n}.txt").write_text("")  # a new name in the rules folder: a new key
        load(kb_dir)
    assert len(list(folder.glob("*.pickle"))) == 2


def test_the_command_line_gives_the_same_answer_from_the_cache(tmp_path):
    env = {**os.environ, cache.ENV: str(tmp_path / "cache")}
    patient = sorted((default_kb_dir() / "patients").glob("*.yaml"))[0]
    runs = [
        subprocess.run(
            [sys.executable, "-m", "lumbar_kb", "evaluate", str(patient), "--format", "json"],
            capture_output=True,
            env=env,
            check=False,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0]
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout
    assert len(list((tmp_path / "cache").glob("*.pickle"))) == 1  # the first run kept it, the second read it


def test_a_document_read_before_is_read_again_as_the_file_it_now_is(tmp_path, monkeypatch):
    """Within a process each document that read without a problem is kept by its bytes (loader._DOCUMENTS), so
    a knowledge base loaded again with one file edited reads only that file. What is kept must never name the
    folder it was first read from: a copy elsewhere loads as the model a fresh process gives it, and a problem
    found in an unchanged file (a rule reading a fact the edited facts.yaml no longer has) names the copy's file
    and the line a fresh read gives."""
    monkeypatch.setenv(cache.ENV, "off")
    first, second = tmp_path / "a", tmp_path / "b"
    shutil.copytree(default_kb_dir(), first)
    shutil.copytree(default_kb_dir(), second)
    monkeypatch.setattr(loader, "_DOCUMENTS", {})
    load(first)
    assert len(loader._DOCUMENTS) >= 10  # every file of the knowledge base, kept
    reused = load(second)
    monkeypatch.setattr(loader, "_DOCUMENTS", {})
    fresh = load(second)
    assert reused == fresh and {r.file for r in reused.rules} == {r.file for r in fresh.rules}
    assert all(r.file.startswith(f"{second}/rules/") for r in reused.rules)
    facts = second / "facts.yaml"
    facts.write_text(facts.read_text().replace("  leg_weakness:", "  leg_weaknesz:", 1))  # the same length
    load(first)  # the unchanged rule files kept again, read from the first folder
    with pytest.raises(KnowledgeBaseError) as kept:
        load(second)
    monkeypatch.setattr(loader, "_DOCUMENTS", {})
    with pytest.raises(KnowledgeBaseError) as afresh:
        load(second)

    def about(problems):
        return [(p.file, p.line, p.message) for p in problems if "leg_weakness" in p.message]

    assert about(kept.value.problems) and about(kept.value.problems) == about(afresh.value.problems)
    assert all(file.startswith(f"{second}/rules/") for file, _, _ in about(kept.value.problems))
