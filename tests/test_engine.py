"""The engine: authors' scenarios, agreement with the reference evaluator, determinism, durable's edges."""

import json
import os
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings

from lumbar_kb.engine.analysis.escalation import decide as build
from lumbar_kb.engine.api import reference_result
from lumbar_kb.engine.errors import ContradictoryRules, EngineError, KnowledgeBaseError
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.engine.patient import random_patient
from lumbar_kb.engine.reference import ReferenceEvaluator
from lumbar_kb.engine.scenarios import compare, load_scenarios
from lumbar_kb.engine.session import Engine

from .bundled import KB
from .conftest import ROOT
from .guideline import NEUROLOGICAL
from .strategies import patients
from .test_differential import brute_force, raw_rules

SCENARIOS = load_scenarios(KB)
BUNDLED_RULES = raw_rules(KB)
QUICK_EXAMPLES = 60 if os.environ.get("LUMBAR_KB_QUICK") else 300  # make mutation runs the tests per mutant


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[os.path.basename(s.file) for s in SCENARIOS])
def test_author_scenario(scenario, evaluator):
    result = build(evaluator.kb, evaluator.engine.run(scenario.patient))
    mismatches = compare(scenario, result)
    assert not mismatches, "\n".join(map(str, mismatches))


def test_every_scenario_file_is_collected():
    files = sorted(p.name for p in (default_kb_dir() / "scenarios").glob("*.yaml"))
    assert sorted(os.path.basename(s.file) for s in SCENARIOS) == files
    assert len(files) >= 15


@settings(max_examples=QUICK_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patients())
def test_engine_reference_and_brute_force_agree_on_the_bundled_rules(kb, evaluator, reference, facts):
    """The durable engine and the reference against the brute force of test_differential (written from first
    principles, sharing no code with either): the same firings, in the same order, citing the same evidence,
    deriving the same facts; and the same Result JSON from both traces."""
    expected, derived = brute_force(BUNDLED_RULES, facts)
    engine, oracle = evaluator.engine.run(facts), reference.run(facts)
    for trace in (engine, oracle):
        assert [(f.rule, list(f.matched.items())) for f in trace.firings] == expected
        assert trace.derived == derived
    assert build(kb, engine).to_dict() == build(kb, oracle).to_dict()


def test_the_stratified_patients_together_fire_every_rule(kb, evaluator):
    """The patients drawn above are not vacuous: together they fire every rule of the bundled guideline."""
    fired = set()

    @settings(max_examples=300, database=None, derandomize=True, deadline=None)
    @given(patients())
    def collect(facts):
        fired.update(f.rule for f in evaluator.engine.run(facts).firings)

    collect()
    assert fired == {r.id for r in kb.rules}


def test_trace_records_rules_in_order_with_matched_facts(evaluator):
    trace = evaluator.engine.run({"leg_weakness": True, "gait_difficulty": True, "cancer_history": True})
    orders = [f.order for f in trace.firings]
    assert orders == list(range(1, len(orders) + 1))
    by_rule = {f.rule: f for f in trace.firings}
    assert by_rule["neuro.present"].matched == {"leg_weakness": True, "gait_difficulty": True}
    assert by_rule["cancer.mri_12h_neuro"].matched == {"cancer_known": True, "neuro_symptom": True}
    # a derived fact is used only after the rule deriving it fired
    assert by_rule["neuro.present"].order < by_rule["cancer.mri_12h_neuro"].order
    assert trace.derived == {"neuro_symptom": True, "cancer_known": True}


def test_result_json_is_byte_identical_across_processes_and_hash_seeds(tmp_path):
    patient = ROOT / "knowledge/lumbar_mass/patients/02-breast-cancer-back-pain.yaml"
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-m", "lumbar_kb", "evaluate", str(patient), "--format", "json"],
            capture_output=True,
            env=env,
            check=True,
            cwd=tmp_path,
        ).stdout
        outputs.add(out)
    assert len(outputs) == 1
    data = json.loads(outputs.pop())
    assert data["urgency"] == "prompt" and data["knowledge_base"]["name"] == "lumbar_mass"


def test_same_patient_twice_in_one_process_gives_identical_json(evaluator):
    facts = {"radiating_numbness": True, "cancer_history": True, "primary_cancer": "lung"}
    first = json.dumps(evaluator.evaluate(facts).to_dict())
    for _ in range(3):
        assert json.dumps(evaluator.evaluate(facts).to_dict()) == first


