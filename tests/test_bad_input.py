"""Bad input gets one clear line per problem naming file, line and subject, exit 2, never a traceback."""

import json
import re
import subprocess
import sys

import pytest

from lumbar_kb.engine.errors import KnowledgeBaseError
from lumbar_kb.engine.loader import load
from lumbar_kb.main import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- patient files -----------------------------------------------------------------------------------------
PATIENT_CASES = {
    "unknown fact": (
        "p.yaml",
        "palpable_mass: true\nleg_weaknes: true\n",
        [r"p\.yaml:2:1: fact 'leg_weaknes': unknown fact \(did you mean 'leg_weakness'\?\)"],
    ),
    "wrong type": (
        "p.yaml",
        "leg_weakness: 'yes'\n",
        [r"p\.yaml:1:15: fact 'leg_weakness': must be true or false.*not 'yes' \(write true or false"],
    ),
    "value outside the set": (
        "p.yaml",
        "radiograph: abnormall\n",
        [
            r"p\.yaml:1:13: fact 'radiograph': must be one of not_done, normal, abnormal.*"
            r"did you mean 'abnormal'\?"
        ],
    ),
    "broken YAML": ("p.yaml", "leg_weakness: true\n  bad: [\n", [r"p\.yaml:\d+:\d+: invalid YAML"]),
    "broken JSON": ("p.json", '{"leg_weakness": true,\n "x": }\n', [r"p\.json:2:7: invalid JSON"]),
    "not a mapping": ("p.yaml", "- leg_weakness\n", [r"p\.yaml:1:1: a patient must be a mapping"]),
    "empty file": ("p.yaml", "", [r"p\.yaml: a patient must be a mapping of fact: value, not empty"]),
    "derived fact given": (
        "p.yaml",
        "neuro_symptom: true\n",
        [r"p\.yaml:1:16: fact 'neuro_symptom': is derived by the rules"],
    ),
    "contradiction": (
        "p.yaml",
        "cancer_history: false\nprimary_cancer: lung\n",
        [r"p\.yaml:2:17: fact 'primary_cancer': is given but contradicts.*cancer_history is true"],
    ),
    "duplicate key": ("p.yaml", "leg_weakness: true\nleg_weakness: false\n", [r"p\.yaml:2:1: duplicate key"]),
    "several problems": (
        "p.yaml",
        "leg_weaknes: true\nradiograph: 3\n",
        [r"p\.yaml:1:1: fact 'leg_weaknes'", r"p\.yaml:2:13: fact 'radiograph'"],
    ),
}


@pytest.mark.parametrize("case", sorted(PATIENT_CASES))
def test_bad_patient_file(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, text, patterns = PATIENT_CASES[case]
    write(tmp_path, name, text)
    code, out, err = run_cli(capsys, "evaluate", name, "--format", "json")
    assert code == 2
    assert out == ""  # nothing half-written
    lines = err.strip().splitlines()
    assert len(lines) == len(patterns), err
    for line, pattern in zip(lines, patterns, strict=False):
        assert re.search(pattern, line), line
    assert "Traceback" not in err


def test_missing_patient_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "evaluate", "nope.yaml")
    assert (code, out) == (2, "")
    assert err.strip() == "error: nope.yaml: no such file"


def test_one_bad_file_among_several_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "good.yaml", "leg_weakness: true\n")
    write(tmp_path, "bad.yaml", "leg_weakness: maybe\n")
    code, out, err = run_cli(capsys, "evaluate", "good.yaml", "bad.yaml")
    assert (code, out) == (2, "")
    assert "bad.yaml:1:15" in err


