"""Boolean terms for the solver, built straight through z3's C API.

z3's Python `And`, `Or`, `Not`, `Implies` and `Xor` look for probes, contexts and vectors, and cast every
argument through its sort, before the one C call that makes the term. The analyses build their formulas
out of little else (a `check` makes some 35,000 of them), and those Python checks were most of what a
check, the clinical algorithm and `review` cost. Here the same C calls are made directly when every
argument is a plain `BoolRef` of one context, which is all the analyses ever pass; anything else (a Python
bool, a probe, a vector, mixed contexts) goes to z3's own function. The terms are the very ones z3 makes
(the same C call on the same arguments: tested with `.eq`).
"""

from __future__ import annotations

import z3

_BoolRef = z3.BoolRef
_Ast = z3.Ast


def _plain(args: tuple | list) -> z3.Context | None:
    """The one context of `args` when each is a plain BoolRef in it, else None."""
    if not args:
        return None
    ctx = args[0].ctx if type(args[0]) is _BoolRef else None
    if ctx is None:
        return None
    for a in args:
        if type(a) is not _BoolRef or a.ctx is not ctx:
            return None
    return ctx


def _args(args: tuple) -> tuple | list:
    """One list or tuple of terms, or the terms themselves (a generator is left for z3 to read)."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return args[0]
    return args


def _asts(terms: tuple | list):
    """The terms as the C array of their ASTs that z3's n-ary calls take."""
    return (_Ast * len(terms))(*[a.ast for a in terms])


def _nary(make, theirs, args: tuple) -> z3.BoolRef:
    items = _args(args)
    ctx = _plain(items)
    if ctx is None:
        return theirs(*args)
    return _BoolRef(make(ctx.ref(), len(items), _asts(items)), ctx)


def And(*args) -> z3.BoolRef:  # z3's names, so that a call reads the same
    return _nary(z3.Z3_mk_and, z3.And, args)


def Or(*args) -> z3.BoolRef:
    return _nary(z3.Z3_mk_or, z3.Or, args)


def Not(a) -> z3.BoolRef:
    if type(a) is not _BoolRef:
        return z3.Not(a)
    ctx = a.ctx
    return _BoolRef(z3.Z3_mk_not(ctx.ref(), a.ast), ctx)


def Implies(a, b) -> z3.BoolRef:
    ctx = _plain((a, b))
    if ctx is None:
        return z3.Implies(a, b)
    return _BoolRef(z3.Z3_mk_implies(ctx.ref(), a.ast, b.ast), ctx)


def Xor(a, b) -> z3.BoolRef:
    ctx = _plain((a, b))
    if ctx is None:
        return z3.Xor(a, b)
    return _BoolRef(z3.Z3_mk_xor(ctx.ref(), a.ast, b.ast), ctx)


def check(solver: z3.Solver, *assumptions) -> z3.CheckSatResult:
    """`solver.check(*assumptions)`: z3's casts every assumption through the Boolean sort first (a `diff` makes
    some 200,000 of them). A solver of another kind, or an assumption that is not a plain term of the solver's
    context, goes to z3's own."""
    if type(solver) is not z3.Solver or (assumptions and _plain(assumptions) is not solver.ctx):
        return solver.check(*assumptions)
    return z3.CheckSatResult(
        z3.Z3_solver_check_assumptions(solver.ctx.ref(), solver.solver, len(assumptions), _asts(assumptions))
    )
