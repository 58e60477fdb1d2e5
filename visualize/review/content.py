"""The data the review pack shows, built before any HTML (the templates only loop and escape).

Everything here is a function of the knowledge base, the engine's Results for the bundled patients and
scenarios, the approvals file and, when given, the behaviour diff against an older version. Plain dicts and
lists, in the knowledge base's own order, so the same input gives the same pages.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumbar_kb.engine.analysis import approvals
from lumbar_kb.engine.analysis.algorithm import build_algorithm, prove, size
from lumbar_kb.engine.analysis.escalation import decide
from lumbar_kb.engine.analysis.gate import Failure, run_gate, step
from lumbar_kb.engine.guideline_text import GuidelineText, load_text
from lumbar_kb.engine.logic import to_dnf
from lumbar_kb.engine.model import Derive, KnowledgeBase, Recommend, Rule, SetUrgency, condition_facts
from lumbar_kb.engine.patient import load_patient
from lumbar_kb.engine.result import Result
from lumbar_kb.engine.scenarios import load_scenarios
from lumbar_kb.engine.session import Engine
from lumbar_kb.visualize.text import describe_condition, hours_phrase, show_value, values_phrase


@dataclass
class Example:
    """A bundled patient or scenario, with what the engine made of it."""

    id: str
    kind: str  # "patient" | "scenario"
    name: str
    description: str
    file: str
    inputs: dict
    result: Result


@dataclass
class Pack:
    kb: KnowledgeBase
    text: GuidelineText | None
    statuses: dict  # rule id -> approvals.RuleStatus
    examples: list  # list[Example]
    diff: Any = None  # analysis.diff.Diff when --against was given
    algorithm: list = field(default_factory=list)  # list[analysis.algorithm.Decision]
    overrides: dict | None = None  # rule id -> clinicians' feedback on its CDS cards (service.store.override_rates)
    failures: list = field(default_factory=list)  # list[gate.Failure]: failing proofs, scenarios and steps
    decisions: dict = field(default_factory=dict)  # item -> approvals.DecisionStatus
    items: dict = field(default_factory=dict)  # item -> approvals.ItemStatus (every item, rules included)
    notes: list = field(default_factory=list)  # check's notes about rules: (rule id, check id, message)
    data: dict = field(default_factory=dict)  # what the templates read


def rule_anchor(rule_id: str) -> str:
    return "rule-" + rule_id.replace(".", "-")


def sentence_anchor(sentence_id: str) -> str:
    return "s-" + sentence_id.replace(".", "-")


def section_page(section_id: str) -> str:
    return f"section-{section_id}.html"


# ---- examples ---------------------------------------------------------------------------------------------------
def run_examples(kb: KnowledgeBase, failures: list[Failure] | None = None) -> list[Example]:
    """The bundled patients (patients/) and scenarios (scenarios/), evaluated by the real engine. A patient the
    knowledge base can no longer take is a failure to show (with `failures`), not a pack left unwritten."""
    failures = [] if failures is None else failures
    engine = Engine(kb)
    out = []
    patients_dir = Path(kb.root) / "patients"

    def patient(path: Path) -> Example:
        inputs = load_patient(path, kb)
        result = decide(kb, engine.run(inputs))
        return Example(f"patient-{path.stem}", "patient", path.stem, "", path.name, inputs, result)

    def scenario(sc) -> Example:
        result = decide(kb, engine.run(sc.patient))
        stem = Path(sc.file).stem
        return Example(f"scenario-{stem}", "scenario", sc.name, sc.description, Path(sc.file).name, sc.patient, result)

    for path in sorted(patients_dir.glob("*")) if patients_dir.is_dir() else []:
        if path.suffix in (".yaml", ".json"):
            ex = step(failures, f"the example patient {path.name}", functools.partial(patient, path))
            out += [ex] if ex is not None else []
    if (Path(kb.root) / "scenarios").is_dir():
        for sc in step(failures, "the scenario files", lambda: load_scenarios(kb), []):
            ex = step(failures, f"the scenario {Path(sc.file).name}", functools.partial(scenario, sc))
            out += [ex] if ex is not None else []
    return out


# ---- words ------------------------------------------------------------------------------------------------------
def conclusion_words(kb: KnowledgeBase, c) -> dict:
    if isinstance(c, SetUrgency):
        entry = kb.catalog["urgency"][c.level]
        return {"kind": "urgency", "code": c.level, "label": entry.label, "text": entry.text, "window": ""}
    if isinstance(c, Recommend):
        entry = kb.catalog[c.kind][c.code]
        window = c.window or hours_phrase(c.within_hours) if c.kind == "action" else ""
        if c.kind == "action" and not window:
            window = "no fixed window"
        hours = "" if c.within_hours is None else f"{c.within_hours:g} h"
        return {
            "kind": c.kind,
            "code": c.code,
            "label": entry.label,
            "text": entry.text,
            "window": window,
            "hours": hours,
        }
    assert isinstance(c, Derive)
    fact = kb.facts[c.fact]
    return {
        "kind": "derive",
        "code": c.fact,
        "label": f"{fact.meaning}: {show_value(fact, c.value)}",
        "text": f"sets {c.fact} = {show_value(fact, c.value)}",
        "window": "",
    }


def _top_level(kb: KnowledgeBase) -> str:
    return max(kb.catalog["urgency"].values(), key=lambda e: e.rank).code


# ---- the whole model ---------------------------------------------------------------------------------------------
def build_pack(
    kb: KnowledgeBase, diff: Any = None, examples: list[Example] | None = None, overrides: dict | None = None
) -> Pack:
    """`overrides`: the CDS service's feedback per rule (`lumbar-kb review --feedback FILE`), shown on the cards."""
    failures: list[Failure] = []
    text = load_text(kb)
    every = approvals.item_statuses(kb)
    statuses = {r.id: every[r.id] for r in kb.rules}
    decisions = approvals.decision_statuses(kb)
    examples = run_examples(kb, failures) if examples is None else examples
    algorithm = step(failures, "the clinical algorithm diagrams", lambda: build_algorithm(kb), [])
    notes: list = []
    run_gate(kb, failures, notes)
    pack = Pack(kb, text, statuses, examples, diff, algorithm, overrides, failures, decisions, every, notes)
    pack.data = _data(pack)
    return pack


