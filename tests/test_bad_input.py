"""Bad input gets one clear line per problem naming file, line and subject, exit 2, never a traceback."""

import json
import re
import subprocess
import sys

import pytest

from lumbar_kb.engine.errors import KnowledgeBaseError
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.main import main

from .commands import cli as run_cli
from .guideline import NEUROLOGICAL


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
        [r"p\.yaml:2:17: fact 'primary_cancer': cannot be given here.*cancer_history is false.*cancer_history is true"],
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
        r"\(did you mean 'xray_lumbar'\? a new action code is declared in guideline\.yaml under 'actions:'",
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
    "a question moot by a derived fact (judged before any rule runs, it would never be moot)": (
        "guideline.yaml",
        "suspected_cord_compression: {fact: cord_compression_confirmed, is: true}",
        "suspected_cord_compression: {fact: neuro_symptom, is: true}",
        r"guideline\.yaml:\d+:\d+: .*not_asked_when for 'suspected_cord_compression' reads the derived fact "
        r"'neuro_symptom'",
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
    # validate reports it and evaluate refuses it, both as bad input (exit 2); evaluate writes nothing
    code, out, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 2 and re.search(pattern, err) and "Traceback" not in err
    patient = write(kb_copy.parent, "p.yaml", "palpable_mass: true\n")
    code, out, err = run_cli(capsys, "evaluate", patient, "--kb", kb_copy)
    assert (code, out) == (2, "") and re.search(pattern, err)


def test_every_problem_is_reported_at_once(kb_copy, capsys):
    edit(kb_copy, "rules/concerning.yaml", "{fact: night_pain, is: true}", "{fact: nigth_pain, is: true}")
    edit(kb_copy, "rules/pitfalls.yaml", "- warning: do_not_assume_benign", "- warning: do_not_assume_benig")
    edit(kb_copy, "rules/after_imaging.yaml", "cites: [1]", "cites: [9]")
    code, _, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 2
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
    assert code == 2 and "emergency_triggers.yml: not loaded: rule files end in .yaml" in err


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
    assert code == 2 and err.startswith("error: ") and "kb.yaml: is not a directory" in err  # bad input


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
    "a bidirectional override": ("p.yaml", "note: abc\u202edef\n".encode(), r"p\.yaml:1:7: control character U\+202E"),
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
    "too many values": ("p.yaml", b"x: [" + b"0," * 30_000 + b"0]\n", r"p\.yaml:1:\d+: more than 20,000 values"),
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
    # a limit every bundled knowledge file keeps, and a patient file (its bulk a comment) just past it
    limit = max(path.stat().st_size for path in default_kb_dir().rglob("*.yaml"))
    text = "leg_weakness: true\n# " + "x" * (limit - 20) + "\n"
    write(tmp_path, "p.yaml", text)
    assert run_cli(capsys, "evaluate", "p.yaml")[0] == 0
    monkeypatch.setenv("LUMBAR_KB_LIMIT_MAX_BYTES", str(limit))
    code, _, err = run_cli(capsys, "evaluate", "p.yaml")
    size = len(text.encode())
    assert size > limit
    assert code == 2 and err == f"error: p.yaml: {size:,} bytes, more than the {limit:,} allowed: refused\n"
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


# ---- hostile input: knowledge-base files --------------------------------------------------------------------
@pytest.mark.parametrize(
    "hours, pattern",
    [
        (".nan", r"rules/red_flags\.yaml:12:23: a number must be finite"),
        ("-.inf", r"rules/red_flags\.yaml:12:23: a number must be finite"),
        ("1.0e+400", r"rules/red_flags\.yaml:12:23: a number must be finite"),
        ("1e400", r"rules/red_flags\.yaml:12:23: rule red_flag\.leg_weakness: then/1/within_hours must be a number"),
        ("87600", r"rules/red_flags\.yaml:12:23: rule red_flag\.leg_weakness: .*87600 is greater than the maximum"),
        ("-1", r"rules/red_flags\.yaml:12:23: rule red_flag\.leg_weakness: .*-1 is less than the minimum of 0"),
    ],
)
def test_a_window_must_be_a_finite_number_of_hours(hours, pattern, kb_copy, capsys, monkeypatch):
    edit(kb_copy, "rules/red_flags.yaml", "within_hours: 24", f"within_hours: {hours}")  # line 12, the first
    monkeypatch.chdir(kb_copy)
    code, out, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 2 and re.match("error: " + pattern, err), err
    code, out, err = run_cli(capsys, "check", "--kb", kb_copy, "--format", "json")
    assert (code, out) == (2, "") and re.match("error: " + pattern, err), err


def test_the_loader_refuses_a_window_that_is_not_finite_whatever_the_reader(kb):
    """NaN passes every JSON Schema comparison, so the loader checks windows itself."""
    from lumbar_kb.engine.loader.rules import build_conclusion
    from lumbar_kb.engine.source import Positions

    for hours in (float("nan"), float("inf"), 1e9, True):
        problems = []
        raw = {"action": "emergency_department", "within_hours": hours}
        built = build_conclusion(
            raw, ("rules", 0, "then", 0), Positions("r.yaml"), "rule x", kb.facts, kb.catalog, problems
        )
        assert built is None and len(problems) == 1 and "finite number of hours" in problems[0].message


def test_json_output_is_json_or_nothing():
    from lumbar_kb.common import dumps, dumps_line

    for write_json in (dumps, dumps_line):
        assert json.loads(write_json({"within_hours": 24.5})) == {"within_hours": 24.5}
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ValueError):
                write_json({"within_hours": bad})


