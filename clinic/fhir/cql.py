"""The knowledge base as Clinical Quality Language: CQL text and its ELM JSON, both from the one model.

Every named expression is built once as an `Expr` that carries its CQL text and its ELM tree side by side, so the
text a person reads and the tree a CQL engine (cql-execution) runs cannot drift apart. There is no CQL-to-ELM
translator in this toolchain: the ELM is written directly from the model's small condition algebra (fact tests,
all / any / not), whose three-valued reading is CQL's own (Kleene `and` / `or` / `not`, `=` and `in` null when a
side is null), so an unanswered question is `null`, never `false`.

The library, in the order it defines things:
- the answers: the patient's usable QuestionnaireResponses (status from `codes.yaml`), their items, Conditions and
  Observations (`cql_records`: through the bindings of `codes.yaml`), and per input fact its votes (a boolean, a
  yes/no coding, an enum coding or string), one value when every vote agrees, else `null` (as `lumbar-kb evaluate`
  reads a FHIR file); then an answer its `only_if` contradicts and the answers a
  broken relation names made `null`, in the loader's order. One expression per input fact, named after it.
- the rules: `Rule <id>`, each rule's condition over the facts (a rule fires exactly when it is true: facts only
  ever become known, and a true Kleene condition stays true as more becomes known).
- the derived facts, named after the fact: the value the rule that derives it gives (null when none fires).
- the decision: `In scope`, per catalogue entry `Action <code>` (with `... within hours`, `... within hours min`,
  `... window`, `... done`), `Unanswered alarm <fact>` and `Complete` (as `Prepared.unanswered_alarms`: a question
  that may be asked, a yes to it still allowed by its only_if and the relations, and a yes that could still raise
  the rules' urgency or bring a watched step forward, from the engine's static bound per question), `Urgency`,
  `Warning <code>`, `Differential <code>`: what `lumbar-kb evaluate` gives, generically from the knowledge base's
  declarations.

`limitations(kb)` names what the knowledge base says that this library cannot (the export prints it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lumbar_kb.clinic.fhir import cql_records as records
from lumbar_kb.clinic.fhir.codes import Codes
from lumbar_kb.clinic.fhir.elm import (
    ELM_TYPES,
    FHIR_NS,
    FHIR_VERSION,
    ITEM_DEPTH,
    Expr,
    _t,
    aggregate,
    alias,
    and_,
    as_fhir,
    boolean,
    case,
    coalesce,
    decimal,
    equal,
    greater,
    if_,
    in_,
    is_false,
    is_null,
    is_true,
    items_of,
    let_ref,
    list_,
    literal,
    not_,
    null,
    or_,
    prop,
    query,
    quoted,
    ref,
    retrieve,
    string,
    tuple_,
    unary,
)
from lumbar_kb.engine.logic import assume
from lumbar_kb.engine.model import (
    All,
    AnyOf,
    Condition,
    KnowledgeBase,
    Not,
    Recommend,
    Rule,
    SetUrgency,
    Test,
    Value,
    condition_facts,
)
from lumbar_kb.engine.prepared import Prepared, prepared


# ---- the library ---------------------------------------------------------------------------------------------------
def identifier(kb: KnowledgeBase) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", kb.name) if part)


def rule_name(rule: Rule) -> str:
    return f"Rule {rule.id}"


@dataclass
class Library:
    name: str
    version: str
    defines: dict  # name -> Expr, in definition order (each refers only to earlier ones)
    outputs: dict  # what the decision is read from: {"urgency": name, "actions": {code: {...}}, ...}
    limitations: list  # what the knowledge base says that this library does not carry

    def cql(self) -> str:
        lines = [
            f"library {self.name} version '{self.version}'",
            "",
            f"using FHIR version '{FHIR_VERSION}'",
            "",
            "context Patient",
            "",
        ]
        for name, expr in self.defines.items():
            lines += [f"define {quoted(name)}:", f"  {expr.cql}", ""]
        return "\n".join(lines)

    def elm(self) -> dict:
        defs = [
            {
                "name": "Patient",
                "context": "Patient",
                "expression": {
                    "type": "SingletonFrom",
                    "operand": {
                        "type": "Retrieve",
                        "dataType": f"{{{FHIR_NS}}}Patient",
                        "templateId": "http://hl7.org/fhir/StructureDefinition/Patient",
                    },
                },
            }
        ]
        defs += [
            {"name": name, "context": "Patient", "accessLevel": "Public", "expression": expr.elm}
            for name, expr in self.defines.items()
        ]
        return {
            "library": {
                "identifier": {"id": self.name, "version": self.version},
                "schemaIdentifier": {"id": "urn:hl7-org:elm", "version": "r1"},
                "usings": {
                    "def": [
                        {"localIdentifier": "System", "uri": ELM_TYPES},
                        {"localIdentifier": "FHIR", "uri": FHIR_NS, "version": FHIR_VERSION},
                    ]
                },
                "contexts": {"def": [{"name": "Patient"}]},
                "statements": {"def": defs},
            }
        }


def build_library(kb: KnowledgeBase, codes: Codes) -> Library:
    defines: dict[str, Expr] = {}

    def define(name: str, expr: Expr) -> Expr:
        assert name not in defines, name
        defines[name] = expr
        return ref(name)

    # -- the answers ------------------------------------------------------------------------------------------------
    statuses = sorted(codes.questionnaire_response_status)
    responses = define(
        "Responses",
        query(
            "R",
            retrieve("QuestionnaireResponse"),
            where=in_(prop(prop(alias("R"), "status"), "value"), [string(s) for s in statuses]),
        ),
    )
    level = define("Items 1", unary("Flatten", query("R", responses, returns=items_of(alias("R")))))
    levels = [level]
    for depth in range(2, ITEM_DEPTH + 1):
        name = f"I{depth - 1}"
        level = define(f"Items {depth}", unary("Flatten", query(name, level, returns=items_of(alias(name)))))
        levels.append(level)
    # each item's linkId read once (a FHIR string wraps its value: reading it per fact per item is slow)
    item = alias("I")
    define(
        "Items",
        query(
            "I",
            unary("Flatten", list_(levels)),
            returns=tuple_(
                {
                    "linkId": prop(prop(item, "linkId"), "value"),
                    "answers": coalesce([prop(item, "answer"), Expr("{}", {"type": "List", "element": []})]),
                }
            ),
        ),
    )

    record = alias("O")
    conditions = define(
        "Conditions",
        query(
            "C",
            retrieve("Condition"),
            let=(("Verification", records.verification_of(alias("C"))),),
            where=not_(records.ignored(kb, codes, alias("C"), let_ref("Verification"))),
        ),
    )
    observations = define(
        "Observations",
        query(
            "O",
            retrieve("Observation"),
            where=and_(
                [
                    in_(prop(prop(record, "status"), "value"), [string(s) for s in sorted(codes.observation_status)]),
                    is_null(prop(record, "dataAbsentReason")),
                ]
            ),
        ),
    )
    current: dict[str, Expr] = {}  # fact -> the expression of its value at the current stage
    for fact in kb.input_facts:
        answer = alias("A")
        value = prop(answer, "value")
        coding = as_fhir(value, "Coding")
        system, code = prop(prop(coding, "system"), "value"), prop(prop(coding, "code"), "value")

        def matches(codings, system: Expr = system, code: Expr = code) -> list[Expr]:
            return [and_([equal(system, string(c.system)), equal(code, string(c.code))]) for c in codings]

        if fact.type == "bool":
            whens = [(or_(matches(codes.yes)), boolean(True)), (or_(matches(codes.no)), boolean(False))]
            read = coalesce([prop(as_fhir(value, "boolean"), "value"), case(whens, null("Boolean"))])
        else:
            names = [string(str(v)) for v in fact.values]
            whens = [(and_([equal(system, string(codes.kb_system)), in_(code, names)]), code)]
            for v, codings in codes.values.get(fact.name, {}).items():
                if codings:
                    whens.append((or_(matches(codings)), string(str(v))))
            text = prop(as_fhir(value, "string"), "value")
            whens.append((in_(text, names), text))
            read = case(whens, null("String"))
        item = alias("I")
        answers = query(
            "I",
            ref("Items"),
            where=equal(prop(item, "linkId"), string(fact.name)),
            returns=query("A", prop(item, "answers"), None, read),
        )
        votes = define(
            f"{fact.name} votes",
            unary(
                "Distinct",
                query(
                    "V",
                    unary(
                        "Flatten",
                        list_(
                            [
                                unary("Flatten", answers),
                                records.condition_votes(kb, codes, fact, conditions),
                                records.observation_votes(kb, codes, fact, observations),
                            ]
                        ),
                    ),
                    where=Expr("V is not null", _not_null("V")),
                ),
            ),
        )
        current[fact.name] = define(
            f"{fact.name} answered",
            if_(equal(aggregate("Count", votes), Expr("1", _int(1))), aggregate("First", votes), null(_kind(fact))),
        )
    for fact in kb.input_facts:  # an answer its only_if contradicts is unknown (in order, as inbound.map_parts)
        if fact.only_if is not None:
            current[fact.name] = define(
                f"{fact.name} possible",
                if_(is_false(condition(fact.only_if, current)), null(_kind(fact)), current[fact.name]),
            )
    for relation in kb.relations:  # answers that contradict each other: every answer the relation names unknown
        broken_parts = [condition(relation.when, current)]
        sides = []
        if relation.implies is not None:
            sides.append(is_false(condition(relation.implies, current)))
        if relation.excludes is not None:
            sides.append(is_true(condition(relation.excludes, current)))
        broken = define(f"Relation {relation.id} broken", and_([is_true(broken_parts[0]), or_(sides)]))
        named = [relation.when, *(c for c in (relation.implies, relation.excludes) if c is not None)]
        for name in dict.fromkeys(f for side in named for f in condition_facts(side)):
            current[name] = define(
                f"{name} after {relation.id}", if_(broken, null(_kind(kb.facts[name])), current[name])
            )
    for fact in kb.input_facts:  # the fact's own name: its value as the rules read it
        define(fact.name, current[fact.name])
        current[fact.name] = ref(fact.name)

    # -- the rules and the derived facts (each derived fact after every rule that derives it) ---------------------
    rule_refs: dict[str, Expr] = {}
    pending = list(kb.rules)
    derivers = {f.name: [r for r in kb.rules if any(d.fact == f.name for d in r.derives())] for f in kb.derived_facts}
    while pending:
        ready = [r for r in pending if all(f in current for f in condition_facts(r.when))]
        if not ready:
            raise ValueError("the derived facts depend on each other in a cycle: CQL cannot define them")
        for rule in ready:
            pending.remove(rule)
            rule_refs[rule.id] = define(rule_name(rule), condition(rule.when, current))
        for fact in kb.derived_facts:
            if fact.name not in current and all(r.id in rule_refs for r in derivers[fact.name]):
                whens = [
                    (rule_refs[r.id], literal(d.value))
                    for r in derivers[fact.name]
                    for d in r.derives()
                    if d.fact == fact.name
                ]
                current[fact.name] = define(fact.name, case(whens, null(_kind(fact))))

    # -- the decision --------------------------------------------------------------------------------------------------
    outputs: dict = {"actions": {}, "warnings": {}, "differential": {}, "unanswered_alarm": {}}
    in_scope = (
        define("In scope", not_(is_true(condition(kb.out_of_scope_when, current))))
        if kb.out_of_scope_when is not None
        else define("In scope", boolean(True))
    )
    outputs["in_scope"] = "In scope"

    def concluding(kind: str, code: str) -> list[tuple[Rule, Recommend]]:
        return [
            (r, c)
            for r in _firing_order(kb)
            for c in r.then
            if isinstance(c, Recommend) and (c.kind, c.code) == (kind, code)
        ]

    concluded: dict[str, Expr] = {}
    for code in kb.catalog["action"]:
        pairs = concluding("action", code)
        if pairs:
            concluded[code] = define(f"Action {code} concluded", or_([is_true(rule_refs[r.id]) for r, _ in pairs]))
    for code, entry in kb.catalog["action"].items():
        if code not in concluded:
            continue
        covered = [concluded[o] for o in entry.superseded_by if o in concluded]
        given = and_([concluded[code], *(not_(c) for c in covered)])
        name = f"Action {code}"
        define(name, given)
        pairs = concluding("action", code)
        hours = define(
            f"{name} within hours",
            aggregate(
                "Min",
                list_(
                    [
                        if_(is_true(rule_refs[r.id]), decimal(c.within_hours), null("Decimal"))
                        for r, c in pairs
                        if c.within_hours is not None
                    ]
                )
                if any(c.within_hours is not None for _, c in pairs)
                else list_([null("Decimal")]),
            ),
        )
        by_hours: dict[float, tuple[Rule, Recommend]] = {}
        for r, c in pairs:  # the first in firing order gives the words of its figure
            if c.within_hours is not None:
                by_hours.setdefault(c.within_hours, (r, c))
        words_whens = [(equal(hours, decimal(h)), _words(c.window)) for h, (_, c) in by_hours.items()]
        low_whens = [(equal(hours, decimal(h)), _hours_or_null(c.within_hours_min)) for h, (_, c) in by_hours.items()]
        unfigured = [
            (is_true(rule_refs[r.id]), _words(c.window)) for r, c in pairs if c.within_hours is None and c.window
        ]
        window = define(
            f"{name} window", if_(is_null(hours), case(unfigured, null("String")), case(words_whens, null("String")))
        )
        low = define(f"{name} within hours min", case(low_whens, null("Decimal")))
        done = define(
            f"{name} done",
            is_true(condition(entry.done_when, current)) if entry.done_when is not None else boolean(False),
        )
        outputs["actions"][code] = {
            "given": name,
            "within_hours": f"{name} within hours",
            "within_hours_min": f"{name} within hours min",
            "window": f"{name} window",
            "done": f"{name} done",
        }
        del window, low, done
    # -- completeness: an unanswered alarm question counts while it may be asked, a yes to it is still allowed by
    # the relations, and a yes could still raise the urgency or bring a step forward (`Prepared.unanswered_alarms`)
    plan = prepared(kb)
    levels_desc = sorted(kb.catalog["urgency"].values(), key=lambda e: -e.rank)
    setting = {
        entry.code: [
            rule_refs[r.id]
            for r in kb.rules
            if any(isinstance(c, SetUrgency) and c.level == entry.code for c in r.then)
        ]
        for entry in levels_desc
    }
    # the rules' urgency, before the completeness floor (what `settled` compares a question's bound with)
    rules_urgency = define(
        "Rules urgency",
        case(
            [(or_([is_true(f) for f in setting[e.code]]), string(e.code)) for e in levels_desc if setting[e.code]],
            string(kb.lowest_urgency),
        ),
    )
    # the answers as completeness reads them: the input facts only (a derived fact is unknown there)
    inputs_only: dict[str, Expr] = {
        name: current[name] if not kb.facts[name].derived else null(_kind(kb.facts[name])) for name in kb.facts
    }
    alarms = []
    for fact in kb.input_facts:
        if not fact.alarm:
            continue
        parts = [is_null(inputs_only[fact.name])]
        if fact.only_if is not None:
            parts.append(not_(is_false(condition(fact.only_if, inputs_only))))
        moot = kb.not_asked_when.get(fact.name)
        if moot is not None:
            parts.append(not_(is_true(condition(moot, inputs_only))))
        if plan.constrains(fact.name):
            trial = (True,) if fact.type == "bool" else tuple(fact.values)
            allowed = _any([_allowed_adding(kb, plan, inputs_only, fact.name, answer) for answer in trial])
            if allowed is not True:  # some alarming answer keeps every only_if and relation
                parts.append(_expr(allowed))
        parts.append(_unsettled(kb, plan, rules_urgency, fact.name))
        outputs["unanswered_alarm"][fact.name] = name = f"Unanswered alarm {fact.name}"
        alarms.append(define(name, and_(parts)))
    complete = define("Complete", not_(or_(alarms)) if alarms else boolean(True))
    outputs["complete"] = "Complete"
    whens = []
    for entry in levels_desc:
        firing = list(setting[entry.code])
        if kb.incomplete_floor == entry.code:
            firing.append(not_(complete))
        if firing:
            whens.append((or_([is_true(f) for f in firing]), string(entry.code)))
    define("Urgency", case(whens, string(kb.lowest_urgency)))
    outputs["urgency"] = "Urgency"
    for kind, key in (("warning", "warnings"), ("differential", "differential")):
        for code in kb.catalog[kind]:
            pairs = concluding(kind, code)
            if not pairs:
                continue
            fired = or_([is_true(rule_refs[r.id]) for r, _ in pairs])
            name = f"{kind.capitalize()} {code}"
            define(name, and_([in_scope, fired]) if kind == "differential" else fired)
            outputs[key][code] = name
    return Library(identifier(kb), kb.version, defines, outputs, limitations(kb))


Static = Expr | bool  # a definite (never null) boolean: an expression, or a value known when the library is built


def _any(items: list[Static]) -> Static:
    if any(i is True for i in items):
        return True
    left = [i for i in items if i is not False]
    return or_(left) if left else False  # type: ignore[arg-type]


def _all(items: list[Static]) -> Static:
    if any(i is False for i in items):
        return False
    left = [i for i in items if i is not True]
    return and_(left) if left else True  # type: ignore[arg-type]


def _none(item: Static) -> Static:
    return (not item) if isinstance(item, bool) else not_(item)


def _expr(item: Static) -> Expr:
    return boolean(item) if isinstance(item, bool) else item


def _reads(cond: Condition, fact: str, answer: Value, given: dict[str, Expr], test) -> Static:
    """`test` (is_true or is_false) of `cond` once `fact` is `answer` (`logic.assume`: what the answer settles is
    settled when the library is built; the rest reads the answers given)."""
    left = assume(cond, fact, answer)
    if isinstance(left, bool):
        return left if test is is_true else not left
    return test(condition(left, given))


def _allowed_adding(kb: KnowledgeBase, plan: Prepared, given: dict[str, Expr], fact: str, answer: Value) -> Static:
    """`Prepared.allowed_adding`: `answer` to the unanswered `fact` keeps every only_if and relation that reads it
    (`Prepared`'s table of them) with the answers given."""
    only_ifs, relations = plan.checks_on(fact)
    broken: list[Static] = []
    for name in only_ifs:
        contradicted = _reads(kb.facts[name].only_if, fact, answer, given, is_false)
        broken.append(contradicted if name == fact else _all([not_(is_null(given[name])), contradicted]))
    for relation in relations:
        sides = []
        if relation.implies is not None:
            sides.append(_reads(relation.implies, fact, answer, given, is_false))
        if relation.excludes is not None:
            sides.append(_reads(relation.excludes, fact, answer, given, is_true))
        broken.append(_all([_reads(relation.when, fact, answer, given, is_true), _any(sides)]))
    return _none(_any(broken))


def _unsettled(kb: KnowledgeBase, plan: Prepared, rules_urgency: Expr, fact: str) -> Expr:
    """Not `Prepared.settled`: an alarming answer to `fact` could still, through the rules downstream of it (its
    static bound, `Prepared.bound`), raise the rules' urgency or bring a watched step forward (never null)."""
    top, earliest = plan.bound[fact]
    reasons: list[Static] = []
    if top > plan.rank[kb.lowest_urgency]:  # the rules' urgency is below the bound
        reached = [string(code) for code, rank in plan.rank.items() if rank >= top]
        reasons.append(not_(is_true(in_(rules_urgency, reached))))
    for code, hours in earliest.items():  # a step the bound gives is not given yet, or given later
        given = ref(f"Action {code}")
        missing = [not_(is_true(given))]
        if hours is not None:
            within = ref(f"Action {code} within hours")
            missing += [is_null(within), is_true(greater(within, decimal(hours)))]
        reasons.append(or_(missing))
    return _expr(_any(reasons))


def _words(words: str | None) -> Expr:
    return string(words) if words is not None else null("String")


def _hours_or_null(hours: float | None) -> Expr:
    return decimal(hours) if hours is not None else null("Decimal")


def _kind(fact) -> str:
    return "Boolean" if fact.type == "bool" else "String"


def _int(value: int) -> dict:
    return {"type": "Literal", "valueType": _t("Integer"), "value": str(value)}


def _not_null(name: str) -> dict:
    return {"type": "Not", "operand": {"type": "IsNull", "operand": {"type": "AliasRef", "name": name}}}


def condition(cond: Condition, facts: dict[str, Expr]) -> Expr:
    """A model condition over the facts' expressions (three-valued exactly as `engine.logic.evaluate`)."""
    if isinstance(cond, Test):
        values = sorted(cond.values, key=str)
        if len(values) == 1:
            return equal(facts[cond.fact], literal(values[0]))
        return in_(facts[cond.fact], [literal(v) for v in values])
    if isinstance(cond, All):
        return and_([condition(i, facts) for i in cond.items])
    if isinstance(cond, AnyOf):
        return or_([condition(i, facts) for i in cond.items])
    assert isinstance(cond, Not)
    return not_(condition(cond.item, facts))


def _firing_order(kb: KnowledgeBase) -> list[Rule]:
    """The rules in the engine's conflict-resolution order (priority, then definition): where two rules give one
    action the same window figure with different words, the engine's words are those of the one that fired first,
    which this approximates (`limitations` says when it matters)."""
    return sorted(kb.rules, key=lambda r: (-r.priority, r.order))


def limitations(kb: KnowledgeBase) -> list[str]:
    """What the knowledge base says that the CQL library (and the PlanDefinition around it) does not carry."""
    out = [
        f"QuestionnaireResponse items are read {ITEM_DEPTH} levels deep (`lumbar-kb evaluate` reads any depth); "
        "a Condition or Observation of another patient in the data is not set aside by the library (the CDS "
        "service does, by the patient's id): give it one patient's data.",
        "The PlanDefinition's FHIRPath alternatives read one QuestionnaireResponse (their context) and need "
        "FHIRPath's defineVariable; answers spread over several responses are combined by the CQL library only.",
        "The look-ahead (`could_escalate`: which unanswered question could raise the urgency) is not exported.",
        "The order of the actions and the rules each item is `because` of are not exported; the texts shown to "
        "users are in the PlanDefinition and ActivityDefinitions, not in the library.",
        "Relations between answers are applied to the answers (both unknown when contradictory); the patient-file "
        "refusal `lumbar-kb evaluate` gives for a contradictory YAML patient has no CQL counterpart.",
    ]
    for code in kb.catalog["action"]:
        seen: dict[float, set] = {}
        for r in kb.rules:
            for c in r.then:
                if isinstance(c, Recommend) and c.kind == "action" and c.code == code and c.within_hours is not None:
                    seen.setdefault(c.within_hours, set()).add((c.window, c.within_hours_min))
        for hours, forms in seen.items():
            if len(forms) > 1:
                out.append(
                    f"Action {code}: rules give {hours:g} hours in different words {sorted(map(str, forms))}; the "
                    "engine shows the words of the rule that fired first, the library those of the first in "
                    "priority and definition order."
                )
    entries = kb.catalog["action"]
    for code, entry in entries.items():
        for other in entry.superseded_by:
            if other in entries and entries[other].superseded_by:
                out.append(
                    f"Action {code} is superseded by {other}, which is itself superseded: the engine's result "
                    "depends on the order actions were concluded; the library drops it whenever {other} is concluded."
                )
    return out
