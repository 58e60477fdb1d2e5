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


# ---- hostile input: the reading front door (engine/source.py) ---------------------------------------------------
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)

HOSTILE_PATIENTS = {
    # name: (file name, bytes, a regular expression the one error line must match)
    "billion laughs": ("p.yaml", LAUGHS.encode(), r"p\.yaml: expands to [\d,]+ values \(more than 20,000"),
    "recursive alias": ("p.yaml", b"a: &a [*a]\n", r"p\.yaml:1:4: an alias refers to .* \(a cycle\)"),
    "too many aliases": (
        "p.yaml",
        ("x: &x 1\ny: [" + ", ".join(["*x"] * 101) + "]\n").encode(),
        r"p\.yaml:2:\d+: more than 100 aliases",
    ),
    "deep nesting": ("p.yaml", b"a: " + b"[" * 5000 + b"\n", r"p\.yaml:1:\d+: nested more than 40 levels"),
    "NUL": ("p.yaml", b"leg_weakness: true\nnote: 'a\x00b'\n", r"p\.yaml:2:9: control character U\+0000"),
    "DEL": ("p.yaml", b"note: a\x7fb\n", r"p\.yaml:1:8: control character U\+007F"),
    "C1 control": ("p.yaml", "note: a\x9bb\n".encode(), r"p\.yaml:1:8: control character U\+009B"),
    "U+FFFE": ("p.json", '{"note": "a\ufffe"}'.encode(), r"p\.json:1:12: control character U\+FFFE"),
    "ESC escaped in YAML": ("p.yaml", b'note: "\\e[31mred"\n', r"p\.yaml:1:7: control character U\+001B in a value"),
    "ESC escaped in JSON": ("p.json", b'{"note": "\\u001b[2J"}', r"p\.json: control character U\+001B in a value"),
    "5000-digit integer": ("p.yaml", b"id: " + b"9" * 5000 + b"\n", r"p\.yaml:1:5: an integer of more than 18"),
    "5000-digit JSON integer": ("p.json", b'{"id": ' + b"9" * 5000 + b"}", r"p\.json:1:8: an integer of more than"),
    "!!bool '0'": ("p.yaml", b'leg_weakness: !!bool "0"\n', r"p\.yaml:1:15: '0' is not a valid !!bool"),
    "bad !!int": ("p.yaml", b'id: !!int "twelve"\n', r"p\.yaml:1:5: 'twelve' is not a valid !!int"),
    "bad !!float": ("p.yaml", b'id: !!float "x"\n', r"p\.yaml:1:5: 'x' is not a valid !!float"),
    "bad !!timestamp": ("p.yaml", b"id: !!timestamp 2024-13-45\n", r"p\.yaml:1:5: '2024-13-45' is not a valid"),
    "unknown tag": ("p.yaml", b"id: !x y\n", r"p\.yaml:1:5: the tag !x is not allowed"),
    "!!binary": ("p.yaml", b"id: !!binary aGk=\n", r"p\.yaml:1:5: the tag !!binary is not allowed"),
    "!!set": ("p.yaml", b"id: !!set {a}\n", r"p\.yaml:1:5: the tag !!set is not allowed"),
    ".nan": ("p.yaml", b"id: .nan\n", r"p\.yaml:1:5: a number must be finite"),
    ".inf": ("p.yaml", b"id: -.inf\n", r"p\.yaml:1:5: a number must be finite"),
    "1e400 in JSON": ("p.json", b'{"id": 1e400}', r"p\.json:1:8: a number must be finite"),
    "NaN in JSON": ("p.json", b'{"id": NaN}', r"p\.json:1:8: NaN is not a JSON number"),
    "a huge string": ("p.yaml", b"note: " + b"x" * 20_000 + b"\n", r"p\.yaml:1:7: a value of 20,000 characters"),
    "too big": ("p.yaml", b"# " + b"x" * 300_000 + b"\n", r"p\.yaml: 300,003 bytes, more than the 262,144"),
    "not UTF-8": ("p.yaml", b"note: caf\xe9\n", r"p\.yaml:1: not UTF-8 text"),
    "a list as a key": ("p.yaml", b"? [a]\n: 1\n", r"p\.yaml:1:3: a mapping key must be a string"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PATIENTS))
