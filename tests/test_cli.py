"""The CLI as a user meets it: evaluate (text, JSON, patient audience), facts, validate, packaging."""

import json
import subprocess
import sys

import pytest

from lumbar_kb.engine.loader import default_kb_dir

from .commands import cli

PATIENTS = sorted((default_kb_dir() / "patients").iterdir())


def test_bundled_example_patients_exist():
    assert len(PATIENTS) >= 4


@pytest.mark.parametrize("patient", PATIENTS, ids=[p.name for p in PATIENTS])
def test_json_result_has_the_documented_shape(patient, capsys):
    code, out, err = cli(capsys, "evaluate", patient, "--format", "json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert list(data)[:7] == ["urgency", "urgency_text", "actions", "warnings", "differential", "fired", "unanswered"]
    assert data["urgency"] in ("emergency", "prompt", "routine")
    for key in ("actions", "warnings", "differential"):
        for item in data[key]:
            assert set(item) >= {"code", "text", "because", "citations"}
            assert item["because"] and item["citations"]
    for item in data["actions"]:
        assert item["within_hours"] is None or isinstance(item["within_hours"], (int, float))
    assert [f["order"] for f in data["fired"]] == list(range(1, len(data["fired"]) + 1))
    assert set(data["knowledge_base"]) == {"name", "version", "sha256"}
    assert len(data["knowledge_base"]["sha256"]) == 64


def test_cauda_equina_example_report_reads_urgency_first(capsys):
    code, out, _ = cli(capsys, "evaluate", default_kb_dir() / "patients" / "01-cauda-equina.yaml")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("EMERGENCY:")
    assert "1. Emergency department, immediately  [1]" in out
    assert "2. MRI of the whole spine, within 12 hours  [1]" in out
    assert out.index("Actions:") < out.index("Warnings:") < out.index("Differential:") < out.index("Why")
    assert "ed.saddle_anesthesia [1]" in out and "[1] Guideline Directed Topic Overview" in out


def test_patient_audience_uses_plain_language_from_the_knowledge_base(capsys):
    code, out, _ = cli(
        capsys, "evaluate", default_kb_dir() / "patients" / "01-cauda-equina.yaml", "--audience", "patient"
    )
    assert code == 0
    # no internal labels for patients: the knowledge base's plain words only
    assert out.startswith("This is an emergency. Do the steps below in the time given, starting now.")
    assert not any(label in out for label in ("EMERGENCY", "PROMPT", "ROUTINE", "raise the urgency"))
    assert "Immediately: Go to an emergency department." in out
    assert "An MRI scan of your whole spine." in out
    assert "Why (rules fired" not in out


def test_texts_come_from_the_knowledge_base(kb_copy, tmp_path, capsys):
    guideline = kb_copy / "guideline.yaml"
    guideline.write_text(
        guideline.read_text().replace(
            "Send to an emergency department for emergency evaluation.", "Transfer to the emergency department now."
        )
    )
    patient = tmp_path / "p.yaml"
    patient.write_text("leg_weakness: true\n")
    code, out, _ = cli(capsys, "evaluate", patient, "--kb", kb_copy, "--format", "json")
    action = json.loads(out)["actions"][0]
    assert action["text"] == "Transfer to the emergency department now."


def test_several_patients_give_one_json_object_per_line(capsys):
    code, out, _ = cli(capsys, "evaluate", *PATIENTS, "--format", "json")
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(PATIENTS)
    assert [json.loads(line)["patient_file"] for line in lines] == [str(p) for p in PATIENTS]


def test_facts_lists_the_vocabulary_with_questions(capsys, kb):
    code, out, _ = cli(capsys, "facts", "--format", "json")
    facts = json.loads(out)
    assert code == 0 and len(facts) == len(kb.input_facts)  # every question of the vocabulary, not a copied count
    assert facts[0]["name"] == "leg_weakness" and facts[0]["alarm"] is True
    radiograph = next(f for f in facts if f["name"] == "radiograph")
    assert radiograph["values"] == ["not_done", "normal", "abnormal"] and radiograph["question"]
    code, out, _ = cli(capsys, "facts", "--audience", "patient")
    assert "Can you feel or see a lump in your lower back?" in out


def test_sha256_changes_when_a_rule_file_changes(kb_copy, tmp_path, capsys):
    patient = tmp_path / "p.yaml"
    patient.write_text("palpable_mass: true\n")
    _, before, _ = cli(capsys, "evaluate", patient, "--kb", kb_copy, "--format", "json")
    rules = kb_copy / "rules" / "pitfalls.yaml"
    rules.write_text(rules.read_text() + "\n# a comment changes the exact rules text\n")
    _, after, _ = cli(capsys, "evaluate", patient, "--kb", kb_copy, "--format", "json")
    assert json.loads(before)["knowledge_base"]["sha256"] != json.loads(after)["knowledge_base"]["sha256"]


def test_runs_as_python_dash_m_lumbar_kb():
    proc = subprocess.run([sys.executable, "-m", "lumbar_kb", "validate"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: lumbar_mass")


def test_usage_error_exits_2():
    proc = subprocess.run([sys.executable, "-m", "lumbar_kb", "evaluate"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr and "Traceback" not in proc.stderr


def _actions(parser):
    for action in parser._actions:
        yield parser.prog, action
        for sub in getattr(action, "choices", None) or {}:
            if isinstance(action.choices, dict):
                yield from _actions(action.choices[sub])


def test_the_parser_kept_between_calls_leaves_each_call_its_own_options(capsys):
    """`main` builds its parser once a process: no option's default may be a value a call could change for the
    next (a list, a dict, a set), and options given to one call never reach the next."""
    from lumbar_kb.main import _parser

    shared = [(prog, a.dest) for prog, a in _actions(_parser()) if isinstance(a.default, (list, dict, set))]
    assert shared == []
    patient = str(default_kb_dir() / "patients" / "01-cauda-equina.yaml")
    code, out, _ = cli(capsys, "evaluate", patient, "--format", "json")
    assert code == 0 and json.loads(out)["urgency"] == "emergency"
    code, out, _ = cli(capsys, "evaluate", patient)
    assert code == 0 and not out.lstrip().startswith("{")  # text again: the previous call's --format is gone
    args = _parser().parse_args(["serve", "--cors-origin", "https://a.example"])
    assert args.cors_origin == ["https://a.example"] and _parser().parse_args(["serve"]).cors_origin is None