def test_more_sessions_than_durables_live_session_cap(evaluator):
    """durable-rules refuses the 1025th live session; every evaluation must delete its own."""
    for i in range(1500):
        trace = evaluator.engine.run({"palpable_mass": True, "night_pain": bool(i % 2)})
        assert "concerning.palpable_mass" in {f.rule for f in trace.firings}


def test_empty_patient_fires_nothing_and_is_incomplete_never_routine(kb, evaluator):
    result = evaluator.evaluate({})
    # unanswered is never "no": every alarm question is still open, so the result says so and is at least prompt
    assert result.urgency == "prompt" and result.fired == [] and result.actions == []
    assert not result.complete and result.unanswered_alarm == [f.name for f in kb.input_facts if f.alarm]
    # derived from the contract, not copied from output: every input question is unanswered, the alarm
    # questions first, each group in vocabulary order
    alarm = [f.name for f in kb.input_facts if f.alarm]
    rest = [f.name for f in kb.input_facts if not f.alarm]
    assert [q.fact for q in result.unanswered] == alarm + rest
    assert [q.alarm for q in result.unanswered] == [True] * len(alarm) + [False] * len(rest)


def test_an_exception_inside_an_action_is_not_swallowed(kb, monkeypatch):
    """durable-rules swallows exceptions raised in actions; the engine must surface them."""
    engine = Engine(kb)

    class Broken(dict):
        def __getitem__(self, name):
            raise RuntimeError("boom")

    # every rule's action looks its rule up first: make that raise
    monkeypatch.setattr(engine, "_rules", Broken(engine._rules))
    with pytest.raises(EngineError, match="boom"):
        engine.run({"leg_weakness": True})
    monkeypatch.undo()
    # the engine is still usable afterwards, and the failed patient's facts went with its session
    for patient in ({"leg_weakness": True}, {}, {"palpable_mass": True}):
        assert engine.run(patient) == Engine(kb).run(patient)


def test_failed_evaluations_never_pile_up_sessions(kb, monkeypatch):
    """A failed evaluation deletes its session before the next patient gets a new one: more failures than
    durable's 1,024 live sessions, and the engine still evaluates (a session kept per failure would be refused)."""
    engine = Engine(kb)
    engine.run({"leg_weakness": True})

    class Broken(dict):
        def __getitem__(self, name):
            raise RuntimeError("boom")

    monkeypatch.setattr(engine, "_rules", Broken(engine._rules))
    for _ in range(1100):
        with pytest.raises(EngineError, match="boom"):
            engine.run({"leg_weakness": True})
    monkeypatch.undo()
    assert engine.run({"palpable_mass": True}) == Engine(kb).run({"palpable_mass": True})


def test_an_engine_deletes_only_a_session_in_which_an_action_ran(kb, monkeypatch):
    """durable crashes deleting a session in which no action ran and refuses one it never made: an engine freed
    before it evaluated anyone, or right after a failed evaluation (its next session not made yet), deletes
    none; one that evaluated deletes its own. Errors in a finalizer go to sys.unraisablehook: none may."""
    import gc
    import sys

    raised = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)

    class Broken(dict):
        def __getitem__(self, name):
            raise RuntimeError("boom")

    unused = Engine(kb)
    failed = Engine(kb)
    failed.run({"leg_weakness": True})
    failed._rules = Broken(failed._rules)
    with pytest.raises(EngineError, match="boom"):
        failed.run({"leg_weakness": True})
    used = Engine(kb)
    used.run({"palpable_mass": True})
    del unused, failed, used
    gc.collect()
    assert raised == []


def test_each_patient_finds_the_session_empty(kb):
    """One durable session serves every patient of an Engine; what was asserted for one is retracted before the
    next, so each trace equals a fresh Engine's: a patient with every alarm answered yes (many rules fired,
    facts derived) followed by one with nothing answered, then random patients in turn."""
    import random as _random

    from lumbar_kb.engine.patient import random_patient

    engine = Engine(kb)
    alarming = {f.name: True for f in kb.input_facts if f.alarm and f.type == "bool"}
    assert engine.run(alarming).derived  # something derived, so something to retract
    assert engine.run({}).firings == []
    rng = _random.Random(17)
    patients = [random_patient(kb, rng) for _ in range(200)]
    fresh = Engine(kb)
    expected = []
    for patient in patients:  # each on a session of its own, deleted after it
        expected.append(fresh.run(patient))
        fresh._new_session()
    assert [engine.run(p) for p in patients] == expected


