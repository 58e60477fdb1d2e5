"""The board's sign-off bound to content: every item that decides or is read has a hash, an edit voids exactly
the approvals of the items it changes, approvals and decisions are Ed25519-signed by board members, a quorum
is needed, and `check --release` refuses while anything is unapproved, undecided, failing or forged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from lumbar_kb.engine.analysis.approvals import (
    content_hash,
    decision_items,
    decision_statuses,
    item_statuses,
    items,
    record_problems,
    statuses,
)
from lumbar_kb.engine.loader import load
from lumbar_kb.main import main

from .board import make_board

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, count))


def _status(kb_dir: Path) -> dict[str, str]:
    return {iid: st.status for iid, st in item_statuses(load(kb_dir)).items()}


def _hashes(kb_dir: Path) -> dict[str, str]:
    return {iid: item.content_hash for iid, item in items(load(kb_dir)).items()}


def _approve(kb_dir: Path, key: Path, *ids: str) -> int:
    return main(["approve", *(ids or ("--all",)), "--key", str(key), "--kb", str(kb_dir)])


def _fact_block(kb_dir: Path, name: str) -> tuple[str, str]:
    """The text of one fact's entry in facts.yaml (to edit that fact and no other)."""
    text = (kb_dir / "facts.yaml").read_text()
    start = text.index(f"\n  {name}:\n") + 1
    end = start + 1
    while True:  # the entry's own lines are indented by four spaces
        nxt = text.index("\n", end) + 1
        if not text.startswith("    ", nxt):
            return text, text[start:nxt]
        end = nxt


# ---- what a hash covers -------------------------------------------------------------------------------------------
def test_nothing_recorded_means_submitted_and_there_is_an_item_for_each_kind(kb):
    st = _status(Path(kb.root))
    assert set(st.values()) == {"submitted"}
    kinds = {iid.split(":")[0] for iid in st if ":" in iid}
    # facts, relations, catalogue, safety declarations, floors, the guideline's texts, codes, sentences
    assert kinds >= {"fact", "relation", "catalog", "safety", "floor", "guideline", "codes", "text"}
    assert {r.id for r in kb.rules} <= set(st)


def test_the_issues_alarm_edit_voids_exactly_that_facts_approval_and_blocks_release(kb_copy, capsys):
    """The seeded defect of the issue: leg_weakness made a non-alarm question with a reworded question."""
    keys = make_board(kb_copy)
    before = _hashes(kb_copy)
    text, block = _fact_block(kb_copy, "leg_weakness")
    assert "alarm: true" in block
    edited = block.replace("alarm: true", "alarm: false")
    (kb_copy / "facts.yaml").write_text(text.replace(block, edited))
    after = _hashes(kb_copy)
    assert {i for i in before if before[i] != after.get(i)} == {"fact:leg_weakness"}
    (kb_copy / "facts.yaml").write_text(text)
    assert _approve(kb_copy, keys["Dr A"]) == 0 and _approve(kb_copy, keys["Dr B"]) == 0
    assert set(_status(kb_copy).values()) == {"approved"}
    (kb_copy / "facts.yaml").write_text(text.replace(block, edited))
    st = _status(kb_copy)
    assert {i for i, s in st.items() if s != "approved"} == {"fact:leg_weakness"}
    assert st["fact:leg_weakness"] == "changed"
    capsys.readouterr()
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 1
    assert "release: item fact:leg_weakness is changed since approval" in capsys.readouterr().err


EDITS = [
    # (file, old, new, the items whose content it changes besides rules showing a changed catalogue text)
    ("facts.yaml", "question: Is there decreased strength in the legs?", "question: Complete paralysis?", None),
    ("guideline.yaml", "text: Prompt evaluation within days to 2 weeks.", "text: Prompt evaluation.", None),
    ("codes.yaml", 'code: "282145008"', 'code: "282145009"', {"codes:bindings:unable_to_walk"}),
    (
        "codes.yaml",
        "observation_status: [final, amended, corrected, preliminary]",
        "observation_status: [final, amended, corrected, preliminary, registered]",
        {"codes:observation_status"},
    ),
]


@pytest.mark.parametrize("file,old,new,expected", EDITS, ids=["question", "catalogue text", "binding", "status"])
def test_an_edit_changes_exactly_the_items_that_show_or_use_what_it_changes(kb_copy, file, old, new, expected):
    before = _hashes(kb_copy)
    _edit(kb_copy / file, old, new)
    after = _hashes(kb_copy)
    changed = {i for i in before if before[i] != after.get(i)}
    if expected is None:  # a fact's or a catalogue entry's item, and every rule that shows its text
        kb = load(kb_copy)
        if file == "facts.yaml":
            expected = {"fact:leg_weakness"}
        else:
            expected = {"catalog:urgency:prompt"} | {
                r.id for r in kb.rules if any(getattr(c, "level", None) == "prompt" for c in r.then)
            }
    assert changed == expected


