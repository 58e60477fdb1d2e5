"""The three-valued core under direct test: `logic` (Kleene evaluation, DNF, merges, subsumption, support), the
compile contract (`compiler`: one durable rule per satisfiable rule, never-true rules named and skipped), the
engine's trace (several derivations, the evidence an `any` or `not` rule cites) and the Result's aggregation.

Every expectation comes from a truth table or a contract stated here, never from the code's own output:
Kleene's strong logic orders false < unknown < true; `all` is the minimum, `any` the maximum, `not` swaps true
and false and keeps unknown. A rule fires exactly when its condition is true.
"""

import itertools

import pytest
import yaml

from lumbar_kb.engine.compiler import INTAKE, compile_kb
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.logic import _merge, _subsumes, contradicts_only_if, evaluate, support, to_dnf
from lumbar_kb.engine.model import All, AnyOf, Not
from lumbar_kb.engine.model import Test as Is  # not `Test`: pytest would try to collect it
from lumbar_kb.engine.reference import ReferenceEvaluator
from lumbar_kb.engine.result import build
from lumbar_kb.engine.session import Engine

from .kbgen import write_kb

T, F, U = True, False, None
THREE = (T, F, U)

# Kleene's strong three-valued tables, written out (not computed): row = left operand, column = right operand.
AND = {
    (T, T): T, (T, F): F, (T, U): U,
    (F, T): F, (F, F): F, (F, U): F,
    (U, T): U, (U, F): F, (U, U): U,
}  # fmt: skip
OR = {
    (T, T): T, (T, F): T, (T, U): T,
    (F, T): T, (F, F): F, (F, U): U,
    (U, T): T, (U, F): U, (U, U): U,
}  # fmt: skip
NOT = {T: F, F: T, U: U}

A, B, C = Is("a", frozenset({True})), Is("b", frozenset({True})), Is("c", frozenset({True}))
DOMAINS = {"a": (True, False), "b": (True, False), "c": (True, False), "e": ("x", "y", "z")}


def facts_of(**values):
    """A patient from truth values: None leaves the fact out (unknown), as a patient file would."""
    return {k: v for k, v in values.items() if v is not None}


# ---- evaluate: the truth tables ------------------------------------------------------------------------------
@pytest.mark.parametrize("a", THREE, ids=str)
def test_a_test_is_true_false_or_unknown_with_its_fact(a):
    assert evaluate(A, facts_of(a=a)) is a
    # an explicit None in the mapping is unknown too, never false
    assert evaluate(A, {"a": None}) is None


@pytest.mark.parametrize("e", ["x", "y", "z", None])
def test_an_enum_test_is_membership_and_unknown_when_unanswered(e):
    test = Is("e", frozenset({"x", "y"}))
    expected = None if e is None else e in ("x", "y")
    assert evaluate(test, facts_of(e=e)) is expected


@pytest.mark.parametrize(("a", "b"), list(itertools.product(THREE, THREE)), ids=str)
def test_all_and_any_follow_the_kleene_tables(a, b):
    facts = facts_of(a=a, b=b)
    assert evaluate(All((A, B)), facts) is AND[a, b]
    assert evaluate(AnyOf((A, B)), facts) is OR[a, b]


@pytest.mark.parametrize("a", THREE, ids=str)
def test_not_swaps_true_and_false_and_keeps_unknown(a):
    assert evaluate(Not(A), facts_of(a=a)) is NOT[a]
    assert evaluate(Not(Not(A)), facts_of(a=a)) is a


@pytest.mark.parametrize(("a", "b", "c"), list(itertools.product(THREE, repeat=3)), ids=str)
def test_three_items_fold_the_table_in_any_order(a, b, c):
    facts = facts_of(a=a, b=b, c=c)
    assert evaluate(All((A, B, C)), facts) is AND[AND[a, b], c]
    assert evaluate(AnyOf((A, B, C)), facts) is OR[OR[a, b], c]
    assert evaluate(All((C, A, B)), facts) is AND[a, AND[b, c]]
    assert evaluate(Not(AnyOf((A, Not(B), C))), facts) is NOT[OR[OR[a, NOT[b]], c]]
    assert evaluate(AnyOf((All((A, B)), Not(C))), facts) is OR[AND[a, b], NOT[c]]


def test_contradicts_only_if_needs_a_known_false_condition():
    from lumbar_kb.engine.model import Fact

    site = Fact("site", "enum", ("x", "y"), "m", only_if=A)
    assert contradicts_only_if(site, {"site": "x", "a": False}) is True
    assert contradicts_only_if(site, {"site": "x"}) is False  # unknown a: may be given
    assert contradicts_only_if(site, {"site": "x", "a": True}) is False
    assert contradicts_only_if(site, {"a": False}) is False  # not given at all
    free = Fact("free", "bool", (True, False), "m")
    assert contradicts_only_if(free, {"free": True}) is False


# ---- to_dnf: the compile contract ----------------------------------------------------------------------------
def all_patients(names):
    """Every partial patient over `names`: each fact unknown or any value of its domain."""
    for values in itertools.product(*[(None, *DOMAINS[n]) for n in names]):
        yield facts_of(**dict(zip(names, values, strict=True)))


def dnf_holds(conjuncts, facts):
    return any(all(f in facts and facts[f] in vals for f, vals in c.items()) for c in conjuncts)


E = lambda *vals: Is("e", frozenset(vals))
CONDITIONS = [
    A,
    Not(A),
    Not(Not(A)),
    E("x"),
    Not(E("x")),
    Not(E("x", "y")),
    All((A, Not(B))),
    Not(All((A, B))),
    Not(AnyOf((A, B))),
    AnyOf((Not(A), All((B, Not(E("z")))))),
    All((E("x", "y"), E("y", "z"))),
    All((E("x"), E("y"))),
    AnyOf((E("x"), E("x", "y"))),
    All((AnyOf((A, B)), Not(AnyOf((A, B))))),
    Not(AnyOf((All((A, Not(C))), E("y")))),
    All((A, AnyOf((B, C)), Not(All((B, C))))),
]


@pytest.mark.parametrize("cond", CONDITIONS, ids=repr)
def test_dnf_is_true_exactly_when_the_condition_is_true_on_every_partial_patient(cond):
    """The compiled form must fire on exactly the patients on whom the Kleene value is true: not on an
    unknown (a `not` over an unknown fact stays unknown) and not on a false."""
    dnf = to_dnf(cond, DOMAINS)
    for facts in all_patients(["a", "b", "c", "e"]):
        assert dnf_holds(dnf, facts) == (evaluate(cond, facts) is True), facts


