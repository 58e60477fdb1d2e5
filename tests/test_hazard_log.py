"""The hazard log ties every hazard to a control that exists and runs in CI.

A control is a rule or relation (the loader refuses an unknown one), a `lumbar-kb check` check (it must be
among the checks `check` runs on the bundled knowledge base, not skipped, and pass), a test (the function must
exist in tests/, not be marked skip/xfail, and so runs in this very suite) or a knowledge-base file.
"""

from __future__ import annotations

import ast
import itertools
import json
import shutil
from pathlib import Path

import pytest

from lumbar_kb.engine.analysis.checks import run_checks
from lumbar_kb.engine.errors import KnowledgeBaseError
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.engine.model import LIKELIHOODS, SEVERITIES, Control, risk_rating
from lumbar_kb.main import main
from lumbar_kb.visualize.hazard_log import to_markdown

ROOT = Path(__file__).resolve().parent.parent


def _test_functions(path: Path) -> dict[str, list[str]]:
    """Test functions of a file with the names of their decorators."""
    tree = ast.parse(path.read_text())
    return {
        node.name: [ast.unparse(d) for d in node.decorator_list]
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def missing_controls(kb, controls: list[Control], check_status: dict[str, str], root: Path = ROOT) -> list[str]:
    """The controls that do not exist or would not run, each with the reason."""
    out = []
    for c in controls:
        if c.kind == "check":
            status = check_status.get(c.ref)
            if status is None:
                out.append(f"{c.ref}: no such check")
            elif status in ("skipped", "failed"):
                out.append(f"{c.ref}: the check is {status}")
        elif c.kind == "test":
            file, _, name = c.ref.partition("::")
            path = root / file
            tests = _test_functions(path) if path.is_file() else {}
            if name not in tests:
                out.append(f"{c.ref}: no such test")
            elif any("skip" in d or "xfail" in d for d in tests[name]):
                out.append(f"{c.ref}: the test does not run ({tests[name]})")
        elif c.kind == "knowledge":
            if not (Path(kb.root) / c.ref).is_file():
                out.append(f"{c.ref}: no such knowledge-base file")
        elif c.kind == "rule":
            if c.ref not in {r.id for r in kb.rules}:
                out.append(f"{c.ref}: no such rule")
        elif c.kind == "relation":
            if c.ref not in {r.id for r in kb.relations}:
                out.append(f"{c.ref}: no such relation")
        else:
            out.append(f"{c.ref}: unknown kind {c.kind}")
    return out


@pytest.fixture(scope="module")
def check_status(kb):
    return {c.id: c.status for c in run_checks(kb).checks}


def test_every_control_exists_and_runs(kb, check_status):
    assert len(kb.hazards) >= 8
    controls = [c for h in kb.hazards for c in h.controls]
    assert {c.kind for c in controls} >= {"rule", "check", "test", "relation", "knowledge"}
    assert missing_controls(kb, controls, check_status) == []


def test_a_control_that_does_not_exist_or_does_not_run_is_caught(kb, check_status, tmp_path):
    """Seeded: each kind of broken control is named."""
    skipped = tmp_path / "tests"
    seeded = [
        Control("check", "no_such_check", "seeded"),
        Control("test", "tests/test_engine.py::test_no_such_test", "seeded"),
        Control("test", "tests/no_such_file.py::test_x", "seeded"),
        Control("knowledge", "no-such-file.yaml", "seeded"),
        Control("rule", "no.such.rule", "seeded"),
        Control("relation", "no_such_relation", "seeded"),
    ]
    assert len(missing_controls(kb, seeded, check_status)) == len(seeded)
    failing = {**check_status, "neurological_emergency": "failed"}
    assert missing_controls(kb, [Control("check", "neurological_emergency", "x")], failing)
    skipped.mkdir()
    (skipped / "test_s.py").write_text("import pytest\n\n@pytest.mark.skip\ndef test_x():\n    pass\n")
    assert missing_controls(kb, [Control("test", "tests/test_s.py::test_x", "x")], check_status, root=tmp_path)


def test_the_loader_refuses_a_control_naming_an_unknown_rule(tmp_path):
    target = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), target)
    hazards = target / "hazards.yaml"
    hazards.write_text(hazards.read_text().replace("ref: cancer.treatment_24h", "ref: cancer.treatment_24"))
    with pytest.raises(
        KnowledgeBaseError, match=r"hazards.yaml:\d+:\d+: hazard H\d+: unknown rule 'cancer.treatment_24'"
    ):
        load(target)
    assert main(["validate", "--kb", str(target)]) == 2


def test_risk_ratings_follow_the_matrix_and_never_fall_with_worse_inputs():
    """First principles: a more severe or more likely hazard never has a lower risk rating; ratings span 1-5."""
    for (i, s), (j, lk) in itertools.product(enumerate(SEVERITIES), enumerate(LIKELIHOODS)):
        r = risk_rating(s, lk)
        assert 1 <= r <= 5
        if i + 1 < len(SEVERITIES):
            assert risk_rating(SEVERITIES[i + 1], lk) >= r
        if j + 1 < len(LIKELIHOODS):
            assert risk_rating(s, LIKELIHOODS[j + 1]) >= r
    assert risk_rating("minor", "very_low") == 1 and risk_rating("catastrophic", "very_high") == 5


def test_controls_never_raise_a_risk(kb):
    for h in kb.hazards:
        assert SEVERITIES.index(h.residual_severity) <= SEVERITIES.index(h.severity), h.id
        assert LIKELIHOODS.index(h.residual_likelihood) <= LIKELIHOODS.index(h.likelihood), h.id
        assert h.residual_risk <= h.initial_risk, h.id


def test_the_rendered_log_in_docs_is_current(kb):
    committed = (ROOT / "docs" / "hazard-log.md").read_text()
    assert committed == to_markdown(kb), "docs/hazard-log.md is stale: run `make docs`"
    for h in kb.hazards:
        assert f"## {h.id}: {h.title}" in committed
        assert all(f"`{c.ref}`" in committed for c in h.controls)


def test_hazards_command_json(capsys, kb):
    assert main(["hazards", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in data["hazards"]] == [h.id for h in kb.hazards]
    assert all(h["initial_risk"] == risk_rating(h["severity"], h["likelihood"]) for h in data["hazards"])