def test_contradictory_derivation_names_both_rules_as_a_knowledge_base_error(kb_copy):
    rules = kb_copy / "rules" / "red_flags.yaml"
    text = rules.read_text()
    # make neuro.absent fire on a patient whose leg weakness also makes neuro.present fire
    rules.write_text(text.replace("        - {fact: leg_weakness, is: false}\n", "", 1))
    kb = load(kb_copy)
    patient = {
        "leg_weakness": True,
        "gait_difficulty": False,
        "radiating_numbness": False,
        "unable_to_walk": False,
        "bowel_bladder_dysfunction": False,
        "saddle_anesthesia": False,
        "progressive_neuro_deficit": False,
    }
    with pytest.raises(ContradictoryRules, match="neuro_symptom") as info:
        Engine(kb).run(patient)
    assert info.value.rules == ("neuro.present", "neuro.absent")
    assert isinstance(info.value, KnowledgeBaseError) and not isinstance(info.value, EngineError)
    with pytest.raises(ContradictoryRules) as oracle:  # the reference evaluator says the same
        ReferenceEvaluator(kb).run(patient)
    assert oracle.value.rules == ("neuro.present", "neuro.absent")


def test_reference_result_helper_matches_engine(kb, evaluator):
    facts = {"suspected_cord_compression": True, "palpable_mass": True}
    assert reference_result(kb, facts).to_dict() == evaluator.evaluate(facts).to_dict()


def test_priority_orders_firing_in_both_evaluators(kb_copy):
    """`priority` is the author's tool for firing order; durable and the reference must honour it alike."""
    path = kb_copy / "rules" / "pitfalls.yaml"
    path.write_text(
        path.read_text().replace(
            "  - id: pitfall.do_not_assume_benign\n", "  - id: pitfall.do_not_assume_benign\n    priority: 5\n"
        )
    )
    kb = load(kb_copy)
    from lumbar_kb.engine.reference import ReferenceEvaluator

    facts = {"palpable_mass": True, "night_pain": True}
    durable = [f.rule for f in Engine(kb).run(facts).firings]
    oracle = [f.rule for f in ReferenceEvaluator(kb).run(facts).firings]
    assert durable == oracle
    assert durable[0] == "pitfall.do_not_assume_benign"


def test_an_action_the_answers_show_done_is_marked_done_and_listed_last(evaluator):
    no_neuro = dict.fromkeys(NEUROLOGICAL, False)
    pending = evaluator.evaluate({**no_neuro, "palpable_mass": True})
    assert [(a.code, a.done) for a in pending.actions] == [("xray_lumbar", False)]
    read = evaluator.evaluate({**no_neuro, "palpable_mass": True, "radiograph": "abnormal"})
    assert [(a.code, a.done) for a in read.actions] == [("mri_lumbar", False), ("xray_lumbar", True)]
    not_done = evaluator.evaluate({**no_neuro, "palpable_mass": True, "radiograph": "not_done"})
    assert [(a.code, a.done) for a in not_done.actions] == [("xray_lumbar", False)]


def test_a_question_that_does_not_apply_is_not_unanswered(evaluator):
    no_history = evaluator.evaluate({"cancer_history": False})
    assert "primary_cancer" not in [q.fact for q in no_history.unanswered]
    unknown_history = evaluator.evaluate({})
    assert "primary_cancer" in [q.fact for q in unknown_history.unanswered]


BIG_RULE = """
  - id: seeded.many_branches
    title: A rule whose condition has sixteen branches
    when:
      all:
        - any: [{fact: leg_weakness, is: true}, {fact: night_pain, is: true}, {fact: radiating_pain, is: true},
                {fact: palpable_mass, is: true}]
        - any: [{fact: severe_back_pain, is: true}, {fact: mass_persists, is: true},
                {fact: imaging_shows_mass, is: true}, {fact: radiograph, is: abnormal}]
    then:
      - warning: do_not_assume_benign
    cites: [1]
    rationale: Seeded to exceed what one durable pattern can hold.
"""


