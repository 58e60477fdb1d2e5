"""The small public front door: load a knowledge base, evaluate patients, get Results.

from lumbar_kb.engine.api import Evaluator
ev = Evaluator.open()                   # the bundled knowledge base (or Evaluator.open("path/to/kb"))
result = ev.evaluate({"leg_weakness": True})
result.urgency                          # "emergency"
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lumbar_kb.engine.analysis.escalation import decide, decide_most_urgent
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.model import KnowledgeBase, Value
from lumbar_kb.engine.patient import load_patient, parse_patient
from lumbar_kb.engine.reference import ReferenceEvaluator
from lumbar_kb.engine.result import Result
from lumbar_kb.engine.session import Engine
from lumbar_kb.engine.source import Positions


class Evaluator:
    """A knowledge base compiled into durable-rules, ready for many patients (build once per process)."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self.engine = Engine(kb)

    @classmethod
    def open(cls, kb_dir: Path | str | None = None) -> Evaluator:
        return cls(load(kb_dir))

    def check_inputs(self, facts: Mapping, contradictions: str = "refuse") -> dict[str, Value]:
        """Validate a patient mapping given in code (raises PatientError like a patient file would; with
        `contradictions="read"`, answers that break a relation are returned, not refused)."""
        return parse_patient(dict(facts), Positions("<patient>"), self.kb, contradictions=contradictions)

    def evaluate(self, facts: Mapping, audience: str = "clinician", contradictions: str = "refuse") -> Result:
        """The Result for a patient mapping. `contradictions="most_urgent"`: answers that contradict each other are
        evaluated under the most urgent reading they allow and marked so (`decide_most_urgent`), never refused."""
        if contradictions == "most_urgent":
            return decide_most_urgent(self.kb, self.engine.run, self.check_inputs(facts, "read"), audience)
        return decide(self.kb, self.engine.run(self.check_inputs(facts)), audience)

    def evaluate_file(self, path: Path | str, audience: str = "clinician", contradictions: str = "refuse") -> Result:
        if contradictions == "most_urgent":
            facts = load_patient(path, self.kb, contradictions="read")
            return decide_most_urgent(self.kb, self.engine.run, facts, audience)
        return decide(self.kb, self.engine.run(load_patient(path, self.kb)), audience)


def reference_result(kb: KnowledgeBase, facts: Mapping[str, Value], audience: str = "clinician") -> Result:
    """The same Result computed by the plain-Python reference evaluator (the test oracle)."""
    return decide(kb, ReferenceEvaluator(kb).run(facts), audience)