def test_negation_folds_into_the_complement_set():
    assert to_dnf(Not(A), DOMAINS) == [{"a": frozenset({False})}]
    assert to_dnf(Not(Not(A)), DOMAINS) == [{"a": frozenset({True})}]
    assert to_dnf(Not(E("x")), DOMAINS) == [{"e": frozenset({"y", "z"})}]
    assert to_dnf(Not(E("x", "y", "z")), DOMAINS) == []  # the complement of the whole domain: never true


def test_de_morgan_under_negation():
    # not (a and b) = not a or not b: two conjuncts; not (a or b) = not a and not b: one conjunct
    assert to_dnf(Not(All((A, B))), DOMAINS) == [{"a": frozenset({False})}, {"b": frozenset({False})}]
    assert to_dnf(Not(AnyOf((A, B))), DOMAINS) == [{"a": frozenset({False}), "b": frozenset({False})}]


def test_two_tests_of_one_fact_inside_all_intersect():
    assert to_dnf(All((E("x", "y"), E("y", "z"))), DOMAINS) == [{"e": frozenset({"y"})}]
    assert to_dnf(All((E("x"), E("y"))), DOMAINS) == []  # disjoint: never true
    assert to_dnf(All((A, Not(A))), DOMAINS) == []


def test_a_conjunct_subsumed_by_a_more_general_one_is_dropped_and_duplicates_collapse():
    assert to_dnf(AnyOf((E("x"), E("x", "y"))), DOMAINS) == [{"e": frozenset({"x", "y"})}]
    assert to_dnf(AnyOf((A, All((A, B)))), DOMAINS) == [{"a": frozenset({True})}]
    assert to_dnf(AnyOf((All((A, B)), A)), DOMAINS) == [{"a": frozenset({True})}]
    assert to_dnf(AnyOf((A, A, A)), DOMAINS) == [{"a": frozenset({True})}]
    assert to_dnf(AnyOf((A, B)), DOMAINS) == [{"a": frozenset({True})}, {"b": frozenset({True})}]


def test_merge_intersects_same_fact_sets_and_refuses_an_empty_one():
    left = {"e": frozenset({"x", "y"}), "a": frozenset({True})}
    right = {"e": frozenset({"y", "z"}), "b": frozenset({False})}
    merged = _merge(left, right)
    assert merged == {"e": frozenset({"y"}), "a": frozenset({True}), "b": frozenset({False})}
    assert left == {"e": frozenset({"x", "y"}), "a": frozenset({True})}  # inputs untouched
    assert _merge({"e": frozenset({"x"})}, {"e": frozenset({"z"})}) is None
    assert _merge({}, {"a": frozenset({True})}) == {"a": frozenset({True})}
    assert _merge({"a": frozenset({True})}, {}) == {"a": frozenset({True})}


def test_subsumption_both_ways():
    general, specific = {"a": frozenset({True})}, {"a": frozenset({True}), "b": frozenset({True})}
    assert _subsumes(general, specific) is True
    assert _subsumes(specific, general) is False  # b is not constrained in `general`
    wide, narrow = {"e": frozenset({"x", "y"})}, {"e": frozenset({"x"})}
    assert _subsumes(wide, narrow) is True
    assert _subsumes(narrow, wide) is False  # y satisfies wide but not narrow
    assert _subsumes(general, dict(general)) is False  # equal conjuncts are deduplicated, not subsumed
    # every conjunct of the general one must be implied, not just one of them
    assert _subsumes({"a": frozenset({True}), "c": frozenset({True})}, specific) is False
    assert _subsumes({"a": frozenset({True}), "b": frozenset({True, False})}, specific) is True


# ---- support: the evidence a true condition cites -------------------------------------------------------------
def test_support_of_any_cites_only_the_true_branches():
    cond = AnyOf((A, B, C))
    assert support(cond, {"a": True, "b": False}) == {"a": True}  # a "no" is not why it fired
    assert support(cond, {"a": True, "b": False, "c": True}) == {"a": True, "c": True}


def test_support_of_all_cites_every_item_in_condition_order():
    cond = All((B, A, E("x", "y")))
    assert list(support(cond, {"a": True, "b": True, "e": "y", "c": True}).items()) == [
        ("b", True),
        ("a", True),
        ("e", "y"),
    ]


def test_support_under_not_cites_what_made_the_inner_condition_false():
    # not (a or b) is true because both are false: both are cited
    assert support(Not(AnyOf((A, B))), {"a": False, "b": False, "c": True}) == {"a": False, "b": False}
    # not (a and b) is true because a is false; b (true, or unknown) is not the reason
    assert support(Not(All((A, B))), {"a": False, "b": True}) == {"a": False}
    assert support(Not(All((A, B))), {"a": False}) == {"a": False}
    assert support(Not(Not(A)), {"a": True, "b": True}) == {"a": True}


def test_support_never_cites_an_unknown_fact():
    assert support(AnyOf((A, B)), {"a": True, "b": None}) == {"a": True}


# ---- the compile contract and the engine's trace on small knowledge bases ----------------------------------
BOOLS = {n: {"type": "bool"} for n in ("a", "b", "c")}
FACTS = {**BOOLS, "e": {"type": "enum", "values": ["x", "y", "z"]}, "d": {"type": "bool", "derived": True}}
FACTS["g"] = {"type": "enum", "values": ["p", "q"], "derived": True}


def kb_with(tmp_path, rules, facts=FACTS):
    return load(write_kb(tmp_path / "kb", facts, rules))


def evaluators(kb):
    return {"engine": Engine(kb), "reference": ReferenceEvaluator(kb)}


NEVER = {
    "id": "r.never",
    "when": {"all": [{"fact": "a", "is": True}, {"fact": "a", "is": False}]},
    "then": [{"warning": "warn_a"}],
}
LATER = {"id": "r.later", "when": {"fact": "b", "is": True}, "then": [{"warning": "warn_b"}]}


def test_a_never_true_rule_is_named_compiles_to_nothing_and_later_rules_still_run(tmp_path):
    kb = kb_with(tmp_path, [NEVER, LATER])
    compiled = compile_kb(kb)
    assert compiled.never_true == ("r.never",)
    assert set(compiled.rules) == {INTAKE, "r.later"}
    for name, ev in evaluators(kb).items():
        fired = [f.rule for f in ev.run({"a": True, "b": True}).firings]
        assert fired == ["r.later"], name


