"""FHIRPath alternatives to the CQL library's rule conditions, for an engine without CQL.

Each rule's condition as one self-contained FHIRPath expression, evaluated with a QuestionnaireResponse to the
exported Questionnaire as its context (the root every path starts from): every variable it reads it defines
first with `defineVariable` (FHIRPath 3.0), the answers, their stages and the derived facts (the rules that
derive them, inlined), each once, so nothing is left for the caller to bind. The answers
are read as `lumbar-kb evaluate` reads them: a boolean, a yes/no coding, an enum coding or string; votes that
disagree leave the fact unknown (the empty collection), and so do an answer its `only_if` contradicts and the
answers a broken relation names. FHIRPath's empty-propagation is Kleene's three-valued logic (`and`, `or`,
`not()`, `=` and `in` on an empty operand), so an unanswered question is empty, never false.
"""

from __future__ import annotations

import re

from lumbar_kb.clinic.fhir.codes import Codes
from lumbar_kb.clinic.fhir.elm import ITEM_DEPTH
from lumbar_kb.engine.model import All, AnyOf, Condition, KnowledgeBase, Not, Test, Value, condition_facts


def _lit(value: Value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _coding(codings) -> str:
    return " or ".join(f"(system = {_lit(c.system)} and code = {_lit(c.code)})" for c in codings) or "false"


def condition(cond: Condition, facts: dict[str, str]) -> str:
    if isinstance(cond, Test):
        values = sorted(cond.values, key=str)
        if len(values) == 1:
            return f"({facts[cond.fact]} = {_lit(values[0])})"
        return f"({facts[cond.fact]} in ({' | '.join(_lit(v) for v in values)}))"
    if isinstance(cond, All):
        return "(" + " and ".join(condition(i, facts) for i in cond.items) + ")"
    if isinstance(cond, AnyOf):
        return "(" + " or ".join(condition(i, facts) for i in cond.items) + ")"
    assert isinstance(cond, Not)
    return f"({condition(cond.item, facts)}).not()"


def variables(kb: KnowledgeBase, codes: Codes) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The expression's building blocks, each defined once: (variable name, FHIRPath over the response) in an order
    where each refers only to earlier ones, and each fact as `%name` (input and derived)."""
    levels = ["item"]
    for _ in range(1, ITEM_DEPTH):  # combine(), not repeat() or `|`: no deep comparison of every item (slow)
        levels.append(levels[-1] + ".item")
    defined: list[tuple[str, str]] = [("items", levels[0] + "".join(f".combine({lv})" for lv in levels[1:]))]
    facts: dict[str, str] = {}

    def define(name: str, expr: str) -> str:
        defined.append((name, expr))
        return f"%{name}"

    for fact in kb.input_facts:
        answers = define(f"{fact.name}_answers", f"%items.where(linkId = {_lit(fact.name)}).answer.value")
        if fact.type == "bool":
            votes = (
                f"({answers}.ofType(boolean) | {answers}.ofType(Coding).where({_coding(codes.yes)}).select(true)"
                f" | {answers}.ofType(Coding).where({_coding(codes.no)}).select(false))"
            )
        else:
            allowed = " or ".join(f"$this = {_lit(v)}" for v in fact.values)
            parts = [f"{answers}.ofType(Coding).where(system = {_lit(codes.kb_system)}).code.where({allowed})"]
            for value, codings in codes.values.get(fact.name, {}).items():
                if codings:
                    parts.append(f"{answers}.ofType(Coding).where({_coding(codings)}).select({_lit(value)})")
            parts.append(f"{answers}.ofType(string).where({allowed})")
            votes = "(" + " | ".join(parts) + ")"
        votes = define(f"{fact.name}_votes", votes)
        facts[fact.name] = define(f"{fact.name}_answered", f"iif({votes}.count() = 1, {votes}, {{}})")
    for fact in kb.input_facts:  # as cql.build_library: only_if, then the relations, in the loader's order
        if fact.only_if is not None:
            facts[fact.name] = define(
                f"{fact.name}_possible", f"iif({condition(fact.only_if, facts)} = false, {{}}, {facts[fact.name]})"
            )
    for i, relation in enumerate(kb.relations):
        sides = []
        if relation.implies is not None:
            sides.append(f"{condition(relation.implies, facts)} = false")
        if relation.excludes is not None:
            sides.append(f"{condition(relation.excludes, facts)} = true")
        broken = define(
            f"relation_{i}_broken", f"({condition(relation.when, facts)} = true and ({' or '.join(sides)}))"
        )
        named = [relation.when, *(c for c in (relation.implies, relation.excludes) if c is not None)]
        for name in dict.fromkeys(f for side in named for f in condition_facts(side)):
            facts[name] = define(f"{name}_after_{i}", f"iif({broken}, {{}}, {facts[name]})")
    for fact in kb.input_facts:
        facts[fact.name] = define(fact.name, facts[fact.name])
    pending = list(kb.derived_facts)
    while pending:
        for fact in list(pending):
            derivers = [(r, d) for r in kb.rules for d in r.derives() if d.fact == fact.name]
            if all(f in facts for r, _ in derivers for f in condition_facts(r.when)):
                expr = "{}"
                for rule, derive in reversed(derivers):
                    expr = f"iif({condition(rule.when, facts)}, {_lit(derive.value)}, {expr})"
                facts[fact.name] = define(fact.name, expr)
                pending.remove(fact)
                break
        else:
            raise ValueError("the derived facts depend on each other in a cycle")
    return defined, facts


def rule_expressions(kb: KnowledgeBase, codes: Codes) -> dict[str, str]:
    """Each rule's condition as FHIRPath over the QuestionnaireResponse (rule id -> expression): the variables it
    needs defined first (`defineVariable`, each once), then the condition (`select`, over the one response)."""
    defined, facts = variables(kb, codes)
    order = {name: i for i, (name, _) in enumerate(defined)}
    exprs = dict(defined)
    out = {}
    for rule in kb.rules:
        body = condition(rule.when, facts)
        needed: set[str] = set()
        todo = [body]
        while todo:
            for name in re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)", todo.pop()):
                if name not in needed:
                    needed.add(name)
                    todo.append(exprs[name])
        chain = "".join(f".defineVariable({_lit(n)}, {exprs[n]})" for n in sorted(needed, key=order.__getitem__))
        out[rule.id] = f"{chain[1:]}.select({body})" if chain else body
    return out
