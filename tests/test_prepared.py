"""The fast forms the engine, the Result and the look-ahead use are the slow ones, exactly.

`logic.predicate` and `logic.supporter` turn a condition into functions once; `prepared.Prepared` works a
knowledge base out once (questions asked, alarms left, answers allowed). Each is checked against the plain
definition it replaces (`evaluate`, `asked`, `contradicts_only_if` and `breaks`, which test_logic checks
against the Kleene tables; `support` and the alarms left, written out here as plain walks): on every
three-valued assignment of a small vocabulary for generated conditions, and on patients of the bundled
guideline drawn without validation (so that answers contradicting each other, which a patient file may not
give, are among them).
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lumbar_kb.engine.loader import load
from lumbar_kb.engine.logic import (
    asked,
    assume,
    breaks,
    contradicts_only_if,
    evaluate,
    predicate,
    support,
    supporter,
)
from lumbar_kb.engine.model import All, AnyOf, Not, condition_facts
from lumbar_kb.engine.model import Test as Is  # not `Test`: pytest would try to collect it
from lumbar_kb.engine.prepared import Prepared, prepared

from .bundled import KB

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

DOMAINS = {"a": (True, False), "b": (True, False), "c": (True, False), "e": ("x", "y", "z")}
# every assignment: each fact unknown (left out) or one of its values
ASSIGNMENTS = [
    {name: v for name, v in zip(DOMAINS, values, strict=True) if v is not None}
    for values in itertools.product(*[(None, *domain) for domain in DOMAINS.values()])
]

tests = st.sampled_from(sorted(DOMAINS)).flatmap(
    lambda fact: st.sets(st.sampled_from(DOMAINS[fact]), min_size=1).map(lambda vs: Is(fact, frozenset(vs)))
)
conditions = st.recursive(
    tests,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda items: All(tuple(items))),
        st.lists(inner, min_size=1, max_size=3).map(lambda items: AnyOf(tuple(items))),
        inner.map(Not),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(conditions)
def test_a_predicate_is_the_condition_evaluated_on_every_assignment(cond):
    check = predicate(cond)
    values = [check(facts) for facts in ASSIGNMENTS]
    assert values == [evaluate(cond, facts) for facts in ASSIGNMENTS]
    assert all(v is None or type(v) is bool for v in values)  # true, false or unknown: never another truthy value


@settings(max_examples=300, deadline=None)
@given(
    conditions, st.sampled_from(sorted(DOMAINS)).flatmap(lambda f: st.tuples(st.just(f), st.sampled_from(DOMAINS[f])))
)
def test_assuming_an_answer_leaves_the_condition_that_answer_makes_of_it(cond, answer):
    """`assume(cond, fact, value)` is `cond` with the answer given, on every assignment: a settled True/False when
    the answer settles it, else a condition that no longer reads the fact."""
    fact, value = answer
    left = assume(cond, fact, value)
    for facts in ASSIGNMENTS:
        given_answer = {**facts, fact: value}
        if isinstance(left, bool):
            assert evaluate(cond, given_answer) is left, (facts, left)
        else:
            assert evaluate(left, facts) == evaluate(cond, given_answer), (facts, left)
    if not isinstance(left, bool):
        assert fact not in condition_facts(left)


def _walk(cond, facts: dict, want: bool, out: dict) -> None:
    """The support of a condition as a plain recursive walk: a known fact under a test counts; `not` swaps what
    is wanted; every item of an `all` wanted true (or an `any` wanted false) counts, otherwise only the items
    whose value is the one wanted; a fact keeps its first place."""
    if isinstance(cond, Is):
        if facts.get(cond.fact) is not None:
            out.setdefault(cond.fact, facts[cond.fact])
    elif isinstance(cond, Not):
        _walk(cond.item, facts, not want, out)
    else:
        every = isinstance(cond, All) == want
        for item in cond.items:
            if every or evaluate(item, facts) is want:
                _walk(item, facts, want, out)


@settings(max_examples=300, deadline=None)
@given(conditions)
def test_a_supporter_cites_what_the_plain_walk_cites_in_the_same_order(cond):
    cite = supporter(cond)
    for facts in ASSIGNMENTS:
        expected: dict = {}
        _walk(cond, facts, True, expected)
        got = cite(facts)
        assert got == expected and list(got) == list(expected), facts
        assert support(cond, facts) == expected  # the one-off form is the same supporter


def test_predicates_of_the_three_connectives_follow_unknown_as_the_tables_do():
    a, b = Is("a", frozenset({True})), Is("b", frozenset({True}))
    # the table rows where unknown decides: unknown and true is unknown, unknown or false is unknown,
    # unknown and false is false, unknown or true is true; not unknown is unknown
    assert predicate(All((a, b)))({"b": True}) is None
    assert predicate(AnyOf((a, b)))({"b": False}) is None
    assert predicate(All((a, b)))({"b": False}) is False
    assert predicate(AnyOf((a, b)))({"b": True}) is True
    assert predicate(Not(a))({}) is None and predicate(Not(a))({"a": False}) is True


# ---- the bundled guideline prepared ------------------------------------------------------------------------


def _raw_patients(n: int, seed: int) -> list[dict]:
    """Answers drawn without validation: each input fact unknown, or any of its values, independently."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        facts = {}
        for fact in KB.input_facts:
            choice = rng.choice((None, None, *fact.values))
            if choice is not None:
                facts[fact.name] = choice
        out.append(facts)
    return out