def test_a_rule_with_many_branches_compiles_and_agrees_with_the_reference(kb_copy):
    from lumbar_kb.engine.reference import ReferenceEvaluator

    path = kb_copy / "rules" / "pitfalls.yaml"
    path.write_text(path.read_text() + BIG_RULE)
    kb = load(kb_copy)
    engine, reference = Engine(kb), ReferenceEvaluator(kb)
    rng = random.Random(3)
    fired = 0
    for _ in range(500):
        patient = random_patient(kb, rng)
        assert engine.run(patient).firings == reference.run(patient).firings
        fired += "seeded.many_branches" in {f.rule for f in engine.run(patient).firings}
    assert fired > 20


def test_a_rule_durable_cannot_compile_is_named(kb_copy, monkeypatch, capsys):
    import lumbar_kb.engine.compiler as compiler
    from lumbar_kb.main import main

    monkeypatch.setattr(compiler, "MAX_OR_BRANCHES", 100)  # force the one-pattern form durable refuses
    path = kb_copy / "rules" / "pitfalls.yaml"
    path.write_text(path.read_text() + BIG_RULE)
    code = main(["validate", "--kb", str(kb_copy)])
    err = capsys.readouterr().err
    assert code == 2
    assert "rule seeded.many_branches: durable-rules cannot compile this rule" in err
    assert "pitfalls.yaml:" in err and "Traceback" not in err


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def test_engines_free_their_durable_rulesets(kb):
    """The C engine keeps a ruleset until deleted (~0.3 MB each); an Engine deletes its own when collected."""
    import gc

    for _ in range(50):
        Engine(kb).run({"leg_weakness": True})
    gc.collect()
    before = _rss_mb()
    for _ in range(600):
        Engine(kb).run({"leg_weakness": True})
    gc.collect()
    assert _rss_mb() - before < 60  # ~200 MB if the rulesets leaked


def test_a_firing_works_its_evidence_out_from_the_facts_known_when_it_fired(kb):
    """The engine records how to work a firing's evidence out, not the evidence: read later, it is the facts
    known at the firing (not the ones derived after it), the same as the reference evaluator's, kept once read,
    compared and pickled by value."""
    import pickle

    from lumbar_kb.engine.reference import ReferenceEvaluator
    from lumbar_kb.engine.trace import Firing

    patient = {"leg_weakness": True, "palpable_mass": True, "cancer_history": True}
    trace, expected = Engine(kb).run(patient), ReferenceEvaluator(kb).run(patient)
    assert len(trace.derived) >= 2  # facts were derived during the run, after the first firing
    first = trace.firings[0]
    assert not set(first.matched) & set(trace.derived)  # nothing derived later is cited by the first firing
    assert [(f.rule, f.matched) for f in trace.firings] == [(f.rule, f.matched) for f in expected.firings]
    assert first.matched is first.matched  # worked out once
    assert pickle.loads(pickle.dumps(trace.firings)) == expected.firings
    assert Firing("r", 1, {"a": True}) != Firing("r", 1, {"a": False})
    assert repr(Firing("r", 1, {"a": True})) == "Firing(rule='r', order=1, matched={'a': True})"
    with pytest.raises(TypeError, match="^a Firing needs its matched facts or the evidence"):
        Firing("r", 1)
    with pytest.raises(TypeError, match="unhashable"):
        hash(first)  # compared by value, and its evidence is a dict


# a rule that can fire before a fact it reads is derived: `early` (priority 2) on `a`, then `late` derives `d`
EARLY_THEN_DERIVED = (
    {"a": {"type": "bool"}, "b": {"type": "bool"}, "d": {"type": "bool", "derived": True}},
    [
        {
            "id": "early",
            "priority": 2,
            "when": {"any": [{"fact": "a", "is": True}, {"fact": "d", "is": True}]},
            "then": [{"warning": "warn_a"}],
        },
        {"id": "late", "priority": 1, "when": {"fact": "b", "is": True}, "then": [{"derive": "d", "value": True}]},
    ],
)


