"""Evaluate the solver's patients with the engine, so that no finding rests on the encoding alone.

Every counterexample `lumbar-kb check` prints is first validated as a patient file would be and then run
through the durable-rules engine (`session.Engine`) and `result.build`; each finding says what must be
observed, and a finding whose patient does not show it is reported as an internal disagreement.
"""

from __future__ import annotations

from collections.abc import Mapping

from lumbar_kb.engine.analysis.escalation import decide
from lumbar_kb.engine.errors import ContradictoryRules, EngineError, LumbarKBError
from lumbar_kb.engine.model import KnowledgeBase, Value
from lumbar_kb.engine.patient import parse_patient
from lumbar_kb.engine.result import Result
from lumbar_kb.engine.session import Engine
from lumbar_kb.engine.source import Positions


class Runner:
    """The engine of one knowledge base, built once, for many re-evaluations."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self.engine = Engine(kb)

    def check_patient(self, patient: Mapping[str, Value]) -> dict[str, Value]:
        """The patient as a patient file would be accepted; raises PatientError otherwise."""
        return parse_patient(dict(patient), Positions("<counterexample>"), self.kb)

    def result(self, patient: Mapping[str, Value]) -> Result:
        return decide(self.kb, self.engine.run(self.check_patient(patient)))

    def fired(self, patient: Mapping[str, Value]) -> set[str]:
        return {f.rule for f in self.engine.run(self.check_patient(patient)).firings}

    def error(self, patient: Mapping[str, Value]) -> str | None:
        """The engine's error for this patient, or None when it evaluates normally."""
        try:
            self.engine.run(self.check_patient(patient))
        except (EngineError, ContradictoryRules) as exc:
            return str(exc)
        except LumbarKBError:
            raise
        return None


def windows(result: Result) -> dict[str, float | None]:
    return {a.code: a.within_hours for a in result.actions}


def decisions(result: Result) -> dict:
    """What a result decides, without the bookkeeping (inputs, questions, rule list)."""
    return {
        "urgency": result.urgency,
        "actions": windows(result),
        "warnings": sorted(w.code for w in result.warnings),
        "differential": sorted(d.code for d in result.differential),
    }


def later(before: float | None, after: float | None) -> bool:
    """A window moved later: a figure became larger, or became "no fixed window"."""
    if before is None:
        return False
    return after is None or after > before