def test_hostile_patient_file_is_one_clear_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, data, pattern = HOSTILE_PATIENTS[case]
    (tmp_path / name).write_bytes(data)
    code, out, err = run_cli(capsys, "evaluate", name, "--format", "json")
    assert (code, out) == (2, ""), err
    assert len(err.splitlines()) == 1, err
    assert re.fullmatch(r"error: " + pattern + r".*\n", err), err


def guarded(argv, cwd, timeout=20):
    """The CLI in a child process with a hang guard and an address-space cap: a defect that expands a
    document or reads a device fails this test instead of taking the machine down."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    return subprocess.run(
        [sys.executable, "-m", "lumbar_kb", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        preexec_fn=cap,
    )


def test_billion_laughs_in_a_real_process_is_refused_fast_and_small(tmp_path):
    (tmp_path / "p.yaml").write_text(LAUGHS)
    proc = guarded(["evaluate", "p.yaml"], tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    # a: 1 list + 9 strings = 10 values; each next list holds 9 of the one before: 1 + 9 * previous (91, 820,
    # ..., 435,848,050 for i); the document: 1 mapping + 9 keys + the nine lists = 490,329,064
    assert proc.stderr.startswith("error: p.yaml: expands to 490,329,064 values") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "directory", "symlink loop"])
def test_files_that_are_not_regular_files_are_refused_without_reading(special, tmp_path):
    import os

    target = {"/dev/zero": "/dev/zero", "fifo": "q.yaml", "directory": "d.yaml", "symlink loop": "l1.yaml"}[special]
    if special == "fifo":
        os.mkfifo(tmp_path / "q.yaml")  # nobody writes: a blocking open would hang forever
    elif special == "directory":
        (tmp_path / "d.yaml").mkdir()
    elif special == "symlink loop":
        os.symlink("l2.yaml", tmp_path / "l1.yaml")
        os.symlink("l1.yaml", tmp_path / "l2.yaml")
    proc = guarded(["evaluate", target], tmp_path)
    expected = {
        "/dev/zero": "error: /dev/zero: is a character device, not a regular file: refused\n",
        "fifo": "error: q.yaml: is a FIFO (named pipe), not a regular file: refused\n",
        "directory": "error: d.yaml: is a directory, not a file\n",
        "symlink loop": "error: l1.yaml: a symbolic link loop (too many levels of symbolic links)\n",
    }[special]
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", expected)


def test_limits_are_configurable_and_a_bad_setting_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "p.yaml", "leg_weakness: true\nnote: " + "x" * 9000 + "\n")  # the bundled files: < 8,000
    assert run_cli(capsys, "evaluate", "p.yaml")[0] == 0
    monkeypatch.setenv("LUMBAR_KB_LIMIT_MAX_BYTES", "8000")
    code, _, err = run_cli(capsys, "evaluate", "p.yaml")
    assert code == 2 and err == "error: p.yaml: 9,026 bytes, more than the 8,000 allowed: refused\n"
    monkeypatch.setenv("LUMBAR_KB_LIMIT_MAX_BYTES", "lots")
    code, _, err = run_cli(capsys, "evaluate", "p.yaml")
    assert code == 2 and err == "error: LUMBAR_KB_LIMIT_MAX_BYTES must be a positive whole number, not 'lots'\n"


def test_many_problems_print_a_bounded_number_of_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "p.yaml", "".join(f"unknown_{i}: true\n" for i in range(500)))
    code, _, err = run_cli(capsys, "evaluate", "p.yaml")
    lines = err.splitlines()
    assert code == 2 and len(lines) == 21
    assert lines[0].startswith("error: p.yaml:1:1: fact 'unknown_0': unknown fact")
    assert lines[-1] == "error: ... and 480 more problem(s) not shown"