def test_the_safety_declarations_and_the_catalogue_windows_are_covered(kb_copy):
    guideline = kb_copy / "guideline.yaml"
    before = _hashes(kb_copy)
    # the completeness floor lowered: only that item changes
    _edit(guideline, "  floor: prompt", "  floor: routine")
    changed = {i for i, h in _hashes(kb_copy).items() if before[i] != h}
    assert changed == {"safety:completeness"}


def test_codes_yaml_is_validated_and_hashed_into_the_identity(kb_copy, capsys):
    sha = load(kb_copy).sha256
    _edit(kb_copy / "codes.yaml", 'code: "282145008"', 'code: "282145009"')
    assert load(kb_copy).sha256 != sha
    (kb_copy / "codes.yaml").write_text("garbage: [1, 2]\n")
    assert main(["validate", "--kb", str(kb_copy)]) == 2
    assert "codes.yaml:1:1: missing required key 'bindings'" in capsys.readouterr().err
    original = (Path(load().root) / "codes.yaml").read_text()
    (kb_copy / "codes.yaml").write_text(original.replace("fact: unable_to_walk", "fact: unable_to_wlak"))
    assert main(["validate", "--kb", str(kb_copy)]) == 2
    err = capsys.readouterr().err
    assert "unknown fact" in err and "did you mean 'unable_to_walk'" in err


def test_a_rules_lower_window_hour_is_covered(kb_copy):
    kb = load(kb_copy)
    lowered = [r for r in kb.rules if any(getattr(c, "within_hours_min", None) for c in r.then)]
    assert lowered, "the bundled knowledge base has a window range"
    rule = lowered[0]
    lo = next(c.within_hours_min for c in rule.then if getattr(c, "within_hours_min", None))
    before = content_hash(kb, rule)
    path = Path(rule.file)
    path = path if path.is_absolute() else Path.cwd() / path
    _edit(kb_copy / "rules" / path.name, f"within_hours_min: {lo:g}", f"within_hours_min: {lo + 1:g}")
    kb2 = load(kb_copy)
    assert content_hash(kb2, kb2.rule(rule.id)) != before


# ---- signatures and the quorum ------------------------------------------------------------------------------------
def test_one_signer_is_not_a_quorum_and_the_same_signer_twice_is_still_one(kb_copy, capsys):
    keys = make_board(kb_copy)
    assert _approve(kb_copy, keys["Dr A"], "red_flag.leg_weakness") == 0
    assert _approve(kb_copy, keys["Dr A"], "red_flag.leg_weakness") == 0
    st = item_statuses(load(kb_copy))["red_flag.leg_weakness"]
    assert (st.status, st.signers) == ("under_review", ("Dr A",))
    assert _approve(kb_copy, keys["Dr C"], "red_flag.leg_weakness") == 0
    assert item_statuses(load(kb_copy))["red_flag.leg_weakness"].status == "approved"


def test_without_a_board_nothing_counts_and_an_unsigned_approval_is_refused(kb_copy, capsys):
    assert main(["approve", "cancer.none", "--by", "Dr C", "--kb", str(kb_copy)]) == 2
    assert "an approval must be signed" in capsys.readouterr().err
    assert not (kb_copy / "approvals.yaml").exists()
    # a hand-written approval without a board is not believed
    h = items(load(kb_copy))["cancer.none"].content_hash
    (kb_copy / "approvals.yaml").write_text(
        f"records:\n  - {{rule: cancer.none, decision: approved, by: Dr C, date: '2026-01-01', content_hash: '{h}'}}\n"
    )
    assert _status(kb_copy)["cancer.none"] == "under_review"
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 1
    assert "no board.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("tamper", ["unsigned", "edited note", "edited hash", "forged by a non-member", "copied"])
