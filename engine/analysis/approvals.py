"""The board's sign-off per rule, bound to the rule's content (knowledge/<kb>/approvals.yaml).

An approval records who approved a rule, when, with what note, and the rule's content hash: a sha256 over
its condition, conclusions (with the catalogue texts each conclusion shows: label, clinician and patient
text, and an action's window), citations (numbers and full references), title, rationale, interpretation,
section and priority. Only the hash decides a rule's status; the date is recorded, never compared:

    approved      some approval of the rule carries the rule's current hash
    changed       the rule was approved, but its content has changed since (no approval carries its hash):
                  the approval is void until the board approves the new content
    under review  never approved, but a reviewer has recorded that the rule is under review
                  (`lumbar-kb approve RULE --by NAME --under-review`), for any version of it
    submitted     nothing recorded: written by the authors, not yet looked at by the board

The file is a reviewed file in git: `approve` appends records, never rewrites old ones, so its history is
the board's history. Approvals export as FHIR ArtifactAssessment records (the shape CRMI's `$approve` creates).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from lumbar_kb.engine.errors import KnowledgeBaseError, LumbarKBError, Problem, did_you_mean
from lumbar_kb.engine.loader import schema_problems
from lumbar_kb.engine.model import All, AnyOf, Condition, Derive, KnowledgeBase, Not, Recommend, Rule, SetUrgency, Test
from lumbar_kb.engine.source import DocumentError, display, read_document

FILE_NAME = "approvals.yaml"
STATUSES = ("submitted", "under_review", "approved", "changed")
STATUS_WORDS = {
    "submitted": "submitted",
    "under_review": "under review",
    "approved": "approved",
    "changed": "changed since approval",
}
HEADER = (
    "# The medical board's sign-off per rule, written by `lumbar-kb approve` (append-only: review it in git).\n"
    "# Each record binds a decision to the rule's content hash; editing the rule voids an approval\n"
    '# (`lumbar-kb status` then says "changed"). Only the hash decides; the date is recorded, never compared.\n'
)
CANONICAL_BASE = "https://lumbar-kb.invalid/fhir"


@dataclass(frozen=True)
class Record:
    rule: str
    decision: str  # "approved" | "under_review"
    by: str
    date: str
    content_hash: str
    note: str = ""

    def to_dict(self) -> dict:
        out = {
            "rule": self.rule,
            "decision": self.decision,
            "by": self.by,
            "date": self.date,
            "content_hash": self.content_hash,
        }
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class RuleStatus:
    rule: str
    status: str
    content_hash: str
    approval: Record | None  # the approval that holds (approved) or the latest void one (changed)
    records: tuple[Record, ...]

    @property
    def words(self) -> str:
        return STATUS_WORDS[self.status]

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "status": self.status,
            "content_hash": self.content_hash,
            "approval": self.approval.to_dict() if self.approval else None,
            "records": [r.to_dict() for r in self.records],
        }


# ---- the content a signature covers ------------------------------------------------------------------------------
def _condition(cond: Condition) -> object:
    if isinstance(cond, Test):
        return {"fact": cond.fact, "values": sorted(json.dumps(v) for v in cond.values)}
    if isinstance(cond, All):
        return {"all": [_condition(c) for c in cond.items]}
    if isinstance(cond, AnyOf):
        return {"any": [_condition(c) for c in cond.items]}
    if isinstance(cond, Not):
        return {"not": _condition(cond.item)}
    raise TypeError(cond)  # pragma: no cover - the model has no other condition


def _texts(kb: KnowledgeBase, kind: str, code: str) -> dict:
    entry = kb.catalog[kind][code]
    return {"label": entry.label, "text": entry.text, "patient_text": entry.patient_text}


def rule_content(kb: KnowledgeBase, rule: Rule) -> dict:
    """What an approval of `rule` covers, as plain data (hashed by `content_hash`)."""
    then = []
    for c in rule.then:
        if isinstance(c, SetUrgency):
            then.append({"urgency": c.level, **_texts(kb, "urgency", c.level)})
        elif isinstance(c, Recommend):
            then.append(
                {c.kind: c.code, "within_hours": c.within_hours, "window": c.window, **_texts(kb, c.kind, c.code)}
            )
        elif isinstance(c, Derive):
            then.append({"derive": c.fact, "value": c.value, "meaning": kb.facts[c.fact].meaning})
    return {
        "id": rule.id,
        "title": rule.title,
        "section": rule.section,
        "priority": rule.priority,
        "when": _condition(rule.when),
        "then": then,
        "cites": [{"number": n, "reference": kb.references[n].cite()} for n in sorted(rule.cites)],
        "rationale": rule.rationale,
        "interpretation": rule.interpretation,
    }


def content_hash(kb: KnowledgeBase, rule: Rule) -> str:
    canonical = json.dumps(rule_content(kb, rule), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---- the file ---------------------------------------------------------------------------------------------------
def approvals_path(kb: KnowledgeBase) -> Path:
    return Path(kb.root) / FILE_NAME


def load_records(kb: KnowledgeBase) -> list[Record]:
    path = approvals_path(kb)
    if not path.exists():
        return []
    try:
        data, pos = read_document(path)
    except DocumentError as exc:
        raise KnowledgeBaseError(exc.problem) from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise KnowledgeBaseError(Problem("must be a mapping at the top", file=pos.file, line=1))
    problems = schema_problems(data, "approvals", pos)
    if problems:
        raise KnowledgeBaseError(problems)
    return [
        Record(r["rule"], r["decision"], r["by"], r["date"], r["content_hash"], r.get("note", ""))
        for r in data["records"]
    ]


def statuses(kb: KnowledgeBase, records: list[Record] | None = None) -> dict[str, RuleStatus]:
    """Every rule's status, in rule order."""
    records = load_records(kb) if records is None else records
    out = {}
    for rule in kb.rules:
        current = content_hash(kb, rule)
        mine = tuple(r for r in records if r.rule == rule.id)
        approvals = [r for r in mine if r.decision == "approved"]
        holding = [r for r in approvals if r.content_hash == current]
        if holding:
            status, approval = "approved", holding[-1]
        elif approvals:
            status, approval = "changed", approvals[-1]
        elif mine:
            status, approval = "under_review", None
        else:
            status, approval = "submitted", None
        out[rule.id] = RuleStatus(rule.id, status, current, approval, mine)
    return out


