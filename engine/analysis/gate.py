"""What the board must see before anything else: every failing proof (`check`), every failing scenario
(`test`), and anything that could not even be worked out for this knowledge base, each with its smallest
patient and the rules involved. The review pack shows them on every page; `check --release` refuses while
there is one. Nothing here raises for a knowledge base that loads, however wrong its rules: a step that
fails is itself a failure to show, never a crash that hides the others.

The rules involved in a failure: the rule a finding names, else the rules that fire for its patient and
conclude what the finding is about (the action, urgency, warning or derived fact whose claim failed); for a
failing scenario, the fired rules that conclude what came out differently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lumbar_kb.engine.model import Derive, KnowledgeBase, Recommend, SetUrgency


@dataclass
class Failure:
    kind: str  # "proof" (a check), "scenario" (a test), "step" (something that could not be worked out)
    id: str  # the check id, the scenario file, or the step
    title: str  # the claim that failed, the scenario's name, or what could not be done
    message: str
    patient: dict | None = None
    then: dict | None = None
    details: list = field(default_factory=list)
    rules: tuple[str, ...] = ()
    file: str | None = None
    line: int | None = None

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "id": self.id,
            "title": self.title,
            "message": self.message,
            "patient": self.patient,
            "then": self.then,
            "details": list(self.details),
            "rules": list(self.rules),
            "file": self.file,
            "line": self.line,
        }


def step(failures: list[Failure], what: str, fn: Callable[[], Any], default: Any = None) -> Any:
    """Run one step of building a view; a step that raises becomes a failure to show, and `default` stands in."""
    try:
        return fn()
    except Exception as exc:  # any knowledge base that loads gets a pack: the failure is shown, not raised
        failures.append(Failure("step", what, f"{what} could not be worked out", f"{type(exc).__name__}: {exc}"))
        return default


def _concludes(kb: KnowledgeBase, rule_id: str, codes: set[str]) -> bool:
    rule = kb.rule(rule_id)
    for c in rule.then:
        if isinstance(c, SetUrgency) and ("urgency" in codes or f"urgency:{c.level}" in codes):
            return True
        if isinstance(c, Recommend) and (c.code in codes or f"{c.kind}:{c.code}" in codes):
            return True
        if isinstance(c, Derive) and (c.fact in codes or f"fact:{c.fact}" in codes):
            return True
    return False


def _fired(kb: KnowledgeBase, engine: Any, patient: dict | None) -> list[str]:
    if not patient:
        return []
    try:
        return [f.rule for f in engine.run(patient).firings]
    except Exception:  # a patient the engine refuses: no rules to name
        return []


def _subject_codes(subject: str) -> set[str]:
    kind, _, code = subject.partition(" ")
    if subject.startswith(("action:", "urgency:", "warning:", "differential:")):
        return {subject, subject.split(":", 1)[1]}
    if kind == "fact":
        return {code, f"fact:{code}"}
    if "urgency" in subject:
        return {"urgency"}
    return set()


def proof_failures(kb: KnowledgeBase, report: Any, engine: Any) -> list[Failure]:
    out = []
    known = {r.id for r in kb.rules}
    for check in report.checks:
        for f in check.findings:
            if f.severity != "problem":
                continue
            if f.subject.startswith("rule ") and f.subject[5:] in known:
                rules = [f.subject[5:]]
            else:
                codes = _subject_codes(f.subject) or {"urgency"}
                rules = [r for r in _fired(kb, engine, f.patient) if r in known and _concludes(kb, r, codes)]
            out.append(
                Failure(
                    "proof",
                    check.id,
                    check.claim,
                    f"{f.subject}: {f.message}",
                    f.patient,
                    f.then,
                    list(f.details),
                    tuple(dict.fromkeys(rules)),
                    f.file,
                    f.line,
                )
            )
    return out


def scenario_failures(kb: KnowledgeBase, report: Any) -> list[Failure]:
    out = []
    known = {r.id for r in kb.rules}
    for o in report.failed:
        codes: set[str] = set()
        for m in o.mismatches:
            if m.key == "urgency":
                codes.add("urgency")
            exp, act = m.expected, m.actual
            if isinstance(exp, dict) and isinstance(act, dict):  # only what came out differently
                codes |= {str(k) for k in set(exp) | set(act) if exp.get(k) != act.get(k)}
            elif isinstance(exp, list) and isinstance(act, list):
                codes |= {str(k) for k in set(map(str, exp)) ^ set(map(str, act))}
        rules = [r for r in o.fired if r in known and _concludes(kb, r, codes)]
        message = "; ".join(str(m) for m in o.mismatches) if o.mismatches else (o.error or "failed")
        out.append(
            Failure(
                "scenario",
                o.scenario.file,
                o.scenario.name,
                message,
                dict(o.scenario.patient),
                None,
                [],
                tuple(dict.fromkeys(rules)),
                o.scenario.file,
                o.scenario.line,
            )
        )
    return out


def run_gate(kb: KnowledgeBase, failures: list[Failure] | None = None, notes: list | None = None) -> list[Failure]:
    """`check` and `test` on the knowledge base: every failure, in that order (steps that broke included).
    `notes`, when given, receives check's notes about rules as (rule id, check id, message)."""
    from lumbar_kb.engine.analysis.checks import run_checks
    from lumbar_kb.engine.analysis.coverage import run_scenarios
    from lumbar_kb.engine.session import Engine

    failures = [] if failures is None else failures
    engine = step(failures, "the engine for this knowledge base", lambda: Engine(kb))
    report = step(failures, "the safety proofs (lumbar-kb check)", lambda: run_checks(kb))
    if report is not None and engine is not None:
        failures += proof_failures(kb, report, engine)
    if report is not None and notes is not None:
        known = {r.id for r in kb.rules}
        for check in report.checks:
            for f in check.findings:
                if f.severity == "note" and f.subject.startswith("rule ") and f.subject[5:] in known:
                    notes.append((f.subject[5:], check.id, f.message))
    tests = step(failures, "the scenarios (lumbar-kb test)", lambda: run_scenarios(kb))
    if tests is not None:
        if not tests.outcomes:
            failures.append(Failure("scenario", "scenarios/", "the scenarios", "no scenario files to run"))
        failures += scenario_failures(kb, tests)
    return failures
