"""Compile the model into a durable-rules JSON ruleset definition.

Fact encoding (one durable message per fact, with an explicit id so durable never hashes content):
  * the patient's answered input facts are ONE message: {"t": "patient", "id": "patient", <fact>: <value>, ...}
    (an unknown fact is simply absent, so no pattern can match it);
  * each derived fact is one message asserted by the rule that derives it:
    {"t": "derived", "id": "d:<fact>", "n": <fact>, "v": <value>}.

Each knowledge-base rule becomes exactly one durable rule, named by the rule id. Its condition is put in
disjunctive normal form with negation folded into complement value sets (`logic.to_dnf`), so durable's
`$not` (unreliable within one evaluation) is never used. A conjunct's input-fact tests become one pattern
on the patient message, its derived-fact tests one pattern each, joined with `$all`; several conjuncts
become `any`. Rules reading only input facts collapse into one `$or` pattern and fire once.

An always-firing `__intake__` rule on the patient message guarantees an action runs in every session, which
avoids durable's segfault in `delete_state` for a session where no action ran.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from lumbar_kb.engine.logic import Conjunct, to_dnf
from lumbar_kb.engine.model import KnowledgeBase

INTAKE = "__intake__"
PATIENT, DERIVED = "patient", "derived"


@dataclass(frozen=True)
class CompiledKB:
    ruleset_name: str
    rules: dict  # {rule_name: {...durable rule...}}, a rule named by its knowledge-base id (its action too)
    read_derived: frozenset  # (fact, value) of derived facts some pattern tests: only these are asserted into durable
    never_true: tuple  # rule ids whose condition can never be true (empty DNF); they compile to no durable rule


_CACHE: OrderedDict[tuple, CompiledKB] = OrderedDict()  # the last few knowledge bases compiled, by content
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def compile_kb(kb: KnowledgeBase, ruleset_name: str | None = None) -> CompiledKB:
    """The compiled ruleset, built once per process for the same content: keyed by the files' sha256 and by
    the rules and fact domains themselves (a knowledge base edited in memory keeps its files' sha256)."""
    key = (
        ruleset_name,
        kb.name,
        kb.sha256,
        kb.rules,
        tuple((f.name, f.values, f.derived) for f in kb.facts.values()),
    )
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    compiled = _compile(kb, ruleset_name)
    with _CACHE_LOCK:
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return compiled


def _compile(kb: KnowledgeBase, ruleset_name: str | None) -> CompiledKB:
    domains = {name: fact.values for name, fact in kb.facts.items()}
    name = ruleset_name or f"lumbar_kb_{kb.name}_{kb.sha256[:12]}"
    rules: dict[str, dict] = {INTAKE: {"all": [{"m": {"t": PATIENT}}]}}
    read_derived: set[tuple] = set()
    never = []
    # durable-rules runs ready actions in the order their rules appear in the definition (measured; its `pri`
    # did not reorder them), so `priority` is compiled into that order: higher first, then definition order.
    for rule in sorted(kb.rules, key=lambda r: (-r.priority, r.order)):
        conjuncts = to_dnf(rule.when, domains)
        read_derived.update((f, v) for c in conjuncts for f in c if kb.facts[f].derived for v in c[f])
        if not conjuncts:
            never.append(rule.id)
            continue
        rules[rule.id] = _rule_body(conjuncts, kb)
    return CompiledKB(name, rules, frozenset(read_derived), tuple(never))


MAX_OR_BRANCHES = 8  # durable refuses a pattern with a long $or of $and's (error 113, measured: 15 fail, 12 pass)


def _rule_body(conjuncts: list[Conjunct], kb: KnowledgeBase) -> dict:
    patient_only = all(not any(kb.facts[f].derived for f in c) for c in conjuncts)
    if patient_only and len(conjuncts) <= MAX_OR_BRANCHES:
        branches = [_patient_expr(c) for c in conjuncts]
        expr = branches[0] if len(branches) == 1 else {"$or": branches}
        return {"all": [{"p": {"$and": [{"t": PATIENT}, expr]}}]}
    groups = [_conjunct_patterns(c, kb) for c in conjuncts]
    if len(groups) == 1:
        return {"all": groups[0]}
    return {"any": [{f"c{i}$all": group} for i, group in enumerate(groups)]}


def _conjunct_patterns(conjunct: Conjunct, kb: KnowledgeBase) -> list[dict]:
    inputs = {f: v for f, v in conjunct.items() if not kb.facts[f].derived}
    patterns = []
    if inputs:
        patterns.append({"p": {"$and": [{"t": PATIENT}, _patient_expr(inputs)]}})
    for i, fact in enumerate(f for f in conjunct if kb.facts[f].derived):
        patterns.append({f"d{i}": {"$and": [{"t": DERIVED}, {"n": fact}, _one_of("v", conjunct[fact])]}})
    return patterns


def _patient_expr(conjunct: Conjunct) -> dict:
    tests = [_one_of(fact, values) for fact, values in conjunct.items()]
    return tests[0] if len(tests) == 1 else {"$and": tests}


def _one_of(attribute: str, values) -> dict:
    ordered = sorted(values, key=lambda v: (not isinstance(v, bool), str(v)))
    if len(ordered) == 1:
        return {attribute: ordered[0]}
    return {"$or": [{attribute: v} for v in ordered]}