def _data(pack: Pack) -> dict:
    kb, text = pack.kb, pack.text
    fired_by: dict[str, list[dict]] = {r.id: [] for r in kb.rules}
    for ex in pack.examples:
        for f in ex.result.fired:
            fired_by.setdefault(f.rule, []).append({"id": ex.id, "name": ex.name, "kind": ex.kind})
    sentences_of: dict[str, list[dict]] = {r.id: [] for r in kb.rules}
    if text is not None:
        for s in text.sentences:
            for rid in s.rules:
                sentences_of.setdefault(rid, []).append({"id": s.id, "anchor": sentence_anchor(s.id), "text": s.text})
    known = {r.id for r in kb.rules}
    rules = [_rule_card(kb, r, pack.statuses[r.id], sentences_of[r.id], fired_by[r.id]) for r in kb.rules]
    by_rule = {r.id: r for r in kb.rules}
    for card in rules:
        card["window_flags"] = _window_flags(by_rule[card["id"]], sentences_of[card["id"]], pack.notes)
    for card in rules:
        card["failures"] = [
            {"kind": f.kind, "id": f.id, "title": f.title, "message": f.message}
            for f in pack.failures
            if card["id"] in f.rules
        ]
    if pack.overrides is not None:
        for card in rules:
            card["feedback"] = _feedback(pack.overrides.get(card["id"]))
    by_id = {r["id"]: r for r in rules}
    sections = []
    for s in kb.sections.values():
        members = [by_id[r.id] for r in kb.rules if r.section == s.id]
        sections.append(
            {
                "id": s.id,
                "title": s.title,
                "page": section_page(s.id),
                "rules": members,
                "table": decision_table(kb, [r for r in kb.rules if r.section == s.id]),
            }
        )
    guideline = None
    if text is not None:
        from lumbar_kb.engine.guideline_text import STATUS_WORDS, STATUSES

        encoded, total = text.coverage()
        quoted_by = _quoted_by(kb, text)
        interpreted = {r.id for r in kb.rules if r.interpretation}
        guideline = {
            "source": text.source,
            "file": text.file,
            "encoded": encoded,
            "total": total,
            "percent": f"{100 * encoded / total:.0f}" if total else "0",
            "not_encoded": [s for s in text.sentences if not s.rules],
            "statuses": [
                {"status": st, "words": STATUS_WORDS[st], "count": sum(1 for x in text.sentences if x.status == st)}
                for st in STATUSES
            ],
            "groups": [
                {
                    "id": g.id,
                    "title": g.title,
                    "section": g.section,
                    "sentences": [
                        {
                            "id": s.id,
                            "anchor": sentence_anchor(s.id),
                            "text": s.text,
                            "heading": s.heading,
                            "cites": list(s.cites),
                            "not_encoded": s.not_encoded,
                            "status": s.status,
                            "status_words": STATUS_WORDS[s.status],
                            "departs": s.departs,
                            "inconsistencies": quoted_by.get(s.id, []),
                            "interpretations": [
                                {"id": rid, "anchor": "interpretation-" + rule_anchor(rid)}
                                for rid in s.rules
                                if rid in interpreted
                            ],
                            "rules": [
                                {
                                    "id": rid,
                                    "known": rid in known,
                                    "anchor": rule_anchor(rid),
                                    "title": by_id[rid]["title"] if rid in known else "no such rule",
                                    "status": by_id[rid]["status"] if rid in known else "",
                                    "status_words": by_id[rid]["status_words"] if rid in known else "",
                                }
                                for rid in s.rules
                            ],
                        }
                        for s in g.sentences
                    ],
                }
                for g in text.groups
            ],
        }
    counts = dict.fromkeys(approvals.STATUSES, 0)
    for st in pack.statuses.values():
        counts[st.status] += 1
    return {
        "kb": {
            "name": kb.name,
            "title": kb.title,
            "version": kb.version,
            "last_updated": kb.last_updated,
            "review_status": kb.review_status.replace("_", " "),
            "publisher": kb.publisher,
            "disclaimer": kb.disclaimer,
            "question": kb.question,
            "sha256": kb.sha256,
        },
        "references": [{"number": n, "cite": r.cite()} for n, r in sorted(kb.references.items())],
        "rules": rules,
        "sections": sections,
        "guideline": guideline,
        "status_counts": [
            {"status": st, "words": approvals.STATUS_WORDS[st], "count": counts[st]} for st in approvals.STATUSES
        ],
        "examples": [_example(kb, ex) for ex in pack.examples],
        "issues": _issues(kb, pack.text, pack.failures),
        "diff": pack.diff.to_dict() if pack.diff is not None else None,
        "algorithm": [_decision(kb, d, pack.failures) for d in pack.algorithm],
        "failures": [_failure(kb, f) for f in pack.failures],
        "decisions": [
            {**d.to_dict(), "open": d.open, "anchor": _decision_anchor(d.item)} for d in pack.decisions.values()
        ],
        "open_decisions": sum(1 for d in pack.decisions.values() if d.open),
        "item_counts": _item_counts(pack.items),
        "unapproved_items": [
            {"item": st.item, "kind": st.kind, "title": st.title, "status": st.status, "words": st.words}
            for st in pack.items.values()
            if st.status != "approved" and st.kind != "rule"
        ],
    }


