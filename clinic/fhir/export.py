"""FHIR R4 out: the knowledge base as a Questionnaire and a PlanDefinition with ActivityDefinitions.

In the shape of the Clinical Practice Guidelines (CPG) implementation guide: the Questionnaire asks the
vocabulary (alarm questions first, `enableWhen` for a question that depends on another, one Questionnaire per
audience with the same linkIds, so a response to either maps back to the same facts); the PlanDefinition holds
one action per rule, its condition as a FHIRPath expression over a QuestionnaireResponse to that Questionnaire
(an empty answer is unknown, so FHIRPath's empty propagation keeps the three-valued reading), its conclusions
as sub-actions pointing at ActivityDefinitions (the catalogue's actions, as ServiceRequest proposals) with
their timing, and its citations as relatedArtifact. Everything is a function of the knowledge base: no text
is written here that the knowledge base does not hold.
"""

from __future__ import annotations

import base64
import json

from lumbar_kb.clinic.fhir import cql
from lumbar_kb.clinic.fhir.codes import Codes
from lumbar_kb.clinic.fhir.fhirpath_alt import rule_expressions
from lumbar_kb.engine.model import All, AnyOf, Condition, Derive, KnowledgeBase, Not, Recommend, SetUrgency, Test, Value

UCUM = "http://unitsofmeasure.org"
CPG = "http://hl7.org/fhir/uv/cpg/StructureDefinition"
ALTERNATIVE = "http://hl7.org/fhir/StructureDefinition/cqf-alternativeExpression"
PROFILES = {  # the CPG implementation guide's profiles each exported resource claims (meta.profile)
    "Library": ["cpg-computablelibrary", "cpg-shareablelibrary", "cpg-publishablelibrary"],
    "PlanDefinition": ["cpg-computableplandefinition", "cpg-shareableplandefinition", "cpg-publishableplandefinition"],
    "ActivityDefinition": ["cpg-computableactivity", "cpg-servicerequestactivity", "cpg-shareableactivitydefinition"],
    "Questionnaire": ["cpg-questionnaire"],
}
CAPABILITIES = {  # the CPG knowledge-capability marks: what a consumer can do with the resource
    "Library": ["shareable", "computable", "executable", "publishable"],
    "PlanDefinition": ["shareable", "computable", "publishable"],
    "ActivityDefinition": ["shareable", "computable", "publishable"],
    "Questionnaire": ["shareable", "computable"],
}


def _status(kb: KnowledgeBase) -> str:
    return "active" if kb.review_status in ("approved", "active") else "draft"


def _meta(kb: KnowledgeBase, codes: Codes, kind: str, name: str, title: str) -> dict:
    return {
        "resourceType": kind,
        "id": name.replace("_", "-"),
        "url": codes.url(kind, name),
        "version": kb.version,
        "name": "".join(part.capitalize() for part in name.replace("-", "_").split("_")),
        "title": title,
        "status": _status(kb),
        "experimental": True,
        "date": kb.last_updated,
        "publisher": kb.publisher,
        "description": kb.disclaimer,
    }


def _cpg(resource: dict) -> dict:
    """The CPG profiles and knowledge-capability / representation-level marks for the resource's kind."""
    kind = resource["resourceType"]
    marks = [{"url": f"{CPG}/cpg-knowledgeCapability", "valueCode": c} for c in CAPABILITIES[kind]]
    marks.append({"url": f"{CPG}/cpg-knowledgeRepresentationLevel", "valueCode": "structured"})
    if kind == "Library":
        marks[-1]["valueCode"] = "executable"
    meta = {"profile": [f"{CPG}/{p}" for p in PROFILES[kind]]}
    return {
        "resourceType": kind,
        "meta": meta,
        "extension": marks,
        **{k: v for k, v in resource.items() if k != "resourceType"},
    }