def schema_patterns():
    from lumbar_kb.engine.loader import schema_dir

    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    found.append((where, value))
                else:
                    walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    for path in sorted(schema_dir().glob("*.schema.json")):
        walk(json.loads(path.read_text()), path.name)
    return found


# names and values a pattern is meant to accept: each schema pattern must accept one of them
PATTERN_SAMPLES = (
    "leg_weakness",
    "red_flag.leg_weakness",
    "2025-11-12",
    "12",
    "H12",
    "sha256:" + "0" * 64,
    "A" * 86 + "==",  # an Ed25519 signature in base64 (approvals, decisions)
    "ed25519:" + "A" * 43 + "=",  # a board member's public key
)


@pytest.mark.parametrize("where, pattern", schema_patterns())
def test_every_schema_pattern_is_anchored_at_both_ends(where, pattern):
    """jsonschema applies a pattern with re.search, where `$` also matches before a final newline: every
    pattern must refuse what it accepts with a newline (or anything) before or after it."""
    accepted = [s for s in PATTERN_SAMPLES if re.search(pattern, s)]
    assert accepted, f"{where}: add a sample this pattern accepts to PATTERN_SAMPLES"
    for sample in accepted:
        for bad in (sample + "\n", "\n" + sample, sample + "\n\n", sample + " ", "x" + sample + "\n" + sample):
            assert re.search(pattern, bad) is None, f"{where}: {pattern!r} accepts {bad!r}"
    assert re.search(pattern, "\u0663\u0663\u0663\u0663-11-12") is None  # Arabic-Indic digits are not [0-9]


def test_a_rule_id_with_a_trailing_newline_is_refused_and_shown_escaped(kb_copy, capsys, monkeypatch):
    edit(kb_copy, "rules/red_flags.yaml", "- id: red_flag.leg_weakness", '- id: "zz.a\\n"')
    monkeypatch.chdir(kb_copy)
    code, _, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 2 and "rules/red_flags.yaml:6:9: rule zz.a\\n: id 'zz.a\\n' is not a valid name" in err, err
    code, out, err = run_cli(capsys, "evaluate", kb_copy / "patients" / "01-cauda-equina.yaml", "--kb", kb_copy)
    assert (code, out) == (2, "") and "is not a valid name" in err and "Traceback" not in err