def _window_flags(rule: Rule, sentences: list, notes: list) -> list[str]:
    """What a rule card must say about its windows: a title, interpretation or quoted guideline sentence whose
    window the THEN no longer gives, and a window that never takes effect (check's note names the rule that
    gives it earlier)."""
    from lumbar_kb.engine.analysis.checks.windows import window_mismatches

    out = [f"the title {m}" for m in window_mismatches(rule, rule.title, True)]
    out += [f"the interpretation {m}" for m in window_mismatches(rule, rule.interpretation, False)]
    for s in sentences:
        out += [f"the guideline sentence {s['id']} {m}" for m in window_mismatches(rule, s["text"], False)]
    out += [
        f"never takes effect: {message}"
        for rid, check, message in notes
        if rid == rule.id and check == "windows_never_apply"
    ]
    return out


def _plain_words(words: str) -> str:
    """A sentence compared by its words: whitespace and the guideline's trailing reference numbers do not count."""
    return re.sub(r"(\s+[0-9](,\s*[0-9])*)+\s*([.:]?)$", r"\3", " ".join(words.split())).rstrip(".:")


def _quoted_by(kb: KnowledgeBase, text: GuidelineText) -> dict[str, list[dict]]:
    """sentence id -> the inconsistencies that quote it (linked both ways with the issues page)."""
    by_text = {_plain_words(s.text): s.id for s in text.sentences}
    out: dict[str, list[dict]] = {}
    for i in kb.inconsistencies:
        for q in i.sentences:
            sid = by_text.get(_plain_words(q))
            if sid is not None:
                out.setdefault(sid, []).append({"id": i.id, "title": i.title, "anchor": f"inconsistency-{i.id}"})
    return out


