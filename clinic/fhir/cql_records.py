"""The CQL library's reading of Conditions and Observations, from `codes.yaml`'s bindings, as `inbound` reads them.

Per fact, the values the patient's records vote for (the library adds them to the QuestionnaireResponse's votes;
votes that disagree leave the fact null). A Condition votes through the bindings its codes select (an exact code;
else, per fact, the longest matching prefix; a yes/no fact's own code in the knowledge base's system), with the
binding profile's reading of its verification and clinical status ("true", "false", unknown, or the record is
ignored altogether); an Observation with a usable status and a value votes with its value (a boolean, a yes/no or
enum coding, an enum string), a binding to one value of a choice reading only a yes.
"""

from __future__ import annotations

from lumbar_kb.clinic.fhir.codes import Binding, Codes, Coding
from lumbar_kb.clinic.fhir.elm import (
    Expr,
    alias,
    and_,
    boolean,
    case,
    coalesce,
    equal,
    if_,
    in_,
    is_null,
    let_ref,
    literal,
    not_,
    null,
    or_,
    prop,
    query,
    string,
    unary,
)
from lumbar_kb.engine.model import Fact, KnowledgeBase

EMPTY = Expr("{}", {"type": "List", "element": []})


def _value(element: Expr) -> Expr:
    return prop(element, "value")


def _codings(concept: Expr) -> Expr:
    return coalesce([prop(concept, "coding"), EMPTY])


def starts_with(text: Expr, prefix: Expr) -> Expr:
    return Expr(f"StartsWith({text.cql}, {prefix.cql})", {"type": "StartsWith", "operand": [text.elm, prefix.elm]})


def exists(source: Expr) -> Expr:
    return Expr(f"exists ({source.cql})", {"type": "Exists", "operand": source.elm})


def _status(concept: Expr, name: str) -> Expr:
    """The first non-empty code of a CodeableConcept (`inbound._status_code`), or null."""
    x = alias(name)
    code = _value(prop(x, "code"))
    found = query(
        name, _codings(concept), where=and_([not_(is_null(code)), not_(equal(code, string("")))]), returns=code
    )
    return Expr(f"First({found.cql})", {"type": "First", "source": found.elm})


def selected(kb: KnowledgeBase, codes: Codes, fact: Fact, coding: Expr) -> list[tuple[Expr, Binding]]:
    """The bindings of `fact` a coding selects, each with the condition under which it does (`Codes.bindings_for`:
    exact codes; without one, the longest matching prefix). Each condition tests the system first, with `if`
    (cql-execution evaluates every operand of `and` / `or`, but only the branch `if` takes)."""
    system, code = _value(prop(coding, "system")), _value(prop(coding, "code"))
    exact: list[tuple[Coding, Binding]] = []
    prefixes: list[tuple[Coding, Binding]] = []
    for binding in codes.bindings:
        if binding.fact == fact.name:
            for c in binding.codes:
                (prefixes if c.prefix else exact).append((c, binding))
    out = [(if_(equal(system, string(c.system)), equal(code, string(c.code)), boolean(False)), b) for c, b in exact]
    exact_codes: dict[str, list[str]] = {}
    for c, _ in exact:
        exact_codes.setdefault(c.system, []).append(c.code)
    prefixes.sort(key=lambda pair: -len(pair[0].code))  # stable: among equal lengths the first bound wins
    for i, (c, binding) in enumerate(prefixes):
        longer = [o.code for o, _ in prefixes[:i] if o.system == c.system]
        parts = [starts_with(code, string(c.code))]
        if exact_codes.get(c.system):
            parts.append(not_(_true(in_(code, [string(x) for x in exact_codes[c.system]]))))
        parts += [not_(_true(starts_with(code, string(x)))) for x in longer]
        out.append((if_(equal(system, string(c.system)), and_(parts), boolean(False)), binding))
    return out


def _own_code(codes: Codes, fact: Fact) -> Expr:
    """The coding is the fact's own code in the knowledge base's system (alias X)."""
    system, code = _value(prop(alias("X"), "system")), _value(prop(alias("X"), "code"))
    return if_(equal(system, string(codes.kb_system)), equal(code, string(fact.name)), boolean(False))


def _true(cond: Expr) -> Expr:
    return Expr(f"({cond.cql} is true)", {"type": "IsTrue", "operand": cond.elm})


def _rule(codes: Codes, profile: str, verification: Expr, clinical: Expr) -> Expr:
    """A profile's reading of a Condition's statuses: 'true', 'false', 'unknown' or 'ignore'."""
    entry = codes.profiles.get(profile, codes.profiles["current"])
    clinical_rule = case(
        [(equal(clinical, string(k)), string(str(v))) for k, v in entry["clinical"].items()], string("unknown")
    )
    whens = []
    for status, rule in entry["verification"].items():
        whens.append((equal(verification, string(status)), clinical_rule if rule == "as_clinical" else string(rule)))
    return case(whens, string("unknown"))


def condition_pairs(kb: KnowledgeBase, codes: Codes, fact: Fact) -> list:
    """The (coding test, binding) pairs by which a Condition's coding `X` names `fact`: the bindings of
    codes.yaml, and for a yes/no fact the knowledge base's own code (read with the "current" profile)."""
    pairs = selected(kb, codes, fact, alias("X"))
    if fact.type == "bool":
        pairs.append(
            (
                and_(
                    [
                        equal(_value(prop(alias("X"), "system")), string(codes.kb_system)),
                        equal(_value(prop(alias("X"), "code")), string(fact.name)),
                    ]
                ),
                Binding(fact.name, None, "current", ()),
            )
        )
    return pairs