def test_a_fact_name_with_a_control_character_is_refused(kb_copy, capsys, monkeypatch):
    edit(kb_copy, "facts.yaml", "  night_pain:\n", '  "zz_x\\n":\n')
    monkeypatch.chdir(kb_copy)
    code, _, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 2 and re.match(r"error: facts\.yaml:\d+:3: control character U\+000A in a key: refused", err), err


def test_esc_in_a_rule_title_is_refused_at_load_naming_the_file(kb_copy, capsys, monkeypatch, tmp_path):
    title = "Decreased strength in the legs is a red flag"
    edit(kb_copy, "rules/red_flags.yaml", f"title: {title}", f'title: "\\e[31m{title}"')
    monkeypatch.chdir(kb_copy)
    code, _, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 2 and err.startswith("error: rules/red_flags.yaml:7:12: control character U+001B in a value"), err
    code, out, err = run_cli(capsys, "graph", "--kb", kb_copy, "-o", tmp_path / "g.svg")
    assert (code, out) == (2, "") and err.startswith("error: rules/red_flags.yaml:7:12: control character U+001B")
    assert not (tmp_path / "g.svg").exists()


@pytest.mark.parametrize("kind", ["directory", "fifo", "dangling symlink"])
def test_a_rule_file_that_cannot_be_read_is_named_and_not_a_write_error(kind, kb_copy):
    import os

    path = kb_copy / "rules" / "extra.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("nowhere.yaml", path)
    message = {
        "directory": "is a directory, not a file",
        "fifo": "is a FIFO (named pipe), not a regular file: refused",
        "dangling symlink": "no such file",
    }[kind]
    proc = guarded(["validate", "--kb", "kb"], kb_copy.parent)
    assert proc.returncode == 2 and proc.stderr.splitlines()[0] == f"error: kb/rules/extra.yaml: {message}", proc.stderr
    proc = guarded(["evaluate", "kb/patients/01-cauda-equina.yaml", "--kb", "kb"], kb_copy.parent)
    assert (proc.returncode, proc.stdout) == (2, "") and "cannot write" not in proc.stderr
    assert proc.stderr == f"error: kb/rules/extra.yaml: {message}\n"


def test_billion_laughs_in_a_rule_file_is_refused(kb_copy):
    with open(kb_copy / "rules" / "pitfalls.yaml", "a") as out:
        out.write("".join(f"x{line}\n" for line in LAUGHS.splitlines()))
    proc = guarded(["validate", "--kb", "kb"], kb_copy.parent)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: kb/rules/pitfalls.yaml: expands to"), proc.stderr


# ---- compile cost ----------------------------------------------------------------------------------------------
BOOLS = ["leg_weakness", "gait_difficulty", "radiating_numbness", "unable_to_walk", "saddle_anesthesia"]


def blow_up_condition(anys=10):
    """`all` of ten `any`-of-three: 3**10 = 59,049 conjuncts if expanded."""
    items = ", ".join("{any: [" + ", ".join(f"{{fact: {f}, is: true}}" for f in BOOLS[:3]) + "]}" for _ in range(anys))
    return "{all: [" + items + "]}"


def test_an_exponential_condition_is_refused_at_load_naming_the_rule(kb_copy, capsys, monkeypatch):
    import time

    edit(kb_copy, "rules/concerning.yaml", "when: {fact: night_pain, is: true}", f"when: {blow_up_condition()}")
    monkeypatch.chdir(kb_copy)
    started = time.perf_counter()
    code, _, err = run_cli(capsys, "validate", "--kb", kb_copy)
    elapsed = time.perf_counter() - started
    assert code == 2 and elapsed < 10  # a hang guard only; `make bench-hostile` measures it (~0.1 s)
    assert err.startswith(
        "error: rules/concerning.yaml:17:11: rule concerning.night_pain: the condition expands to more than 256 "
        "alternatives when compiled"
    ), err


