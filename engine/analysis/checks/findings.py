"""The check report: findings (each with its patient), checks, the report, and its text."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

from lumbar_kb.engine.analysis.structure import logic_value
from lumbar_kb.engine.model import KnowledgeBase


@dataclass
class Finding:
    check: str
    severity: str  # "problem" | "note"
    subject: str  # "rule red_flag.leg_weakness", "fact fever", "action:mri_lumbar"
    message: str
    file: str | None = None
    line: int | None = None
    patient: dict | None = None  # the counterexample (or witness)
    then: dict | None = None  # a second patient: the first after the change (monotonicity, escalation)
    details: list = field(default_factory=list)  # further lines: reasons, what the engine showed
    labels: tuple = ("patient", "then")  # what `patient` and `then` are
    verify: Callable | None = field(default=None, repr=False, compare=False)  # runner -> None | why not
    reproduced: bool | None = None

    def where(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "patient": self.patient,
            "then": self.then,
            "patient_label": self.labels[0],
            "then_label": self.labels[1],
            "details": list(self.details),
            "reproduced": self.reproduced,
        }


@dataclass
class Check:
    id: str
    group: str
    claim: str  # what holds when there is no finding
    findings: list = field(default_factory=list)
    skipped: str | None = None

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "problem"]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "note"]

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "failed" if self.problems else "notes" if self.notes else "ok"


@dataclass
class CheckReport:
    kb: KnowledgeBase
    checks: list
    input_states: int
    exact_count: bool
    solver: str
    elapsed: float = 0.0

    @property
    def problems(self) -> list[Finding]:
        return [f for c in self.checks for f in c.problems]

    @property
    def notes(self) -> list[Finding]:
        return [f for c in self.checks for f in c.notes]

    def to_dict(self) -> dict:
        return {
            "knowledge_base": self.kb.identity(),
            "input_states": self.input_states,
            "input_states_exact": self.exact_count,
            "solver": self.solver,
            "problems": len(self.problems),
            "notes": len(self.notes),
            "checks": [
                {
                    "id": c.id,
                    "group": c.group,
                    "claim": c.claim,
                    "status": c.status,
                    "skipped": c.skipped,
                    "findings": [f.to_dict() for f in c.findings],
                }
                for c in self.checks
            ],
        }


GROUPS = (("structure", "Structure"), ("reach", "Reachability"), ("safety", "Safety invariants (every input state)"))


# ---- text ----------------------------------------------------------------------------------------------------
def render(report: CheckReport) -> str:
    kb = report.kb
    out = [
        f"lumbar-kb check: {kb.name} {kb.version}: {len(kb.rules)} rules, {len(kb.input_facts)} input facts, "
        f"{len(kb.derived_facts)} derived facts",
        f"over every input state: {'' if report.exact_count else 'at most '}{report.input_states:,} patients "
        f"(each input fact unknown or one of its values), solved with {report.solver}",
    ]
    for group, title in GROUPS:
        out.append("")
        out.append(title)
        for check in (c for c in report.checks if c.group == group):
            status = {"skipped": "skip", "failed": "FAIL", "notes": "note", "ok": "ok"}[check.status]
            exceptions = f" (except {len(check.notes)}: see Notes)" if check.notes and not check.problems else ""
            out.append(f"  {status:<5} {check.claim}{exceptions}")
            if check.skipped:
                out.append(f"        ({check.skipped})")
            for finding in check.problems:
                out.extend(_finding_lines(finding, "        "))
    if report.notes:
        out.append("")
        out.append("Notes (not problems)")
        for finding in report.notes:
            out.extend(_finding_lines(finding, "  "))
    out.append("")
    problems, notes = len(report.problems), len(report.notes)
    note_text = f", {notes} note{'s' if notes != 1 else ''}" if notes else ""
    out.append(
        f"{problems} problem{'s' if problems != 1 else ''}{note_text}" if problems else f"ok: no problems{note_text}"
    )
    return "\n".join(out) + "\n"


def _finding_lines(finding: Finding, indent: str) -> list[str]:
    where = finding.where()
    lines = [f"{indent}{where + ': ' if where else ''}{finding.subject}"]  # one line: clickable, greppable
    lines += _wrap(finding.message, indent + "  ", indent + "    ")
    for detail in finding.details:
        lines += _wrap(detail, indent + "  ", indent + "    ")
    if finding.patient is not None:
        lines += _wrap(f"{finding.labels[0]}: {show_patient(finding.patient)}", indent + "  ", indent + "    ")
    if finding.then is not None:
        lines += _wrap(f"{finding.labels[1]}: {show_patient(finding.then)}", indent + "  ", indent + "    ")
    return lines


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text, 110, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False, break_long_words=False
    )


def show_patient(patient: dict | None) -> str:
    if patient is None:
        return "-"
    if not patient:
        return "{} (nothing answered)"
    return "{" + ", ".join(f"{k}: {logic_value(v)}" for k, v in patient.items()) + "}"
