"""`lumbar-kb explain`: why-chains back to the answers with citations, why-not with the nearest rules, their
three-valued conditions and the smallest change (re-evaluated), and clear errors for unknown codes."""

from __future__ import annotations

import json

import pytest

from lumbar_kb.engine.analysis.explain import Target, explain, resolve_target
from lumbar_kb.engine.api import Evaluator
from lumbar_kb.engine.errors import LumbarKBError
from lumbar_kb.engine.loader import load
from lumbar_kb.main import main


@pytest.fixture(scope="module")
def kb():
    return load()


def write(tmp_path, text: str):
    path = tmp_path / "patient.yaml"
    path.write_text(text)
    return path


# a cancer history and a neurological symptom that is not a red flag: "MRI must be performed within 12 hours if you
# have any neurological symptoms" beats the 24-48 hours for rapidly developing deficits
CANCER_NEURO = {"progressive_neuro_deficit": True, "cancer_history": True, "palpable_mass": True}


def test_why_follows_the_window_back_to_the_answers(kb):
    ex = explain(kb, CANCER_NEURO, Target("action", "mri_whole_spine"))
    assert ex.reached and ex.summary == "MRI of the whole spine, within 12 hours"
    first = ex.why[0]
    assert first.rule == "cancer.mri_12h_neuro" and first.note == "gives the window"
    derived = {fact: steps for fact, _, steps in first.matched}
    assert [s.rule for s in derived["cancer_known"]] == ["cancer.known"]
    assert derived["cancer_known"][0].matched == [("cancer_history", True, None)]
    assert [s.rule for s in derived["neuro_symptom"]] == ["neuro.present"]
    assert derived["neuro_symptom"][0].matched == [("progressive_neuro_deficit", True, None)]
    assert {s.rule for s in ex.why[1:]} == {"imaging.mri_window.progressive", "cancer.urgent_whole_spine_mri"}
    assert all(s.note == "a later window, not used" for s in ex.why[1:])
    assert ex.cited() == [1, 2]


def test_why_routine_with_no_rule_says_it_is_the_default(kb):
    every_alarm_no = {f.name: False for f in kb.input_facts if f.alarm}
    ex = explain(kb, every_alarm_no, Target("urgency", "routine"))
    assert ex.reached and ex.why == []
    assert "the level of a patient no rule raises" in ex.note


def test_why_prompt_for_nothing_answered_names_the_unanswered_alarm_questions(kb):
    ex = explain(kb, {}, Target("urgency", "prompt"))
    assert ex.reached and ex.why == []
    assert "floor while an alarm question is unanswered" in ex.note and "leg_weakness" in ex.note


def test_why_not_shows_three_valued_conditions_and_the_smallest_change(kb):
    patient = {"palpable_mass": True, "leg_weakness": False}
    ex = explain(kb, patient, Target("action", "xray_lumbar"), want=False)
    assert not ex.reached
    [gap] = ex.nearest
    assert gap.rule == "imaging.xray_first" and gap.changes_needed == 6
    assert gap.condition.value is None  # unknown, not false: the neurological questions are unanswered
    mass, neuro = gap.condition.children
    assert (mass.text, mass.value) == ("palpable_mass is true", True)
    assert (neuro.text, neuro.value) == ("neuro_symptom is false", None)
    [absent] = neuro.derivations
    assert absent.rule == "neuro.absent"
    values = {c.text: c.value for c in absent.condition.children}
    assert values["leg_weakness is false"] is True and values["gait_difficulty is false"] is None
    best = ex.smallest[0]
    assert len(best.changes) == 6
    assert all(c.before is None and c.after is False for c in best.changes)
    assert "xray_lumbar" in best.outcome["actions"]
    # the change really reaches it
    after = dict(patient, **{c.fact: c.after for c in best.changes})
    assert "xray_lumbar" in {a.code for a in Evaluator(kb).evaluate(after).actions}


def test_why_not_with_one_change_lists_every_alternative(kb):
    ex = explain(kb, {"night_pain": True}, Target("urgency", "emergency"), want=False)
    assert len(ex.smallest) == 5  # capped
    assert all(len(o.changes) == 1 and o.outcome["urgency"] == "emergency" for o in ex.smallest)
    assert ex.nearest and ex.nearest[0].changes_needed == 1
    assert ex.other_rules > 0


def test_why_not_a_lower_urgency_explains_the_maximum(kb):
    ex = explain(kb, {"leg_weakness": True}, Target("urgency", "prompt"), want=False)
    assert "higher than prompt" in ex.note
    assert ex.smallest and ex.smallest[0].outcome["urgency"] == "prompt"