def test_an_expansion_within_the_bound_still_compiles(kb_copy, capsys, monkeypatch):
    # 3**5 = 243 alternatives before pruning: under the bound of 256, so it loads and runs
    edit(kb_copy, "rules/concerning.yaml", "when: {fact: night_pain, is: true}", f"when: {blow_up_condition(5)}")
    code, out, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 0, err


def test_to_dnf_refuses_a_large_condition_built_in_code():
    from lumbar_kb.engine.logic import ConditionTooLarge, alternatives, to_dnf
    from lumbar_kb.engine.model import All, AnyOf, Not, Test

    three = AnyOf(tuple(Test(f, frozenset([True])) for f in BOOLS[:3]))
    domains = dict.fromkeys(BOOLS, (True, False))
    two, other_two = AnyOf(three.items[:2]), AnyOf(tuple(Test(f, frozenset([True])) for f in BOOLS[3:5]))
    assert alternatives(All((three,) * 5)) == 243
    assert len(to_dnf(All((two, other_two)), domains)) == 4  # disjoint facts: nothing pruned, the bound is exact
    assert alternatives(Not(All((Not(three),) * 5))) == 15  # De Morgan: not (all of nots) = any of the anys, 5 * 3
    with pytest.raises(ConditionTooLarge):
        to_dnf(All((three,) * 10), domains)


def test_conditions_nested_deeper_than_the_bound_are_refused_not_a_recursion_error(kb):
    from lumbar_kb.engine.loader.conditions import Conditions
    from lumbar_kb.engine.source import Positions

    raw: dict = {"fact": "leg_weakness", "is": True}
    for _ in range(250):
        raw = {"not": raw}
    problems = []
    assert Conditions(kb.facts, problems).condition(raw, ("when",), Positions("r.yaml"), "rule x") is None
    assert [p.message for p in problems] == ["conditions nested more than 32 deep: refused"]


def test_not_nested_250_deep_in_a_rule_file_is_one_clear_error(kb_copy, capsys, monkeypatch):
    deep = "{fact: night_pain, is: true}"
    for _ in range(250):
        deep = "{not: " + deep + "}"
    edit(kb_copy, "rules/concerning.yaml", "when: {fact: night_pain, is: true}", f"when: {deep}")
    monkeypatch.chdir(kb_copy)
    code, _, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 2 and re.match(r"error: rules/concerning\.yaml:17:\d+: nested more than 40 levels deep", err), err


def test_the_compiled_knowledge_base_is_built_once_per_content(kb):
    from dataclasses import replace

    from lumbar_kb.engine.compiler import compile_kb

    assert compile_kb(kb) is compile_kb(kb)
    fewer = replace(kb, rules=kb.rules[1:])  # same files' sha256, different rules: compiled anew
    assert compile_kb(fewer) is not compile_kb(kb) and kb.rules[0].id not in compile_kb(fewer).rules


# ---- output hygiene ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask, mode", [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_an_output_file_honours_the_umask(mask, mode, tmp_path):
    import os

    def child():
        os.umask(mask)

    proc = subprocess.run(
        [sys.executable, "-m", "lumbar_kb", "graph", "-o", "g.dot"], cwd=tmp_path, capture_output=True, preexec_fn=child
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "g.dot").stat().st_mode & 0o777 == mode  # 0666 less the umask, as open() gives


def test_a_killed_runs_temporaries_are_swept_by_the_next_write(tmp_path, capsys, monkeypatch):
    import os
    import time

    from lumbar_kb.engine.outputs import STALE_AFTER_S, TEMP_MARK

    monkeypatch.chdir(tmp_path)
    old_file = tmp_path / f".g.dot{TEMP_MARK}abc123.tmp"  # as a kill -9 during a write leaves them
    old_dir = tmp_path / f".write-missing{TEMP_MARK}xyz"
    fresh = tmp_path / f".other.svg{TEMP_MARK}def456.tmp"  # a write going on right now: left alone
    old_file.write_bytes(b"half")
    old_dir.mkdir()
    (old_dir / "a.yaml").write_text("x")
    fresh.write_bytes(b"in progress")
    stale = time.time() - STALE_AFTER_S - 60
    for path in (old_file, old_dir):
        os.utime(path, (stale, stale))
    mine = tmp_path / "notes.tmp"  # not ours: never touched
    os.utime(mine.parent)
    mine.write_text("keep")
    os.utime(mine, (stale, stale))
    code, _, err = run_cli(capsys, "graph", "-o", "g.dot")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["g.dot", fresh.name, "notes.tmp"])


