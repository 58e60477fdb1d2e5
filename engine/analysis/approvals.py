"""The board's sign-off, bound to content: every item that can change a decision or a text, its hash, and the
signed records that approve it (approvals.yaml) or decide it (decisions.yaml).

Items (each with a sha256 over its content as plain data; `items(kb)`):

    <rule id>                    a rule: condition, conclusions with the catalogue texts they show, windows (both
                                 ends and the words), citations with full references, title, rationale,
                                 interpretation, section, priority
    fact:<name>                  a fact: type, domain, meaning, clinician and patient question, alarm flag,
                                 neurological flag, only_if, derived
    relation:<id>                a relation between answers (facts.yaml `relations:`)
    catalog:<kind>:<code>        a catalogue entry: label, clinician and patient text, rank, window properties,
                                 emergency bound, superseded_by, done_when
    safety:completeness          the completeness floor: its level, texts, and when a question is moot
    safety:scope                 who is outside the guideline, and the texts they are shown
    floor:<id>                   a floor (guideline.yaml `floors:`)
    guideline:texts              title, publisher, disclaimer, question, sections and references
    codes:<part>                 codes.yaml: `codes:bindings:<fact>`, `codes:orders:<name>`, `codes:actions:<code>`,
                                 and each other top-level key (`codes:systems`, `codes:condition_profiles`, ...)
    text:<sentence id>           a guideline sentence, its status and the rules it is traced to

An edit changes exactly the hashes of the items it changes, so it voids exactly their approvals (`status` and
`check --release` name them). The version label and file positions are not content.

Decisions (decisions.yaml): every inconsistency (`inconsistency:<id>`), every rule interpretation
(`interpretation:<rule id>`, bound to the rule's whole content) and every hazard whose residual risk needs
acceptance (`hazard:<id>`, residual risk >= ACCEPT_FROM) needs the board's decision: accept, reject or change,
with a rationale. Only "accept" by a quorum lets a release go; reject and change keep it blocked.

Signatures: `board.yaml` lists the members' Ed25519 public keys and the quorum. Every record carries a
signature over (knowledge base name, item, decision, content hash, signer, date, note or rationale) by the
member it names; a record whose signature is missing, does not verify, or names no member is reported and does
not count. An item is approved (or decided) when at least `quorum` distinct members validly signed its current
hash. Without a board.yaml nothing counts: the knowledge base honestly shows "submitted".

Statuses of an item, decided by hashes and valid signatures alone (the date is recorded, never compared):

    approved      a quorum of members validly signed an approval of the item's current hash
    changed       approved before (valid signatures on another hash), not at quorum on the current content
    under review  something is recorded on the current content, short of a quorum
    submitted     nothing recorded

The files are reviewed files in git: `approve` and `decide` append records, never rewrite old ones.
Approvals export as FHIR ArtifactAssessment records (the shape CRMI's `$approve` creates).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lumbar_kb.engine.errors import KnowledgeBaseError, LumbarKBError, Problem, did_you_mean
from lumbar_kb.engine.loader import read_contained, schema_problems
from lumbar_kb.engine.loader.board import Board, load_board
from lumbar_kb.engine.model import Derive, KnowledgeBase, Recommend, Rule, SetUrgency
from lumbar_kb.engine.source import DocumentError, display, read_bytes

FILE_NAME = "approvals.yaml"
DECISIONS_FILE = "decisions.yaml"
STATUSES = ("submitted", "under_review", "approved", "changed")
STATUS_WORDS = {
    "submitted": "submitted",
    "under_review": "under review",
    "approved": "approved",
    "changed": "changed since approval",
}
DECISIONS = ("accept", "reject", "change")
ACCEPT_FROM = 3  # a residual risk rating (DCB0129 1-5) from which the board must accept it in writing
HEADER = (
    "# The medical board's sign-off per item, written by `lumbar-kb approve` (append-only: review it in git).\n"
    "# Each record binds a decision to the item's content hash and is signed by a member of board.yaml; editing\n"
    '# the item voids the approval (`lumbar-kb status` then says "changed"). Only hashes and signatures decide.\n'
)
DECISIONS_HEADER = (
    "# The medical board's decisions on inconsistencies, interpretations and residual risks, written by\n"
    "# `lumbar-kb decide` (append-only: review it in git). Each is signed over the item's content hash.\n"
)
CANONICAL_BASE = "https://lumbar-kb.invalid/fhir"
_NOT_CONTENT = ("line", "file", "order")  # where a thing is written, not what it says


# ---- content as plain data ----------------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """Any model value as JSON-able data, deterministic: dataclasses by field (positions left out), sets sorted."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            if f.name not in _NOT_CONTENT:
                out[f.name] = plain(getattr(value, f.name))
        return out
    if isinstance(value, (frozenset, set)):
        return sorted((plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 24 and 24.0 are one window
    return value


def hash_of(content: Any) -> str:
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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
                {
                    c.kind: c.code,
                    "within_hours": plain(c.within_hours),
                    "within_hours_min": plain(c.within_hours_min),
                    "window": c.window,
                    **_texts(kb, c.kind, c.code),
                }
            )
        elif isinstance(c, Derive):
            then.append({"derive": c.fact, "value": c.value, "meaning": kb.facts[c.fact].meaning})
    return {
        "id": rule.id,
        "title": rule.title,
        "section": rule.section,
        "priority": rule.priority,
        "when": plain(rule.when),
        "then": then,
        "cites": [{"number": n, "reference": kb.references[n].cite()} for n in sorted(rule.cites)],
        "rationale": rule.rationale,
        "interpretation": rule.interpretation,
    }


def content_hash(kb: KnowledgeBase, rule: Rule) -> str:
    return hash_of(rule_content(kb, rule))


@dataclass(frozen=True)
class Item:
    id: str
    kind: str  # rule | fact | relation | catalog | safety | floor | guideline | codes | text
    title: str
    content: Any

    @property
    def content_hash(self) -> str:
        return hash_of(self.content)


def _codes_items(kb: KnowledgeBase) -> list[Item]:
    path = Path(kb.root) / "codes.yaml"
    if not os.path.lexists(path):
        return []
    try:
        data, _ = read_contained(Path(kb.root), path)
    except DocumentError as exc:
        raise KnowledgeBaseError(exc.problem) from None
    out = []
    for key, value in data.items():
        if key == "bindings":
            by_fact: dict[str, list] = {}
            for b in value:
                by_fact.setdefault(str(b["fact"]), []).append(b)
            out += [Item(f"codes:bindings:{f}", "codes", f"codes bound to {f}", bs) for f, bs in by_fact.items()]
        elif key in ("orders", "actions"):
            out += [Item(f"codes:{key}:{n}", "codes", f"{key[:-1]} {n}", v) for n, v in value.items()]
        else:
            out.append(Item(f"codes:{key}", "codes", f"codes.yaml {key}", value))
    return out


def _text_items(kb: KnowledgeBase) -> list[Item]:
    from lumbar_kb.engine.guideline_text import load_text

    text = load_text(kb)
    if text is None:
        return []
    return [Item(f"text:{s.id}", "text", s.text[:60], {"group": s.group, **plain(s)}) for s in text.sentences]


def items(kb: KnowledgeBase) -> dict[str, Item]:
    """Every item an approval can cover, in a stable order: rules first (in rule order), then the rest."""
    out: list[Item] = [Item(r.id, "rule", r.title, rule_content(kb, r)) for r in kb.rules]
    for f in kb.facts.values():
        out.append(Item(f"fact:{f.name}", "fact", f.meaning, plain(f)))
    out += [Item(f"relation:{r.id}", "relation", r.because, plain(r)) for r in kb.relations]
    for kind, entries in kb.catalog.items():
        out += [Item(f"catalog:{kind}:{code}", "catalog", e.label, plain(e)) for code, e in entries.items()]
    completeness = {
        "floor": kb.incomplete_floor,
        "text": kb.incomplete_text,
        "patient_text": kb.incomplete_patient_text,
        "not_asked_when": plain(kb.not_asked_when),
    }
    scope = {
        "when": plain(kb.out_of_scope_when),
        "text": kb.out_of_scope_text,
        "patient_text": kb.out_of_scope_patient_text,
    }
    out.append(Item("safety:completeness", "safety", "unanswered alarm questions (completeness floor)", completeness))
    out.append(Item("safety:scope", "safety", "who is outside the guideline", scope))
    out += [Item(f"floor:{fl.id}", "floor", fl.claim, plain(fl)) for fl in kb.floors]
    texts = {
        "name": kb.name,
        "title": kb.title,
        "publisher": kb.publisher,
        "disclaimer": kb.disclaimer,
        "question": kb.question,
        "sections": plain(kb.sections),
        "references": plain(kb.references),
    }
    out.append(Item("guideline:texts", "guideline", "title, disclaimer, question, sections, references", texts))
    out += _codes_items(kb)
    out += _text_items(kb)
    return {i.id: i for i in out}


def decision_items(kb: KnowledgeBase) -> dict[str, Item]:
    """Every item that needs the board's recorded decision."""
    out = [Item(f"inconsistency:{i.id}", "inconsistency", i.title, plain(i)) for i in kb.inconsistencies]
    out += [
        Item(f"interpretation:{r.id}", "interpretation", r.title, rule_content(kb, r))
        for r in kb.rules
        if r.interpretation
    ]
    out += [
        Item(f"hazard:{h.id}", "hazard", f"{h.title} (residual risk {h.residual_risk})", plain(h))
        for h in kb.hazards
        if h.residual_risk >= ACCEPT_FROM
    ]
    return {i.id: i for i in out}


# ---- records and signatures ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    item: str
    decision: str  # approvals: "approved" | "under_review"; decisions: "accept" | "reject" | "change"
    by: str
    date: str
    content_hash: str
    note: str = ""  # a note with an approval; the rationale of a decision
    signature: str = ""  # base64 Ed25519 signature over `payload`
    number: int = 0  # position in its file, from 1 (for messages)

    @property
    def rule(self) -> str:  # the name older callers read
        return self.item

    def to_dict(self, decision_file: bool = False) -> dict:
        out: dict[str, str] = {"item": self.item, "decision": self.decision, "by": self.by, "date": self.date}
        out["content_hash"] = self.content_hash
        if self.note:
            out["rationale" if decision_file else "note"] = self.note
        if self.signature:
            out["signature"] = self.signature
        return out


def payload(kb_name: str, rec: Record) -> bytes:
    """The bytes a member signs: everything the record says, so editing any of it breaks the signature."""
    data = {
        "kb": kb_name,
        "item": rec.item,
        "decision": rec.decision,
        "content_hash": rec.content_hash,
        "by": rec.by,
        "date": rec.date,
        "note": rec.note,
    }
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signature_problem(kb: KnowledgeBase, board: Board | None, rec: Record) -> str | None:
    """Why a record's signature does not count, or None when it is a board member's valid signature."""
    import base64
    import binascii

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if board is None:
        return "the knowledge base has no board.yaml: no signature can count"
    if not rec.signature:
        return "unsigned"
    key = board.members.get(rec.by)
    if key is None:
        return f"'{rec.by}' is not a member of the board (board.yaml)"
    try:
        signature = base64.b64decode(rec.signature, validate=True)
        Ed25519PublicKey.from_public_bytes(key).verify(signature, payload(kb.name, rec))
    except (InvalidSignature, binascii.Error, ValueError):
        return "the signature does not verify (forged, or the record was edited after signing)"
    return None


def _path(kb: KnowledgeBase, name: str) -> Path:
    return Path(kb.root) / name


def approvals_path(kb: KnowledgeBase) -> Path:
    return _path(kb, FILE_NAME)


def decisions_path(kb: KnowledgeBase) -> Path:
    return _path(kb, DECISIONS_FILE)


def _load(kb: KnowledgeBase, name: str, schema: str) -> list[Record]:
    path = _path(kb, name)
    if not os.path.lexists(path):
        return []
    try:
        data, pos = read_contained(Path(kb.root), path)
    except DocumentError as exc:
        raise KnowledgeBaseError(exc.problem) from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise KnowledgeBaseError(Problem("must be a mapping at the top", file=pos.file, line=1))
    problems = schema_problems(data, schema, pos)
    if problems:
        raise KnowledgeBaseError(problems)
    return [
        Record(
            r.get("item", r.get("rule", "")),
            r["decision"],
            r["by"],
            r["date"],
            r["content_hash"],
            r.get("note", r.get("rationale", "")),
            r.get("signature", ""),
            n,
        )
        for n, r in enumerate(data["records"], 1)
    ]


def load_records(kb: KnowledgeBase) -> list[Record]:
    return _load(kb, FILE_NAME, "approvals")


def load_decisions(kb: KnowledgeBase) -> list[Record]:
    return _load(kb, DECISIONS_FILE, "decisions")


def board_of(kb: KnowledgeBase) -> Board | None:
    return load_board(kb.root)


# ---- statuses -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ItemStatus:
    item: str
    kind: str
    title: str
    status: str
    content_hash: str
    approval: Record | None  # the latest valid approval of the current content (approved, under review) or of an
    # earlier one (changed)
    records: tuple[Record, ...]
    signers: tuple[str, ...] = ()  # distinct members whose valid approval carries the current hash
    needed: int = 0  # the quorum (0: no board)

    @property
    def rule(self) -> str:
        return self.item

    @property
    def words(self) -> str:
        if self.status == "under_review" and self.signers:
            return f"under review ({len(self.signers)} of {self.needed} signatures)"
        return STATUS_WORDS[self.status]

    def to_dict(self) -> dict:
        return {
            "rule": self.item,
            "item": self.item,
            "kind": self.kind,
            "status": self.status,
            "content_hash": self.content_hash,
            "signers": list(self.signers),
            "needed": self.needed,
            "approval": self.approval.to_dict() if self.approval else None,
            "records": [r.to_dict() for r in self.records],
        }


RuleStatus = ItemStatus  # the name the views knew


def _valid(kb: KnowledgeBase, board: Board | None, records: list[Record]) -> list[Record]:
    return [r for r in records if signature_problem(kb, board, r) is None]


def item_statuses(
    kb: KnowledgeBase, records: list[Record] | None = None, board: Board | None | bool = False
) -> dict[str, ItemStatus]:
    """Every item's status, rules first."""
    records = load_records(kb) if records is None else records
    board = board_of(kb) if board is False else board
    assert board is not True
    needed = board.quorum if board is not None else 0
    valid = {r.number: r for r in _valid(kb, board, records)} if board is not None else {}
    out = {}
    for item in items(kb).values():
        current = item.content_hash
        mine = tuple(r for r in records if r.item == item.id)
        good = [r for r in mine if r.number in valid and r.decision == "approved"]
        holding = [r for r in good if r.content_hash == current]
        signers = tuple(dict.fromkeys(r.by for r in holding))
        approval: Record | None
        if board is not None and len(signers) >= needed:
            status, approval = "approved", holding[-1]
        elif [r for r in good if r.content_hash != current] and not holding:
            status, approval = "changed", good[-1]
        elif any(r.content_hash == current for r in mine):
            status, approval = "under_review", holding[-1] if holding else None
        else:
            status, approval = "submitted", None
        out[item.id] = ItemStatus(item.id, item.kind, item.title, status, current, approval, mine, signers, needed)
    return out


def statuses(kb: KnowledgeBase, records: list[Record] | None = None) -> dict[str, ItemStatus]:
    """Every rule's status, in rule order."""
    every = item_statuses(kb, records)
    return {r.id: every[r.id] for r in kb.rules}


@dataclass(frozen=True)
class DecisionStatus:
    item: str
    kind: str
    title: str
    state: str  # open | accepted | rejected | change | reopened
    content_hash: str
    records: tuple[Record, ...]
    signers: tuple[str, ...] = ()
    needed: int = 0

    @property
    def open(self) -> bool:
        return self.state != "accepted"

    @property
    def words(self) -> str:
        words = {
            "open": "open: the board has not decided",
            "accepted": "accepted by the board",
            "rejected": "rejected by the board: must change before release",
            "change": "the board asked for a change",
            "reopened": "decided on earlier content: changed since, open again",
        }[self.state]
        if self.state == "open" and self.signers:
            words += f" ({len(self.signers)} of {self.needed} accepting)"
        return words

    def to_dict(self) -> dict:
        return {
            "item": self.item,
            "kind": self.kind,
            "title": self.title,
            "state": self.state,
            "words": self.words,
            "content_hash": self.content_hash,
            "signers": list(self.signers),
            "needed": self.needed,
            "records": [r.to_dict(True) for r in self.records],
        }


def decision_statuses(
    kb: KnowledgeBase, records: list[Record] | None = None, board: Board | None | bool = False
) -> dict[str, DecisionStatus]:
    records = load_decisions(kb) if records is None else records
    board = board_of(kb) if board is False else board
    assert board is not True
    needed = board.quorum if board is not None else 0
    valid = {r.number for r in _valid(kb, board, records)} if board is not None else set()
    out = {}
    for item in decision_items(kb).values():
        current = item.content_hash
        mine = tuple(r for r in records if r.item == item.id)
        good = [r for r in mine if r.number in valid]
        latest = {r.by: r for r in good if r.content_hash == current}  # each member's last word on this content
        accepting = tuple(by for by, r in latest.items() if r.decision == "accept")
        words = {r.decision for r in latest.values()}
        if board is not None and len(accepting) >= needed:
            state = "accepted"
        elif "reject" in words:
            state = "rejected"
        elif "change" in words:
            state = "change"
        elif good and not latest:
            state = "reopened"
        else:
            state = "open"
        out[item.id] = DecisionStatus(item.id, item.kind, item.title, state, current, mine, accepting, needed)
    return out


def record_problems(kb: KnowledgeBase) -> list[str]:
    """One line per record that does not count: unsigned, forged, edited, by a non-member, of an unknown item."""
    board = board_of(kb)
    known, deciding = items(kb), decision_items(kb)
    lines = []
    for name, records, universe in (
        (FILE_NAME, load_records(kb), known),
        (DECISIONS_FILE, load_decisions(kb), deciding),
    ):
        for r in records:
            why = signature_problem(kb, board, r)
            if why is None and r.item not in universe:
                why = "names no item of the knowledge base"
            if why is not None and not (why == "unsigned" and r.decision == "under_review"):
                lines.append(f"{name} record {r.number} ({r.item}, {r.decision} by {r.by}): {why}; it does not count")
    return lines


def unapproved_lines(kb: KnowledgeBase) -> list[str]:
    """One line per item that blocks a release: not approved in its current content by a quorum, or a decision
    the board has not made (or made against); none when everything is signed off."""
    board = board_of(kb)
    lines = []
    if board is None:
        lines.append("the knowledge base has no board.yaml: no approval can be signed, so none counts")
    for st in item_statuses(kb, board=board).values():
        if st.status != "approved":
            what = "rule" if st.kind == "rule" else "item"
            lines.append(
                f"{what} {st.item} is {st.words}, not approved"
                + (" (edited since the board approved it)" if st.status == "changed" else "")
            )
    for ds in decision_statuses(kb, board=board).values():
        if ds.open:
            lines.append(f"decision {ds.item} is {ds.words}")
    return lines


def orphans(kb: KnowledgeBase, records: list[Record]) -> list[Record]:
    """Records of items the knowledge base no longer has."""
    known = items(kb)
    return [r for r in records if r.item not in known]


# ---- keys and writing ---------------------------------------------------------------------------------------------
def new_key(path: Path) -> str:
    """Make a member's Ed25519 key: the private key written to `path` (PEM, mode 0600, never overwritten), the
    public key returned as board.yaml wants it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lumbar_kb.engine.loader.board import encode_key

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise LumbarKBError(Problem("exists already: a key is never overwritten", file=display(path))) from None
    except OSError as exc:
        raise LumbarKBError(Problem(f"cannot write: {exc.strerror or exc}", file=display(path))) from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return encode_key(raw)


def read_private_key(path: Path) -> Any:
    """A member's private key from a PEM file that only its owner can read."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = read_bytes(path)
        mode = os.stat(path).st_mode
    except DocumentError as exc:
        raise LumbarKBError(exc.problem) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LumbarKBError(
            Problem("a private key others can read is refused: chmod 600 it (and make a new one)", file=display(path))
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise LumbarKBError(Problem("not an unencrypted Ed25519 private key in PEM", file=display(path)))
    return key


def _signer(board: Board | None, key: Any, by: str | None) -> str:
    from cryptography.hazmat.primitives import serialization

    if board is None:
        raise LumbarKBError(Problem("the knowledge base has no board.yaml: no member can sign", subject="board"))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    names = [name for name, k in board.members.items() if k == raw]
    if not names:
        raise LumbarKBError(Problem("this key belongs to no member of board.yaml", subject="--key"))
    if by is not None and by.strip() and by.strip() != names[0]:
        raise LumbarKBError(Problem(f"this key is {names[0]}'s, not {by.strip()}'s", subject="--by"))
    return names[0]


def _sign(kb: KnowledgeBase, key: Any, rec: Record) -> Record:
    import base64

    return dataclasses.replace(rec, signature=base64.b64encode(key.sign(payload(kb.name, rec))).decode("ascii"))


def _write(kb: KnowledgeBase, name: str, header: str, records: list[Record], decision_file: bool) -> None:
    text = header + yaml.safe_dump(
        {"records": [r.to_dict(decision_file) for r in records]}, sort_keys=False, allow_unicode=True, width=110
    )
    path = _path(kb, name)
    if os.path.lexists(path) and os.path.islink(path):
        raise LumbarKBError(Problem("is a symbolic link: refused (it is written in place)", file=display(path)))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if os.path.lexists(tmp):  # a leftover (or a planted link): never written through
            tmp.unlink()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise LumbarKBError(Problem(f"cannot write: {exc.strerror or exc}", file=display(path))) from None


def record(
    kb: KnowledgeBase,
    item_ids: list[str],
    by: str | None,
    date: str,
    note: str = "",
    decision: str = "approved",
    key: Any = None,
) -> list[Record]:
    """Append one record per item (its current content hash) to approvals.yaml; the records written.
    An approval must be signed with a board member's key; "under review" may be unsigned. Unknown items, an
    empty name or a key of no member are refused before anything is written."""
    known = items(kb)
    problems = [
        Problem(f"no item '{iid}' in the knowledge base", subject="approve", hint=did_you_mean(iid, list(known)))
        for iid in item_ids
        if iid not in known
    ]
    if problems:
        raise LumbarKBError(problems)
    if key is not None:
        by = _signer(board_of(kb), key, by)
    elif decision == "approved":
        raise LumbarKBError(
            Problem("an approval must be signed: give --key, a board member's private key", subject="approve")
        )
    if not (by or "").strip():
        raise LumbarKBError(Problem("--by must name who records it", subject="approve"))
    records = load_records(kb)
    added = []
    for n, iid in enumerate(dict.fromkeys(item_ids), len(records) + 1):
        rec = Record(iid, decision, str(by).strip(), date, known[iid].content_hash, note.strip(), "", n)
        added.append(_sign(kb, key, rec) if key is not None else rec)
    _write(kb, FILE_NAME, HEADER, records + added, False)
    return added


def decide(
    kb: KnowledgeBase, item_id: str, decision: str, rationale: str, by: str | None, date: str, key: Any
) -> Record:
    """Append the board member's signed decision on one item to decisions.yaml."""
    deciding = decision_items(kb)
    if item_id not in deciding:
        raise LumbarKBError(
            Problem(
                f"no decision item '{item_id}' (inconsistency:ID, interpretation:RULE, hazard:ID)",
                subject="decide",
                hint=did_you_mean(item_id, list(deciding)),
            )
        )
    if decision not in DECISIONS:
        raise LumbarKBError(Problem(f"decision must be one of {', '.join(DECISIONS)}", subject="decide"))
    if not rationale.strip():
        raise LumbarKBError(Problem("a decision needs its rationale (--rationale)", subject="decide"))
    signer = _signer(board_of(kb), key, by)
    records = load_decisions(kb)
    current = deciding[item_id].content_hash
    rec = Record(item_id, decision, signer, date, current, rationale.strip(), "", len(records) + 1)
    rec = _sign(kb, key, rec)
    _write(kb, DECISIONS_FILE, DECISIONS_HEADER, records + [rec], True)
    return rec


# ---- FHIR -------------------------------------------------------------------------------------------------------
def artifact_assessments(kb: KnowledgeBase, records: list[Record] | None = None) -> dict:
    """Every record as a FHIR ArtifactAssessment (the resource CRMI's `$approve` creates), in a Bundle.
    The assessed artifact is the item's canonical URL, versioned by its content hash; a record whose signature
    does not count is `entered-in-error`."""
    records = load_records(kb) if records is None else records
    board = board_of(kb)
    current = {i.id: i.content_hash for i in items(kb).values()}
    rules = {r.id for r in kb.rules}
    entries = []
    for n, rec in enumerate(records, 1):
        comment: dict[str, object] = {"informationType": "comment" if rec.note else "container"}
        if rec.note:
            comment["summary"] = rec.note
        comment["author"] = {"display": rec.by}
        path = f"rule/{rec.item}" if rec.item in rules else f"item/{rec.item}"
        resource: dict[str, object] = {
            "resourceType": "ArtifactAssessment",
            "id": f"{kb.name}-{n}",
            "title": f"{'Approval' if rec.decision == 'approved' else 'Review'} of {rec.item}",
            "date": rec.date,
            "artifactCanonical": f"{CANONICAL_BASE}/{kb.name}/{path}|{rec.content_hash}",
            "content": [comment],
            "workflowStatus": "applied" if rec.decision == "approved" else "triaged",
            "disposition": "persuasive" if rec.decision == "approved" else "unresolved",
        }
        if rec.decision == "approved":
            resource["approvalDate"] = rec.date
        if current.get(rec.item) != rec.content_hash:
            resource["disposition"] = "unresolved"
            resource["workflowStatus"] = "entered-in-error" if rec.item not in current else "waiting-for-input"
        if rec.decision == "approved" and signature_problem(kb, board, rec) is not None:
            resource["disposition"] = "unresolved"
            resource["workflowStatus"] = "entered-in-error"
        entries.append({"fullUrl": f"urn:uuid:{_uuid(kb.name, n, rec)}", "resource": resource})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _uuid(name: str, n: int, rec: Record) -> str:
    h = hashlib.sha256(f"{name}|{n}|{rec.item}|{rec.content_hash}|{rec.by}|{rec.date}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-8{h[17:20]}-{h[20:32]}"
