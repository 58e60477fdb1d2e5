"""FHIR R4 in: Patient, Condition, Observation, QuestionnaireResponse (alone or in Bundles) -> the patient's facts.

Only the bindings of `codes.yaml` can make a fact known. Every value found is a vote with its source; a fact
whose votes disagree stays UNKNOWN and is reported as a conflict (the clinician resolves it), as is a value
that contradicts another fact's condition (e.g. a primary site where the history says "no cancer").
Resources of another patient, entered in error, or with an unusable status are skipped and listed. A record's
subject is this patient when its reference is `Patient/ID`, a URL ending in it, either with `/_history/V`, or a
Bundle entry's fullUrl (e.g. `urn:uuid:...`) whose resource is the Patient ID; a record of another patient, or one
whose subject cannot be matched (a contained `#ref`), is never this patient's, and when it would have given a fact
it is listed in `set_aside` so that the clinician is told (a card), never left to find it.
Malformed structure (a resource that is not an object, an entry list that is not a list) raises
FhirInputError naming the field, so the service answers 400 and the CLI exits 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lumbar_kb.clinic.fhir.codes import Binding, Codes
from lumbar_kb.engine.errors import PatientError, Problem
from lumbar_kb.engine.logic import breaks, contradicts_only_if
from lumbar_kb.engine.model import KnowledgeBase, Value, condition_facts

SUPPORTED = ("Bundle", "QuestionnaireResponse", "Observation", "Condition", "Patient")


class FhirInputError(PatientError):
    """FHIR input whose structure is wrong; `field` names where (e.g. `prefetch.conditions.entry[2].resource`)."""

    def __init__(self, field_path: str, message: str, file: str | None = None):
        self.field = field_path
        self.message = message
        super().__init__(Problem(message, file=file, subject=field_path or None))


@dataclass
class Mapped:
    facts: dict  # fact -> value, vocabulary order
    evidence: dict = field(default_factory=dict)  # fact -> [source]
    conflicts: dict = field(default_factory=dict)  # fact -> ["yes (Condition/1)", "no (QuestionnaireResponse/2)"]
    skipped: list = field(default_factory=list)  # ["Observation/5: status cancelled", ...]
    # records not attributed to this patient that would have given a fact: what the clinician must see
    set_aside: list = field(default_factory=list)
    patient: dict | None = None  # the Patient resource, when one was given
    # answers that break a relation between them (confirmed but "not suspected"): left out of `facts` (unknown, as
    # conflicts to resolve), and kept here so that the clinic evaluates them under the most urgent reading they
    # allow: a contradictory record never drops an alarm (issue 23)
    contradictory: dict = field(default_factory=dict)

    def most_urgent_inputs(self) -> dict:
        """The answers to evaluate with `contradictions="most_urgent"`: the agreed ones and the contradictory ones."""
        return {**self.facts, **self.contradictory}

    def to_dict(self) -> dict:
        return {
            "facts": self.facts,
            "evidence": self.evidence,
            "conflicts": self.conflicts,
            "skipped": self.skipped,
            "set_aside": self.set_aside,
        }


def is_fhir(data: Any) -> bool:
    return isinstance(data, dict) and "resourceType" in data


def resources(data: Any, where: str = "") -> Iterator[tuple[str, dict]]:
    """Every resource in `data` (a resource, a Bundle, a list of either), with the field path it came from."""
    if isinstance(data, list):
        for i, item in enumerate(data):
            yield from resources(item, f"{where}[{i}]")
        return
    if not isinstance(data, dict):
        raise FhirInputError(where, f"must be a FHIR resource (a JSON object), not {_kind(data)}")
    kind = data.get("resourceType")
    if not isinstance(kind, str):
        raise FhirInputError(_join(where, "resourceType"), "missing or not a string: a FHIR resource names its type")
    if kind == "Bundle":
        entries = data.get("entry", [])
        if not isinstance(entries, list):
            raise FhirInputError(_join(where, "entry"), f"must be a list, not {_kind(entries)}")
        for i, entry in enumerate(entries):
            at = _join(where, f"entry[{i}]")
            if not isinstance(entry, dict):
                raise FhirInputError(at, f"must be an object, not {_kind(entry)}")
            if "resource" in entry:
                yield from resources(entry["resource"], _join(at, "resource"))
        return
    yield where, data


def map_fhir(data: Any, kb: KnowledgeBase, codes: Codes, patient_id: str | None = None, where: str = "") -> Mapped:
    """The facts FHIR data gives for one patient (see the module's docstring for the rules)."""
    return map_parts([(where, data)], kb, codes, patient_id)


def map_parts(parts: list, kb: KnowledgeBase, codes: Codes, patient_id: str | None = None) -> Mapped:
    """`map_fhir` over several pieces of data at once, each with the field path it came from (e.g. the
    prefetch keys): a conflict between pieces is seen, and an error names the piece's own field."""
    votes: dict[str, dict[Value, list[str]]] = {}
    skipped: list[str] = []
    patient = None
    every = [item for where, data in parts for item in resources(data, where)]
    aliases = _patients_by_full_url([data for _, data in parts])
    set_aside: list[str] = []
    for at, res in every:
        kind = res["resourceType"]
        label = f"{kind}/{res['id']}" if isinstance(res.get("id"), str) else (at or kind)
        if kind == "Patient":
            patient = res
            continue
        if kind not in ("Observation", "Condition", "QuestionnaireResponse"):
            skipped.append(f"{label}: {kind} is not read")
            continue
        reader = {"Observation": _observation, "Condition": _condition, "QuestionnaireResponse": _questionnaire}[kind]
        other = _other_patient(res, patient_id, at, aliases)
        if other:
            skipped.append(f"{label}: {other}")
            try:
                would = reader(res, at, kb, codes, [], label)
            except FhirInputError:  # not this patient's record: its shape is not this call's to judge
                would = []
            if would:
                given = "; ".join(
                    f"{kb.facts[fact].question} {kb.facts[fact].label(value)}" for fact, value, _ in would
                )
                set_aside.append(f"{label}: {other}; it records: {given}")
            continue
        found = reader(res, at, kb, codes, skipped, label)
        if not found and not any(s.startswith(label + ":") for s in skipped):
            skipped.append(f"{label}: no code bound to a fact")
        for fact, value, source in found:
            votes.setdefault(fact, {}).setdefault(value, []).append(source)
    facts: dict[str, Value] = {}
    evidence: dict[str, list[str]] = {}
    conflicts: dict[str, list[str]] = {}
    for fact in kb.input_facts:
        by_value = votes.get(fact.name)
        if not by_value:
            continue
        if len(by_value) == 1:
            ((value, sources),) = by_value.items()
            facts[fact.name] = value
            evidence[fact.name] = sorted(set(sources))
        else:
            conflicts[fact.name] = [
                f"{fact.label(v)} ({', '.join(sorted(set(s)))})" for v, s in sorted(by_value.items(), key=str)
            ]
    for fact in kb.input_facts:  # a value its condition contradicts (a primary site with "no cancer history")
        if fact.name in facts and contradicts_only_if(fact, facts):
            conflicts[fact.name] = [f"{fact.label(facts.pop(fact.name))} ({', '.join(evidence.pop(fact.name))})"] + [
                f"contradicts: {getattr(fact.only_if, 'describe', lambda: 'its condition')()}"
            ]
    contradictory: dict[str, Value] = {}
    for relation in kb.relations:  # records that contradict each other (confirmed but "not suspected"): both unknown
        while breaks(relation, facts):
            sides = [c for c in (relation.when, relation.implies, relation.excludes) if c is not None]
            named = [f for side in sides for f in condition_facts(side) if f in facts]
            shown = "; ".join(f"{f} = {kb.facts[f].label(facts[f])} ({', '.join(evidence.get(f, []))})" for f in named)
            for f in named:
                contradictory[f] = facts.pop(f)
                conflicts[f] = [f"{kb.facts[f].label(contradictory[f])} ({', '.join(evidence.pop(f, []))})"] + [
                    f"contradicts: {shown} ({relation.because.strip()})"
                ]
    return Mapped(facts, evidence, conflicts, skipped, set_aside, patient, contradictory)


# ---- readers ---------------------------------------------------------------------------------------------
def _observation(res: dict, at: str, kb: KnowledgeBase, codes: Codes, skipped: list, label: str) -> list:
    status = _status(res, at)
    if status not in codes.observation_status:
        skipped.append(f"{label}: status {status or 'missing'}")
        return []
    if "dataAbsentReason" in res:
        skipped.append(f"{label}: no value (dataAbsentReason)")
        return []
    out = []
    for system, code in _codings(res.get("code"), _join(at, "code")):
        targets: list[tuple[str, Value | None]] = [(b.fact, b.value) for b in codes.bindings_for(system, code)]
        if system == codes.kb_system and code is not None and code in kb.facts and not kb.facts[code].derived:
            targets.append((code, None))
        for fact_name, fixed in targets:
            value = _observed_value(res, at, kb, codes, fact_name, fixed)
            if value is not None:
                out.append((fact_name, value, f"{label} {_short(system, code)}"))
    return out


def _observed_value(res: dict, at: str, kb: KnowledgeBase, codes: Codes, fact_name: str, fixed: Value | None):
    fact = kb.facts[fact_name]
    answer: Value | None = None
    if "valueBoolean" in res:
        if not isinstance(res["valueBoolean"], bool):
            raise FhirInputError(_join(at, "valueBoolean"), f"must be true or false, not {_kind(res['valueBoolean'])}")
        answer = res["valueBoolean"]
    elif "valueCodeableConcept" in res:
        for system, code in _codings(res["valueCodeableConcept"], _join(at, "valueCodeableConcept")):
            yes_no = codes.answer_of(system, code)
            value = yes_no if yes_no is not None else codes.enum_value(fact.name, system, code, fact.values)
            if value is not None:
                answer = value
                break
    elif "valueString" in res and fact.type == "enum" and res["valueString"] in fact.values:
        answer = res["valueString"]
    if answer is None:
        return None
    if fixed is not None:  # a finding code bound to one value: "yes" means that value, "no" says nothing
        return fixed if answer is True else None
    if fact.type == "bool":
        return answer if isinstance(answer, bool) else None
    return answer if answer in fact.values else None


def _condition(res: dict, at: str, kb: KnowledgeBase, codes: Codes, skipped: list, label: str) -> list:
    verification = _status_code(res.get("verificationStatus"), _join(at, "verificationStatus")) or "absent"
    clinical = _status_code(res.get("clinicalStatus"), _join(at, "clinicalStatus"))
    out = []
    for system, code in _codings(res.get("code"), _join(at, "code")):
        bindings: list[Binding] = codes.bindings_for(system, code)
        if system == codes.kb_system and code is not None and code in kb.facts and kb.facts[code].type == "bool":
            bindings.append(Binding(code, None, "current", ()))
        for binding in bindings:
            profile = (
                codes.profiles[binding.profile] if binding.profile in codes.profiles else codes.profiles["current"]
            )
            rule = profile["verification"].get(verification, "unknown")
            if rule == "ignore":
                skipped.append(f"{label}: verificationStatus {verification}")
                return []
            if rule == "as_clinical":
                rule = profile["clinical"].get(clinical, "unknown") if clinical else "unknown"
            if rule == "unknown":
                continue
            value: Value = (binding.value if binding.value is not None else True) if rule == "true" else False
            if rule == "false" and binding.value is not None:
                continue  # "not this site" does not say which site
            status = "/".join(s for s in (clinical, None if verification == "absent" else verification) if s)
            out.append((binding.fact, value, f"{label} {_short(system, code)} ({status})"))
    return out


def _questionnaire(res: dict, at: str, kb: KnowledgeBase, codes: Codes, skipped: list, label: str) -> list:
    status = _status(res, at)
    if status not in codes.questionnaire_response_status:
        skipped.append(f"{label}: status {status or 'missing'}")
        return []
    out = []
    for item_at, item in _items(res.get("item", []), _join(at, "item")):
        link = item.get("linkId")
        fact = kb.facts.get(link) if isinstance(link, str) else None
        if fact is None or fact.derived:
            continue
        answers = item.get("answer", [])
        if not isinstance(answers, list):
            raise FhirInputError(_join(item_at, "answer"), f"must be a list, not {_kind(answers)}")
        for i, answer in enumerate(answers):
            a_at = _join(item_at, f"answer[{i}]")
            if not isinstance(answer, dict):
                raise FhirInputError(a_at, f"must be an object, not {_kind(answer)}")
            value: Value | None = None
            if "valueBoolean" in answer and isinstance(answer["valueBoolean"], bool) and fact.type == "bool":
                value = answer["valueBoolean"]
            elif "valueCoding" in answer:
                coding = answer["valueCoding"]
                if not isinstance(coding, dict):
                    raise FhirInputError(_join(a_at, "valueCoding"), f"must be an object, not {_kind(coding)}")
                system, code = coding.get("system"), coding.get("code")
                if fact.type == "bool":
                    value = codes.answer_of(system, code)
                else:
                    value = codes.enum_value(fact.name, system, code, fact.values)
            elif "valueString" in answer and fact.type == "enum" and answer["valueString"] in fact.values:
                value = answer["valueString"]
            if value is not None:
                out.append((fact.name, value, f"{label} item {link}"))
    return out


# ---- helpers ---------------------------------------------------------------------------------------------
def _status(res: dict, at: str) -> str | None:
    """A resource's `status`: a code (a string) or absent; anything else is malformed (a list or an object
    cannot be looked up among the usable statuses)."""
    status = res.get("status")
    if status is not None and not isinstance(status, str):
        raise FhirInputError(_join(at, "status"), f"must be a code (a string), not {_kind(status)}")
    return status


def _items(items: Any, at: str) -> Iterator[tuple[str, dict]]:
    if not isinstance(items, list):
        raise FhirInputError(at, f"must be a list, not {_kind(items)}")
    for i, item in enumerate(items):
        here = f"{at}[{i}]"
        if not isinstance(item, dict):
            raise FhirInputError(here, f"must be an object, not {_kind(item)}")
        yield here, item
        if "item" in item:
            yield from _items(item["item"], _join(here, "item"))


def _codings(concept: Any, at: str) -> list[tuple[str | None, str | None]]:
    if concept is None:
        return []
    if not isinstance(concept, dict):
        raise FhirInputError(at, f"must be a CodeableConcept (an object), not {_kind(concept)}")
    codings = concept.get("coding", [])
    if not isinstance(codings, list):
        raise FhirInputError(_join(at, "coding"), f"must be a list, not {_kind(codings)}")
    out = []
    for i, coding in enumerate(codings):
        if not isinstance(coding, dict):
            raise FhirInputError(_join(at, f"coding[{i}]"), f"must be an object, not {_kind(coding)}")
        system, code = coding.get("system"), coding.get("code")
        out.append((system if isinstance(system, str) else None, code if isinstance(code, str) else None))
    return out


def _status_code(concept: Any, at: str) -> str | None:
    for _system, code in _codings(concept, at):
        if code:
            return code
    return None


def _other_patient(res: dict, patient_id: str | None, at: str, aliases: dict[str, str]) -> str | None:
    """None when the record is this patient's (or names no subject reference), else why it is not."""
    if not patient_id:
        return None
    ref = res.get("subject") or res.get("patient")
    if ref is None:
        return None
    if not isinstance(ref, dict):
        raise FhirInputError(_join(at, "subject"), f"must be a Reference (an object), not {_kind(ref)}")
    target = ref.get("reference")
    if not isinstance(target, str):
        return None
    named = aliases.get(target)
    if named is None:
        found = _PATIENT_REFERENCE.fullmatch(_HISTORY.sub("", target))
        named = found.group(1) if found else None
    if named == patient_id:
        return None
    if named is None:
        return f"its subject ({target[:200]}) cannot be matched to this patient"
    return f"about another patient (Patient/{named})"


_HISTORY = re.compile(r"/_history/[^/]*\Z")  # a version of the resource: the same patient
_PATIENT_REFERENCE = re.compile(r"(?:.*/)?Patient/([A-Za-z0-9\-.]{1,64})")  # FHIR's id: 1-64 of these


def _patients_by_full_url(data: list) -> dict[str, str]:
    """Each Bundle entry's fullUrl whose resource is a Patient, with that Patient's id: a record may name its
    subject by it (`urn:uuid:...` in a transaction Bundle)."""
    out: dict[str, str] = {}
    stack: list = list(data)
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict) and item.get("resourceType") == "Bundle" and isinstance(item.get("entry"), list):
            for entry in item["entry"]:
                if not isinstance(entry, dict):
                    continue
                res, url = entry.get("resource"), entry.get("fullUrl")
                if isinstance(res, dict) and res.get("resourceType") == "Patient" and isinstance(res.get("id"), str):
                    if isinstance(url, str):
                        out[url] = res["id"]
                stack.append(res)
    return out


