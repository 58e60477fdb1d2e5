"""`lumbar-kb check`: static analysis of a knowledge base over every input state, with the z3 solver.

Every check is a claim about all patients at once (each input fact unknown or one of its values,
`only_if` respected). A claim that fails comes back as a Finding with a concrete patient (two for
the monotonicity invariants) that the engine is then made to evaluate (`reproduce`), so what is printed
is what the engine does. Patients are minimised: as few answered facts as the finding allows.

Definitions (also in docs/authors.md, "check, test, explain"):
  * unreachable rule: no patient makes its condition true at the fixpoint;
  * redundant rule R: another rule S fires for every patient R fires for, and S's conclusions include
    every conclusion of R (an action only with the same `within_hours`, a derivation with the same value);
  * contradictory derivation: a patient for whom a derived fact is derived with two values;
  * contradictory windows: an action's window words stating a figure other than its `within_hours`, or
    two rules that fire together giving one action the same figure in different words (the report then
    prints whichever fired first). Different figures for one action are not a contradiction: the earliest
    wins, and meeting it meets every later one. A window that can never be the earliest is a note;
  * the safety invariants: a neurological symptom gives the most urgent level; a yes (from unknown or no)
    never lowers the urgency and never delays or removes a `never_delay` action; and for every unanswered
    alarm question whose answer could raise the urgency or bring an imaging action forward once other
    questions are answered, answering it alone already does so now, so `could_escalate` (which tries one
    answer at a time) names it.

One module per kind of check: `structural`, `reach`, `windows`, `safety`, `clinical` (issue 9's invariants:
emergency windows, completeness, urgency floors, numeric windows), `coherence` (issue 23's: the steps of one
result agree with each other); `context` is what they share,
`report` the findings and their text. This module runs them all.
"""

from __future__ import annotations

import time

from lumbar_kb.engine.analysis import encoding
from lumbar_kb.engine.analysis.checks.clinical import check_clinical
from lumbar_kb.engine.analysis.checks.coherence import check_coherence
from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import CheckReport, Finding, render
from lumbar_kb.engine.analysis.checks.guideline import check_inconsistencies
from lumbar_kb.engine.analysis.checks.reach import (
    check_codes_reach,
    check_contradictions,
    check_derived_reach,
    check_redundant,
    check_unreachable_rules,
)
from lumbar_kb.engine.analysis.checks.safety import check_escalation, check_monotone, check_neurological
from lumbar_kb.engine.analysis.checks.structural import (
    check_cycles,
    check_derived,
    check_unconcluded,
    check_unread_facts,
)
from lumbar_kb.engine.analysis.checks.traceability import check_traceability
from lumbar_kb.engine.analysis.checks.windows import check_windows
from lumbar_kb.engine.analysis.memo import ByContent
from lumbar_kb.engine.analysis.structure import input_state_count
from lumbar_kb.engine.errors import LumbarKBError
from lumbar_kb.engine.model import KnowledgeBase

__all__ = ["CheckReport", "contradictions", "render", "run_checks"]


# ---- the front door ------------------------------------------------------------------------------------------
_REPORTS: ByContent[CheckReport] = ByContent()


def run_checks(kb: KnowledgeBase) -> CheckReport:
    """Every check of `lumbar-kb check` on `kb` (seconds: the proofs ask z3 thousands of questions). A process
    that checks the same content again gets the report made the first time (`memo.ByContent`): read-only."""
    return _REPORTS.get(kb, lambda: _run_checks(kb))


def _run_checks(kb: KnowledgeBase) -> CheckReport:
    started = time.perf_counter()
    ctx = Context(kb)
    checks = [
        check_cycles(ctx),
        check_unread_facts(ctx),
        check_derived(ctx),
        check_unconcluded(ctx),
        check_unreachable_rules(ctx),
        check_derived_reach(ctx),
        check_codes_reach(ctx),
        check_contradictions(ctx),
        check_redundant(ctx),
        check_inconsistencies(ctx),
    ]
    checks += check_windows(ctx)
    checks.append(check_neurological(ctx))
    checks += check_monotone(ctx)
    checks.append(check_escalation(ctx))
    checks += check_clinical(ctx)
    checks += check_coherence(ctx)
    checks += check_traceability(ctx)
    for check in checks:
        for finding in check.findings:
            _reproduce(ctx, finding)
            if check.group in ("safety", "clinical") and finding.severity == "problem":
                _name_the_path(ctx, finding)
    count, exact = input_state_count(kb)
    report = CheckReport(kb, checks, count, exact, f"z3 {encoding.version()}")
    report.elapsed = time.perf_counter() - started
    return report


def contradictions(kb: KnowledgeBase) -> list[Finding]:
    """Facts that two rules derive with two values for one patient, each with that patient (for `validate`)."""
    return check_contradictions(Context(kb)).findings


def _name_the_path(ctx: Context, finding: Finding) -> None:
    """A failing proof names the rules its counterexample's evaluation fires (with file:line), and for a pair of
    patients the rules that fire for one and not the other: the edit that broke the proof is among them."""
    rules = {r.id: r for r in ctx.kb.rules}

    def named(ids) -> str:
        return ", ".join(f"{i} ({rules[i].file}:{rules[i].line})" if i in rules else i for i in ids) or "none"

    def path(patient) -> list[str] | None:
        try:
            return [f.rule for f in ctx.runner.engine.run(ctx.runner.check_patient(patient)).firings]
        except LumbarKBError:
            return None

    first = path(finding.patient) if finding.patient is not None else None
    if first is None:
        return
    second = path(finding.then) if finding.then is not None else None
    if second is None:
        finding.details.append(f"rules on this patient's path: {named(first)}")
        return
    a, b = finding.labels
    finding.details.append(f"rules that fire for `{a}` only: {named([r for r in first if r not in second])}")
    finding.details.append(f"rules that fire for `{b}` only: {named([r for r in second if r not in first])}")
    finding.details.append(f"rules that fire for both: {named([r for r in first if r in second])}")


def _reproduce(ctx: Context, finding: Finding) -> None:
    if finding.verify is None:
        return
    try:
        why_not = finding.verify(ctx.runner)
    except Exception as exc:  # a counterexample the engine refuses is a disagreement too
        why_not = f"{type(exc).__name__}: {exc}"
    finding.reproduced = why_not is None
    if why_not is not None:
        finding.details.append(
            f"INTERNAL: the engine does not reproduce this ({why_not}); the solver encoding and "
            "the engine disagree, please report it"
        )