def test_only_derived_facts_some_rule_reads_are_asserted(tmp_path):
    rules = [
        {"id": "r.derive", "when": {"fact": "a", "is": True}, "then": [{"derive": "d", "value": True}]},
        {"id": "r.derive_g", "when": {"fact": "a", "is": True}, "then": [{"derive": "g", "value": "p"}]},
        {"id": "r.read", "when": {"fact": "d", "is": True}, "then": [{"warning": "warn_a"}]},
    ]
    compiled = compile_kb(kb_with(tmp_path, rules))
    assert compiled.read_derived == frozenset({("d", True)})  # d is read for true only; g is never read
    assert compiled.never_true == ()


def test_a_rule_deriving_several_facts_asserts_every_one(tmp_path):
    rules = [
        {
            "id": "r.both",
            "when": {"fact": "a", "is": True},
            "then": [{"derive": "d", "value": True}, {"derive": "g", "value": "q"}, {"urgency": "mid"}],
        },
        {"id": "r.reads_d", "when": {"fact": "d", "is": True}, "then": [{"warning": "warn_a"}]},
        {"id": "r.reads_g", "when": {"fact": "g", "is": "q"}, "then": [{"warning": "warn_b"}]},
        {
            "id": "r.reads_both",
            "when": {"all": [{"fact": "g", "is": "q"}, {"fact": "d", "is": True}]},
            "then": [{"differential": "dx_a"}],
        },
    ]
    kb = kb_with(tmp_path, rules)
    for name, ev in evaluators(kb).items():
        trace = ev.run({"a": True})
        assert trace.derived == {"d": True, "g": "q"}, name
        # definition order among the rules made ready by r.both (all priority 0)
        assert [f.rule for f in trace.firings] == ["r.both", "r.reads_d", "r.reads_g", "r.reads_both"], name
        assert trace.firings[3].matched == {"g": "q", "d": True}


def test_the_evidence_of_an_any_rule_and_a_not_rule_in_the_trace(tmp_path):
    rules = [
        {
            "id": "r.any",
            "when": {"any": [{"fact": "a", "is": True}, {"fact": "b", "is": True}, {"fact": "c", "is": True}]},
            "then": [{"warning": "warn_a"}],
        },
        {
            "id": "r.not_any",
            "when": {"not": {"any": [{"fact": "b", "is": True}, {"fact": "e", "is": "x"}]}},
            "then": [{"warning": "warn_b"}],
        },
        {
            "id": "r.not_all",
            "when": {"not": {"all": [{"fact": "c", "is": True}, {"fact": "a", "is": True}]}},
            "then": [{"differential": "dx_a"}],
        },
    ]
    kb = kb_with(tmp_path, rules)
    patient = {"a": True, "b": False, "c": False, "e": "y"}
    for name, ev in evaluators(kb).items():
        matched = {f.rule: list(f.matched.items()) for f in ev.run(patient).firings}
        assert matched == {
            "r.any": [("a", True)],  # b and c answered no: not the reason it fired
            "r.not_any": [("b", False), ("e", "y")],  # every branch of the any had to be false
            "r.not_all": [("c", False)],  # one false item made the all false; a (true) is no reason
        }, name
    # an unknown under `not` stays unknown: with b unknown, not(b or e=x) cannot fire; with c unknown and a
    # true, not(c and a) cannot fire either
    for name, ev in evaluators(kb).items():
        assert [f.rule for f in ev.run({"a": True, "e": "y"}).firings] == ["r.any"], name


def test_priority_beats_definition_order_and_rechecks_after_each_firing(tmp_path):
    rules = [
        {"id": "r.first", "when": {"fact": "a", "is": True}, "then": [{"derive": "d", "value": True}]},
        {"id": "r.plain", "when": {"fact": "a", "is": True}, "then": [{"warning": "warn_a"}]},
        {"id": "r.urgent", "priority": 3, "when": {"fact": "d", "is": True}, "then": [{"warning": "warn_b"}]},
        {"id": "r.top", "priority": 5, "when": {"fact": "b", "is": True}, "then": [{"derive": "g", "value": "p"}]},
    ]
    kb = kb_with(tmp_path, rules)
    for name, ev in evaluators(kb).items():
        # r.top (5) first; then r.first (0, defined first) derives d, making r.urgent (3) ready: it goes before
        # r.plain, which was ready from the start
        order = [f.rule for f in ev.run({"a": True, "b": True}).firings]
        assert order == ["r.top", "r.first", "r.urgent", "r.plain"], name


# ---- the Result's aggregation ----------------------------------------------------------------------------------
def test_result_takes_the_highest_urgency_the_earliest_window_and_lists_every_reason(tmp_path):
    rules = [
        {
            "id": "r.slow",
            "when": {"fact": "a", "is": True},
            "then": [{"urgency": "mid"}, {"action": "act_a", "within_hours": 48, "window": "in two days"}],
        },
        {
            "id": "r.fast",
            "when": {"fact": "b", "is": True},
            "then": [{"urgency": "high"}, {"action": "act_a", "within_hours": 6, "window": "in six hours"}],
        },
        {
            "id": "r.calm",
            "when": {"fact": "c", "is": True},
            "then": [{"urgency": "low"}, {"action": "act_b", "window": "soon"}],
        },
    ]
    kb = kb_with(tmp_path, rules)
    for ev in evaluators(kb).values():
        data = build(kb, ev.run({"a": True, "b": True, "c": True})).to_dict()
        assert data["urgency"] == "high"
        assert data["actions"][0]["code"] == "act_a"  # a figure before "no figure"
        assert {k: data["actions"][0][k] for k in ("within_hours", "window", "done", "because")} == {
            "within_hours": 6,
            "window": "in six hours",
            "done": False,
            "because": ["r.slow", "r.fast"],
        }
        assert {k: data["actions"][1][k] for k in ("code", "within_hours", "window")} == {
            "code": "act_b",
            "within_hours": None,
            "window": "soon",
        }
        # nothing fired: the lowest level, never a higher one
        assert build(kb, ev.run({})).urgency == "low"


def test_result_lists_exactly_the_unanswered_input_questions(tmp_path):
    kb = kb_with(tmp_path, [LATER])
    result = build(kb, Engine(kb).run({"a": True, "e": "x"}))
    assert [q.fact for q in result.unanswered] == ["b", "c"]  # the input facts not given, vocabulary order
    assert result.inputs == {"a": True, "e": "x"}


def test_a_derived_value_no_rule_tests_is_recorded_without_an_engine_error(tmp_path):
    """Found by the differential test: a derived fact some rule reads for one value only, derived with another
    value, matched no durable pattern, and the session refused it (MessageNotHandled) as an EngineError."""
    rules = [
        {"id": "r.derive_no", "when": {"fact": "a", "is": True}, "then": [{"derive": "d", "value": False}]},
        {"id": "r.reads_yes", "when": {"fact": "d", "is": True}, "then": [{"warning": "warn_a"}]},
    ]
    kb = kb_with(tmp_path, rules)
    for name, ev in evaluators(kb).items():
        trace = ev.run({"a": True})
        assert ([f.rule for f in trace.firings], trace.derived) == (["r.derive_no"], {"d": False}), name


