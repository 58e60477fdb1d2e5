"""The guideline's own words, sentence by sentence, traced to the rules that encode them.

    knowledge/<kb>/guideline_text.yaml   groups (the guideline's headings) of sentences; each sentence lists
                                         the rule ids that encode it (`rules:`) or says why none does
                                         (`not_encoded:`), and its status: faithful, interpreted
                                         (a rule encoding it has an interpretation), departs (by choice,
                                         `departs:` says how and why) or not encoded

The mapping is data, read here and judged elsewhere: `analysis.checks.traceability` reports a rule no sentence
names, a sentence with neither rules nor a reason, and an unknown rule id; the review pack shows the text beside
the rules. Loading fails (KnowledgeBaseError, positioned problems) only on a malformed file or a duplicate id;
a knowledge base without the file has no text (`load_text` returns None).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lumbar_kb.engine.errors import KnowledgeBaseError, Problem
from lumbar_kb.engine.loader import schema_problems
from lumbar_kb.engine.model import KnowledgeBase
from lumbar_kb.engine.source import DocumentError, display

FILE_NAME = "guideline_text.yaml"
# how the encoding renders a sentence: as written; through an interpretation the board must confirm; departing
# from it by a recorded choice; or not at all (with the reason)
STATUSES = ("faithful", "interpreted", "departs", "not_encoded")
STATUS_WORDS = {
    "faithful": "faithful",
    "interpreted": "interpreted",
    "departs": "departs by choice",
    "not_encoded": "not encoded",
}


@dataclass(frozen=True)
class Sentence:
    id: str
    text: str
    group: str  # the id of the heading it sits under
    rules: tuple[str, ...] = ()
    not_encoded: str | None = None
    cites: tuple[int, ...] = ()
    heading: bool = False
    line: int | None = None
    status: str = "faithful"  # faithful | interpreted | departs | not_encoded (STATUSES)
    departs: str | None = None  # with "departs": how and why the encoding departs by choice


@dataclass(frozen=True)
class Group:
    id: str
    title: str
    section: str | None
    sentences: tuple[Sentence, ...]


@dataclass(frozen=True)
class GuidelineText:
    file: str  # as displayed in messages
    source: str
    groups: tuple[Group, ...]

    @property
    def sentences(self) -> list[Sentence]:
        return [s for g in self.groups for s in g.sentences]

    def sentences_of(self, rule_id: str) -> list[Sentence]:
        """The sentences that name a rule, in the guideline's order."""
        return [s for s in self.sentences if rule_id in s.rules]

    def coverage(self) -> tuple[int, int]:
        """(sentences encoded by at least one rule, all sentences)."""
        sentences = self.sentences
        return sum(1 for s in sentences if s.rules), len(sentences)


def text_path(kb: KnowledgeBase) -> Path:
    return Path(kb.root) / FILE_NAME


def load_text(kb: KnowledgeBase) -> GuidelineText | None:
    """The knowledge base's guideline text, or None when it has no guideline_text.yaml."""
    from lumbar_kb.engine.loader import read_contained

    path = text_path(kb)
    if not os.path.lexists(path):
        return None
    try:
        data, pos = read_contained(Path(kb.root), path)
    except DocumentError as exc:
        raise KnowledgeBaseError(exc.problem) from None
    if not isinstance(data, dict):
        raise KnowledgeBaseError(Problem("must be a mapping at the top", file=pos.file, line=1))
    problems = schema_problems(data, "guideline_text", pos)
    if problems:
        raise KnowledgeBaseError(problems)
    seen: dict[str, int | None] = {}
    groups = []
    for gi, raw_group in enumerate(data["groups"]):
        gid = raw_group["id"]
        if gid in seen:
            problems.append(pos.problem(("groups", gi, "id"), f"duplicate id (first at line {seen[gid]})"))
        seen[gid] = pos.at(("groups", gi))[0]
        sentences = []
        for si, raw in enumerate(raw_group["sentences"]):
            at = ("groups", gi, "sentences", si)
            sid = raw["id"]
            if sid in seen:
                problems.append(
                    pos.problem((*at, "id"), f"duplicate id (first at line {seen[sid]})", f"sentence {sid}")
                )
            seen[sid] = pos.at(at)[0]
            if raw.get("rules") and raw.get("not_encoded"):
                problems.append(
                    pos.problem(
                        at,
                        "has both rules and not_encoded: say which rules encode it, or why none does",
                        f"sentence {sid}",
                    )
                )
            interpreted = any(r.id in raw.get("rules", ()) and r.interpretation for r in kb.rules)
            status = raw.get("status") or (
                "not_encoded" if raw.get("not_encoded") else "interpreted" if interpreted else "faithful"
            )
            if status == "departs" and not raw.get("departs"):
                problems.append(pos.problem(at, "status departs needs `departs:`: how and why", f"sentence {sid}"))
            if raw.get("departs") and status != "departs":
                problems.append(pos.problem((*at, "departs"), "`departs:` needs status: departs", f"sentence {sid}"))
            if (status == "not_encoded") != bool(raw.get("not_encoded")):
                problems.append(
                    pos.problem(at, "status not_encoded goes with a `not_encoded:` reason, and only", f"sentence {sid}")
                )
            sentences.append(
                Sentence(
                    status=status,
                    departs=raw.get("departs"),
                    id=sid,
                    text=" ".join(raw["text"].split()),
                    group=raw_group["id"],
                    rules=tuple(raw.get("rules", ())),
                    not_encoded=raw.get("not_encoded"),
                    cites=tuple(raw.get("cites", ())),
                    heading=bool(raw.get("heading", False)),
                    line=pos.at(at)[0],
                )
            )
        section = raw_group.get("section")
        if section is not None and section not in kb.sections:
            problems.append(pos.problem(("groups", gi, "section"), f"unknown section '{section}'"))
        groups.append(Group(raw_group["id"], raw_group["title"], section, tuple(sentences)))
    if problems:
        raise KnowledgeBaseError(problems)
    return GuidelineText(display(path), data["source"], tuple(groups))