def test_a_forged_edited_or_unsigned_record_is_reported_and_does_not_count(kb_copy, tmp_path, tamper):
    keys = make_board(kb_copy)
    assert _approve(kb_copy, keys["Dr A"], "cancer.none", "concerning.night_pain") == 0
    assert _approve(kb_copy, keys["Dr B"], "cancer.none", "concerning.night_pain") == 0
    assert _status(kb_copy)["cancer.none"] == "approved"
    path = kb_copy / "approvals.yaml"
    data = yaml.safe_load(path.read_text())
    target = data["records"][2]  # Dr B's approval of cancer.none
    assert (target["item"], target["by"]) == ("cancer.none", "Dr B")
    if tamper == "unsigned":
        del target["signature"]
    elif tamper == "edited note":
        target["note"] = "approved after discussion"
    elif tamper == "edited hash":
        target["content_hash"] = "sha256:" + "0" * 64
    elif tamper == "forged by a non-member":  # an outsider's own valid signature, naming a member
        import base64

        from lumbar_kb.engine.analysis.approvals import Record, new_key, payload, read_private_key

        new_key(tmp_path / "outsider.pem")
        key = read_private_key(tmp_path / "outsider.pem")
        rec = Record(target["item"], target["decision"], target["by"], target["date"], target["content_hash"])
        target["signature"] = base64.b64encode(key.sign(payload(load(kb_copy).name, rec))).decode()
    elif tamper == "copied":  # Dr A's signature of night_pain pasted onto Dr B's approval of cancer.none
        target["signature"] = data["records"][1]["signature"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    kb = load(kb_copy)
    assert item_statuses(kb)["cancer.none"].status == "under_review"
    assert item_statuses(kb)["concerning.night_pain"].status == "approved"
    (line,) = record_problems(kb)
    assert line.startswith("approvals.yaml record 3 (cancer.none, approved by Dr B):") and "does not count" in line


def test_a_key_others_can_read_is_refused_and_a_key_of_no_member_too(kb_copy, tmp_path, capsys):
    keys = make_board(kb_copy)
    os.chmod(keys["Dr A"], 0o644)
    assert _approve(kb_copy, keys["Dr A"], "cancer.none") == 2
    assert "others can read" in capsys.readouterr().err
    assert main(["board-key", str(tmp_path / "stranger.pem"), "--name", "X"]) == 0
    assert _approve(kb_copy, tmp_path / "stranger.pem", "cancer.none") == 2
    assert "belongs to no member" in capsys.readouterr().err
    assert main(["board-key", str(keys["Dr B"]), "--name", "Dr B"]) == 2  # a key is never overwritten
    assert not (kb_copy / "approvals.yaml").exists()


# ---- decisions -----------------------------------------------------------------------------------------------------
def _decide_all(kb, keys: list[Path], ids: list[str], decision: str = "accept") -> None:
    from lumbar_kb.engine.analysis.approvals import decide, read_private_key

    for key in keys:
        private = read_private_key(key)
        for iid in ids:
            decide(kb, iid, decision, "reviewed", None, "2026-01-02", private)


def test_every_inconsistency_interpretation_and_accepted_risk_needs_a_decision(kb):
    ids = set(decision_items(kb))
    assert {f"inconsistency:{i.id}" for i in kb.inconsistencies} <= ids
    assert {f"interpretation:{r.id}" for r in kb.rules if r.interpretation} <= ids
    # DCB0129: a residual risk of 3 or more is only acceptable when the board accepts it
    assert {f"hazard:{h.id}" for h in kb.hazards if h.residual_risk >= 3} <= ids
    assert not {f"hazard:{h.id}" for h in kb.hazards if h.residual_risk < 3} & ids


def test_release_needs_every_decision_made_by_a_quorum_and_a_change_reopens_it(kb_copy, capsys):
    keys = make_board(kb_copy)
    assert _approve(kb_copy, keys["Dr A"]) == 0 and _approve(kb_copy, keys["Dr B"]) == 0
    capsys.readouterr()
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 1
    err = capsys.readouterr().err
    kb = load(kb_copy)
    for iid in decision_items(kb):
        assert f"release: decision {iid} is open" in err
    assert "release: item" not in err and "release: rule" not in err  # everything else is approved
    assert main(["approve", "hazard:H1", "--key", str(keys["Dr A"]), "--kb", str(kb_copy)]) == 2  # not an approval
    first, *rest = decision_items(kb)
    args = ["decide", first, "accept", "--rationale", "reviewed", "--key", str(keys["Dr A"]), "--kb", str(kb_copy)]
    assert main(args) == 0  # the command once; the rest through the same function, on one loaded knowledge base
    _decide_all(kb, [keys["Dr C"]], [first])
    _decide_all(kb, [keys["Dr A"], keys["Dr C"]], rest)
    capsys.readouterr()
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 0, capsys.readouterr().err
    # one member rejects a hazard's residual risk: blocked again
    hazard = next(i for i in decision_items(kb) if i.startswith("hazard:"))
    args = ["decide", hazard, "reject", "--rationale", "too high", "--key", str(keys["Dr C"]), "--kb", str(kb_copy)]
    assert main(args) == 0
    assert decision_statuses(load(kb_copy))[hazard].state == "rejected"
    capsys.readouterr()
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 1
    assert f"release: decision {hazard} is rejected by the board" in capsys.readouterr().err
    # an inconsistency edited after it was accepted is open again
    inc = kb.inconsistencies[0]
    _edit(kb_copy / "inconsistencies.yaml", inc.title, inc.title + " (reworded)")
    assert decision_statuses(load(kb_copy))[f"inconsistency:{inc.id}"].state == "reopened"


def test_release_refuses_while_a_scenario_fails(kb_copy, capsys):
    keys = make_board(kb_copy, quorum=1)
    assert _approve(kb_copy, keys["Dr A"]) == 0
    kb = load(kb_copy)
    _decide_all(kb, [keys["Dr A"]], list(decision_items(kb)))
    capsys.readouterr()
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 0
    # the scenario's expectation (from the guideline: a mass with an abnormal radiograph is PROMPT) made wrong
    _edit(kb_copy / "scenarios" / "abnormal_radiograph.yaml", "urgency: prompt", "urgency: routine")
    assert main(["check", "--release", "--kb", str(kb_copy)]) == 1
    assert "release: test: 1 scenario(s) fail" in capsys.readouterr().err


# ---- the status command and FHIR ----------------------------------------------------------------------------------
def test_under_review_and_the_status_command(kb_copy, capsys):
    keys = make_board(kb_copy)
    args = ["approve", "imaging.xray_first", "--by", "Dr B", "--under-review", "--note", "check the 27%"]
    assert main([*args, "--kb", str(kb_copy)]) == 0
    assert _approve(kb_copy, keys["Dr C"], "cancer.none") == 0 and _approve(kb_copy, keys["Dr A"], "cancer.none") == 0
    capsys.readouterr()
    assert main(["status", "--format", "json", "--kb", str(kb_copy)]) == 0
    data = json.loads(capsys.readouterr().out)
    by_rule = {r["rule"]: r for r in data["rules"]}
    assert by_rule["imaging.xray_first"]["status"] == "under_review"
    assert by_rule["imaging.xray_first"]["records"][0]["note"] == "check the 27%"
    assert by_rule["cancer.none"]["status"] == "approved"
    total = len(items(load(kb_copy)))
    assert data["counts"] == {"submitted": total - 2, "under_review": 1, "approved": 1, "changed": 0}
    assert set(data["open_decisions"]) == set(decision_items(load(kb_copy)))
    assert main(["status", "--kb", str(kb_copy)]) == 0
    text = capsys.readouterr().out
    assert "imaging.xray_first" in text and "under review" in text and "approved by Dr C, Dr A" in text
    assert "board: 3 member(s), 2 distinct signature(s) needed" in text


def test_unknown_item_is_bad_input_and_writes_nothing(kb_copy, capsys):
    keys = make_board(kb_copy)
    assert _approve(kb_copy, keys["Dr A"], "red_flag.leg_weaknes") == 2
    assert "did you mean 'red_flag.leg_weakness'?" in capsys.readouterr().err
    assert not (kb_copy / "approvals.yaml").exists()


def test_a_malformed_approvals_file_is_bad_input_with_its_line(kb_copy, capsys):
    (kb_copy / "approvals.yaml").write_text(
        "records:\n  - rule: x\n    decision: maybe\n    by: A\n    date: '2026-01-01'\n    content_hash: sha256:00\n"
    )
    assert main(["status", "--kb", str(kb_copy)]) == 2
    assert "approvals.yaml:" in capsys.readouterr().err


def test_fhir_export_is_one_artifact_assessment_per_record(kb_copy, capsys):
    keys = make_board(kb_copy)
    main(["approve", "cancer.none", "--note", "agreed", "--key", str(keys["Dr C"]), "--kb", str(kb_copy)])
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
    assert statuses(kb)["cancer.none"].status == "under_review"  # one of a quorum of two


def test_a_release_whose_content_changed_needs_a_new_version_label(kb_copy, tmp_path, capsys):
    import shutil

    previous = tmp_path / "previous"
    shutil.copytree(kb_copy, previous)
    _edit(kb_copy / "facts.yaml", "question: Is there decreased strength in the legs?", "question: Weak legs?")
    capsys.readouterr()
    assert main(["check", "--release", "--against", str(previous), "--kb", str(kb_copy)]) == 1
    assert "but the version label is still 2025.11.12-1: a release must carry a new one" in capsys.readouterr().err
    _edit(kb_copy / "guideline.yaml", 'version: "2025.11.12-1"', 'version: "2025.11.12-2"')
    assert main(["check", "--release", "--against", str(previous), "--kb", str(kb_copy)]) == 1  # unsigned still
    assert "version label" not in capsys.readouterr().err