def test_result_json_has_every_documented_key_and_texts_from_the_catalogue(tmp_path):
    """The keys docs/clinic.md's "The result" table documents, each filled from the model: texts and labels from the
    catalogue for the audience asked for, citations the union of the citing rules' in ascending order, fired
    rules with their title, order, evidence and citations, questions in the audience's words."""
    rules = [
        {
            "id": "r.one",
            "cites": [2],
            "when": {"fact": "a", "is": True},
            "then": [
                {"urgency": "mid"},
                {"action": "act_a", "within_hours": 6},
                {"warning": "warn_a"},
                {"derive": "d", "value": True},
            ],
        },
        {
            "id": "r.two",
            "cites": [1],
            "when": {"fact": "d", "is": True},
            "then": [{"action": "act_a", "within_hours": 12, "window": "in twelve hours"}, {"differential": "dx_b"}],
        },
    ]
    kb = kb_with(tmp_path, rules)
    trace = Engine(kb).run({"a": True, "e": "z"})
    for audience in ("clinician", "patient"):
        data = build(kb, trace, audience).to_dict()
        text = (lambda e: e.patient_text) if audience == "patient" else (lambda e: e.text)
        documented = {"urgency", "urgency_text", "actions", "warnings", "differential", "fired", "unanswered"}
        assert documented | {"could_escalate", "inputs", "derived", "knowledge_base"} <= set(data)
        assert (data["urgency"], data["urgency_text"]) == ("mid", text(kb.catalog["urgency"]["mid"]))
        act = kb.catalog["action"]["act_a"]
        assert data["actions"] == [
            {
                "code": "act_a",
                "within_hours": 6,
                "within_hours_min": None,  # no rule gave a range's lower end
                "window": None,  # the earliest figure wins, and r.one gave no words with it
                "done": False,
                # r.two's later window never took effect: shown as overridden by the rule whose earlier one won
                "overridden": [{"rule": "r.two", "window": "in twelve hours", "by": "r.one"}],
                "label": act.label,
                "text": text(act),
                "because": ["r.one", "r.two"],
                "citations": [1, 2],
            }
        ]
        warn, dx = kb.catalog["warning"]["warn_a"], kb.catalog["differential"]["dx_b"]
        assert data["warnings"] == [
            {"code": "warn_a", "label": warn.label, "text": text(warn), "because": ["r.one"], "citations": [2]}
        ]
        assert data["differential"] == [
            {"code": "dx_b", "label": dx.label, "text": text(dx), "because": ["r.two"], "citations": [1]}
        ]
        assert data["fired"] == [
            {"rule": "r.one", "title": "title of r.one", "order": 1, "matched": {"a": True}, "citations": [2]},
            {"rule": "r.two", "title": "title of r.two", "order": 2, "matched": {"d": True}, "citations": [1]},
        ]
        question = (lambda f: f.patient_question) if audience == "patient" else (lambda f: f.question)
        assert data["unanswered"] == [
            {"fact": n, "question": question(kb.facts[n]), "alarm": False} for n in ("b", "c")
        ]
        assert (data["inputs"], data["derived"]) == ({"a": True, "e": "z"}, {"d": True})
        assert data["knowledge_base"] == {"name": kb.name, "version": kb.version, "sha256": kb.sha256}
    assert [f.section for f in build(kb, trace).fired] == ["one", "one"]


def test_window_words_follow_the_figure_that_wins(tmp_path):
    """merge_window: the earliest figure wins with its own words; words without a figure stand only while no rule
    gave a figure; on equal figures the first rule to give it keeps its words."""
    from lumbar_kb.engine.model import Recommend
    from lumbar_kb.engine.result import merge_window

    say = lambda hours, words: Recommend("action", "act_a", hours, words)
    assert merge_window((None, None), say(None, "urgently")) == (None, "urgently")
    assert merge_window((None, "urgently"), say(24, "in a day")) == (24, "in a day")
    assert merge_window((24, "in a day"), say(None, "urgently")) == (24, "in a day")
    assert merge_window((24, None), say(None, "urgently")) == (24, None)  # a figure without words stays a figure
    assert merge_window((24, "in a day"), say(6, None)) == (6, None)
    assert merge_window((6, "six"), say(6, "also six")) == (6, "six")
    assert merge_window((6, "six"), say(12, "twelve")) == (6, "six")
    assert merge_window((None, "urgently"), say(None, "soon")) == (None, "urgently")
    assert merge_window((0, "now"), say(None, "urgently")) == (0, "now")  # 0 hours is a figure, not "none"
    assert merge_window((None, None), say(0, "now")) == (0, "now")


def test_a_done_action_is_listed_after_every_pending_one_and_no_figure_after_figures(tmp_path):
    rules = [
        {"id": "r.a", "when": {"fact": "a", "is": True}, "then": [{"action": "act_a", "within_hours": 1}]},
        {"id": "r.b", "when": {"fact": "b", "is": True}, "then": [{"action": "act_b"}]},
    ]
    root = write_kb(tmp_path / "kb", FACTS, rules)
    guideline = (root / "guideline.yaml").read_text()
    (root / "guideline.yaml").write_text(
        guideline.replace("  act_a:\n", "  act_a:\n    done_when: {fact: c, is: true}\n", 1)
    )
    kb = load(root)
    engine = Engine(kb)
    pending = build(kb, engine.run({"a": True, "b": True}))
    assert [(a.code, a.done) for a in pending.actions] == [("act_a", False), ("act_b", False)]
    done = build(kb, engine.run({"a": True, "b": True, "c": True}))
    assert [(a.code, a.done) for a in done.actions] == [("act_b", False), ("act_a", True)]
    assert build(kb, engine.run({"a": True, "b": True, "c": False})).actions[0].done is False


def test_a_fact_derived_again_with_the_same_value_does_not_stop_the_rest_of_the_rule(tmp_path):
    rules = [
        {"id": "r.first", "when": {"fact": "a", "is": True}, "then": [{"derive": "d", "value": True}]},
        {
            "id": "r.again",
            "when": {"fact": "b", "is": True},
            "then": [{"derive": "d", "value": True}, {"derive": "g", "value": "q"}],
        },
        {"id": "r.reads_g", "when": {"fact": "g", "is": "q"}, "then": [{"warning": "warn_b"}]},
    ]
    kb = kb_with(tmp_path, rules)
    for name, ev in evaluators(kb).items():
        trace = ev.run({"a": True, "b": True})
        assert [f.rule for f in trace.firings] == ["r.first", "r.again", "r.reads_g"], name
        assert trace.derived == {"d": True, "g": "q"}, name
        assert build(kb, trace).fired_ids() == ["r.first", "r.again", "r.reads_g"]


