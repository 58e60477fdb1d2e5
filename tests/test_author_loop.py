"""The author's loop: a new knowledge base whose editor schemas resolve, YAML mistakes in plain words, one exit
code per meaning in every command's help, and a failing proof that names the rules on its counterexample's path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lumbar_kb.engine.loader import default_kb_dir
from lumbar_kb.main import build_parser, main

SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.M)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- new-kb ------------------------------------------------------------------------------------------------------
def test_a_new_knowledge_base_loads_and_every_schema_line_resolves_wherever_it_is_moved(tmp_path, capsys):
    code, out, err = run(capsys, "new-kb", tmp_path / "mine")
    assert code == 0, err
    assert "make author-check KB=" in out
    mine = tmp_path / "mine"
    lines = {p: SCHEMA_LINE.findall(p.read_text()) for p in mine.rglob("*.yaml")}
    # every YAML file the original marks keeps its mark (the bundled one marks every file)
    original = {
        p.relative_to(default_kb_dir()) for p in default_kb_dir().rglob("*.yaml") if SCHEMA_LINE.search(p.read_text())
    }
    assert {p.relative_to(mine) for p, found in lines.items() if found} == original - {Path("approvals.yaml")}
    moved = tmp_path / "elsewhere" / "deeper" / "mine"
    moved.parent.mkdir(parents=True)
    mine.rename(moved)  # a copied folder keeps working: the schemas travel inside it
    for path in moved.rglob("*.yaml"):
        for target in SCHEMA_LINE.findall(path.read_text()):
            schema = (path.parent / target).resolve()
            assert schema.is_file() and schema.is_relative_to(moved), (path, target)
            json.loads(schema.read_text())
    code, out, err = run(capsys, "validate", "--kb", moved)
    assert code == 0 and out.startswith("ok: lumbar_mass"), err


def test_a_new_knowledge_base_starts_unapproved_and_never_overwrites(tmp_path, capsys):
    source = tmp_path / "signed"
    code, _, err = run(capsys, "new-kb", source)
    assert code == 0, err
    (source / "approvals.yaml").write_text("approvals: []\n")  # the board's sign-off of the source
    code, _, err = run(capsys, "new-kb", tmp_path / "copy", "--from", source)
    assert code == 0, err
    assert not (tmp_path / "copy" / "approvals.yaml").exists()
    (tmp_path / "taken").mkdir()
    code, out, err = run(capsys, "new-kb", tmp_path / "taken")
    assert code == 2 and err.startswith("error: ") and "already exists" in err and not out
    assert list((tmp_path / "taken").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "signed", "taken"]  # no staging folder left


def test_new_kb_refuses_a_source_that_does_not_load(tmp_path, capsys):
    code, _, _ = run(capsys, "new-kb", tmp_path / "a")
    assert code == 0
    rules = tmp_path / "a" / "rules" / "red_flags.yaml"
    rules.write_text(rules.read_text().replace("{fact: leg_weakness, is: true}", "{fact: leg_weaknes, is: true}"))
    code, out, err = run(capsys, "new-kb", tmp_path / "b", "--from", tmp_path / "a")
    assert code == 2 and "leg_weaknes" in err and not (tmp_path / "b").exists()


# ---- YAML mistakes in plain words ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "hint"),
    [
        (
            "  - id: seeded.colon\n    title: Red flag: leg weakness\n",
            "the value of 'title' contains ': ', which YAML reads as another key: put the value in quotes, "
            'e.g. title: "Red flag: leg weakness"',
        ),
        ("  - id: seeded.indent\n    title: ok\n   when: {fact: leg_weakness, is: true}\n", "an indentation mistake?"),
        ("  - id: seeded.indent\n     title: ok\n", "an indentation mistake? this line starts at column 6"),
        ("  - id: seeded.tab\n\ttitle: ok\n", "YAML indents with spaces, never with tabs"),
    ],
)
def test_a_yaml_mistake_gets_a_plain_hint_at_its_line(text, hint, kb_copy, capsys):
    path = kb_copy / "rules" / "pitfalls.yaml"
    before = path.read_text().count("\n")
    path.write_text(path.read_text() + text)
    code, out, err = run(capsys, "validate", "--kb", kb_copy)
    assert code == 2 and not out
    [first, *_] = err.splitlines()
    assert re.match(rf"error: \S*pitfalls\.yaml:{before + 2}:\d+: invalid YAML: ", first) or re.match(
        rf"error: \S*pitfalls\.yaml:{before + 3}:\d+: invalid YAML: ", first
    ), first
    assert hint in first, first


# ---- one meaning per exit code ------------------------------------------------------------------------------------
def test_every_command_lists_the_four_exit_codes():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert len(commands) > 10
    for name, sub in [("lumbar-kb", parser), *commands.items()]:
        text = " ".join(sub.format_help().split())
        for code in ("0 success", "1 a finding", "2 bad input", "3 an internal error"):
            assert code in text, (name, code)


@pytest.mark.parametrize("command", ["validate", "check", "test", "evaluate", "graph", "review", "hazards"])
def test_a_misspelt_fact_is_bad_input_for_every_command(command, kb_copy, tmp_path, capsys):
    rules = kb_copy / "rules" / "red_flags.yaml"
    rules.write_text(rules.read_text().replace("{fact: leg_weakness, is: true}", "{fact: leg_weaknes, is: true}", 1))
    patient = tmp_path / "p.yaml"
    patient.write_text("leg_weakness: true\n")
    argv = {
        "evaluate": ["evaluate", patient],
        "graph": ["graph", "-o", tmp_path / "g.svg"],
        "review": ["review", "-o", tmp_path / "pack"],
    }.get(command, [command])
    code, out, err = run(capsys, *argv, "--kb", kb_copy)
    assert code == 2, (command, err)
    assert err.startswith("error: ") and "leg_weaknes" in err and "did you mean 'leg_weakness'?" in err, err


# ---- a failing proof names the rules on its counterexample's path --------------------------------------------------
def test_a_failing_safety_proof_names_the_edited_rule(kb_copy, capsys):
    path = kb_copy / "rules" / "imaging.yaml"
    text = path.read_text()
    block = text[text.index("  - id: imaging.mri_window.rapid_progression") :]
    edited = block.replace("within_hours: 48", "within_hours: 72", 1)
    path.write_text(text.replace(block, edited))
    code, out, err = run(capsys, "check", "--kb", kb_copy, "--format", "json")
    assert code == 1, err
    report = json.loads(out)
    failing = [
        f for c in report["checks"] if c["group"] == "safety" for f in c["findings"] if f["severity"] == "problem"
    ]
    assert failing, "raising the emergency MRI window to 72 h must break a safety proof"
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "id: imaging.mri_window.rapid_progression" in row)
    for finding in failing:
        named = " ".join(finding["details"])
        assert (
            f"imaging.mri_window.rapid_progression ({kb_copy}/rules/imaging.yaml:{line})" in named.replace("\n", " ")
            or f"imaging.mri_window.rapid_progression (rules/imaging.yaml:{line})" in named
        ), named