def test_a_failed_write_leaves_no_temporary_behind(tmp_path, capsys):
    target = tmp_path / "out.dot"
    target.mkdir()  # renaming a file over a directory fails
    code, _, err = run_cli(capsys, "graph", "-o", target)
    assert code == 2 and err.startswith(f"error: {target}: cannot write the output")
    assert list(tmp_path.iterdir()) == [target] and list(target.iterdir()) == []


@pytest.mark.parametrize(
    "argv, shown",
    [
        (["evaluate", "p\x1b[2J.yaml"], "error: p\\x1b[2J.yaml: no such file"),
        (["evaluate", "p\n.yaml"], "error: p\\n.yaml: no such file"),
        (["evaluate", "x.yaml", "--kb", "kb\x1b]0;owned\x07"], "error: kb\\x1b]0;owned\\x07: knowledge base directory"),
        (["graph", "--focus", "rule:\x1b[31mred"], "rule:\\x1b[31mred"),
        (["evaluate", "\u202eevil.yaml"], "error: \\u202eevil.yaml: no such file"),
    ],
)
def test_untrusted_text_is_escaped_in_every_message(argv, shown, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert shown in err and "\x1b" not in err and "\u202e" not in err and err.count("\n") == 1, err


def test_ansi_in_a_patient_key_never_reaches_the_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "p.yaml", '"\\e[2Jleg_weakness": true\n')
    write(tmp_path, "p.json", '{"leg_weakness\\u001b[8m": true}')
    code, out, err = run_cli(capsys, "evaluate", "p.yaml", "p.json")
    assert (code, out) == (2, "") and "\x1b" not in err
    assert err.splitlines() == [
        "error: p.yaml:1:1: control character U+001B in a key: refused",
        "error: p.json: control character U+001B in a key: refused",
    ]


def test_a_non_utf8_file_name_is_shown_by_its_bytes(tmp_path):
    import os

    name = b"caf\xe9.yaml"
    with open(os.path.join(os.fsencode(tmp_path), name), "w") as out:
        out.write("leg_weaknes: true\n")
    proc = subprocess.run([sys.executable, "-m", "lumbar_kb", "evaluate", name], cwd=tmp_path, capture_output=True)
    assert proc.returncode == 2
    assert (
        proc.stderr.decode("utf-8")
        == "error: caf\\xe9.yaml:1:1: fact 'leg_weaknes': unknown fact (did you mean 'leg_weakness'?)\n"
    )