def test_null_means_unknown(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "p.yaml", "leg_weakness: null\npalpable_mass: true\n")
    code, out, _ = run_cli(capsys, "evaluate", "p.yaml", "--format", "json")
    data = json.loads(out)
    assert code == 0 and "leg_weakness" in [q["fact"] for q in data["unanswered"]]
    assert data["inputs"] == {"palpable_mass": True}


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    write(tmp_path, "p.yaml", "leg_weaknes: true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lumbar_kb", "evaluate", "p.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: p.yaml:1:1: fact 'leg_weaknes': unknown fact (did you mean 'leg_weakness'?)\n"


# ---- knowledge base files ------------------------------------------------------------------------------------
def edit(kb_copy, relative, old, new):
    path = kb_copy / relative
    text = path.read_text()
    assert old in text, f"fixture text not found in {relative}"
    path.write_text(text.replace(old, new, 1))


KB_CASES = {
    "unknown fact in a condition": (
        "rules/concerning.yaml",
        "when: {fact: night_pain, is: true}",
        "when: {fact: nigth_pain, is: true}",
        r"rules/concerning\.yaml:\d+:\d+: rule concerning\.night_pain: unknown fact 'nigth_pain' "
        r"\(did you mean 'night_pain'\?\)",
    ),
    "duplicate rule id": (
        "rules/concerning.yaml",
        "id: concerning.radiating_pain",
        "id: concerning.night_pain",
        r"rules/concerning\.yaml:\d+:\d+: rule concerning\.night_pain: duplicate rule id \(first defined at "
        r".*concerning\.yaml:\d+\)",
    ),
    "rule without citation": (
        "rules/concerning.yaml",
        "    when: {fact: night_pain, is: true}\n    then:\n      - urgency: prompt\n    cites: [1]\n",
        "    when: {fact: night_pain, is: true}\n    then:\n      - urgency: prompt\n",
        r"rules/concerning\.yaml:\d+:\d+: rule concerning\.night_pain: missing required key 'cites' in the rule",
    ),
    "citation not in the reference list": (
        "rules/after_imaging.yaml",
        "cites: [1]",
        "cites: [1, 7]",
        r"rules/after_imaging\.yaml:\d+:\d+: rule after\.specialist_before_biopsy: cites reference 7, which is "
        r"not in the reference list \(1-5\)",
    ),
    "malformed condition": (
        "rules/concerning.yaml",
        "when: {fact: night_pain, is: true}",
        "when: {fact: night_pain, is: true, any: []}",
        r"rules/concerning\.yaml:\d+:\d+: .*",
    ),
    "condition with two heads": (
        "rules/concerning.yaml",
        "when: {fact: night_pain, is: true}",
        "when: {not: {fact: night_pain, is: true}, all: [{fact: night_pain, is: true}]}",
        r"rules/concerning\.yaml:\d+:\d+: rule concerning\.night_pain: a condition has exactly one of "
        r"fact/all/any/not, not all and not",
    ),
    "unknown key": (
        "rules/concerning.yaml",
        "    cites: [1]\n    rationale: Radiating pain",
        "    cites: [1]\n    rationle: x\n    rationale: Radiating pain",
        r"rules/concerning\.yaml:\d+:\d+: rule concerning\.radiating_pain: unknown key 'rationle' "
        r"\(did you mean 'rationale'\? allowed: ",
    ),
    "value outside a fact's set": (
        "rules/imaging.yaml",
        "{fact: radiograph, is: abnormal}",
        "{fact: radiograph, is: abnormall}",
        r"rules/imaging\.yaml:\d+:\d+: rule imaging\.mri_lumbar\.abnormal_radiograph: 'abnormall' is not a value "
        r"of 'radiograph'.*did you mean 'abnormal'\?",
    ),
    "unknown action code": (
        "rules/imaging.yaml",
        "- action: xray_lumbar",
        "- action: xray_lumbr",
        r"rules/imaging\.yaml:\d+:\d+: rule imaging\.xray_first: unknown action 'xray_lumbr' "
        r"\(did you mean 'xray_lumbar'\?\)",
    ),
    "deriving an input fact": (
        "rules/red_flags.yaml",
        "- derive: neuro_symptom\n        value: true",
        "- derive: leg_weakness\n        value: true",
        r"rule neuro\.present: 'leg_weakness' is an input fact",
    ),
    "broken YAML": (
        "rules/pitfalls.yaml",
        "section: pitfalls",
        "section: [pitfalls",
        r"rules/pitfalls\.yaml:\d+:\d+: invalid YAML",
    ),
    "reserved fact name": (
        "facts.yaml",
        "  night_pain:\n",
        "  note:\n",
        r"facts\.yaml:\d+:\d+: fact note: 'note' is reserved",
    ),
    "unknown section": (
        "rules/pitfalls.yaml",
        "section: pitfalls",
        "section: pitfall",
        r"rules/pitfalls\.yaml:\d+:\d+: unknown section 'pitfall' \(did you mean 'pitfalls'\?\)",
    ),
}


@pytest.mark.parametrize("case", sorted(KB_CASES))
def test_broken_knowledge_base(case, kb_copy, capsys, monkeypatch):
    relative, old, new, pattern = KB_CASES[case]
    edit(kb_copy, relative, old, new)
    monkeypatch.chdir(kb_copy.parent)
    with pytest.raises(KnowledgeBaseError) as info:
        load(kb_copy)
    assert any(re.search(pattern, str(p)) for p in info.value.problems), str(info.value)
    # validate reports it and exits 1; evaluate refuses with exit 2 and writes nothing
    code, out, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 1 and re.search(pattern, err) and "Traceback" not in err
    patient = write(kb_copy.parent, "p.yaml", "palpable_mass: true\n")
    code, out, err = run_cli(capsys, "evaluate", patient, "--kb", kb_copy)
    assert (code, out) == (2, "") and re.search(pattern, err)


def test_every_problem_is_reported_at_once(kb_copy, capsys):
    edit(kb_copy, "rules/concerning.yaml", "{fact: night_pain, is: true}", "{fact: nigth_pain, is: true}")
    edit(kb_copy, "rules/pitfalls.yaml", "- warning: do_not_assume_benign", "- warning: do_not_assume_benig")
    edit(kb_copy, "rules/after_imaging.yaml", "cites: [1]", "cites: [9]")
    code, _, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 1
    assert "nigth_pain" in err and "do_not_assume_benig" in err and "reference 9" in err
    assert "3 problem(s)" in err


def test_missing_knowledge_base_directory(tmp_path, capsys):
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "p.yaml", "--kb", tmp_path / "nokb")
    assert (code, out) == (2, "") and "knowledge base directory not found" in err


