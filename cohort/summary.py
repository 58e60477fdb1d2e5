"""Counts over a cohort, built row by row and merged chunk by chunk, so memory stays flat.

Each urgency level, each action with the windows it was given (and how often already done), each warning
and differential entry, how many patients each rule fired for and the rules that fired for no one (a pathway
the cohort never exercised), the unanswered alarm questions by frequency, the pathways (rules fired, in
order), and with --compare-kb how many decisions a rule change changes and how.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from lumbar_kb.engine.errors import safe_text
from lumbar_kb.engine.model import KnowledgeBase, hours_text

LISTED = 20  # patients listed by name in the text summary; the rest are in --out
GROUPS_KEPT = 40  # --by: distinct values counted apart; the rest together as OTHER (flat memory, a readable chart)
OTHER = "(other values)"
MISSING = "(missing)"
NOT_A_DATE = "(not a date)"
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
        self.bad_causes: Counter = Counter()  # bad rows by what is wrong (the problem without its particulars)

    def add_bad(self, problems: list) -> None:
        """One bad row: counted, by the cause of its first problem."""
        self.bad_rows += 1
        if problems:
            self.bad_causes[cause(problems[0].message)] += 1

    def add(self, row: dict) -> None:
        if self.by is not None:
            value = (row.get("kept") or {}).get(self.by)
            key = MISSING if value is None else value
            group = self.groups.get(key)
            if group is None:
                if len(self.groups) >= GROUPS_KEPT and key not in self.groups:
                    key = OTHER
                group = self.groups.get(key)
                if group is None:
                    group = self.groups[key] = Summary()
            group.add(row)
        if self.trend is not None:
            month = _month((row.get("kept") or {}).get(self.trend))
            counts = self.months.get(month)
            if counts is None:
                counts = self.months[month] = Counter()
            counts[row["urgency"]] += 1
            counts["patients"] += 1
            if row.get("completeness") == "incomplete":
                counts["incomplete"] += 1
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
            "bad_causes",
        ):
            getattr(self, name).update(getattr(other, name))
        for key, group in other.groups.items():
            if key not in self.groups and len(self.groups) >= GROUPS_KEPT:
                key = OTHER
            mine = self.groups.get(key)
            if mine is None:
                mine = self.groups[key] = Summary()
            mine.merge(group)
        for month, counts in other.months.items():
            self.months.setdefault(month, Counter()).update(counts)
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
        if self.bad_causes:
            out["bad_rows_by_cause"] = dict(sorted(self.bad_causes.items(), key=lambda kv: (-kv[1], kv[0])))
        if self.by is not None:
            out["by"] = {
                "column": self.by,
                "groups": {
                    key: group.to_dict(kb, compared)
                    for key, group in sorted(self.groups.items(), key=lambda kv: _group_key(kv[0], kv[1].patients))
                },
            }
        if self.trend is not None:
            out["trend"] = {
                "column": self.trend,
                "months": {
                    month: {
                        "patients": c["patients"],
                        "incomplete": c["incomplete"],
                        "urgency": {level: c.get(level, 0) for level in levels(kb)},
                    }
                    for month, c in sorted(self.months.items(), key=lambda kv: (kv[0] == NOT_A_DATE, kv[0]))
                },
            }
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
        if s["could_escalate"]:
            lines.append(
                "Unanswered questions that could escalate: "
                + ", ".join(f"{f} {k}" for f, k in s["could_escalate"].items())
            )
        if s.get("bad_rows_by_cause"):
            lines.append(
                "Bad rows by cause: " + "; ".join(f"{safe_text(c)} {k}" for c, k in s["bad_rows_by_cause"].items())
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


def cause(message: str) -> str:
    """What is wrong, without the particulars of one row (quoted values, numbers), so rows group by it."""
    text = re.sub(r"'[^']*'", "'…'", message)
    return re.sub(r"\b\d+\b", "N", text)[:120]


def _month(value: Any) -> str:
    """A kept date cell's month, YYYY-MM (ISO 8601 dates and date-times), else NOT_A_DATE."""
    if value is None:
        return MISSING
    match = re.match(r"(\d{4})-(\d{2})(?:-\d{2})?(?:[T ].*)?$", str(value).strip())
    if match and 1 <= int(match.group(2)) <= 12:
        return f"{match.group(1)}-{match.group(2)}"
    return NOT_A_DATE


def _group_key(key: str, patients: int) -> tuple:
    return (key in (OTHER, MISSING), -patients, key)


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