def test_a_strict_c_locale_does_not_break_writing_text(kb_copy, tmp_path):
    """LC_ALL=C without UTF-8 mode gives an ASCII standard output: knowledge-base text that is not ASCII
    (an author's "≤ 24 h") is written escaped, never a UnicodeEncodeError."""
    import os

    edit(kb_copy, "guideline.yaml", "label: EMERGENCY", "label: EMERGENCY ≤ 24 h")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LANG", "LC_CTYPE", "PYTHONUTF8")}
    env.update(LC_ALL="C", PYTHONUTF8="0")
    proc = subprocess.run(
        [sys.executable, "-m", "lumbar_kb", "evaluate", "kb/patients/01-cauda-equina.yaml", "--kb", "kb"],
        cwd=kb_copy.parent,
        capture_output=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"EMERGENCY \\u2264 24 h" in proc.stdout and b"Traceback" not in proc.stderr


# ---- exit codes: an internal error is not the user's fault ------------------------------------------------------
def test_rules_that_contradict_each_other_are_bad_input_naming_both(kb_copy, tmp_path, capsys):
    # neuro.absent made to fire beside neuro.present: the knowledge base contradicts itself for this patient.
    # That is the author's to fix (exit 2, both rules named with file:line), never "internal error" (exit 3);
    # validate finds it before any patient does, with such a patient.
    rules = kb_copy / "rules" / "red_flags.yaml"
    rules.write_text(rules.read_text().replace("        - {fact: leg_weakness, is: false}\n", "", 1))
    patient = write(tmp_path, "p.yaml", "".join(f"{f}: {str(f == 'leg_weakness').lower()}\n" for f in NEUROLOGICAL))
    code, out, err = run_cli(capsys, "evaluate", patient, "--kb", kb_copy)
    assert (code, out) == (2, ""), err
    assert err.startswith("error: ") and "internal error" not in err and "Traceback" not in err
    assert re.search(
        r"red_flags\.yaml:\d+: rule neuro\.absent: rules neuro\.present \(\S*red_flags\.yaml:\d+\)", err
    ), err
    assert "neuro_symptom = true and neuro_symptom = false" in err
    code, out, err = run_cli(capsys, "validate", "--kb", kb_copy)
    assert code == 2 and not out, out
    assert "neuro.present derives true; neuro.absent derives false" in err and "leg_weakness: true" in err, err


def test_an_engine_failure_is_an_internal_error_with_the_traceback_saved(tmp_path, capsys, monkeypatch):
    import tempfile

    from lumbar_kb.engine import session
    from lumbar_kb.engine.errors import EngineError

    def failing(self, inputs):  # a seeded bug in the engine: what no input can cause
        raise EngineError("durable-rules could not retract a fact (code 99)")

    monkeypatch.setattr(session.Engine, "run", failing)
    patient = write(tmp_path, "p.yaml", "leg_weakness: true\n")
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(crashes))
    code, out, err = run_cli(capsys, "evaluate", patient)
    assert (code, out) == (3, "")
    saved = list(crashes.iterdir())
    assert len(saved) == 1 and saved[0].name.startswith("lumbar-kb-crash-")
    assert err == (
        "internal error, please report: EngineError: durable-rules could not retract a fact (code 99) "
        f"(the traceback is saved in {saved[0]})\n"
    ), err
    assert "Traceback (most recent call last)" in saved[0].read_text() and "Traceback" not in err
    assert saved[0].stat().st_mode & 0o777 == 0o600  # a traceback may quote patient data: private


def test_an_unexpected_exception_is_exit_3_never_bad_input(tmp_path, capsys, monkeypatch):
    import tempfile

    from lumbar_kb.main import internal_error

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    try:
        {}["\x1b[31mkey"]
    except KeyError as exc:
        code = internal_error(exc)
    err = capsys.readouterr().err
    assert code == 3 and err.startswith("internal error, please report: KeyError: '\\x1b[31mkey' (the traceback")
    assert "\x1b" not in err


def test_an_unreadable_rule_file_is_named_and_not_a_write_error(kb_copy):
    """Permission denied on a rule file. Root reads a mode-000 file through two capabilities: the child drops
    them from its bounding set first (prctl PR_CAPBSET_DROP), so mode 000 means for it what it means for
    anyone else."""
    import ctypes
    import os

    (kb_copy / "rules" / "pitfalls.yaml").chmod(0o000)

    def without_read_override():
        if os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
                assert libc.prctl(24, capability, 0, 0, 0) == 0  # PR_CAPBSET_DROP

    argv = [sys.executable, "-m", "lumbar_kb", "evaluate", "kb/patients/01-cauda-equina.yaml", "--kb", "kb"]
    proc = subprocess.run(
        argv, cwd=kb_copy.parent, capture_output=True, text=True, preexec_fn=without_read_override, timeout=60
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "error: kb/rules/pitfalls.yaml: cannot read: permission denied\n"
