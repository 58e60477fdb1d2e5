"""Three-valued (Kleene) logic over the model's conditions.

A fact is True/False/a string when answered, None when unknown. A condition is True, False or None
(unknown); a rule fires only when its condition is True, so an unanswered question never counts as "no".

Also: negation pushed down to the facts as complement sets (so the engine never needs durable-rules'
unreliable `$not`), disjunctive normal form for the compiler, and the support of a true condition (which
facts made it true) for the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import combinations, product

from lumbar_kb.engine.model import All, AnyOf, Condition, Fact, KnowledgeBase, Not, Relation, Test, Value

Facts = Mapping[str, Value]
Conjunct = dict  # dict[str, frozenset]: fact -> allowed values, all must hold


def evaluate(cond: Condition, facts: Facts) -> bool | None:
    if isinstance(cond, Test):
        value = facts.get(cond.fact)
        return None if value is None else value in cond.values
    if isinstance(cond, (All, AnyOf)):
        decisive = isinstance(cond, AnyOf)  # one true item settles `any`; one false item settles `all`
        result: bool | None = not decisive
        for item in cond.items:
            v = evaluate(item, facts)
            if v is decisive:
                return decisive
            if v is None:
                result = None
        return result
    v = evaluate(cond.item, facts)
    return None if v is None else not v


Predicate = Callable[[Facts], "bool | None"]


def predicate(cond: Condition) -> Predicate:
    """`cond` as a function of the facts, equal to `evaluate(cond, facts)` for every facts (tested over the
    truth tables and generated conditions): built once from the condition's data (closures, never `eval`),
    it saves the type dispatch of `evaluate` on every call, which the look-ahead and the Result make by the
    dozen per patient."""
    if isinstance(cond, Test):
        fact, values = cond.fact, cond.values

        def test(facts: Facts) -> bool | None:
            value = facts.get(fact)
            return None if value is None else value in values

        return test
    if isinstance(cond, Not):
        inner = predicate(cond.item)

        def negation(facts: Facts) -> bool | None:
            value = inner(facts)
            return None if value is None else not value

        return negation
    items = tuple(predicate(item) for item in cond.items)
    decisive = isinstance(cond, AnyOf)  # one true item settles `any`; one false item settles `all` (as evaluate)

    def junction(facts: Facts) -> bool | None:
        result: bool | None = not decisive
        for item in items:
            value = item(facts)
            if value is decisive:
                return decisive
            if value is None:
                result = None
        return result

    return junction


def assume(cond: Condition, fact: str, value: Value) -> Condition | bool:
    """`cond` once `fact` is known to be `value`: True or False when that settles it, else the condition that is
    left, without the settled parts. For every facts where `fact` is unknown or `value`,
    `evaluate(assume(cond, fact, value), facts) == evaluate(cond, {**facts, fact: value})` (Kleene: a true item
    settles `any`, a false one settles `all`, and the other settled items drop out; tested on every assignment
    of generated conditions). The look-ahead keeps what a trial answer adds by the facts its rules still read
    once the answer is assumed."""
    if isinstance(cond, Test):
        return value in cond.values if cond.fact == fact else cond
    if isinstance(cond, Not):
        inner = assume(cond.item, fact, value)
        return (not inner) if isinstance(inner, bool) else Not(inner)
    decisive = isinstance(cond, AnyOf)
    left: list[Condition] = []
    for item in cond.items:
        settled = assume(item, fact, value)
        if isinstance(settled, bool):
            if settled is decisive:
                return decisive
            continue  # settled the other way: it no longer counts
        left.append(settled)
    if not left:
        return not decisive
    return AnyOf(tuple(left)) if decisive else All(tuple(left))


def contradicts_only_if(fact: Fact, facts: Facts) -> bool:
    """`fact` is given in `facts` although its `only_if` is false there (a patient file would be refused).
    An unknown `only_if` does not contradict: the fact may be given while what it depends on is unanswered."""
    return fact.only_if is not None and fact.name in facts and evaluate(fact.only_if, facts) is False


def breaks(relation: Relation, facts: Facts) -> bool:
    """The answers in `facts` contradict `relation`: its `when` is true and what it implies is false, or what it
    excludes is true. Unknown answers never break a relation."""
    if evaluate(relation.when, facts) is not True:
        return False
    if relation.implies is not None and evaluate(relation.implies, facts) is False:
        return True
    return relation.excludes is not None and evaluate(relation.excludes, facts) is True


def asked(fact: Fact, facts: Facts, not_asked_when: Mapping | None = None) -> bool:
    """The question may be put to this patient: its `only_if` is not false, and the condition that makes it
    moot (the knowledge base's `not_asked_when`, e.g. "suspected compression?" once compression is diagnosed)
    is not true."""
    if fact.only_if is not None and evaluate(fact.only_if, facts) is False:
        return False
    moot = (not_asked_when or {}).get(fact.name)
    return moot is None or evaluate(moot, facts) is not True


def support(cond: Condition, facts: Facts) -> dict[str, Value]:
    """The facts that make `cond` True (or, under a `not`, False), in condition order.

    For `any`, every true branch contributes, so a rule that fires on three red flags lists all three.
    One-off use of `supporter`, which the engine builds once per rule.
    """
    return supporter(cond)(facts)


def supporter(cond: Condition) -> Callable[[Facts], dict[str, Value]]:
    """`support` of `cond` as a function of the facts, built once from the condition's data like `predicate`
    (tested against a plain recursive walk on every assignment of generated conditions): the engine records
    it at every firing."""
    walk = _supporter(cond, True)

    def supported(facts: Facts) -> dict[str, Value]:
        out: dict[str, Value] = {}
        walk(facts, out)
        return out

    return supported


def _supporter(cond: Condition, want: bool) -> Callable[[Facts, dict], None]:
    if isinstance(cond, Test):
        fact = cond.fact

        def given(facts: Facts, out: dict) -> None:
            value = facts.get(fact)
            if value is not None:
                out[fact] = value  # a fact cited twice keeps its first place (a dict keeps insertion order)

        return given
    if isinstance(cond, Not):
        return _supporter(cond.item, not want)
    walks = tuple(_supporter(item, want) for item in cond.items)
    if isinstance(cond, All) == want:  # every item counts

        def every(facts: Facts, out: dict) -> None:
            for walk in walks:
                walk(facts, out)

        return every
    checks = tuple(zip((predicate(item) for item in cond.items), walks, strict=True))

    def some(facts: Facts, out: dict) -> None:
        for check, walk in checks:
            if check(facts) is want:
                walk(facts, out)

    return some


MAX_ALTERNATIVES = 256  # conjuncts one condition may expand to (the loader refuses more, naming the rule)
MAX_CONDITION_DEPTH = 32  # conditions nested in conditions (the loader refuses deeper)


def alternatives(cond: Condition, positive: bool = True, cap: int = MAX_ALTERNATIVES + 1) -> int:
    """How many conjuncts `to_dnf` may produce for `cond` before pruning (an upper bound, at most `cap`):
    `any` adds its items' counts, `all` multiplies them, `not` swaps the two. Linear in the condition's size,
    so an exponential expansion is refused before it is attempted."""
    if isinstance(cond, Test):
        return 1
    if isinstance(cond, Not):
        return alternatives(cond.item, not positive, cap)
    conjunctive = isinstance(cond, All) == positive
    total = 1 if conjunctive else 0
    for item in cond.items:
        n = alternatives(item, positive, cap)
        total = min(cap, total * n if conjunctive else total + n)
    return total


class ConditionTooLarge(ValueError):
    """A condition whose disjunctive normal form would exceed MAX_ALTERNATIVES conjuncts."""


def to_dnf(cond: Condition, domains: Mapping[str, tuple]) -> list[Conjunct]:
    """Disjunctive normal form with negation folded into complement sets.

    The result is True exactly when `cond` is True (under Kleene logic `not (x in S)` is True exactly when
    x is known and in the complement of S). Unsatisfiable conjuncts are dropped; so are conjuncts subsumed
    by a more general one. A condition that could expand past MAX_ALTERNATIVES conjuncts is refused
    (ConditionTooLarge) before any expansion: the loader names such a rule first.
    """
    if alternatives(cond) > MAX_ALTERNATIVES:
        raise ConditionTooLarge(f"the condition expands to more than {MAX_ALTERNATIVES} alternatives")
    conjuncts = _dnf(cond, domains, positive=True)
    unique: list[Conjunct] = []
    for c in conjuncts:
        if c not in unique:
            unique.append(c)
    return [c for c in unique if not any(o is not c and _subsumes(o, c) for o in unique)]


def _subsumes(general: Conjunct, specific: Conjunct) -> bool:
    """Every patient satisfying `specific` satisfies `general`."""
    return general != specific and all(f in specific and specific[f] <= vals for f, vals in general.items())


def _dnf(cond: Condition, domains: Mapping[str, tuple], positive: bool) -> list[Conjunct]:
    if isinstance(cond, Test):
        values = cond.values if positive else frozenset(domains[cond.fact]) - cond.values
        return [{cond.fact: frozenset(values)}] if values else []
    if isinstance(cond, Not):
        return _dnf(cond.item, domains, not positive)
    conjunctive = isinstance(cond, All) == positive  # De Morgan
    parts = [_dnf(item, domains, positive) for item in cond.items]
    if not conjunctive:
        return [c for part in parts for c in part]
    product: list[Conjunct] = [{}]
    for part in parts:
        product = [merged for left in product for right in part if (merged := _merge(left, right)) is not None]
    return product


def _merge(a: Conjunct, b: Conjunct) -> Conjunct | None:
    out = dict(a)
    for fact, values in b.items():
        joined = out[fact] & values if fact in out else values
        if not joined:
            return None
        out[fact] = joined
    return out


def exclusive_derivers(kb: KnowledgeBase) -> bool:
    """True when every two rules that derive one fact with two values have conditions no patient meets together,
    seen from their disjunctive normal forms alone (each pair of alternatives asks one fact for disjoint values).
    False means "cannot tell this way" (derived facts, relations): the solver decides."""
    domains = {name: tuple(f.values) for name, f in kb.facts.items()}
    derivers: dict[str, list] = {}
    for rule in kb.rules:
        for derive in rule.derives():
            derivers.setdefault(derive.fact, []).append((derive.value, to_dnf(rule.when, domains)))
    for rules in derivers.values():
        for (value, alternatives), (other, others) in combinations(rules, 2):
            # two alternatives meet unless some fact they both test is asked for disjoint values (`_merge`)
            if value != other and any(_merge(a, b) is not None for a, b in product(alternatives, others)):
                return False
    return True
