"""`lumbar-kb test`: run the authors' scenarios, diff expected against actual, and measure coverage.

Rule coverage: the rules no scenario fires. Conclusion coverage: the catalogue entries (urgency levels,
actions, warnings, differential entries) no scenario's `expect` checks. For each rule no scenario fires,
`write_missing` writes a scenario with the fewest answered facts that fires it (found by the solver),
expecting only that the rule fires; what the rules conclude today is written beside it as comments for
the author to check against the guideline and uncomment, so nothing is confirmed by default.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lumbar_kb.engine.analysis.escalation import decide
from lumbar_kb.engine.analysis.structure import logic_value
from lumbar_kb.engine.errors import ContradictoryRules, EngineError, LumbarKBError, Problem
from lumbar_kb.engine.model import KnowledgeBase, Rule, hours_text
from lumbar_kb.engine.outputs import TEMP_MARK, sweep_stale
from lumbar_kb.engine.result import Result, build
from lumbar_kb.engine.scenarios import Mismatch, Scenario, checked_conclusions, compare, load_scenarios, scenario_dir
from lumbar_kb.engine.session import Engine


@dataclass
class Outcome:
    scenario: Scenario
    mismatches: list  # list[Mismatch]
    error: str | None = None  # the engine stopped (a contradiction in the knowledge base)
    fired: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.error is None


@dataclass
class Written:
    rule: str
    path: str | None
    note: str


@dataclass
class TestReport:
    kb: KnowledgeBase
    directory: str
    outcomes: list
    unfired_rules: list  # list[Rule]
    unchecked_conclusions: list  # list[str], "kind:code"
    checkable: int  # how many conclusions there are to check

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    def to_dict(self, written: list | None = None) -> dict:
        return {
            "knowledge_base": self.kb.identity(),
            "scenarios": [
                {
                    "file": o.scenario.file,
                    "name": o.scenario.name,
                    "passed": o.passed,
                    "error": o.error,
                    "mismatches": [{"key": m.key, "expected": m.expected, "actual": m.actual} for m in o.mismatches],
                }
                for o in self.outcomes
            ],
            "passed": len(self.outcomes) - len(self.failed),
            "failed": len(self.failed),
            "rules_not_fired": [r.id for r in self.unfired_rules],
            "conclusions_not_checked": list(self.unchecked_conclusions),
            "written": [{"rule": w.rule, "path": w.path, "note": w.note} for w in written or ()],
        }


def run_scenarios(kb: KnowledgeBase, directory: Path | None = None) -> TestReport:
    directory = Path(directory) if directory is not None else scenario_dir(kb)
    if not directory.is_dir():
        raise LumbarKBError(Problem("scenario directory not found", file=str(directory)))
    scenarios = load_scenarios(kb, directory)  # a broken scenario file is bad input: exit 2, every problem listed
    engine = Engine(kb)
    outcomes = []
    fired: set[str] = set()
    for scenario in scenarios:
        try:
            trace = engine.run(scenario.patient)
        except (EngineError, ContradictoryRules) as exc:
            outcomes.append(Outcome(scenario, [], str(exc)))
            continue
        result = decide(kb, trace)  # with could_escalate, which `asks` / `does_not_ask` read
        fired.update(result.fired_ids())
        outcomes.append(Outcome(scenario, compare(scenario, result), None, result.fired_ids()))
    checked = checked_conclusions(scenarios)
    every = [f"{kind}:{code}" for kind in ("urgency", "action", "warning", "differential") for code in kb.catalog[kind]]
    return TestReport(
        kb,
        _display(directory),
        outcomes,
        [r for r in kb.rules if r.id not in fired],
        [c for c in every if c not in checked],
        len(every),
    )


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---- minimal scenarios ------------------------------------------------------------------------------------
def write_missing(kb: KnowledgeBase, report: TestReport, directory: Path) -> list[Written]:
    """Write one minimal scenario per rule no scenario fires; never overwrite a file.

    All or nothing: every scenario is found first, then written into a temporary directory inside
    `directory` and moved into place; if anything cannot be written, what was moved is removed again (and a
    directory this call created), and the error names the path (a LumbarKBError, exit 2)."""
    from lumbar_kb.engine.analysis.encoding import Semantics, solve_min

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise LumbarKBError(Problem("is not a directory", file=str(directory)))
    sem = Semantics(kb)
    s = sem.state("s")
    ok = s.ok()
    engine = Engine(kb)
    written = []
    texts: dict[Path, str] = {}
    for rule in report.unfired_rules:
        model = solve_min([ok, s.fires[rule.id]], s.answered())
        if model is None:
            written.append(Written(rule.id, None, "can never fire (see `lumbar-kb check`); nothing written"))
            continue
        patient = s.patient(model)
        path = directory / f"{rule.id.replace('.', '_')}.yaml"
        if path.exists():
            written.append(Written(rule.id, str(path), "exists already; left as it is"))
            continue
        result = build(kb, engine.run(patient))
        if rule.id not in result.fired_ids():  # the engine must agree with the solver
            raise EngineError(f"the solver's patient for {rule.id} does not fire it in the engine: {patient}")
        texts[path] = scenario_text(kb, rule, patient, result)
        answered = len(patient)
        written.append(Written(rule.id, str(path), f"{answered} answered fact{'s' if answered != 1 else ''}"))
    if texts:
        _write_all(directory, texts)
    return written


def _write_all(directory: Path, texts: dict[Path, str]) -> None:
    """Write every file of `texts` (all in `directory`) or none; a LumbarKBError naming the path otherwise."""
    created = next((d for d in reversed([directory, *directory.parents]) if not d.exists()), None)
    where = directory
    moved: list[Path] = []
    staging = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        sweep_stale(directory)  # a killed run's staging folder
        staging = Path(tempfile.mkdtemp(prefix=f".write-missing{TEMP_MARK}", dir=directory))
        for path, text in texts.items():
            where = path
            (staging / path.name).write_text(text, encoding="utf-8")
        for path in texts:
            where = path
            os.replace(staging / path.name, path)
            moved.append(path)
    except OSError as exc:
        for path in moved:
            _quietly(path.unlink)
        if created is not None:
            _quietly(shutil.rmtree, created)
        raise LumbarKBError(
            Problem(f"cannot write the scenarios, none written: {exc.strerror or exc}", file=str(where))
        ) from None
    finally:
        if staging is not None:
            _quietly(shutil.rmtree, staging)


def _quietly(action, *args) -> None:
    try:
        action(*args)
    except OSError:
        pass


def scenario_text(kb: KnowledgeBase, rule: Rule, patient: dict, result: Result) -> str:
    actions = ", ".join(
        f"{a.code}: {'null' if a.within_hours is None else f'{a.within_hours:g}'}" for a in result.actions
    )
    lines = [
        f"# Written by `lumbar-kb test --write-missing` for rule {rule.id} ({rule.file}:{rule.line}):",
        "# the patient with the fewest answered facts that fires it. To complete it: name the scenario after",
        "# what the guideline requires, and check each commented expectation against the guideline before",
        "# uncommenting it. They are what the rules conclude today, not what the guideline says.",
        f"name: {json.dumps('TODO: ' + rule.title, ensure_ascii=False)}",
        "patient:" if patient else "patient: {}",
    ]
    lines += [f"  {fact}: {logic_value(value)}" for fact, value in patient.items()]
    lines += [
        "expect:",
        f"  fired: [{rule.id}]",
        f"  # urgency: {result.urgency}",
        f"  # actions: {{{actions}}}",
        f"  # warnings: [{', '.join(w.code for w in result.warnings)}]",
        f"  # differential: [{', '.join(d.code for d in result.differential)}]",
    ]
    return "\n".join(lines) + "\n"


# ---- text -------------------------------------------------------------------------------------------------
def render(report: TestReport, written: list | None = None) -> str:
    kb = report.kb
    out = [f"lumbar-kb test: {len(report.outcomes)} scenarios in {report.directory} ({kb.name} {kb.version})", ""]
    for o in report.outcomes:
        where = f"{Path(o.scenario.file).name}"
        if o.passed:
            out.append(f"  PASS  {where}: {o.scenario.name}")
            continue
        out.append(f"  FAIL  {o.scenario.file}:{o.scenario.line or 1}: {o.scenario.name}")
        if o.error:
            out.append(f"          the engine stopped: {o.error}")
        for m in o.mismatches:
            out.extend(diff_lines(m, "          "))
    failed = len(report.failed)
    out.append("")
    out.append(f"{len(report.outcomes) - failed} passed, {failed} failed")
    out.append("")
    rules = len(kb.rules)
    out.append(f"Rule coverage: {rules - len(report.unfired_rules)} of {rules} rules fired by some scenario")
    for rule in report.unfired_rules:
        out.append(f"  not fired: {rule.id}  ({rule.file}:{rule.line})")
    checked = report.checkable - len(report.unchecked_conclusions)
    out.append(f"Conclusion coverage: {checked} of {report.checkable} conclusions checked by some scenario's expect")
    if report.unchecked_conclusions:
        out.append("  not checked: " + ", ".join(report.unchecked_conclusions))
    if written is not None and not written and not report.unfired_rules:
        out.append("")
        out.append("Every rule is fired by some scenario: no scenario to write.")
    if written:
        out.append("")
        out.append("Minimal scenarios for the rules no scenario fires (complete them before committing):")
        for w in written:
            out.append(f"  {w.rule}: {w.path + ' - ' if w.path else ''}{w.note}")
    return "\n".join(out) + "\n"


def diff_lines(m: Mismatch, indent: str) -> list[str]:
    """Expected against actual for one expectation: '-' expected and missing, '+' actual and unexpected."""
    out = [f"{indent}{m.key}:"]
    pad = indent + "  "
    if m.key == "urgency":
        return out + [f"{pad}- {m.expected}", f"{pad}+ {m.actual}"]
    if m.key == "actions":
        expected, actual = dict(m.expected), dict(m.actual)
        order = list(expected) + [c for c in actual if c not in expected]
        for code in order:
            e, a = expected.get(code, "absent"), actual.get(code, "absent")
            if code in expected and code in actual and _num(e) == _num(a):
                continue
            if code in expected:
                out.append(f"{pad}- {code}: {_hours(e)}")
            if code in actual:
                out.append(f"{pad}+ {code}: {_hours(a)}")
        return out
    if m.key in ("warnings", "differential"):
        out += [f"{pad}- {c}" for c in m.expected if c not in m.actual]
        out += [f"{pad}+ {c}" for c in m.actual if c not in m.expected]
        return out
    if m.key == "fired":
        return out + [f"{pad}- {r} (did not fire)" for r in m.expected if r not in m.actual]
    if m.key == "not_fired":
        return out + [f"{pad}+ {r} (fired)" for r in m.actual]
    return out + [f"{pad}- {m.expected}", f"{pad}+ {m.actual}"]


def _num(value):
    return None if value is None else float(value)


def _hours(value) -> str:
    return "null (no fixed window)" if value is None else f"{value:g} ({hours_text(float(value))})"
