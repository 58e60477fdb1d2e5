"""Counts over a cohort, built row by row and merged chunk by chunk, so memory stays flat.

Each urgency level, each action with the windows it was given (and how often already done), each warning
and differential entry, how many patients each rule fired for and the rules that fired for no one (a pathway
the cohort never exercised), the unanswered alarm questions by frequency, the pathways (rules fired, in
order), and with --compare-kb how many decisions a rule change changes and how.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from lumbar_kb.engine.errors import safe_text
from lumbar_kb.engine.model import KnowledgeBase, hours_text

LISTED = 20  # patients listed by name in the text summary; the rest are in --out
PATHWAYS_KEPT = 5_000  # distinct pathways counted exactly; beyond twice that the rarest are dropped (flat memory)


class Summary:
    def __init__(self, by: str | None = None, trend: str | None = None) -> None:
        self.by = by  # a kept column: every count again per value of it (`groups`)
        self.trend = trend  # a kept date column: urgency per month of it (`months`)
        self.groups: dict[str, Summary] = {}
        self.months: dict[str, Counter] = {}
        self.patients = 0
        self.bad_rows = 0
        self.urgency: Counter = Counter()
        self.completeness: Counter = Counter()
        self.actions: dict[str, Counter] = {}
        self.done: Counter = Counter()
        self.warnings: Counter = Counter()
        self.differential: Counter = Counter()
        self.rules: Counter = Counter()
        self.pathways: Counter = Counter()
        self.unanswered_alarm: Counter = Counter()
        self.could_escalate: Counter = Counter()
        self.changed = 0
        self.changes: Counter = Counter()
        self.changed_patients: list = []  # the first LISTED changed patients: (who, [changes])
        self.listed: list = []  # the first LISTED patients: (who, urgency, [(code, window words)])

    def add(self, row: dict) -> None:
        self.patients += 1
        self.urgency[row["urgency"]] += 1
        if row.get("completeness") is not None:
            self.completeness[row["completeness"]] += 1
        for a in row["actions"]:
            code = a["code"]
            windows = self.actions.get(code)
            if windows is None:
                windows = self.actions[code] = Counter()
            windows[_window_of(a)] += 1
            if a["done"]:
                self.done[code] += 1
        fired = row["fired"]
        self.rules.update(fired)
        self.pathways[tuple(fired)] += 1
        for name in ("warnings", "differential", "unanswered_alarm", "could_escalate"):
            if row[name]:  # most rows have none of some (Counter.update is a Python call)
                getattr(self, name).update(row[name])
        if row.get("changes"):
            self.changed += 1
            self.changes.update(row["changes"])
            if len(self.changed_patients) < LISTED:
                self.changed_patients.append((who(row), row["changes"]))
        if len(self.listed) < LISTED:
            self.listed.append((who(row), row["urgency"], [(a["code"], _words(a)) for a in row["actions"]]))
        if len(self.pathways) > 2 * PATHWAYS_KEPT:
            self.pathways = Counter(dict(self.pathways.most_common(PATHWAYS_KEPT)))

    def merge(self, other: Summary) -> None:
        """Add another chunk's counts (chunks merged in input order keep the listed patients in order)."""
        self.patients += other.patients
        self.bad_rows += other.bad_rows
        for name in (
            "urgency",
            "completeness",
            "done",
            "warnings",
            "differential",
            "rules",
            "pathways",
            "unanswered_alarm",
            "could_escalate",
            "changes",
        ):
            getattr(self, name).update(getattr(other, name))
        for code, counts in other.actions.items():
            self.actions.setdefault(code, Counter()).update(counts)
        self.changed += other.changed
        self.changed_patients.extend(other.changed_patients[: LISTED - len(self.changed_patients)])
        self.listed.extend(other.listed[: LISTED - len(self.listed)])
        if len(self.pathways) > 2 * PATHWAYS_KEPT:
            self.pathways = Counter(dict(self.pathways.most_common(PATHWAYS_KEPT)))

    # ---- views -------------------------------------------------------------------------------------------
    def to_dict(self, kb: KnowledgeBase, compared: bool = False) -> dict:
        out: dict[str, Any] = {
            "patients": self.patients,
            "bad_rows": self.bad_rows,
            "urgency": {level: self.urgency.get(level, 0) for level in levels(kb)},
            "actions": {
                code: {
                    "patients": sum(c.values()),
                    "done": self.done.get(code, 0),
                    "within_hours": [
                        {"within_hours_min": low, "within_hours": h, "window": w, "patients": n}
                        if low is not None
                        else {"within_hours": h, "window": w, "patients": n}
                        for (low, h, w), n in sorted(c.items(), key=_window_key)
                    ],
                }
                for code, c in sorted(self.actions.items(), key=lambda kv: kb.catalog["action"][kv[0]].order)
            },
            "warnings": _in_catalog(kb, "warning", self.warnings),
            "differential": _in_catalog(kb, "differential", self.differential),
            "rules": {rule.id: self.rules.get(rule.id, 0) for rule in kb.rules},
            "never_fired": [rule.id for rule in kb.rules if not self.rules.get(rule.id)],
            "unanswered_alarm": dict(sorted(self.unanswered_alarm.items(), key=lambda kv: (-kv[1], kv[0]))),
            "could_escalate": dict(sorted(self.could_escalate.items(), key=lambda kv: (-kv[1], kv[0]))),
            "pathways": [
                {"fired": list(p), "patients": n} for p, n in sorted(self.pathways.items(), key=_pathway_key)[:10]
            ],
        }
        if self.completeness:
            out["completeness"] = dict(sorted(self.completeness.items(), key=lambda kv: str(kv[0])))
        if compared:
            out["changed"] = {
                "patients": self.changed,
                "changes": dict(sorted(self.changes.items(), key=lambda kv: (-kv[1], kv[0]))),
            }
        return out

    def to_text(self, kb: KnowledgeBase, compared: bool = False, compare_kb: KnowledgeBase | None = None) -> str:
        s = self.to_dict(kb, compared)
        n = s["patients"]
        pct = (lambda k: f"{k} ({100 * k / n:.0f}%)") if n else str
        lines = [f"Cohort of {n} patient(s); knowledge base {kb.name} {kb.version} ({kb.sha256[:12]})"]
        if self.bad_rows:
            lines.append(f"Skipped {self.bad_rows} bad row(s), reported above; they are not counted as patients.")
        lines.append("")
        lines.append(
            "Urgency: " + ", ".join(f"{kb.catalog['urgency'][lvl].label} {pct(k)}" for lvl, k in s["urgency"].items())
        )
        if "completeness" in s:
            lines.append("Completeness: " + ", ".join(f"{c} {pct(k)}" for c, k in s["completeness"].items()))
        lines.append("")
        lines.append("Actions (patients; windows given):")
        if not s["actions"]:
            lines.append("  none")
        for code, a in s["actions"].items():
            windows = ", ".join(f"{window_words(w)} x{w['patients']}" for w in a["within_hours"])
            done = f"; already done for {a['done']}" if a["done"] else ""
            lines.append(f"  {kb.catalog['action'][code].label}: {pct(a['patients'])}; {windows}{done}")
        for kind, title in (("warnings", "Warnings"), ("differential", "Differential")):
            if s[kind]:
                lines.append(f"{title}: " + ", ".join(f"{code} {k}" for code, k in s[kind].items()))
        if s["unanswered_alarm"]:
            lines.append(
                "Unanswered alarm questions: " + ", ".join(f"{f} {k}" for f, k in s["unanswered_alarm"].items())
            )
        lines.append("")
        width = max(len(r) for r in s["rules"]) if s["rules"] else 0
        lines.append("Rules fired (patients):")
        for rule, k in s["rules"].items():
            if k:
                lines.append(f"  {rule:<{width}}  {k}")
        if s["never_fired"]:
            lines.append("Rules this cohort never fired: " + ", ".join(s["never_fired"]))
        if compared and compare_kb is not None:
            lines.append("")
            lines.append(
                f"Compared with {compare_kb.name} {compare_kb.version} ({compare_kb.sha256[:12]}): "
                f"{pct(self.changed)} decision(s) change"
            )
            for change, k in s["changed"]["changes"].items():
                lines.append(f"  {change}: {k}")
            if self.changed_patients:
                lines.append(f"First {len(self.changed_patients)} changed patient(s):")
                for name, changes in self.changed_patients:
                    lines.append(f"  {name}: {'; '.join(changes)}")
        lines.append("")
        if n <= LISTED:
            lines.append("Patients:")
            for name, urgency, actions in self.listed:
                shown = ", ".join(f"{code} ({words})" for code, words in actions) or "-"
                lines.append(f"  {name}: {kb.catalog['urgency'][urgency].label}; {shown}")
        else:
            lines.append(f"{n} patients: one row each with --out FILE (.jsonl, .csv, .parquet).")
        return "\n".join(lines) + "\n"