def verification_of(condition: Expr) -> Expr:
    """A Condition's verification status code, 'absent' when it has none."""
    return coalesce([_status(prop(condition, "verificationStatus"), "S"), string("absent")])


def condition_votes(kb: KnowledgeBase, codes: Codes, fact: Fact, conditions: Expr) -> Expr:
    """The values the usable Conditions give `fact` (a list, nulls included). Each Condition's two statuses are
    worked out once (`let`), not once per coding and binding."""
    c = alias("C")
    let = (("Verification", verification_of(c)), ("Clinical", _status(prop(c, "clinicalStatus"), "S")))
    verification, clinical = let_ref("Verification"), let_ref("Clinical")
    pairs = condition_pairs(kb, codes, fact)
    if not pairs:
        return EMPTY
    values = []
    for cond, binding in pairs:
        rule = _rule(codes, binding.profile, verification, clinical)
        if binding.value is not None:
            value = if_(equal(rule, string("true")), literal(binding.value), null("String"))
        else:
            value = case(
                [(equal(rule, string("true")), boolean(True)), (equal(rule, string("false")), boolean(False))],
                null("Boolean"),
            )
        values.append(if_(_true(cond), value, null("Boolean" if fact.type == "bool" else "String")))
    per_coding = query(
        "X",
        _codings(prop(c, "code")),
        returns=Expr(
            "{ " + ", ".join(v.cql for v in values) + " }", {"type": "List", "element": [v.elm for v in values]}
        ),
    )
    return unary("Flatten", query("C", conditions, let=let, returns=unary("Flatten", per_coding)))


def ignored(kb: KnowledgeBase, codes: Codes, condition: Expr, verification: Expr) -> Expr:
    """The Condition is not used at all: a binding it selects reads its verification status (`verification_of`,
    given) as `ignore`."""
    parts = []
    for fact in kb.input_facts:
        for cond, binding in condition_pairs(kb, codes, fact):
            entry = codes.profiles.get(binding.profile, codes.profiles["current"])
            ignore = sorted(k for k, v in entry["verification"].items() if v == "ignore")
            if ignore:
                parts.append(and_([_true(cond), in_(verification, [string(s) for s in ignore])]))
    if not parts:
        return boolean(False)
    return exists(query("X", _codings(prop(condition, "code")), where=_true(or_(parts))))


def observation_votes(kb: KnowledgeBase, codes: Codes, fact: Fact, observations: Expr) -> Expr:
    """The values the usable Observations give `fact` (a list, nulls included). Each Observation's answer is worked
    out once (`let`), not once per coding and binding."""
    o = alias("O")
    value = prop(o, "value")

    def as_(kind: str) -> Expr:
        return Expr(
            f"({value.cql} as FHIR.{kind})",
            {"type": "As", "operand": value.elm, "asType": f"{{http://hl7.org/fhir}}{kind}"},
        )

    x = alias("Y")
    system, code = _value(prop(x, "system")), _value(prop(x, "code"))

    def matches(codings) -> Expr:
        return (
            or_([and_([equal(system, string(c.system)), equal(code, string(c.code))]) for c in codings])
            if codings
            else boolean(False)
        )

    names = [string(str(v)) for v in fact.values] if fact.type == "enum" else []
    mapped_whens = [(_true(matches(codes.yes)), string("true")), (_true(matches(codes.no)), string("false"))]
    if fact.type == "enum":
        mapped_whens.append((_true(and_([equal(system, string(codes.kb_system)), in_(code, names)])), code))
        for v, codings in codes.values.get(fact.name, {}).items():
            if codings:
                mapped_whens.append((_true(matches(codings)), string(str(v))))
    mapped = case(mapped_whens, null("String"))
    concept = as_("CodeableConcept")
    first = query("Y", _codings(concept), where=not_(is_null(mapped)), returns=mapped)
    text = _value(as_("string"))
    boolean_value = _value(as_("boolean"))
    answer_whens = [
        (not_(is_null(boolean_value)), if_(boolean_value, string("true"), string("false"))),
        (not_(is_null(concept)), Expr(f"First({first.cql})", {"type": "First", "source": first.elm})),
    ]
    if fact.type == "enum":
        answer_whens.append((_true(in_(text, names)), text))
    let = (("Answer", case(answer_whens, null("String"))),)  # worked out once per Observation (`let`)
    answer = let_ref("Answer")
    pairs = selected(kb, codes, fact, alias("X"))
    pairs.append(
        (
            and_(
                [
                    equal(_value(prop(alias("X"), "system")), string(codes.kb_system)),
                    equal(_value(prop(alias("X"), "code")), string(fact.name)),
                ]
            ),
            Binding(fact.name, None, "current", ()),
        )
    )
    values = []
    for cond, binding in pairs:
        if binding.value is not None:
            v = if_(equal(answer, string("true")), literal(binding.value), null("String"))
        elif fact.type == "bool":
            v = case(
                [(equal(answer, string("true")), boolean(True)), (equal(answer, string("false")), boolean(False))],
                null("Boolean"),
            )
        else:
            v = if_(_true(in_(answer, names)), answer, null("String"))
        values.append(if_(_true(cond), v, null("Boolean" if fact.type == "bool" else "String")))
    per_coding = query(
        "X",
        _codings(prop(o, "code")),
        returns=Expr(
            "{ " + ", ".join(v.cql for v in values) + " }", {"type": "List", "element": [v.elm for v in values]}
        ),
    )
    return unary("Flatten", query("O", observations, let=let, returns=unary("Flatten", per_coding)))