def _decision_anchor(item: str) -> str:
    return "decision-" + re.sub(r"[^A-Za-z0-9_-]", "-", item)


def _item_counts(every: dict) -> list[dict]:
    counts: dict[str, dict[str, int]] = {}
    for st in every.values():
        counts.setdefault(st.kind, dict.fromkeys(approvals.STATUSES, 0))[st.status] += 1
    return [
        {"kind": kind, "total": sum(c.values()), **{s: c[s] for s in approvals.STATUSES}} for kind, c in counts.items()
    ]


def _patient_words(kb: KnowledgeBase, patient: dict | None) -> str:
    if not patient:
        return ""
    return "; ".join(
        f"{kb.facts[f].meaning}: {show_value(kb.facts[f], v)}" if f in kb.facts else f"{f}: {v}"
        for f, v in patient.items()
    )


def _failure(kb: KnowledgeBase, f: Failure) -> dict:
    return {
        **f.to_dict(),
        "patient_words": _patient_words(kb, f.patient),
        "then_words": _patient_words(kb, f.then),
        "rules": [{"id": r, "anchor": rule_anchor(r)} for r in f.rules],
    }


def _failing_control(control, failures: list[Failure]) -> str:
    """Why a hazard's control is not working now ("" when nothing says so): its proof fails, or its rule is
    involved in a failing proof or scenario."""
    if control.kind == "check":
        failing = [f for f in failures if f.kind == "proof" and f.id == control.ref]
        return f"FAILING: {failing[0].message}" if failing else ""
    if control.kind == "rule":
        failing = [f for f in failures if control.ref in f.rules]
        return f"INVOLVED IN A FAILURE: {failing[0].title}" if failing else ""
    return ""


def _decision(kb: KnowledgeBase, decision, failures: list[Failure]) -> dict:
    questions, leaves = size(decision)
    return {
        "id": decision.id,
        "anchor": decision.id.replace(":", "-"),
        "title": decision.title,
        "questions": [
            {"fact": f, "question": kb.facts[f].question or kb.facts[f].meaning, "alarm": kb.facts[f].alarm}
            for f in decision.facts
        ],
        "paths": leaves,
        "asked": questions,
        # failures; empty when the diagram is proved equivalent
        "proof": step(failures, f"the proof of the diagram {decision.id}", lambda: prove(kb, decision), []),
    }