def who(row: dict) -> str:
    """Whose row it is, fit for a terminal (a file name or id may hold control or bidirectional characters)."""
    place = row["source"] if row["row"] is None else f"{row['source']}:{row['row']}"
    return safe_text(f"{place} ({row['patient_id']})" if row.get("patient_id") else place)


def levels(kb: KnowledgeBase) -> list[str]:
    return [e.code for e in sorted(kb.catalog["urgency"].values(), key=lambda e: -e.rank)]


def _in_catalog(kb: KnowledgeBase, kind: str, counts: Counter) -> dict:
    return {code: counts[code] for code in kb.catalog[kind] if counts.get(code)}


def _window_of(action: dict) -> tuple:
    # a window without a figure is told apart by its words ("urgently")
    words = action["window"] if action["within_hours"] is None else None
    return (action.get("within_hours_min"), action["within_hours"], words)


def _words(action: dict) -> str:
    return action["window"] or hours_text(action["within_hours"])


def window_words(w: dict) -> str:
    if w["window"]:
        return str(w["window"])
    if w.get("within_hours_min") is not None:
        return f"within {w['within_hours_min']:g}-{w['within_hours']:g} hours"
    return hours_text(w["within_hours"])


def _window_key(item) -> tuple:
    (low, hours, words), _ = item
    return (hours is None, hours or 0, low or 0, words or "")


def _pathway_key(item) -> tuple:
    pathway, n = item
    return (-n, pathway)
