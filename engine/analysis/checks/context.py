"""What every check shares: the knowledge base's z3 encoding, one symbolic patient, positions in files."""

from __future__ import annotations

from pathlib import Path

import z3

from lumbar_kb.engine.analysis.encoding import Semantics, State, canonical, solve_min
from lumbar_kb.engine.analysis.reproduce import Runner
from lumbar_kb.engine.analysis.structure import (
    analyse,
)
from lumbar_kb.engine.model import KnowledgeBase
from lumbar_kb.engine.source import DocumentError, Positions, read_document


# ---- the context shared by the checks -----------------------------------------------------------------------
class Context:
    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self.structure = analyse(kb)
        self.sem = Semantics(kb, self.structure)
        self.s = self.sem.state("s")
        self.ok = self.s.ok()
        self.solver = z3.Solver()
        self.solver.add(self.ok)
        self._reachable: dict[str, bool] = {}
        self.runner = Runner(kb)
        self._positions: dict[str, Positions | None] = {}
        self.top = max(kb.catalog["urgency"].values(), key=lambda e: e.rank).code
        self.imaging = kb.watched_actions  # imaging studies and other time-critical steps

    def sat(self, *constraints) -> bool:
        self.solver.push()
        self.solver.add(*constraints)
        result = self.solver.check() == z3.sat
        self.solver.pop()
        return result

    def reachable(self, rule_id: str) -> bool:
        if rule_id not in self._reachable:
            self._reachable[rule_id] = self.sat(self.s.fires[rule_id])
        return self._reachable[rule_id]

    def canonical_witness(self, *constraints) -> dict | None:
        """Like `witness`, the same patient on every run (see `encoding.canonical`)."""
        found = canonical([self.ok, *constraints], [self.s])
        return None if found is None else found[0]

    def witness(self, *constraints, state: State | None = None) -> dict | None:
        """The patient with the fewest answered facts that satisfies the constraints (with `ok`)."""
        state = state or self.s
        model = solve_min([self.ok, *constraints], state.answered())
        return None if model is None else state.patient(model)

    # -- where things are written --
    def display(self, path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def position(self, file: str, path: tuple) -> tuple[str, int | None]:
        full = Path(self.kb.root) / file
        if file not in self._positions:
            try:
                self._positions[file] = read_document(full)[1]
            except DocumentError:
                self._positions[file] = None
        pos = self._positions[file]
        return self.display(full), (pos.at(path)[0] if pos is not None else None)

    def fact_at(self, fact: str) -> tuple[str, int | None]:
        return self.display(Path(self.kb.root) / "facts.yaml"), self.kb.facts[fact].line

    def code_at(self, kind: str, code: str) -> tuple[str, int | None]:
        key = {"urgency": "urgency", "action": "actions", "warning": "warnings", "differential": "differential"}[kind]
        return self.position("guideline.yaml", (key, code))

    def rule_at(self, rule_id: str) -> tuple[str, int | None]:
        rule = self.kb.rule(rule_id)
        return rule.file, rule.line