def test_validate_accepts_the_bundled_knowledge_base(capsys):
    code, out, _ = run_cli(capsys, "validate")
    assert code == 0 and out.startswith("ok: lumbar_mass")


def test_a_rule_file_that_would_be_skipped_is_an_error(kb_copy, capsys):
    (kb_copy / "rules" / "emergency_triggers.yaml").rename(kb_copy / "rules" / "emergency_triggers.yml")
    code, _, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 1 and "emergency_triggers.yml: not loaded: rule files end in .yaml" in err


def test_a_scenario_file_that_would_be_skipped_is_an_error(kb_copy, capsys):
    (kb_copy / "scenarios" / "saddle_anesthesia.yaml").rename(kb_copy / "scenarios" / "saddle_anesthesia.YAML")
    code, _, err = run_cli(capsys, "test", "--kb", kb_copy)
    assert code == 2 and "saddle_anesthesia.YAML: not loaded: scenario files end in .yaml" in err


@pytest.mark.parametrize(
    "name, text",
    [
        ("tabs.json", '{\n\t"leg_weakness": true,\n\t"radiograph": "normal"\n}\n'),
        ("bom.json", '\ufeff{"leg_weakness": true, "radiograph": "normal"}\n'),
        ("bom.yaml", "\ufeffleg_weakness: true\nradiograph: normal\n"),
    ],
)
def test_valid_json_and_yaml_variants_are_read(name, text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(text, encoding="utf-8")
    code, out, err = run_cli(capsys, "evaluate", name, "--format", "json")
    assert (code, err) == (0, "")
    assert json.loads(out)["inputs"] == {"leg_weakness": True, "radiograph": "normal"}


def test_duplicate_json_key_and_deep_nesting_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "dup.json", '{"leg_weakness": true, "leg_weakness": false}\n')
    write(tmp_path, "deep.json", "[" * 3000 + "]" * 3000 + "\n")
    code, out, err = run_cli(capsys, "evaluate", "dup.json", "deep.json")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "error: dup.json:1:24: duplicate key 'leg_weakness'",
        "error: deep.json: nested more than 40 levels deep: refused",
    ]


def test_a_failing_standard_output_is_one_line(tmp_path, capsys, monkeypatch):
    write(tmp_path, "p.yaml", "leg_weakness: true\n")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys.stdout, "write", full)
    code = main(["evaluate", str(tmp_path / "p.yaml")])
    monkeypatch.undo()
    assert code == 2 and capsys.readouterr().err == "error: cannot write: No space left on device\n"


def test_kb_pointing_at_a_file_says_so(tmp_path, capsys):
    write(tmp_path, "kb.yaml", "x: 1\n")
    code, _, err = run_cli(capsys, "validate", "--kb", tmp_path / "kb.yaml")
    assert code == 1 and "kb.yaml: is not a directory" in err