def test_an_exception_in_an_action_names_its_type_and_message(tmp_path, monkeypatch):
    from lumbar_kb.engine.errors import EngineError

    engine = Engine(kb_with(tmp_path, [LATER]))

    class Broken(dict):
        def __getitem__(self, name):
            raise ValueError("seeded")

    # every rule's action looks its rule up first: make that raise
    monkeypatch.setattr(engine, "_rules", Broken(engine._rules))
    with pytest.raises(EngineError, match=r"^a rule action failed: ValueError: seeded$"):
        engine.run({"b": True})


def test_the_ruleset_is_named_after_the_knowledge_base_unless_a_name_is_given(tmp_path):
    kb = kb_with(tmp_path, [LATER])
    assert compile_kb(kb, "chosen").ruleset_name == "chosen"
    default = compile_kb(kb).ruleset_name
    assert kb.name in default and kb.sha256[:12] in default


def test_an_engine_keeps_its_knowledge_base_and_names_a_ruleset_durable_refuses_as_a_whole(tmp_path, monkeypatch):
    import lumbar_kb.engine.session as session
    from lumbar_kb.engine.errors import KnowledgeBaseError

    kb = kb_with(tmp_path, [LATER])
    assert Engine(kb).kb is kb
    real = session._durable.create_ruleset

    def refuse_the_whole(name, rules):  # seeded: every rule alone compiles, the ruleset does not
        if "_probe_" not in name:
            raise session._durable.error("seeded refusal")
        return real(name, rules)

    monkeypatch.setattr(session._durable, "create_ruleset", refuse_the_whole)
    with pytest.raises(KnowledgeBaseError) as caught:
        Engine(kb)
    assert [p.message for p in caught.value.problems] == ["durable-rules cannot compile the rules: seeded refusal"]


def test_two_rules_deriving_different_values_for_one_patient_is_a_knowledge_base_error_naming_both(tmp_path):
    from lumbar_kb.engine.errors import ContradictoryRules, EngineError, KnowledgeBaseError

    rules = [
        {"id": "r.yes", "when": {"fact": "a", "is": True}, "then": [{"derive": "d", "value": True}]},
        {"id": "r.no", "when": {"fact": "b", "is": True}, "then": [{"derive": "d", "value": False}]},
        {"id": "r.reads", "when": {"fact": "d", "in": [True, False]}, "then": [{"warning": "warn_a"}]},
    ]
    kb = kb_with(tmp_path, rules)
    for ev in evaluators(kb).values():  # the durable engine and the reference evaluator alike
        with pytest.raises(ContradictoryRules) as caught:
            ev.run({"a": True, "b": True})
        assert caught.value.rules == ("r.yes", "r.no") and caught.value.fact == "d"
        assert isinstance(caught.value, KnowledgeBaseError) and not isinstance(caught.value, EngineError)
        [problem] = caught.value.problems
        assert problem.subject == "rule r.no" and problem.line is not None
        assert (
            "rules r.yes (" in problem.message and "derive d = true and d = false for this patient" in problem.message
        )