def unapproved_lines(kb: KnowledgeBase) -> list[str]:
    """One line per rule that blocks a release (not approved in its current content); none when all are."""
    return [
        f"rule {st.rule} is {st.words}, not approved"
        + (" (edited since the board approved it)" if st.status == "changed" else "")
        for st in statuses(kb).values()
        if st.status != "approved"
    ]


def orphans(kb: KnowledgeBase, records: list[Record]) -> list[Record]:
    """Records of rules the knowledge base no longer has."""
    known = {r.id for r in kb.rules}
    return [r for r in records if r.rule not in known]


def record(
    kb: KnowledgeBase, rule_ids: list[str], by: str, date: str, note: str = "", decision: str = "approved"
) -> list[Record]:
    """Append one record per rule (its current content hash) to approvals.yaml; the records written.
    Unknown rule ids or an empty name are refused before anything is written."""
    known = [r.id for r in kb.rules]
    problems = [
        Problem(f"no rule '{rid}' in the knowledge base", subject="approve", hint=did_you_mean(rid, known))
        for rid in rule_ids
        if rid not in known
    ]
    if not by.strip():
        problems.append(Problem("--by must name who approves", subject="approve"))
    if problems:
        raise LumbarKBError(problems)
    records = load_records(kb)
    added = [
        Record(rid, decision, by.strip(), date, content_hash(kb, kb.rule(rid)), note.strip())
        for rid in dict.fromkeys(rule_ids)
    ]
    text = HEADER + yaml.safe_dump(
        {"records": [r.to_dict() for r in records + added]}, sort_keys=False, allow_unicode=True, width=110
    )
    path = approvals_path(kb)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise LumbarKBError(Problem(f"cannot write: {exc.strerror or exc}", file=display(path))) from None
    return added


# ---- FHIR -------------------------------------------------------------------------------------------------------
def artifact_assessments(kb: KnowledgeBase, records: list[Record] | None = None) -> dict:
    """Every record as a FHIR ArtifactAssessment (the resource CRMI's `$approve` creates), in a Bundle.
    The assessed artifact is the rule's canonical URL, versioned by its content hash."""
    records = load_records(kb) if records is None else records
    current = {r.id: content_hash(kb, r) for r in kb.rules}
    entries = []
    for n, rec in enumerate(records, 1):
        comment: dict[str, object] = {"informationType": "comment" if rec.note else "container"}
        if rec.note:
            comment["summary"] = rec.note
        comment["author"] = {"display": rec.by}
        resource: dict[str, object] = {
            "resourceType": "ArtifactAssessment",
            "id": f"{kb.name}-{n}",
            "title": f"{'Approval' if rec.decision == 'approved' else 'Review'} of rule {rec.rule}",
            "date": rec.date,
            "artifactCanonical": f"{CANONICAL_BASE}/{kb.name}/rule/{rec.rule}|{rec.content_hash}",
            "content": [comment],
            "workflowStatus": "applied" if rec.decision == "approved" else "triaged",
            "disposition": "persuasive" if rec.decision == "approved" else "unresolved",
        }
        if rec.decision == "approved":
            resource["approvalDate"] = rec.date
        if current.get(rec.rule) != rec.content_hash:
            resource["disposition"] = "unresolved"
            resource["workflowStatus"] = "entered-in-error" if rec.rule not in current else "waiting-for-input"
        entries.append({"fullUrl": f"urn:uuid:{_uuid(kb.name, n, rec)}", "resource": resource})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _uuid(name: str, n: int, rec: Record) -> str:
    h = hashlib.sha256(f"{name}|{n}|{rec.rule}|{rec.content_hash}|{rec.by}|{rec.date}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-8{h[17:20]}-{h[20:32]}"