def _allowed(facts: dict) -> bool:
    """The definition: no given fact's only_if is false, no relation broken."""
    return not any(contradicts_only_if(f, facts) for f in KB.input_facts) and not any(
        breaks(r, facts) for r in KB.relations
    )


def test_prepared_questions_asked_and_alarms_left_are_the_logic_ones():
    plan = prepared(KB)
    assert plan.alarm_facts and plan.moot and plan.only_if  # the guideline has all three: the test can bite
    for facts in _raw_patients(3000, 11):
        for fact in KB.input_facts:
            assert plan.asked(fact, facts) == asked(fact, facts, KB.not_asked_when), (fact.name, facts)
        if not _allowed(facts):
            continue  # completeness is read for patients a file could give
        # issue 23: an alarm question counts while an alarming answer (yes; any value of an enum) could still be given
        alarming = lambda f: [True] if f.type == "bool" else list(f.values)
        left = [
            f.name
            for f in KB.input_facts
            if f.alarm
            and facts.get(f.name) is None
            and asked(f, facts, KB.not_asked_when)
            and any(_allowed({**facts, f.name: v}) for v in alarming(f))
        ]
        assert plan.unanswered_alarms(facts) == left


def test_prepared_allowed_is_the_definition_and_adding_one_answer_checks_only_what_it_can_change():
    plan = prepared(KB)
    seen = set()
    for facts in _raw_patients(3000, 12):
        allowed = _allowed(facts)
        assert plan.allowed(facts) == allowed, facts
        seen.add(allowed)
        if not allowed:
            continue
        for fact in KB.input_facts:
            if fact.name in facts:
                continue
            for answer in fact.values:
                trial = {**facts, fact.name: answer}
                assert plan.allowed_adding(trial, fact.name) == _allowed(trial), (fact.name, answer, facts)
    assert seen == {True, False}  # both outcomes were drawn


def test_prepared_is_made_once_per_knowledge_base_and_forgets_the_least_recent(tmp_path):
    from lumbar_kb.engine import prepared as module

    saved = list(module._PREPARED)
    try:
        module._PREPARED.clear()
        first = prepared(KB)
        assert prepared(KB) is first and isinstance(first, Prepared)
        others = [load(KB.root) for _ in range(8)]  # equal content, distinct objects
        for kb in others:
            assert prepared(kb).kb is kb
        assert len(module._PREPARED) == 8  # the documented "last 8 used"
        assert all(p.kb is not KB for p in module._PREPARED)  # the least recently used went first
        prepared(others[0])  # touching one makes it the most recent: the next one made evicts others[1], not it
        assert module._PREPARED[0].kb is others[0]
        prepared(KB)
        kept = [p.kb for p in module._PREPARED]
        assert kept[0] is KB and kept[1] is others[0] and not any(kb is others[1] for kb in kept)
    finally:
        module._PREPARED[:] = saved


def test_only_the_facts_some_only_if_or_relation_reads_are_constrained():
    from lumbar_kb.engine.model import condition_facts

    plan = prepared(KB)
    read = {name for f in KB.input_facts if f.only_if for name in (f.name, *condition_facts(f.only_if))}
    for r in KB.relations:
        for cond in (r.when, r.implies, r.excludes):
            read.update(condition_facts(cond) if cond is not None else ())
    assert read and read != {f.name for f in KB.input_facts}  # some are constrained, some are not
    assert {f.name for f in KB.input_facts if plan.constrains(f.name)} == read & {f.name for f in KB.input_facts}


