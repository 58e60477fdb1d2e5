"""Sign-off bound to content: approve, status, check --release, and the FHIR export."""

from __future__ import annotations

import json
from pathlib import Path

from lumbar_kb.engine.analysis.approvals import content_hash, statuses
from lumbar_kb.engine.loader import load
from lumbar_kb.main import main


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _status(kb_dir: Path) -> dict[str, str]:
    return {rid: st.status for rid, st in statuses(load(kb_dir)).items()}


def test_nothing_recorded_means_submitted(kb):
    assert set(_status(Path(kb.root)).values()) == {"submitted"}


def test_approval_holds_until_the_rule_is_edited_and_holds_again_when_the_edit_is_undone(kb_copy, capsys):
    assert (
        main(["approve", "red_flag.leg_weakness", "concerning.night_pain", "--by", "Dr A", "--kb", str(kb_copy)]) == 0
    )
    assert (kb_copy / "approvals.yaml").exists()
    st = _status(kb_copy)
    assert st["red_flag.leg_weakness"] == st["concerning.night_pain"] == "approved"
    assert st["concerning.radiating_pain"] == "submitted"
    rules = kb_copy / "rules" / "red_flags.yaml"
    original = rules.read_text()
    # a change of the window voids the approval of that rule only
    first, rest = original.split("  - id: red_flag.gait", 1)  # the first rule: red_flag.leg_weakness
    rules.write_text(first.replace("within_hours: 24", "within_hours: 48") + "  - id: red_flag.gait" + rest)
    st = _status(kb_copy)
    assert st["red_flag.leg_weakness"] == "changed"
    assert st["concerning.night_pain"] == "approved"
    rules.write_text(original)  # only the hash decides: the same content is approved again
    assert _status(kb_copy)["red_flag.leg_weakness"] == "approved"


def test_every_part_of_the_content_is_covered_by_the_hash(kb_copy):
    kb = load(kb_copy)
    before = content_hash(kb, kb.rule("concerning.palpable_mass"))
    edits = [
        (
            "rules/concerning.yaml",
            "Any palpable or visible mass in the lumbar region requires",
            "A palpable mass requires",
        ),  # rationale
        ("rules/concerning.yaml", "title: Any palpable or visible lumbar mass", "title: A lumbar mass"),  # title
        (
            "rules/concerning.yaml",
            "when: {fact: palpable_mass, is: true}",
            "when: {fact: palpable_mass, is: false}",
        ),  # condition
        (
            "guideline.yaml",
            "text: Prompt evaluation within days to 2 weeks.",
            "text: Prompt evaluation within days.",
        ),  # catalogue text
        (
            "guideline.yaml",
            "year: 2025\n    kind: guideline\n  2:",
            "year: 2024\n    kind: guideline\n  2:",
        ),  # cited reference
    ]
    for file, old, new in edits:
        path = kb_copy / file
        original = path.read_text()
        _edit(path, old, new)
        kb2 = load(kb_copy)
        assert content_hash(kb2, kb2.rule("concerning.palpable_mass")) != before, (file, new)
        path.write_text(original)
    # an edit elsewhere (another rule, a comment) leaves it alone
    _edit(kb_copy / "rules" / "concerning.yaml", "# Concerning symptoms", "# Concerning symptoms (edited comment)")
    kb3 = load(kb_copy)
    assert content_hash(kb3, kb3.rule("concerning.palpable_mass")) == before


def test_under_review_and_the_status_command(kb_copy, capsys):
    assert (
        main(
            [
                "approve",
                "imaging.xray_first",
                "--by",
                "Dr B",
                "--under-review",
                "--note",
                "check the 27%",
                "--kb",
                str(kb_copy),
            ]
        )
        == 0
    )
    assert main(["approve", "cancer.none", "--by", "Dr C", "--kb", str(kb_copy)]) == 0
    capsys.readouterr()
    assert main(["status", "--format", "json", "--kb", str(kb_copy)]) == 0
    data = json.loads(capsys.readouterr().out)
    by_rule = {r["rule"]: r for r in data["rules"]}
    assert by_rule["imaging.xray_first"]["status"] == "under_review"
    assert by_rule["imaging.xray_first"]["records"][0]["note"] == "check the 27%"
    assert by_rule["cancer.none"]["status"] == "approved"
    # one rule under review, one approved, every other rule of the knowledge base merely submitted
    rules = len(load(kb_copy).rules)
    assert data["counts"] == {"submitted": rules - 2, "under_review": 1, "approved": 1, "changed": 0}
    assert main(["status", "--kb", str(kb_copy)]) == 0
    text = capsys.readouterr().out
    assert "imaging.xray_first" in text and "under review" in text and "approved by Dr C" in text


def test_unknown_rule_is_bad_input_and_writes_nothing(kb_copy, capsys):
    assert main(["approve", "red_flag.leg_weaknes", "--by", "Dr A", "--kb", str(kb_copy)]) == 2
    assert "did you mean 'red_flag.leg_weakness'?" in capsys.readouterr().err
    assert not (kb_copy / "approvals.yaml").exists()


def test_a_malformed_approvals_file_is_bad_input_with_its_line(kb_copy, capsys):
    (kb_copy / "approvals.yaml").write_text(
        "records:\n  - rule: x\n    decision: maybe\n    by: A\n    date: '2026-01-01'\n    content_hash: sha256:00\n"
    )
    assert main(["status", "--kb", str(kb_copy)]) == 2
    err = capsys.readouterr().err
    assert "approvals.yaml:" in err


def test_check_release_fails_until_every_rule_is_approved(kb_copy, capsys):
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 1
    assert "release: rule red_flag.leg_weakness is submitted, not approved" in capsys.readouterr().err
    assert main(["check", "--kb", str(kb_copy)]) == 0  # without --release approvals do not matter
    ids = [r.id for r in load(kb_copy).rules]
    assert main(["approve", *ids, "--by", "Board", "--kb", str(kb_copy)]) == 0
    capsys.readouterr()
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 0
    _edit(kb_copy / "rules" / "pitfalls.yaml", "A palpable mass is not benign", "A palpable mass is never benign")
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 1
    assert "pitfall.do_not_assume_benign is changed since approval" in capsys.readouterr().err


def test_fhir_export_is_one_artifact_assessment_per_record(kb_copy, capsys):
    main(["approve", "cancer.none", "--by", "Dr C", "--note", "agreed", "--kb", str(kb_copy)])
    capsys.readouterr()
    assert main(["status", "--format", "fhir", "--kb", str(kb_copy)]) == 0
    bundle = json.loads(capsys.readouterr().out)
    assert bundle["resourceType"] == "Bundle"
    (entry,) = bundle["entry"]
    res = entry["resource"]
    kb = load(kb_copy)
    assert res["resourceType"] == "ArtifactAssessment"
    assert res["artifactCanonical"].endswith("/rule/cancer.none|" + content_hash(kb, kb.rule("cancer.none")))
    assert res["approvalDate"] == res["date"]
    assert res["content"][0]["summary"] == "agreed" and res["content"][0]["author"] == {"display": "Dr C"}
    assert res["workflowStatus"] == "applied"
