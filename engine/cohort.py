"""Many patients at once, for analysts: one row per patient and a summary over the cohort.

The summary counts, over the cohort, each urgency level, each action with the windows it was given, each
warning and differential entry, and how many patients each rule fired for, listing the rules that fired for
no one (a pathway the cohort never exercised).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .model import KnowledgeBase, hours_text

PATIENT_SUFFIXES = (".yaml", ".yml", ".json")


def patient_files(paths: list[Path]) -> list[Path]:
    """The files named, and the patient files (*.yaml, *.yml, *.json) inside directories named, sorted."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in PATIENT_SUFFIXES and p.is_file()))
        else:
            out.append(path)
    return out


@dataclass
class Cohort:
    kb: KnowledgeBase
    rows: list  # list[tuple[Path, Result]]

    def summary(self) -> dict:
        urgency = Counter(r.urgency for _, r in self.rows)
        actions: dict[str, Counter] = {}
        for _, r in self.rows:
            for a in r.actions:  # a window without a figure is told apart by its words ("urgently")
                words = a.window if a.within_hours is None else None
                actions.setdefault(a.code, Counter())[(a.within_hours, words)] += 1
        fired = Counter(rule for _, r in self.rows for rule in r.fired_ids())
        return {
            "patients": len(self.rows),
            "urgency": {level: urgency.get(level, 0) for level in _levels(self.kb)},
            "actions": {
                code: {
                    "patients": sum(c.values()),
                    "within_hours": [
                        {"within_hours": h, "window": w, "patients": n}
                        for (h, w), n in sorted(c.items(), key=_window_key)
                    ],
                }
                for code, c in sorted(actions.items(), key=lambda kv: self.kb.catalog["action"][kv[0]].order)
            },
            "warnings": _count(self.kb, "warning", (w.code for _, r in self.rows for w in r.warnings)),
            "differential": _count(self.kb, "differential", (d.code for _, r in self.rows for d in r.differential)),
            "rules": {rule.id: fired.get(rule.id, 0) for rule in self.kb.rules},
            "never_fired": [rule.id for rule in self.kb.rules if not fired.get(rule.id)],
        }

    def to_dict(self) -> dict:
        return {
            "knowledge_base": self.kb.identity(),
            "summary": self.summary(),
            "patients": [
                {
                    "patient_file": str(path),
                    "urgency": r.urgency,
                    "actions": {a.code: a.within_hours for a in r.actions},
                    "warnings": [w.code for w in r.warnings],
                    "differential": [d.code for d in r.differential],
                    "fired": r.fired_ids(),
                    "could_escalate": [e.fact for e in r.could_escalate],
                }
                for path, r in self.rows
            ],
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["patient_file", "urgency", "actions", "warnings", "differential", "fired", "could_escalate"])
        for path, r in self.rows:
            writer.writerow(
                [
                    str(path),
                    r.urgency,
                    ";".join(f"{a.code}@{'' if a.within_hours is None else f'{a.within_hours:g}'}" for a in r.actions),
                    ";".join(w.code for w in r.warnings),
                    ";".join(d.code for d in r.differential),
                    ";".join(r.fired_ids()),
                    ";".join(e.fact for e in r.could_escalate),
                ]
            )
        return out.getvalue()

    def to_text(self) -> str:
        s = self.summary()
        kb = self.kb
        n = s["patients"]
        pct = (lambda k: f"{k} ({100 * k / n:.0f}%)") if n else str
        lines = [f"Cohort of {n} patient(s); knowledge base {kb.name} {kb.version} ({kb.sha256[:12]})", ""]
        lines.append(
            "Urgency: " + ", ".join(f"{kb.catalog['urgency'][lvl].label} {pct(k)}" for lvl, k in s["urgency"].items())
        )
        lines.append("")
        lines.append("Actions (patients; windows given):")
        if not s["actions"]:
            lines.append("  none")
        for code, a in s["actions"].items():
            windows = ", ".join(
                f"{w['window'] or hours_text(w['within_hours'])} x{w['patients']}" for w in a["within_hours"]
            )
            lines.append(f"  {kb.catalog['action'][code].label}: {pct(a['patients'])}; {windows}")
        for kind, title in (("warnings", "Warnings"), ("differential", "Differential")):
            if s[kind]:
                lines.append(f"{title}: " + ", ".join(f"{code} {k}" for code, k in s[kind].items()))
        lines.append("")
        width = max(len(r) for r in s["rules"]) if s["rules"] else 0
        lines.append("Rules fired (patients):")
        for rule, k in s["rules"].items():
            if k:
                lines.append(f"  {rule:<{width}}  {k}")
        if s["never_fired"]:
            lines.append("Rules this cohort never fired: " + ", ".join(s["never_fired"]))
        lines.append("")
        lines.append("Patients:")
        for path, r in self.rows:
            actions = ", ".join(f"{a.code} ({a.window or hours_text(a.within_hours)})" for a in r.actions) or "-"
            lines.append(f"  {path}: {kb.catalog['urgency'][r.urgency].label}; {actions}")
        return "\n".join(lines) + "\n"


def _levels(kb: KnowledgeBase) -> list[str]:
    return [e.code for e in sorted(kb.catalog["urgency"].values(), key=lambda e: -e.rank)]


def _count(kb: KnowledgeBase, kind: str, codes) -> dict:
    counts = Counter(codes)
    return {code: counts[code] for code in kb.catalog[kind] if counts.get(code)}


def _window_key(item) -> tuple:
    (hours, words), _ = item
    return (hours is None, hours or 0, words or "")