def _feedback(rates: dict | None) -> dict:
    """What clinicians did with the CDS cards this rule was behind: a view of service.store.override_rates."""
    if not rates:
        return {"cards": 0, "accepted": 0, "overridden": 0, "rate": None, "reasons": []}
    rate = rates["override_rate"]
    reasons = sorted(rates["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "cards": rates["cards"],
        "accepted": rates["accepted"],
        "overridden": rates["overridden"],
        "rate": None if rate is None else f"{rate:.0%}",
        "reasons": [{"reason": r, "count": n} for r, n in reasons],
    }


def _rule_card(kb: KnowledgeBase, rule: Rule, status, sentences: list, fired_by: list) -> dict:
    levels = [c.level for c in rule.then if isinstance(c, SetUrgency)]
    return {
        "id": rule.id,
        "anchor": rule_anchor(rule.id),
        "title": rule.title,
        "section": rule.section,
        "section_title": kb.sections[rule.section].title,
        "section_page": section_page(rule.section),
        "file": f"rules/{Path(rule.file).name}" if rule.file else "",
        "line": rule.line,
        "condition": describe_condition(rule.when, kb.facts),
        "questions": [
            {"fact": f, "question": kb.facts[f].question or kb.facts[f].meaning, "derived": kb.facts[f].derived}
            for f in condition_facts(rule.when)
        ],
        "then": [conclusion_words(kb, c) for c in rule.then],
        "emergency": _top_level(kb) in levels,
        "cites": [{"number": n, "cite": kb.references[n].cite()} for n in sorted(rule.cites)],
        "rationale": rule.rationale,
        "interpretation": rule.interpretation,
        "sentences": sentences,
        "covered_by": fired_by,
        "window_flags": [],
        "status": status.status,
        "status_words": status.words,
        "content_hash": status.content_hash,
        "approval": {**status.approval.to_dict(), "note": status.approval.note} if status.approval else None,
        "records": [{**r.to_dict(), "note": r.note} for r in status.records],
    }


def decision_table(kb: KnowledgeBase, rules: list[Rule]) -> dict:
    """A DMN-style table: one column per fact the rules read, one row per rule (a rule whose condition is an
    `any` gets one row per alternative, marked a, b, ...), then the conclusions and citations. Hit policy
    collect: every matching row applies; the highest urgency and the earliest window win."""
    facts: list[str] = []
    for r in rules:
        for f in condition_facts(r.when):
            if f not in facts:
                facts.append(f)
    facts.sort(key=lambda f: kb.facts[f].order)
    domains = {name: tuple(f.values) for name, f in kb.facts.items()}
    rows = []
    for r in rules:
        alternatives = to_dnf(r.when, domains)
        for i, conj in enumerate(alternatives):
            cells = [values_phrase(kb.facts[f], conj[f]) if f in conj else "–" for f in facts]
            rows.append(
                {
                    "rule": r.id,
                    "anchor": rule_anchor(r.id),
                    "alt": chr(ord("a") + i) if len(alternatives) > 1 else "",
                    "first": i == 0,
                    "span": len(alternatives),
                    "cells": cells,
                    "then": [conclusion_words(kb, c) for c in r.then],
                    "cites": sorted(r.cites),
                }
            )
    return {
        "columns": [{"fact": f, "question": kb.facts[f].question or kb.facts[f].meaning} for f in facts],
        "rows": rows,
    }


def _example(kb: KnowledgeBase, ex: Example) -> dict:
    r = ex.result
    return {
        "id": ex.id,
        "kind": ex.kind,
        "name": ex.name,
        "description": ex.description,
        "file": ex.file,
        "inputs": [
            {"fact": f, "value": show_value(kb.facts[f], v), "question": kb.facts[f].question or kb.facts[f].meaning}
            for f, v in ex.inputs.items()
        ],
        "urgency": r.urgency,
        "urgency_label": kb.catalog["urgency"][r.urgency].label,
        "emergency": r.urgency == _top_level(kb),
        "actions": [
            {"label": a.label, "window": a.window or hours_phrase(a.within_hours) or "no fixed window", "done": a.done}
            for a in r.actions
        ],
        "warnings": [w.label for w in r.warnings],
        "differential": [d.label for d in r.differential],
        "fired": [{"order": f.order, "rule": f.rule, "anchor": rule_anchor(f.rule), "title": f.title} for f in r.fired],
        "unanswered_alarm": [q.question for q in r.unanswered if q.alarm],
        "diagram": f"patient-{ex.id}.svg",
    }


def _issues(kb: KnowledgeBase, text: GuidelineText | None, failures: list[Failure] | None = None) -> dict:
    """The guideline's inconsistencies (each quoted sentence linked to its place in the guideline text when the
    text has it) and the hazard log with its DCB0129 risk ratings, from the model."""

    def plain(words: str) -> str:  # whitespace and the guideline's trailing reference numbers do not count
        return re.sub(r"(\s+[0-9](,\s*[0-9])*)+\s*([.:]?)$", r"\3", " ".join(words.split())).rstrip(".:")

    by_text = {plain(s.text): s.id for s in text.sentences} if text is not None else {}
    inconsistencies = [
        {
            "id": i.id,
            "title": i.title,
            "quotes": [
                {"text": q, "anchor": sentence_anchor(by_text[plain(q)]) if plain(q) in by_text else None}
                for q in i.sentences
            ],
            "choice": i.choice,
            "why": i.why,
            "decide": i.board,
            "rules": list(i.rules),
        }
        for i in kb.inconsistencies
    ]
    hazards = [
        {
            "id": h.id,
            "title": h.title,
            "cause": h.cause,
            "effect": h.effect,
            "before": f"{h.severity.replace('_', ' ')} / {h.likelihood.replace('_', ' ')}: risk {h.initial_risk}",
            "residual": f"{h.residual_severity.replace('_', ' ')} / {h.residual_likelihood.replace('_', ' ')}: "
            f"risk {h.residual_risk}",
            "controls": [
                {"kind": c.kind, "ref": c.ref, "what": c.what, "failing": _failing_control(c, failures or [])}
                for c in h.controls
            ],
        }
        for h in kb.hazards
    ]
    return {"inconsistencies": inconsistencies, "hazards": hazards}