# ---- Questionnaire -----------------------------------------------------------------------------------------
def questionnaire(kb: KnowledgeBase, codes: Codes, audience: str = "clinician") -> dict:
    """The questions, alarm first; `audience` picks the wording (the linkIds are the fact names either way)."""
    name = f"{kb.name}-{audience}"
    out = _meta(kb, codes, "Questionnaire", name, kb.question if audience == "patient" else kb.title)
    out["subjectType"] = ["Patient"]
    facts = kb.input_facts
    alarm = [f for f in facts if f.alarm]
    other = [f for f in facts if not f.alarm]
    groups = []
    for link, title, members in (
        ("alarm", "Alarm questions (ask first)", alarm),
        ("further", "Further questions", other),
    ):
        if members:
            groups.append(
                {
                    "linkId": link,
                    "text": title,
                    "type": "group",
                    "item": [_question(f, codes, audience) for f in sorted(members, key=lambda f: f.order)],
                }
            )
    out["item"] = groups
    return out


def _question(fact, codes: Codes, audience: str) -> dict:
    text = (fact.patient_question if audience == "patient" else fact.question) or fact.meaning
    item: dict = {
        "linkId": fact.name,
        "code": [{"system": codes.kb_system, "code": fact.name, "display": fact.meaning}],
        "text": text,
        "type": "boolean" if fact.type == "bool" else "choice",
        "required": False,
    }
    if fact.type == "enum":
        item["answerOption"] = [
            {"valueCoding": {"system": codes.kb_system, "code": str(v), "display": str(v).replace("_", " ")}}
            for v in fact.values
        ]
    if fact.only_if is not None:
        enable = _enable_when(fact.only_if, codes)
        if enable is not None:
            item["enableWhen"], behaviour = enable
            if len(item["enableWhen"]) > 1:
                item["enableBehavior"] = behaviour
    return item


def _enable_when(cond: Condition, codes: Codes) -> tuple[list, str] | None:
    """enableWhen for a condition FHIR can say: a test, or an all/any of tests (else None: always shown)."""

    def one(test: Test) -> list[dict]:
        return [
            {"question": test.fact, "operator": "=", **_answer(value, codes)} for value in sorted(test.values, key=str)
        ]

    if isinstance(cond, Test):
        return one(cond), "any"
    if isinstance(cond, (All, AnyOf)) and all(isinstance(i, Test) for i in cond.items):
        if isinstance(cond, All) and any(len(i.values) > 1 for i in cond.items if isinstance(i, Test)):
            return None
        return [e for i in cond.items if isinstance(i, Test) for e in one(i)], (
            "all" if isinstance(cond, All) else "any"
        )
    return None


def _answer(value: Value, codes: Codes) -> dict:
    if isinstance(value, bool):
        return {"answerBoolean": value}
    return {"answerCoding": {"system": codes.kb_system, "code": value}}


def questionnaire_response(
    kb: KnowledgeBase, codes: Codes, facts: dict, subject: str | None = None, rid: str | None = None
) -> dict:
    """A completed response to the exported Questionnaire holding `facts` (unknown facts are left out)."""
    groups = []
    for link, members in (
        ("alarm", [f for f in kb.input_facts if f.alarm]),
        ("further", [f for f in kb.input_facts if not f.alarm]),
    ):
        items = []
        for fact in members:
            if fact.name not in facts or facts[fact.name] is None:
                continue
            value = facts[fact.name]
            answer = (
                {"valueBoolean": value}
                if isinstance(value, bool)
                else {"valueCoding": {"system": codes.kb_system, "code": value}}
            )
            items.append({"linkId": fact.name, "answer": [answer]})
        if items:
            groups.append({"linkId": link, "item": items})
    out: dict = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": codes.url("Questionnaire", f"{kb.name}-clinician"),
        "status": "completed",
    }
    if rid:
        out["id"] = rid
    if subject:
        out["subject"] = {"reference": subject}
    out["item"] = groups
    return out


# ---- PlanDefinition and ActivityDefinitions -------------------------------------------------------------------
def activity_definitions(kb: KnowledgeBase, codes: Codes) -> list[dict]:
    out = []
    for code, entry in kb.catalog["action"].items():
        res = _meta(kb, codes, "ActivityDefinition", code, entry.label)
        res["description"] = entry.text
        res["usage"] = entry.patient_text
        res.update(
            {
                "kind": "ServiceRequest",
                "intent": "proposal",
                "code": {"coding": codes.action_coding(kb, code), "text": entry.label},
                "doNotPerform": False,
            }
        )
        out.append(res)
    return out