def test_the_compiled_knowledge_base_is_immutable(tmp_path):
    import dataclasses

    compiled = compile_kb(kb_with(tmp_path, [LATER]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        compiled.never_true = ("r.later",)  # type: ignore[misc]


@pytest.mark.parametrize(("hours_a", "hours_b"), [(1, 0), (48, 6)])
def test_actions_are_sorted_by_their_figure_before_catalogue_order(tmp_path, hours_a, hours_b):
    """act_a comes first in the catalogue; act_b has the earlier window (0 hours, immediately, is the earliest)."""
    rules = [
        {"id": "r.a", "when": {"fact": "a", "is": True}, "then": [{"action": "act_a", "within_hours": hours_a}]},
        {"id": "r.b", "when": {"fact": "a", "is": True}, "then": [{"action": "act_b", "within_hours": hours_b}]},
    ]
    kb = kb_with(tmp_path, rules)
    result = build(kb, Engine(kb).run({"a": True}))
    assert [(a.code, a.within_hours) for a in result.actions] == [("act_b", hours_b), ("act_a", hours_a)]


# ---- relations between answers, questions that may be asked, the alarm questions left ------------------------
K = (True, False, None)  # a yes/no answer: yes, no, unknown


def test_a_relation_that_implies_is_broken_only_when_its_premise_is_true_and_the_implied_false():
    """Kleene: `when` true and `implies` known false; an unknown on either side never breaks it."""
    from lumbar_kb.engine.logic import breaks
    from lumbar_kb.engine.model import Relation

    rel = Relation("r", Is("a", frozenset({True})), Is("b", frozenset({True})), None, "why")
    for a, b in itertools.product(K, K):
        facts = {k: v for k, v in (("a", a), ("b", b)) if v is not None}
        assert breaks(rel, facts) is (a is True and b is False), (a, b)


def test_a_relation_that_excludes_is_broken_only_when_both_are_true():
    from lumbar_kb.engine.logic import breaks
    from lumbar_kb.engine.model import Relation

    rel = Relation("r", Is("a", frozenset({True})), None, Is("b", frozenset({True})), "why")
    for a, b in itertools.product(K, K):
        facts = {k: v for k, v in (("a", a), ("b", b)) if v is not None}
        assert breaks(rel, facts) is (a is True and b is True), (a, b)


def test_a_question_is_asked_unless_its_only_if_is_false_or_it_is_moot():
    from lumbar_kb.engine.logic import asked
    from lumbar_kb.engine.model import Fact

    plain = Fact("q", "bool", (True, False), "q")
    limited = Fact("q", "bool", (True, False), "q", only_if=Is("c", frozenset({True})))
    moot = {"q": Is("m", frozenset({True}))}
    for c, m in itertools.product(K, K):
        facts = {k: v for k, v in (("c", c), ("m", m)) if v is not None}
        assert asked(plain, facts) is True
        assert asked(limited, facts) is (c is not False), c  # an unanswered condition still allows the question
        assert asked(plain, facts, moot) is (m is not True), m  # moot only once its condition is known true
        assert asked(limited, facts, moot) is (c is not False and m is not True), (c, m)


def test_the_alarm_questions_left_are_the_unanswered_ones_that_may_still_be_asked(kb):
    from lumbar_kb.engine.prepared import prepared

    unanswered_alarms = prepared(kb).unanswered_alarms

    alarms = [f.name for f in kb.input_facts if f.alarm]
    assert alarms and unanswered_alarms({}) == alarms  # vocabulary order
    assert unanswered_alarms(dict.fromkeys(alarms, False)) == []  # a "no" is an answer
    first = alarms[0]
    assert unanswered_alarms({first: True}) == alarms[1:]
    # a question made moot by the knowledge base's `not_asked_when` is not left, once its condition is true
    assert kb.not_asked_when, "the bundled knowledge base declares one (suspected compression, once diagnosed)"
    for name, cond in kb.not_asked_when.items():
        assert isinstance(cond, Is) and len(cond.values) == 1
        (trigger,) = cond.values
        assert name not in unanswered_alarms({cond.fact: trigger})
        assert name in unanswered_alarms({})


# ---- the bound on a condition's expansion (hostile rule files) -------------------------------------------------
def _t(name: str) -> Is:
    return Is(name, frozenset({True}))


def test_alternatives_counts_the_conjuncts_of_the_unpruned_dnf():
    """First principles: `any` adds, `all` multiplies, `not` swaps the two (De Morgan); a test is one."""
    from lumbar_kb.engine.logic import alternatives

    a, b, c, d, e = (_t(x) for x in "abcde")
    assert alternatives(a) == 1
    assert alternatives(AnyOf((a, b, c))) == 3
    assert alternatives(All((a, b, c))) == 1
    assert alternatives(All((AnyOf((a, b)), AnyOf((c, d, e))))) == 2 * 3
    assert alternatives(AnyOf((All((a, b)), AnyOf((c, d))))) == 1 + 2
    assert alternatives(Not(All((a, b)))) == 2  # not all = any of the negations
    assert alternatives(Not(AnyOf((a, b, c)))) == 1  # not any = all of the negations
    assert alternatives(Not(Not(AnyOf((a, b))))) == 2
    assert alternatives(Not(All((AnyOf((a, b)), c)))) == 1 + 1  # any(all(not a, not b), not c)


def test_to_dnf_takes_exactly_max_alternatives_and_refuses_one_more():
    from lumbar_kb.engine.logic import MAX_ALTERNATIVES, MAX_CONDITION_DEPTH, ConditionTooLarge, alternatives

    # the documented bounds (docs/security-and-limits.md: 256 alternatives, 32 levels of conditions)
    assert (MAX_ALTERNATIVES, MAX_CONDITION_DEPTH) == (2**8, 32)
    names = [f"f{i}" for i in range(9)]
    domains = dict.fromkeys(names, (True, False))
    # all of eight any-of-two: 2**8 alternatives, exactly the bound; with a ninth, twice the bound
    eight = All(tuple(AnyOf((_t(n), Is(n, frozenset({False})))) for n in names[:8]))
    assert alternatives(eight) == MAX_ALTERNATIVES
    to_dnf(eight, domains)  # accepted: at the bound
    nine = All((*eight.items, AnyOf((_t(names[8]), Is(names[8], frozenset({False}))))))
    assert alternatives(nine) == MAX_ALTERNATIVES + 1  # counting stops just past the bound
    with pytest.raises(ConditionTooLarge) as refused:
        to_dnf(nine, domains)
    assert str(refused.value) == f"the condition expands to more than {MAX_ALTERNATIVES} alternatives"
    # a tighter cap is honoured
    assert alternatives(nine, cap=10) == 10


# ---- completeness and scope in the Result, and a window's range ------------------------------------------------
# The knowledge base's own words, one set per audience, so a text shown to the wrong audience (or made up) differs.
INCOMPLETE = {"text": "alarm questions unanswered: ask them now", "patient_text": "please answer the warning questions"}
OUT_OF_SCOPE = {"text": "no mass: this guideline does not apply", "patient_text": "this advice is not about you"}


def kb_declaring(tmp_path, rules, alarms=(), **guideline):
    """A generated knowledge base with `alarm: true` on the facts named and the guideline.yaml blocks given."""
    root = write_kb(tmp_path / "kb", FACTS, rules)
    for name, extra in (("facts.yaml", None), ("guideline.yaml", guideline)):
        doc = yaml.safe_load((root / name).read_text())
        if extra is None:
            for fact in alarms:
                doc["facts"][fact]["alarm"] = True
        else:
            doc.update(extra)
        (root / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return load(root)


def test_an_unanswered_alarm_question_makes_the_result_incomplete_in_the_audiences_own_words(tmp_path):
    """completeness: while an alarm question is unanswered (and not moot) the result is incomplete, names the
    question, says so in the knowledge base's words for the audience, and its urgency is at least the floor; once
    every alarm question is answered (a "no" is an answer) it is complete and says nothing."""
    rule = {"id": "r.calm", "when": {"fact": "c", "is": True}, "then": [{"urgency": "low"}]}
    # a yes to an alarm question raises the urgency (an alarm question no rule reads could change nothing: issue 23)
    alarm = {"id": "r.alarm", "when": {"any": [{"fact": "a", "is": True}, {"fact": "b", "is": True}]}}
    alarm["then"] = [{"urgency": "high"}]
    kb = kb_declaring(tmp_path, [rule, alarm], alarms=("a", "b"), completeness={"floor": "mid", **INCOMPLETE})
    engine = Engine(kb)
    for audience, words in (("clinician", INCOMPLETE["text"]), ("patient", INCOMPLETE["patient_text"])):
        missing = build(kb, engine.run({"b": False, "c": True}), audience)
        assert (missing.complete, missing.unanswered_alarm, missing.incomplete_text) == (False, ["a"], words)
        assert missing.urgency == "mid"  # the rule said low: the floor lifts it, unanswered is never "no"
        answered = build(kb, engine.run({"a": False, "b": False, "c": True}), audience)
        assert (answered.complete, answered.unanswered_alarm, answered.incomplete_text) == (True, [], "")
        assert answered.urgency == "low"


def test_a_patient_out_of_scope_is_told_so_in_the_audiences_own_words_and_gets_no_differential(tmp_path):
    """scope: out of scope exactly when `out_of_scope_when` is true; unknown is never false, so an unanswered
    condition keeps the patient in scope (with no scope text) and the differential."""
    rule = {"id": "r.dx", "when": {"fact": "c", "is": True}, "then": [{"differential": "dx_a"}]}
    scope = {"out_of_scope_when": {"fact": "b", "is": False}, **OUT_OF_SCOPE}
    kb = kb_declaring(tmp_path, [rule], scope=scope)
    engine = Engine(kb)
    for audience, words in (("clinician", OUT_OF_SCOPE["text"]), ("patient", OUT_OF_SCOPE["patient_text"])):
        out = build(kb, engine.run({"b": False, "c": True}), audience)
        assert (out.in_scope, out.scope_text, out.differential) == (False, words, [])
        for inside in ({"b": True, "c": True}, {"c": True}):
            kept = build(kb, engine.run(inside), audience)
            assert (kept.in_scope, kept.scope_text) == (True, ""), inside
            assert [d.code for d in kept.differential] == ["dx_a"], inside


def test_result_json_carries_completeness_and_scope_under_their_documented_keys(tmp_path):
    """docs/clinic.md, "The result": `complete`, `unanswered_alarm`, `incomplete_text`, `in_scope`, `scope_text`, with
    the values the declarations give (here: a missing, then b answered no, which puts the patient out of scope)."""
    rule = {"id": "r.dx", "when": {"fact": "c", "is": True}, "then": [{"differential": "dx_a"}]}
    alarm = {"id": "r.alarm", "when": {"fact": "a", "is": True}, "then": [{"urgency": "high"}]}  # a yes matters
    kb = kb_declaring(
        tmp_path,
        [rule, alarm],
        alarms=("a",),
        completeness={"floor": "mid", **INCOMPLETE},
        scope={"out_of_scope_when": {"fact": "b", "is": False}, **OUT_OF_SCOPE},
    )
    engine = Engine(kb)
    keys = ("complete", "unanswered_alarm", "incomplete_text", "in_scope", "scope_text")
    incomplete_in_scope = build(kb, engine.run({"b": True}), "patient").to_dict()
    assert {k: incomplete_in_scope[k] for k in keys} == {
        "complete": False,
        "unanswered_alarm": ["a"],
        "incomplete_text": INCOMPLETE["patient_text"],
        "in_scope": True,
        "scope_text": "",
    }
    complete_out_of_scope = build(kb, engine.run({"a": False, "b": False}), "clinician").to_dict()
    assert {k: complete_out_of_scope[k] for k in keys} == {
        "complete": True,
        "unanswered_alarm": [],
        "incomplete_text": "",
        "in_scope": False,
        "scope_text": OUT_OF_SCOPE["text"],
    }


def test_an_action_given_as_a_range_keeps_its_lower_end_in_the_result_json(tmp_path):
    """A guideline range (12 to 24 hours) is `within_hours_min` .. `within_hours`; the JSON carries both ends."""
    rule = {
        "id": "r.range",
        "when": {"fact": "a", "is": True},
        "then": [{"action": "act_a", "within_hours": 24, "within_hours_min": 12, "window": "in 12 to 24 hours"}],
    }
    kb = kb_with(tmp_path, [rule])
    [action] = build(kb, Engine(kb).run({"a": True})).to_dict()["actions"]
    assert (action["within_hours_min"], action["within_hours"], action["window"]) == (12, 24, "in 12 to 24 hours")


# ---- the per-process cache of compiled knowledge bases ---------------------------------------------------------
@pytest.fixture
def empty_cache():
    """compile_kb's cache, emptied for the test and given back afterwards (other tests share the process)."""
    from lumbar_kb.engine import compiler

    saved = list(compiler._CACHE.items())
    compiler._CACHE.clear()
    yield compiler
    compiler._CACHE.clear()
    compiler._CACHE.update(saved)


def nine_knowledge_bases(tmp_path):
    """Nine knowledge bases of distinct content: one rule each, taken from one generated knowledge base."""
    import dataclasses

    rules = [{"id": f"r.n{i}", "when": {"fact": "a", "is": True}, "then": [{"urgency": "mid"}]} for i in range(9)]
    kb = kb_with(tmp_path, rules)
    return [dataclasses.replace(kb, rules=(rule,)) for rule in kb.rules]


def test_the_cache_keeps_the_eight_most_recently_compiled_and_evicts_the_least_recent(tmp_path, empty_cache):
    """compile_kb's contract: the same content compiles once (the same object again); at most 8 are kept, and
    the 9th distinct one evicts the least recently used, so the 8 most recent stay."""
    kbs = nine_knowledge_bases(tmp_path)
    first = [compile_kb(kb) for kb in kbs]
    assert len(empty_cache._CACHE) == 8
    for kb, compiled in zip(kbs[1:], first[1:], strict=True):
        assert compile_kb(kb) is compiled  # kept: no new compile
    again = compile_kb(kbs[0])  # evicted: compiled anew (an equal ruleset, a new object)
    assert again is not first[0] and again == first[0]
    assert len(empty_cache._CACHE) == 8


def test_using_a_cached_knowledge_base_makes_it_the_most_recent(tmp_path, empty_cache):
    """LRU: a hit moves the entry to the end, so the next eviction takes the one used least recently instead."""
    kbs = nine_knowledge_bases(tmp_path)
    first = [compile_kb(kb) for kb in kbs[:8]]
    assert compile_kb(kbs[0]) is first[0]  # touched: now the most recent
    last = compile_kb(kbs[8])  # the cache is full: the least recently used, kbs[1], goes
    for kb, compiled in zip([kbs[0], *kbs[2:8], kbs[8]], [first[0], *first[2:], last], strict=True):
        assert compile_kb(kb) is compiled
    assert compile_kb(kbs[1]) is not first[1]


def test_a_rule_concluding_one_action_twice_is_one_reason_with_the_earlier_window(tmp_path):
    """`because` lists the rules that concluded an item, each once, in firing order; a rule that gives one
    action two windows is one reason, and the earlier window wins as between two rules."""
    twice = {
        "id": "r.twice",
        "when": {"fact": "a", "is": True},
        "then": [{"action": "act_a", "within_hours": 12}, {"action": "act_a", "within_hours": 6}],
    }
    later = {"id": "r.later", "when": {"fact": "b", "is": True}, "then": [{"action": "act_a", "within_hours": 24}]}
    kb = kb_with(tmp_path, [twice, later])
    for name, ev in evaluators(kb).items():
        [action] = build(kb, ev.run({"a": True, "b": True})).actions
        assert (action.because, action.within_hours) == (["r.twice", "r.later"], 6), name


def test_a_decision_is_the_results_aggregate_and_leaves_the_look_ahead_empty():
    """`conclude` gives what `build` dresses: the same urgency, items and completeness; the rules in firing order;
    and no look-ahead (an empty list, never None: `escalation.decision` fills it)."""
    from lumbar_kb.engine.result import conclude

    kb = load()
    engine = Engine(kb)
    trace = engine.run({"palpable_mass": True, "leg_weakness": False, "cancer_history": True})
    found, result = conclude(kb, trace), build(kb, trace)
    assert found.could_escalate == [] and result.could_escalate == []
    assert found.fired_ids() == [f.rule for f in trace.firings] == result.fired_ids()
    assert (found.urgency, found.actions, found.complete) == (result.urgency, result.actions, result.complete)


def _conclude_kept_and_fresh(kb, trace, audience):
    """conclude with the stores as they are, and with nothing kept: neither sequences nor items (the stores
    restored afterwards)."""
    from lumbar_kb.engine.prepared import prepared
    from lumbar_kb.engine.result import conclude

    stores = (prepared(kb).concluded, prepared(kb).items)
    kept = conclude(kb, trace, audience)
    saved = [dict(store) for store in stores]
    for store in stores:
        store.clear()
    try:
        fresh = conclude(kb, trace, audience)
    finally:
        for store, before in zip(stores, saved, strict=True):
            store.clear()
            store.update(before)
    return kept, fresh


def test_conclusions_kept_by_firing_sequence_change_no_decision():
    """`conclude` keeps what a firing sequence concludes, and each item by the rules that concluded it, and
    shares its Items between patients: every Decision must equal the one made with nothing kept, whatever came
    before it. Random patients in both audiences, interleaved, so the same sequences recur in either (a store
    not keyed by audience gives the other audience's words; an item kept by its code alone, another patient's
    reasons and window)."""
    import random as _random

    from lumbar_kb.engine.patient import random_patient
    from lumbar_kb.engine.prepared import prepared

    kb = load()
    engine = Engine(kb)
    store = prepared(kb).concluded
    rng = _random.Random(41)
    recurring, acting = 0, None
    for _ in range(1500):
        trace = engine.run(random_patient(kb, rng))
        audience = ("clinician", "patient")[rng.random() < 0.5]
        recurring += (tuple(f.rule for f in trace.firings), audience == "patient") in store
        kept, fresh = _conclude_kept_and_fresh(kb, trace, audience)
        assert kept == fresh, (audience, trace.inputs)
        acting = kept if kept.actions else acting
    assert recurring > 500
    with pytest.raises(AttributeError):
        acting.actions[0].done = True  # Items are immutable: they are shared


def test_an_action_done_for_one_patient_is_not_done_for_the_next_with_the_same_rules(tmp_path):
    """Two patients whose rules fired alike share the kept conclusions; whether an action is already done is
    the patient's own (the catalogue's done_when reads an answer no rule reads): done first, then not, then
    done again, each equal to a Decision made with nothing kept, and the done action listed after the others."""
    from lumbar_kb.engine.result import conclude

    root = write_kb(
        tmp_path / "kb",
        FACTS,
        [
            {"id": "r.a", "when": {"fact": "a", "is": True}, "then": [{"action": "act_a", "within_hours": 6}]},
            {"id": "r.b", "when": {"fact": "a", "is": True}, "then": [{"action": "act_b", "within_hours": 24}]},
            {"id": "r.only_a", "when": {"fact": "b", "is": True}, "then": [{"action": "act_a", "within_hours": 6}]},
        ],
    )
    doc = yaml.safe_load((root / "guideline.yaml").read_text())
    doc["actions"]["act_a"]["done_when"] = {"fact": "c", "is": True}
    (root / "guideline.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    kb = load(root)
    engine = Engine(kb)
    for c, order in ((True, ["act_b", "act_a"]), (False, ["act_a", "act_b"]), (True, ["act_b", "act_a"])):
        trace = engine.run({"a": True, "c": c})
        kept, fresh = _conclude_kept_and_fresh(kb, trace, "clinician")
        assert kept == fresh
        assert [(i.code, i.done) for i in kept.actions] == [(code, c and code == "act_a") for code in order]
    assert conclude(kb, engine.run({"a": True})).actions[0].done is False  # unknown is not done
    [alone] = conclude(kb, engine.run({"b": True, "c": True})).actions  # the done action as the only one
    assert (alone.code, alone.done) == ("act_a", True)


def test_conclusions_are_kept_shared_and_bounded(monkeypatch):
    """Two patients whose rules fired alike get the kept Items themselves (not a recomputation), and the store
    never holds more than CONCLUDED_KEPT sequences, however many distinct ones come (flat memory)."""
    import random as _random

    from lumbar_kb.engine import result
    from lumbar_kb.engine.patient import random_patient
    from lumbar_kb.engine.prepared import prepared

    kb = load()
    engine = Engine(kb)
    first = engine.run({"palpable_mass": True, "leg_weakness": False, "cancer_history": False})
    again = engine.run({"palpable_mass": True, "leg_weakness": False, "cancer_history": False, "night_pain": False})
    assert [f.rule for f in first.firings] == [f.rule for f in again.firings]
    one, two = result.conclude(kb, first), result.conclude(kb, again)
    items = [*one.actions, *one.warnings, *one.differential]
    assert items and all(a is b for a, b in zip(items, [*two.actions, *two.warnings, *two.differential], strict=True))
    monkeypatch.setattr(result, "CONCLUDED_KEPT", 5)
    store = prepared(kb).concluded
    rng = _random.Random(3)
    sequences = set()
    for _ in range(200):
        trace = engine.run(random_patient(kb, rng))
        sequences.add(tuple(f.rule for f in trace.firings))
        result.conclude(kb, trace)
        assert len(store) <= 5
    assert len(sequences) > 20


def test_items_are_shared_between_sequences_and_bounded(monkeypatch):
    """An item depends only on the rules that concluded it: two sequences that differ elsewhere share it (the
    same Item), the same action concluded by other rules is another Item with their reasons, and the item store
    never holds more than ITEMS_KEPT, however many come."""
    import random as _random

    from lumbar_kb.engine import result
    from lumbar_kb.engine.patient import random_patient
    from lumbar_kb.engine.prepared import prepared

    kb = load()
    engine = Engine(kb)
    plain = engine.run({"palpable_mass": True, "leg_weakness": False, "cancer_history": False})
    worse = engine.run({"palpable_mass": True, "leg_weakness": True, "cancer_history": False})
    one, two = result.conclude(kb, plain), result.conclude(kb, worse)
    shared = {w.code: w for w in one.warnings} | {d.code: d for d in one.differential}
    again = [i for i in [*two.warnings, *two.differential] if i.code in shared]
    assert again and all(i is shared[i.code] or i.because != shared[i.code].because for i in again)
    assert any(i is shared[i.code] for i in again)  # reasons alike: the one Item
    monkeypatch.setattr(result, "ITEMS_KEPT", 7)
    store = prepared(kb).items
    rng = _random.Random(5)
    for _ in range(200):
        trace = engine.run(random_patient(kb, rng))
        for audience in ("clinician", "patient"):
            kept, fresh = _conclude_kept_and_fresh(kb, trace, audience)
            assert kept == fresh
            assert len(store) <= 7