def _short(system: str | None, code: str | None) -> str:
    names = {
        "http://snomed.info/sct": "SNOMED CT",
        "http://loinc.org": "LOINC",
        "http://hl7.org/fhir/sid/icd-10": "ICD-10",
        "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    }
    return f"{names.get(system or '', 'code')} {code}"


def _join(where: str, key: str) -> str:
    if not where:
        return key
    return f"{where}{key}" if key.startswith("[") else f"{where}.{key}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


_CODES: dict = {}  # the bindings of the knowledge base last used, for a cohort of FHIR files


def facts_from_document(data: Any, pos, kb: KnowledgeBase, codes: Codes | None = None) -> dict[str, Value]:
    """A FHIR Bundle or QuestionnaireResponse document (read by `source.read_document`) as a patient's facts,
    for `evaluate` and `cohort`. Conflicting records stay unknown, as in the service. Wrong structure is a
    PatientError naming the file and the field."""
    from lumbar_kb.clinic.fhir.codes import load_codes

    kind = data.get("resourceType") if isinstance(data, dict) else None
    if kind not in ("Bundle", "QuestionnaireResponse"):
        raise PatientError(
            pos.problem(("resourceType",), f"a FHIR patient file is a Bundle or a QuestionnaireResponse, not {kind!r}")
        )
    if codes is None:
        key = (kb.root, kb.sha256)
        if key not in _CODES:
            _CODES.clear()  # one knowledge base at a time in a run
            _CODES[key] = load_codes(kb)
        codes = _CODES[key]
    try:
        mapped = map_fhir(data, kb, codes)
    except FhirInputError as exc:
        raise PatientError(Problem(exc.message, file=pos.file, subject=exc.field or None)) from None
    return mapped.facts