def uncoded_actions(kb: KnowledgeBase, codes: Codes) -> list[str]:
    """The catalogue actions whose ActivityDefinition carries only the knowledge base's own code: no order kind in
    codes.yaml binds a standard code to them (the export says so; a terminologist adds them)."""
    return [
        code
        for code in kb.catalog["action"]
        if all(c["system"] == codes.action_system for c in codes.action_coding(kb, code))
    ]


def timing(hours: float | None) -> dict | None:
    """A window as a FHIR Timing: to be done within `hours` (0: immediately) of the decision."""
    if hours is None:
        return None
    return {"repeat": {"boundsDuration": {"value": hours, "unit": "h", "system": UCUM, "code": "h"}}}


def library(kb: KnowledgeBase, codes: Codes) -> dict:
    """The logic as a CPG computable Library: the CQL text and the ELM JSON (the compiled form CQL engines run) of
    one `cql.Library`, the QuestionnaireResponse it reads as its data requirement, and its outputs as parameters."""
    lib = cql.build_library(kb, codes)
    out = _meta(kb, codes, "Library", kb.name, kb.title)
    out["name"] = lib.name
    out["type"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/library-type", "code": "logic-library"}]
    }
    out["usage"] = "Not expressed in this library: " + " ".join(lib.limitations)
    out["relatedArtifact"] = [_citation(kb, n) for n in sorted(kb.references)]
    out["parameter"] = [
        {"name": name, "use": "out", "min": 0, "max": "1", "type": kind} for name, kind in _outputs(lib)
    ]
    out["dataRequirement"] = [_response_requirement(kb, codes)]
    text = lib.cql().encode("utf-8")
    elm = json.dumps(lib.elm(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    out["content"] = [
        {"contentType": "text/cql", "data": base64.b64encode(text).decode("ascii")},
        {"contentType": "application/elm+json", "data": base64.b64encode(elm).decode("ascii")},
    ]
    return out


def _outputs(lib: cql.Library) -> list[tuple[str, str]]:
    o = lib.outputs
    out = [(o["urgency"], "string"), (o["complete"], "boolean"), (o["in_scope"], "boolean")]
    out += [(name, "boolean") for name in o["unanswered_alarm"].values()]
    for names in o["actions"].values():
        out += [(names["given"], "boolean"), (names["within_hours"], "decimal"), (names["within_hours_min"], "decimal")]
        out += [(names["window"], "string"), (names["done"], "boolean")]
    out += [(name, "boolean") for key in ("warnings", "differential") for name in o[key].values()]
    return out


def _response_requirement(kb: KnowledgeBase, codes: Codes) -> dict:
    """The input every rule reads: a QuestionnaireResponse to the exported Questionnaire, by its items' linkIds."""
    return {
        "type": "QuestionnaireResponse",
        "profile": ["http://hl7.org/fhir/StructureDefinition/QuestionnaireResponse"],
        "mustSupport": ["status", "questionnaire", "item.linkId", "item.answer.value", "item.item"],
    }


def plan_definition(kb: KnowledgeBase, codes: Codes) -> dict:
    out = _meta(kb, codes, "PlanDefinition", kb.name, kb.title)
    out["type"] = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/plan-definition-type",
                "code": "clinical-protocol",
                "display": "Clinical Protocol",
            }
        ]
    }
    out["purpose"] = kb.question
    out["relatedArtifact"] = [_citation(kb, n) for n in sorted(kb.references)]
    library_url = codes.url("Library", kb.name)
    out["library"] = [library_url]
    alternatives = rule_expressions(kb, codes)
    requirement = _response_requirement(kb, codes)
    top = max(e.rank for e in kb.catalog["urgency"].values())
    actions = []
    for section in kb.sections.values():
        rules = [r for r in kb.rules if r.section == section.id]
        if not rules:
            continue
        children = []
        for rule in rules:
            action: dict = {
                "id": rule.id,
                "title": rule.title,
                "description": rule.rationale.strip(),
                "condition": [
                    {
                        "kind": "applicability",
                        "expression": {
                            "extension": [
                                {
                                    "url": ALTERNATIVE,
                                    "valueExpression": {
                                        "language": "text/fhirpath",
                                        "expression": alternatives[rule.id],
                                        "description": "the same condition over the QuestionnaireResponse as context",
                                    },
                                }
                            ],
                            "description": _describe(rule.when),
                            "language": "text/cql",  # R4's JSON schema knows no text/cql-identifier
                            "expression": cql.quoted(cql.rule_name(rule)),
                            "reference": library_url,
                        },
                    }
                ],
            }
            if rule.interpretation:
                action["documentation"] = [
                    {"type": "justification", "display": "Interpretation", "citation": rule.interpretation.strip()}
                ]
            if rule.cites:
                action["documentation"] = action.get("documentation", []) + [_citation(kb, n) for n in rule.cites]
            subs = []
            for c in rule.then:
                if isinstance(c, SetUrgency):
                    entry = kb.catalog["urgency"][c.level]
                    action["priority"] = "stat" if entry.rank == top else ("urgent" if entry.rank > 0 else "routine")
                    subs.append({"title": entry.label, "description": entry.text, "code": [_kb_code(codes, c.level)]})
                elif isinstance(c, Recommend):
                    entry = kb.catalog[c.kind][c.code]
                    sub: dict = {"title": entry.label, "description": entry.text}
                    if c.kind == "action":
                        sub["definitionCanonical"] = codes.url("ActivityDefinition", c.code)
                        if c.window:
                            sub["textEquivalent"] = f"{entry.label}, {c.window}"
                        t = timing(c.within_hours)
                        if t:
                            sub["timingTiming"] = t
                    else:
                        sub["code"] = [_kb_code(codes, f"{c.kind}.{c.code}")]
                    subs.append(sub)
                elif isinstance(c, Derive):  # the library's expression of that name: no element of any resource
                    subs.append(
                        {
                            "title": f"{c.fact} = {str(c.value).lower()}",
                            "description": f"{kb.facts[c.fact].meaning} (the Library's expression {c.fact!r})",
                        }
                    )
            action["action"] = subs
            children.append(action)
        actions.append(
            {
                "id": section.id,
                "title": section.title,
                "trigger": [
                    {"type": "named-event", "name": "patient-view"},
                    {"type": "data-changed", "data": [{"type": "QuestionnaireResponse"}]},
                ],
                "input": [requirement],
                "action": children,
            }
        )
    out["action"] = actions
    return out


