"""`engine.analysis.bools` builds its terms through z3's C API: each must be the very term z3's own function makes
(z3 shares equal terms, so `.eq` is identity of the term), for every way the analyses call them and for the
calls they hand back to z3 (Python bools, empty lists, generators)."""

from __future__ import annotations

import z3
from hypothesis import given, settings
from hypothesis import strategies as st

from lumbar_kb.engine.analysis import bools

ATOMS = [z3.Bool(f"b{i}") for i in range(4)]


def terms(depth: int = 2):
    leaf = st.sampled_from(ATOMS)
    if depth == 0:
        return leaf
    inner = terms(depth - 1)
    return st.one_of(
        leaf,
        st.lists(inner, max_size=4).map(z3.And),
        st.lists(inner, max_size=4).map(z3.Or),
        inner.map(z3.Not),
    )


ARGS = st.lists(st.one_of(terms(), st.booleans()), max_size=5)
NARY = [(bools.And, z3.And), (bools.Or, z3.Or)]
BINARY = [(bools.Implies, z3.Implies), (bools.Xor, z3.Xor)]


@settings(max_examples=150, deadline=None)
@given(ARGS)
def test_and_and_or_make_z3s_own_term_from_a_list_the_arguments_or_a_generator(args):
    for ours, theirs in NARY:
        expected = theirs(list(args))
        assert ours(list(args)).eq(expected), (ours.__name__, args)
        assert ours(tuple(args)).eq(expected), (ours.__name__, args)
        assert ours(a for a in args).eq(expected), (ours.__name__, args)
        if args:  # as separate arguments (none at all is no call the analyses make)
            assert ours(*args).eq(theirs(*args)), (ours.__name__, args)


@settings(max_examples=150, deadline=None)
@given(terms(), st.one_of(terms(), st.booleans()))
def test_not_implies_and_xor_make_z3s_own_term(a, b):
    assert bools.Not(a).eq(z3.Not(a))
    for ours, theirs in BINARY:
        assert ours(a, b).eq(theirs(a, b)), (ours.__name__, a, b)
        if not isinstance(b, bool):
            assert ours(b, a).eq(theirs(b, a)), (ours.__name__, b, a)


@settings(max_examples=150, deadline=None)
@given(st.lists(terms(), max_size=3), st.lists(st.one_of(terms(), st.booleans()), max_size=4))
def test_check_answers_as_z3s_solver_does(facts, assumptions):
    solver = z3.Solver()
    solver.add(*facts)
    assert bools.check(solver, *assumptions) == solver.check(*assumptions), (facts, assumptions)
    optimize = z3.Optimize()  # another kind of solver goes to its own check (which takes terms only)
    optimize.add(*facts)
    terms_only = [a for a in assumptions if not isinstance(a, bool)]
    assert bools.check(optimize, *terms_only) == optimize.check(*terms_only)