@pytest.mark.parametrize("which", ["bundled", "a fact derived after a rule that reads it fired"])
def test_the_values_a_firings_rule_read_are_the_facts_known_then_and_fix_its_matched_facts(kb, which, tmp_path):
    """`Firing.values_of(rule.reads)` (what a cohort numbers a trace step by, instead of working `matched` out):
    on random patients, each value is the fact's value among the inputs and the facts derived before the firing
    (by the rules the reference evaluator fired before it; None for unknown), and firings of one rule with the
    same values have the same matched facts. Once `matched` is read the evidence is gone, and so are the values.
    Also on a knowledge base where a rule fires before a fact it reads is derived."""
    from lumbar_kb.engine.reference import ReferenceEvaluator

    from . import kbgen

    if which != "bundled":
        kb = load(kbgen.write_kb(tmp_path / "kb", *EARLY_THEN_DERIVED))
    reads = {rule.id: rule.reads for rule in kb.rules}
    derives = {rule.id: {d.fact for d in rule.derives()} for rule in kb.rules}
    engine, reference = Engine(kb), ReferenceEvaluator(kb)
    rng = random.Random(33)
    matched_by: dict[tuple, dict] = {}
    later = 0  # firings that read a fact derived after them
    for _ in range(800):
        patient = random_patient(kb, rng)
        trace, expected = engine.run(patient), reference.run(patient)
        for firing, other in zip(trace.firings, expected.firings, strict=True):
            values = firing.values_of(reads[firing.rule])
            assert values is not None and len(values) == len(reads[firing.rule])
            before = {f for e in expected.firings[: other.order - 1] for f in derives[e.rule]}
            known = {**trace.inputs, **{f: v for f, v in trace.derived.items() if f in before}}
            assert values == tuple(known.get(name) for name in reads[firing.rule]), firing.rule
            later += any(f in trace.derived and f not in before for f in reads[firing.rule])
            assert matched_by.setdefault((firing.rule, values), firing.matched) == firing.matched
            assert firing.values_of(reads[firing.rule]) is None  # matched read: the evidence is gone
    assert len(matched_by) > (100 if which == "bundled" else 3)
    if which != "bundled":
        assert later > 0  # the case the generated knowledge base is for happened


def test_a_traces_rule_ids_are_the_knowledge_bases_own_strings(kb):
    """The trace names each rule with the model's string, not a copy cut from durable's message: the decision
    and look-ahead stores, and a cohort's pathways, keep many traces' rule ids, one copy of each id between
    them (a copy per firing cost ~1 KB for each kept firing sequence)."""
    by_id = {rule.id: rule.id for rule in kb.rules}
    engine = Engine(kb)
    for patient in ({"leg_weakness": True}, {"palpable_mass": True, "cancer_history": True}):
        firings = engine.run(patient).firings
        assert firings and all(f.rule is by_id[f.rule] for f in firings)


def test_the_patients_message_joined_from_fragments_is_the_encoders(kb, monkeypatch):
    """The patient's answers go to durable as the members of one JSON object, joined from each vocabulary answer's
    fragment encoded once: byte for byte what the JSON encoder gives the same mapping, for random patients, and for
    what only an API caller could pass (a value of another type, such as 1 for yes, a key or value outside the
    vocabulary, no answers at all), which is encoded as it is."""
    engine = Engine(kb)
    encode = json.JSONEncoder(ensure_ascii=False).encode
    rng = random.Random(41)
    odd = [
        {},
        {"leg_weakness": 1},
        {"leg_weakness": True, "night_pain": 0},
        {"primary_cancer": "breast", "radiograph": "not_a_value"},
        {"not_a_fact": True},
        {"primary_cancer": "ünïcode"},
        {"leg_weakness": None},
        {"leg_weakness": 1.0},
    ]
    for inputs in [random_patient(kb, rng) for _ in range(500)] + odd:
        assert engine._answers(inputs) == encode(inputs)[1:-1], inputs
    assert (
        engine._answers({"leg_weakness": True, "primary_cancer": "lung"})
        == '"leg_weakness": true, "primary_cancer": "lung"'
    )
    # every answer of the vocabulary has its fragment: a valid patient's message never goes through the encoder
    import lumbar_kb.engine.session as session

    encoded = []
    monkeypatch.setattr(session, "_ENCODE", lambda value: encoded.append(value) or encode(value))
    answers = {f.name: f.values for f in kb.input_facts}  # a yes/no fact's domain is (True, False)
    every = [
        {n: values[i % len(values)] for n, values in answers.items()} for i in range(max(map(len, answers.values())))
    ]
    for inputs in every + [random_patient(kb, rng) for _ in range(200)]:
        engine._answers(inputs)
    assert encoded == []