def _kb_code(codes: Codes, code: str) -> dict:
    return {"coding": [{"system": codes.action_system.replace("actions", "conclusions"), "code": code}]}


def _citation(kb: KnowledgeBase, number: int) -> dict:
    ref = kb.references[number]
    return {"type": "citation", "label": f"[{number}]", "display": ref.title, "citation": ref.cite()}


def _describe(cond: Condition) -> str:
    if isinstance(cond, Test):
        return cond.describe()
    if isinstance(cond, All):
        return "all of: " + "; ".join(_describe(i) for i in cond.items)
    if isinstance(cond, AnyOf):
        return "any of: " + "; ".join(_describe(i) for i in cond.items)
    assert isinstance(cond, Not)
    return "not (" + _describe(cond.item) + ")"


def export_all(kb: KnowledgeBase, codes: Codes) -> dict[str, dict]:
    """Every exported resource by file name (`<Type>-<id>.json`), each with its CPG profiles and marks."""
    resources = [
        questionnaire(kb, codes, "clinician"),
        questionnaire(kb, codes, "patient"),
        library(kb, codes),
        plan_definition(kb, codes),
        *activity_definitions(kb, codes),
    ]
    resources = [_cpg(r) for r in resources]
    return {f"{r['resourceType']}-{r['id']}.json": r for r in resources}