def test_allowed_on_a_generated_vocabulary_with_every_kind_of_constraint(tmp_path):
    """Every assignment of a small vocabulary with an only_if, a relation that implies and one that excludes
    (the excluded fact read nowhere else): Prepared.allowed is the definition, and adding any one answer to an
    allowed assignment is judged as the definition judges the whole."""
    import yaml

    from .kbgen import write_kb

    facts = {
        "a": {"type": "bool"},
        "b": {"type": "bool"},
        "c": {"type": "bool"},
        "e": {"type": "enum", "values": ["x", "y"]},
    }
    root = write_kb(
        tmp_path / "kb", facts, [{"id": "r", "when": {"fact": "a", "is": True}, "then": [{"warning": "warn_a"}]}]
    )
    doc = yaml.safe_load((root / "facts.yaml").read_text())
    doc["facts"]["e"]["only_if"] = {"fact": "a", "is": True}
    doc["relations"] = [
        {"id": "b_needs_a", "when": {"fact": "b", "is": True}, "implies": {"fact": "a", "is": True}, "because": "x"},
        {
            "id": "a_excludes_c",
            "when": {"fact": "a", "is": True},
            "excludes": {"fact": "c", "is": True},
            "because": "y",
        },
    ]
    (root / "facts.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    kb = load(root)
    plan = Prepared(kb)

    def definition(given):
        return not any(contradicts_only_if(f, given) for f in kb.input_facts) and not any(
            breaks(r, given) for r in kb.relations
        )

    names = [f.name for f in kb.input_facts]
    choices = [(None, *kb.facts[n].values) for n in names]
    refused = 0
    judged: dict = {}  # by what the look-ahead keeps a judgment by: the answer and the facts its checks read
    for values in itertools.product(*choices):
        given = {n: v for n, v in zip(names, values, strict=True) if v is not None}
        assert plan.allowed(given) == definition(given), given
        if not definition(given):
            continue
        for name in names:
            for value in () if name in given else kb.facts[name].values:
                trial = {**given, name: value}
                assert plan.allowed_adding(trial, name) == definition(trial), trial
                refused += not definition(trial)
                key = (name, value, *(given.get(f) for f in plan.check_reads[name]))
                assert judged.setdefault(key, definition(trial)) == definition(trial), (key, trial)
    assert refused and {n for n in names if plan.constrains(n)} == {"a", "b", "c", "e"}
    # every fact's checks read the fact itself and what its only_if and relations name; the others none
    assert plan.check_reads == {"a": ("a", "b", "c", "e"), "b": ("a", "b"), "c": ("a", "c"), "e": ("a", "e")}


def _awkward_values(kb):
    """Values a patient mapping may hold: each fact's own, the spellings a careless extract uses, and the types
    parse_patient refuses (1 and 0 are equal to True and False in Python, but are not yes/no answers)."""
    spelt = [v for f in kb.input_facts if f.type == "enum" for v in f.values]
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(spelt),
        st.sampled_from([0, 1, 1.0, "yes", "true", "Breast", "", " breast", [], {}, ["breast"]]),
        st.text(max_size=4),
        st.integers(),
    )


def _mappings(kb):
    names = [f.name for f in kb.input_facts]
    derived = [name for name, f in kb.facts.items() if f.derived]
    keys = st.one_of(
        st.sampled_from(names),
        st.sampled_from(names),  # mostly the vocabulary's own facts
        st.sampled_from([*derived, "id", "note", "leg weakness", "unknown_fact", ""]),
    )
    return st.one_of(
        # answers drawn from each fact's values: mostly valid, and contradicting each other or an only_if at times
        st.fixed_dictionaries(
            {},
            optional={
                f.name: st.one_of(st.none(), st.sampled_from(f.values if f.type == "enum" else (True, False)))
                for f in kb.input_facts
            },
        ),
        st.dictionaries(keys, _awkward_values(kb), max_size=8),
    )


@settings(max_examples=1500, deadline=None)
@given(_mappings(KB))  # the strategy built once: built at each draw, it cost more than the test
def test_known_inputs_accepts_exactly_what_parse_patient_accepts_and_gives_the_same_inputs(mapping):
    """The cohort's fast reading (`Prepared.known_inputs`, no positions) gives parse_patient's inputs for every
    mapping parse_patient accepts, in the same (vocabulary) order, and None for every mapping it refuses, so
    that the slow reading then says why."""
    from lumbar_kb.engine.errors import PatientError
    from lumbar_kb.engine.patient import parse_patient
    from lumbar_kb.engine.source import Positions

    kb = KB
    quick = prepared(kb).known_inputs(mapping)
    try:
        slow = parse_patient(mapping, Positions(""), kb)
    except PatientError:
        event("refused")
        assert quick is None, mapping
        return
    event("accepted")
    assert quick is not None, mapping
    assert list(quick.items()) == list(slow.items()), mapping


def test_known_inputs_refuses_what_an_extract_gets_wrong_as_parse_patient_does():
    """Hand-picked mappings a careless extract holds: each refused by both readings (the fast one says None)."""
    from lumbar_kb.engine.errors import PatientError
    from lumbar_kb.engine.patient import parse_patient
    from lumbar_kb.engine.source import Positions

    awkward = [
        {"leg_weakness": 1},  # equal to True in Python, not a yes/no answer
        {"leg_weakness": 0.0},
        {"leg_weakness": "yes"},
        {"primary_cancer": []},  # unhashable: must not reach a set lookup
        {"primary_cancer": {"breast": True}},
        {"primary_cancer": "Breast"},
        {"id": [1]},
        {"note": None},
        {"cancer_history": False, "primary_cancer": "breast"},  # only_if refuses it
        {"suspected_cord_compression": "yes"},
        {"leg weakness": True},
    ]
    for mapping in awkward:
        with pytest.raises(PatientError):
            parse_patient(mapping, Positions(""), KB)
        assert prepared(KB).known_inputs(mapping) is None, mapping