def test_why_not_for_a_rule_id(kb):
    ex = explain(kb, {}, Target("rule", "cancer.mri_12h_neuro"), want=False)
    assert ex.nearest[0].rule == "cancer.mri_12h_neuro" and ex.nearest[0].changes_needed == 2
    assert len(ex.smallest[0].changes) == 2


def test_resolve_target(kb):
    assert resolve_target(kb, "action:mri_whole_spine") == Target("action", "mri_whole_spine")
    assert resolve_target(kb, "mri_whole_spine") == Target("action", "mri_whole_spine")
    assert resolve_target(kb, "lipoma") == Target("differential", "lipoma")
    assert resolve_target(kb, "neuro.present") == Target("rule", "neuro.present")
    with pytest.raises(LumbarKBError, match="did you mean 'action:mri_whole_spine'"):
        resolve_target(kb, "action:mri_whole_spin")


def test_resolve_target_takes_rule_ids_and_ignores_case_where_unambiguous(kb):
    assert resolve_target(kb, "rule:neuro.present") == Target("rule", "neuro.present")
    assert resolve_target(kb, "Rule:Neuro.Present") == Target("rule", "neuro.present")
    assert resolve_target(kb, "urgency:EMERGENCY") == Target("urgency", "emergency")
    assert resolve_target(kb, "ACTIONS:mri_whole_spine") == Target("action", "mri_whole_spine")
    assert resolve_target(kb, "Lipoma") == Target("differential", "lipoma")
    for empty in ("", "  "):
        with pytest.raises(LumbarKBError, match="the name is empty"):
            resolve_target(kb, empty)
    with pytest.raises(LumbarKBError, match="unknown conclusion or rule 'rule:neuro.presnt'"):
        resolve_target(kb, "rule:neuro.presnt")


def test_explain_and_graph_focus_resolve_names_alike(kb):
    from lumbar_kb.visualize.graph import build_graph, resolve

    graph = build_graph(kb)
    for text in ("rule:neuro.present", "neuro.present", "URGENCY:emergency", "mri_whole_spine", "Lipoma"):
        assert str(resolve_target(kb, text)).replace("rule ", "rule:") == resolve(graph, text)


def test_cli_rule_prefix_and_any_case(tmp_path, capsys):
    path = write(tmp_path, "leg_weakness: true\n")
    assert main(["explain", str(path), "--why", "urgency:EMERGENCY"]) == 0
    assert capsys.readouterr().out.startswith("urgency:emergency is reached for this patient")
    assert main(["explain", str(path), "--why", "rule:red_flag.leg_weakness"]) == 0
    assert capsys.readouterr().out.startswith("rule red_flag.leg_weakness is reached for this patient")
    assert main(["explain", str(path), "--why-not", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: explain: the name is empty") and err.count("\n") == 1


def test_cli_why_text(tmp_path, capsys):
    path = write(tmp_path, "radiating_numbness: true\ncancer_history: true\n")
    assert main(["explain", str(path), "--why", "action:mri_whole_spine"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "action:mri_whole_spine is reached for this patient: MRI of the whole spine, within 12 hours."
    )
    assert "cancer.mri_12h_neuro [1]: action mri_whole_spine, within 12 hours - gives the window" in out
    assert "matched cancer_history = yes (answered)" in out
    assert "References:\n  [1] Guideline Directed Topic Overview" in out


def test_cli_why_not_text_and_json(tmp_path, capsys):
    path = write(tmp_path, "palpable_mass: true\n")
    assert main(["explain", str(path), "--why-not", "differential:lipoma"]) == 0
    out = capsys.readouterr().out
    assert "differential:lipoma is not reached" in out
    assert "[unknown] cancer_known is false" in out
    assert "Smallest change that reaches it (1 answer):\n  cancer_history: unknown -> no" in out
    assert main(["explain", str(path), "--why-not", "differential:lipoma", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reached"] is False
    assert data["smallest_change"][0]["changes"] == [{"fact": "cancer_history", "from": None, "to": False}]


def test_cli_unknown_code_is_exit_2_with_did_you_mean(tmp_path, capsys):
    path = write(tmp_path, "{}\n")
    assert main(["explain", str(path), "--why", "warning:do_not_delay"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown conclusion or rule 'warning:do_not_delay'" in err
    assert "did you mean 'warning:do_not_delay_imaging'?" in err


def test_cli_bad_patient_is_exit_2(tmp_path, capsys):
    path = write(tmp_path, "leg_weaknes: true\n")
    assert main(["explain", str(path), "--why", "urgency:emergency"]) == 2
    assert "did you mean 'leg_weakness'?" in capsys.readouterr().err
