"""Messages a newcomer understands: each mistake a new user makes names the mistake and the fix.

A misspelt option or command gets a "did you mean"; `fact:value` without the space YAML needs after the colon
says so; a value refused by a fact's `only_if` says what the file gave and what would allow it; a missing
`--kb` folder is an `error:` with exit 2 for every command, as all bad input is.
"""

from __future__ import annotations

import pytest

from lumbar_kb.main import build_parser, main

from .conftest import ROOT

CAUDA = ROOT / "knowledge" / "lumbar_mass" / "patients" / "01-cauda-equina.yaml"


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _commands():
    """Every subcommand, the arguments it needs to get past its required ones, and its long options."""
    sub = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    for name, parser in sub.choices.items():
        needed = [
            next(iter(a.choices)) if a.choices else "x.yaml"  # a positional with choices gets a valid one
            for a in parser._actions
            if a.required and not a.option_strings
        ]
        needed += [x for a in parser._actions if a.required and a.option_strings for x in (a.option_strings[0], "x")]
        for group in parser._mutually_exclusive_groups:
            if group.required:
                needed += [group._group_actions[0].option_strings[0], "x"]
        options = [o for o in parser._option_string_actions if o.startswith("--") and o != "--help"]
        yield name, needed, options


def _misspell(option: str) -> str:
    """One letter typed twice in the middle of the name: not a prefix of any option, so argparse refuses it."""
    name = option[2:]
    k = max(1, len(name) // 2)
    return "--" + name[:k] + name[k - 1] + name[k:]


COMMAND_OPTIONS = [(name, needed, option) for name, needed, options in _commands() for option in options]


@pytest.mark.parametrize(
    ("command", "needed", "option"), COMMAND_OPTIONS, ids=[f"{c}{o}" for c, _, o in COMMAND_OPTIONS]
)
def test_a_misspelt_option_suggests_the_right_one(capsys, command, needed, option):
    code, out, err = run(capsys, command, *needed, _misspell(option))
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        f"lumbar-kb {command}: error: unrecognized arguments: {_misspell(option)} (did you mean '{option}'?)"
    )


def test_the_example_from_the_issue(capsys):
    code, _, err = run(capsys, "evaluate", CAUDA, "--fromat", "json")
    assert code == 2 and "(did you mean '--format'?)" in err


def test_an_option_like_none_gets_no_suggestion(capsys):
    code, _, err = run(capsys, "evaluate", CAUDA, "--frobnicate")
    assert code == 2 and "did you mean" not in err and "unrecognized arguments: --frobnicate" in err


def test_a_misspelt_command_or_choice_suggests_the_right_one(capsys):
    code, _, err = run(capsys, "evalute", CAUDA)
    assert code == 2 and err.rstrip().endswith("(did you mean 'evaluate'?)")
    code, _, err = run(capsys, "evaluate", CAUDA, "--format", "jsno")
    assert code == 2 and err.rstrip().endswith("(did you mean 'json'?)")


# ---- `leg_weakness:true`: YAML needs a space after the colon ---------------------------------------------------
GLUED = {
    "the whole file": "leg_weakness:true\n",  # YAML: one string
    "two such lines": "leg_weakness:true\ngait_difficulty:false\n",  # YAML: one folded string
    "one line among good ones": "palpable_mass: true\nleg_weakness:true\n",  # YAML: a syntax error on line 3
    "the first line before good ones": "leg_weakness:true\npalpable_mass: true\n",  # an error on line 2
    "in a flow mapping": "{palpable_mass: true, leg_weakness:true}\n",  # YAML: a key 'leg_weakness:true'
}


@pytest.mark.parametrize("case", sorted(GLUED))
def test_a_missing_space_after_the_colon_is_named(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(GLUED[case])
    code, out, err = run(capsys, "evaluate", "p.yaml")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("error: p.yaml:"), err
    assert "a space is missing after the colon: write 'leg_weakness: true'" in err, err


def test_the_line_without_the_space_is_named_when_yaml_blames_a_later_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text("palpable_mass: true\nnight_pain:false\nleg_weakness: true\n")
    _, _, err = run(capsys, "evaluate", "p.yaml")
    assert "(line 2: a space is missing after the colon: write 'night_pain: false'" in err, err


def test_other_yaml_errors_get_no_such_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text("note: see https://example.org/a\nleg_weakness: true\n  bad: [\n")
    code, _, err = run(capsys, "evaluate", "p.yaml")
    assert code == 2 and "invalid YAML" in err and "space is missing" not in err


# ---- a value refused by only_if --------------------------------------------------------------------------------
def test_a_value_refused_by_only_if_says_what_was_given_and_what_would_allow_it(tmp_path, capsys, monkeypatch, kb):
    # facts.yaml: primary_cancer only_if {fact: cancer_history, is: true}
    assert kb.facts["primary_cancer"].only_if.describe() == "cancer_history is true"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text("cancer_history: false\nprimary_cancer: lung\n")
    code, out, err = run(capsys, "evaluate", "p.yaml")
    assert (code, out) == (2, "")
    assert err == (
        "error: p.yaml:2:17: fact 'primary_cancer': cannot be given here, because this file says cancer_history is "
        "false; primary_cancer may be given only when cancer_history is true, or while that is unanswered "
        "(leave primary_cancer out, or correct cancer_history)\n"
    )


@pytest.mark.parametrize("history", ["true", "null"])
def test_what_the_message_says_would_allow_it_does(tmp_path, capsys, monkeypatch, history):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(f"cancer_history: {history}\nprimary_cancer: lung\n")
    assert run(capsys, "evaluate", "p.yaml")[0] == 0


# ---- a missing --kb folder --------------------------------------------------------------------------------------
def _every_command_with_kb():
    for name, needed, options in _commands():
        if "--kb" in options:
            yield name, needed


@pytest.mark.parametrize(("command", "needed"), list(_every_command_with_kb()))
def test_a_missing_kb_folder_is_bad_input_for_every_command(tmp_path, capsys, monkeypatch, command, needed):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text("leg_weakness: true\n")
    if command == "explain":
        needed = ["x.yaml", "--why", "urgency:emergency"]
    code, out, err = run(capsys, command, *needed, "--kb", "nokb")
    assert (code, out) == (2, "")
    assert err == "error: nokb: knowledge base directory not found\n"


def test_the_help_speaks_to_a_user_and_lists_the_exit_codes(capsys):
    code, out, _ = run(capsys, "--help")
    out = " ".join(out.split())  # argparse wraps to the terminal's width
    assert code == 0
    assert "evaluate patients" in out and "COMMAND --help" in out
    assert "Exit codes: 0 success; 1 a finding" in out and "2 bad input" in out and "3 an internal error" in out
    assert "argument parser" not in out  # the module's docstring is for developers, not for the help


def test_an_unknown_conclusion_code_says_where_a_new_one_is_declared(kb_copy, capsys):
    rules = kb_copy / "rules" / "differential.yaml"
    rules.write_text(rules.read_text().replace("differential: lipoma", "differential: soft_tissue_metastasis", 1))
    code, _, err = run(capsys, "validate", "--kb", kb_copy)
    assert code == 2 and "unknown differential 'soft_tissue_metastasis'" in err
    assert "declared in guideline.yaml under 'differential:'" in err
