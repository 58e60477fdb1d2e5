"""The audit store (`cohort --db`), `query`, `replay`, and the what-if of a rule change (`--compare-kb`).

The rule change seeded here: whole-spine MRI for suspected cord compression within 6 hours instead of 12.
From first principles the decisions that change are exactly those of the patients who answered yes to
suspected_cord_compression (no rule gives that MRI sooner than 6 hours), and each changes by that window.
"""

from __future__ import annotations

import json
import pickle
import random

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumbar_kb.engine.patient import random_patient

from .commands import cli

N = 80
# the suspected-compression rule's MRI window (the red-flag rule gives the department immediately and the MRI in
# 12 hours too: only this rule sets `urgency: emergency` right before them)
LEAD = (
    "      - urgency: emergency\n      - action: emergency_department\n        within_hours: 0\n"
    "        window: immediately\n      - action: mri_whole_spine\n"
)
OLD = LEAD + "        within_hours: 12\n        window: within 12 hours\n"
NEW = LEAD + "        within_hours: 6\n        window: within 6 hours\n"


@pytest.fixture
def people(kb, tmp_path):
    rng = random.Random(7)
    rows = [{"id": f"p{i}", **random_patient(kb, rng)} for i in range(N)]
    rows[0] = {"id": "p0", "suspected_cord_compression": True}  # at least one patient the change touches
    path = tmp_path / "people.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def sooner_mri(kb_copy):
    imaging = kb_copy / "rules" / "imaging.yaml"
    text = imaging.read_text()
    assert text.count(OLD) == 1
    imaging.write_text(text.replace(OLD, NEW))


def test_the_store_answers_the_named_questions(capsys, people, tmp_path):
    path, rows = people
    db = tmp_path / "audit.duckdb"
    out_file = tmp_path / "rows.jsonl"
    code, out, _ = cli(capsys, "cohort", path, "--db", db, "--out", out_file, "--format", "json", "--quiet")
    assert code == 0
    run_id = json.loads(out)["run_id"]
    decided = [json.loads(line) for line in out_file.read_text().splitlines()]
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status, patients FROM runs WHERE run_id = ?", [run_id]).fetchone() == ("done", N)
    assert con.execute("SELECT count(*) FROM decisions").fetchone() == (N,)
    steps = con.execute("SELECT count(*) FROM trace WHERE run_id = ?", [run_id]).fetchone()[0]
    assert steps == sum(len(r["fired"]) for r in decided)
    con.close()

    code, out, _ = cli(capsys, "query", db, "fired", "imaging.mri_window.compression", "--format", "json")
    fired = [r["patient_id"] for r in json.loads(out)]
    assert code == 0 and fired == [r["id"] for r in rows if r.get("suspected_cord_compression") is True]

    code, out, _ = cli(capsys, "query", db, "never-fired", "--format", "json")
    summary = json.loads(cli(capsys, "cohort", path, "--format", "json", "--quiet")[1])["summary"]
    assert [r["rule"] for r in json.loads(out)] == summary["never_fired"]

    code, out, _ = cli(capsys, "query", db, "emergencies-by-window", "--format", "json")
    by_window = {r["window"]: r["patients"] for r in json.loads(out)}
    emergencies = [r for r in decided if r["urgency"] == "emergency"]
    assert sum(by_window.values()) == len(emergencies)
    with_mri_12 = sum(
        any(a["code"] == "mri_whole_spine" and a["within_hours"] == 12 for a in r["actions"]) for r in emergencies
    )
    assert by_window.get("within 12 hours", 0) == with_mri_12 > 0

    code, out, _ = cli(capsys, "query", db, "runs")
    assert code == 0 and run_id in out and "(1 row(s))" in out


def test_replay_certifies_and_finds_a_tampered_decision(capsys, people, tmp_path, kb_copy):
    path, _ = people
    db = tmp_path / "audit.duckdb"
    code, out, _ = cli(capsys, "cohort", path, "--kb", kb_copy, "--db", db, "--format", "json", "--quiet")
    run_id = json.loads(out)["run_id"]
    sooner_mri(kb_copy)  # the rules on disk change after the run: replay must use the run's own
    code, out, _ = cli(capsys, "replay", run_id, "--db", db)
    assert code == 0 and f"{N} decision(s)" in out and "certified" in out
    con = duckdb.connect(str(db))
    tamper = "CASE WHEN urgency = 'emergency' THEN 'routine' ELSE 'emergency' END"
    stored = con.execute(
        f"UPDATE decisions SET urgency = {tamper} WHERE run_id = ? AND seq = 2 RETURNING urgency", [run_id]
    )
    tampered = stored.fetchone()[0]
    con.close()
    code, out, _ = cli(capsys, "replay", run_id, "--db", db)
    assert code == 1 and "1 decision(s) DIFFER" in out and f":2: urgency: stored '{tampered}'" in out
    code, _, err = cli(capsys, "replay", "no-such-run", "--db", db)
    assert code == 2 and "no run 'no-such-run'" in err
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE runs (x INTEGER)").close()
    code, _, err = cli(capsys, "query", other, "runs")
    assert code == 2 and "not an audit store" in err and "not exactly those `cohort --db` makes" in err


def test_a_rule_change_lists_exactly_the_decisions_it_changes(capsys, people, tmp_path, kb_copy):
    path, rows = people
    sooner_mri(kb_copy)
    out_file = tmp_path / "what-if.jsonl"
    code, out, _ = cli(capsys, "cohort", path, "--kb", kb_copy, "--compare-kb", kb_copy.parent / "nothing", "--quiet")
    assert code == 2  # a missing knowledge base is bad input
    from lumbar_kb.engine.loader import default_kb_dir

    args = ("cohort", path, "--kb", kb_copy, "--compare-kb", default_kb_dir(), "--out", out_file, "--quiet")
    code, out, _ = cli(capsys, *args, "--format", "json")
    assert code == 0
    changed = json.loads(out)["summary"]["changed"]
    touched = [r["id"] for r in rows if r.get("suspected_cord_compression") is True]
    assert changed == {"patients": len(touched), "changes": {"action mri_whole_spine window 12 h -> 6 h": len(touched)}}
    decided = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["patient_id"] for r in decided if r["changes"]] == touched
    code, text, _ = cli(capsys, *args)
    assert (
        f"{len(touched)} (" in text
        and "action mri_whole_spine window 12 h -> 6 h" in text
        and "people.jsonl:1 (p0)" in text
    )

    db = tmp_path / "two-runs.duckdb"
    first = json.loads(cli(capsys, "cohort", path, "--db", db, "--format", "json", "--quiet")[1])["run_id"]
    second = json.loads(cli(capsys, "cohort", path, "--kb", kb_copy, "--db", db, "--format", "json", "--quiet")[1])[
        "run_id"
    ]
    code, out, _ = cli(capsys, "query", db, "changed", first, second, "--format", "json")
    assert code == 0 and [r["patient_id"] for r in json.loads(out)] == touched


def afresh(trace) -> tuple[list[tuple], str]:
    """A trace's rows in the audit store (step, rule, matched facts as JSON) and their text in the run's digest,
    worked out with json's own encoder: what `decisions.Steps` must give."""
    rows = [(f.order, f.rule, json.dumps(f.matched, sort_keys=True, ensure_ascii=False)) for f in trace.firings]
    return rows, json.dumps([list(r) for r in rows], separators=(",", ":"), ensure_ascii=True)


def test_a_traces_kept_steps_give_its_rows_and_text_afresh(kb, evaluator, monkeypatch):
    """A cohort numbers each distinct step (a rule and the values of the facts it reads, or its matched facts)
    once and keeps each trace's text by its numbers (`Steps`): for every one of a cohort's worth of random
    patients, answers repeating and every third trace unpickled (its firings' matched facts, no evidence), the
    rows and text from the kept steps equal those of the patient's own trace worked out afresh, with the texts'
    bound reached and the steps renewed part-way (as a cohort renews them between chunks)."""
    from lumbar_kb.cohort import decisions

    monkeypatch.setattr(decisions.Steps, "TEXTS_KEPT", 300)
    monkeypatch.setattr(decisions.Steps, "KEPT", 120)
    steps = decisions.Steps(kb)
    rng = random.Random(27)
    patients = [random_patient(kb, rng) for _ in range(1500)]
    renewed = 0
    for n, patient in enumerate(patients + patients[:300]):
        if steps.full():
            steps.renew()
            renewed += 1
        trace = evaluator.engine.run(patient)
        if n % 3 == 0:  # a trace unpickled holds its firings' matched facts, not their evidence
            trace = pickle.loads(pickle.dumps(trace))
        numbers, text = steps(trace)
        rows, expected = afresh(evaluator.engine.run(patient))
        assert text == expected and _trace_rows(steps.table([numbers]), 1) == [rows]
    assert renewed > 0 and 0 < len(steps._texts) <= 300


def _trace_rows(table, n: int) -> list[list[tuple]]:
    """A chunk's trace table (Steps.table) as each of its n rows' (step, rule, matched)."""
    out: list[list[tuple]] = [[] for _ in range(n)]
    for row, step, rule, matched in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
        out[row].append((step, rule, matched))
    return out


def test_a_chunks_trace_table_is_each_rows_trace_even_when_the_steps_are_renewed(kb, evaluator, monkeypatch):
    """The audit store's trace rows of a chunk are taken from the kept steps by number: for each row, repeated
    answers (a kept decision) included, they are those of that patient's own trace afresh; also over chunks
    between which the steps are renewed, when a decision kept with the old numbers must not be used again."""
    from lumbar_kb.cohort import decisions, runner
    from lumbar_kb.cohort.inputs import Chunk

    monkeypatch.setattr(decisions.Steps, "KEPT", 60)
    monkeypatch.setattr(runner, "_DECIDED", {})
    runner.remember(kb)
    rng = random.Random(28)
    patients = [random_patient(kb, rng) for _ in range(120)]
    generations = set()
    for index, chunk in enumerate([patients[:60], patients[60:] + patients[:30], patients[:90]]):
        items = [(n, json.dumps(p)) for n, p in enumerate(chunk, 1)]
        out = runner.evaluate_chunk(Chunk(index, "jsonl", "p.jsonl", items), runner.Job(kb.sha256, store=True))
        got = _trace_rows(out.trace, len(chunk))
        assert got == [afresh(evaluator.engine.run(p))[0] for p in chunk]
        generations.add(runner._STEPS[kb.sha256].generation)
    assert len(generations) == 3  # each chunk found the bound reached and renewed the steps: memory stays bounded


def test_each_rows_link_in_the_run_digest_is_the_one_replay_recomputes(kb):
    """A cohort works out the digest of what a row's decision fixes once per decision (`decided_digest`) and
    joins each row's own columns to it (`leaf_of`): the bytes must be `leaf` of the row, its inputs and its
    trace, as replay recomputes them from the store. On a chunk whose answers repeat (the kept decision used
    again), and on rows with kept columns and a compared knowledge base's changes; a row's own column or its
    decision's changed must change its link."""
    from lumbar_kb.cohort import decisions
    from lumbar_kb.cohort.inputs import Chunk
    from lumbar_kb.cohort.runner import Job, evaluate_chunk, remember

    remember(kb)
    rng = random.Random(26)
    patients = [random_patient(kb, rng) for _ in range(150)]
    items = [(n, json.dumps(p)) for n, p in enumerate(patients + patients[:50], 1)]
    out = evaluate_chunk(Chunk(0, "jsonl", "p.jsonl", items), Job(kb.sha256, store=True))
    assert len(out.rows) == 200
    traces = _trace_rows(out.trace, len(out.rows))
    expected = [decisions.leaf(r, i, t) for r, i, t in zip(out.rows, out.inputs, traces, strict=True)]
    assert out.leaves == b"".join(expected)
    assert all(inputs == decisions.canonical(json.loads(inputs)) for inputs in out.inputs)  # stored as canonical
    for row, inputs, steps in zip(out.rows[:40], out.inputs, traces, strict=False):
        for extra in ({"kept": {"ward": "B2", "admit_date": "2026-01-02"}}, {"changes": ["urgency routine -> prompt"]}):
            varied = {**row, **extra}
            part = {c: varied[c] for c in decisions.DECIDED_COLUMNS}
            steps_text = decisions._LEAF(decisions._steps(steps))
            decided = decisions.decided_digest(part, varied.get("changes"), inputs, steps_text)
            joined = decisions.leaf_of(varied, decided)
            assert joined == decisions.leaf(varied, inputs, steps), extra
            assert joined != decisions.leaf(row, inputs, steps), extra


# values a row or a decision could hold, chosen so that equal values of different types (1, 1.0, True, "1") and
# texts json escapes (quotes, control and bidi characters, a lone surrogate from a file name) meet in one run
_ODD = st.sampled_from([1, 1.0, True, "1", 0, False, 0.0, "", None, 'a"b\\c', "é", "\x1b[2J", "\u202e", "\udcff"])
_ODD_TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["1", "true", "null", "", "\u202e", "\udcff", '"']))
_SCALAR = st.one_of(_ODD, _ODD_TEXT, st.integers(-(2**70), 2**70), st.floats(allow_nan=True))
_LIST = st.one_of(
    st.none(),
    st.lists(_ODD_TEXT, max_size=6),
    st.lists(_ODD, max_size=6),
    st.lists(st.one_of(_SCALAR, st.lists(_ODD, max_size=2), st.dictionaries(_ODD_TEXT, _ODD, max_size=2)), max_size=4),
)
_FEW = st.sampled_from([1, 1.0, True, "1", None])  # an action's fields collide often: its text is kept by them
_HOURS = st.one_of(_FEW, st.booleans(), st.integers(0, 10**6), st.floats(0, 1e6))
_ACTION = st.fixed_dictionaries(
    {
        "code": st.one_of(_FEW, _ODD_TEXT, _ODD),
        "within_hours": _HOURS,
        "window": st.one_of(_FEW, _ODD_TEXT, _ODD),
        "done": st.sampled_from([True, False, 0, 1]),
    },
    optional={"within_hours_min": _HOURS},
)


@st.composite
def _rows(draw):
    """A decision row with its stored inputs and trace, the usual types and anything else a row could hold."""
    row = {
        column: draw(_LIST if column in decisions_module().LIST_COLUMNS else _SCALAR)
        for column in decisions_module().COLUMNS
        if column != "actions"
    }
    row["actions"] = draw(st.one_of(st.lists(_ACTION, max_size=4), st.none(), st.lists(_ODD, max_size=2)))
    row["changes"] = draw(_LIST)
    row["kept"] = draw(st.one_of(st.none(), st.dictionaries(_ODD_TEXT, st.one_of(st.none(), _ODD_TEXT), max_size=3)))
    inputs = draw(_ODD_TEXT)
    steps = draw(st.lists(st.tuples(st.integers(1, 50), _ODD_TEXT, _ODD_TEXT), max_size=4))
    return row, inputs, steps


def decisions_module():
    from lumbar_kb.cohort import decisions

    return decisions


@given(st.lists(_rows(), min_size=1, max_size=6))
def test_a_links_fast_text_is_the_one_jsons_encoder_writes(rows):
    """A cohort's link of a row (`decided_digest`, then `leaf_of`) joins each value's text, strings' texts kept
    across rows: for every row, of the usual types or not, it must be the link `leaf` encodes with json's own
    encoder, which replay recomputes; across rows, so that a kept text is never another value's (1, 1.0, True
    and "1" are not one text). A row json cannot encode is refused by both."""
    decisions = decisions_module()
    for row, inputs, steps in rows:
        part = {column: row[column] for column in decisions.DECIDED_COLUMNS}
        steps_text = decisions._LEAF(decisions._steps(steps))
        try:
            expected = decisions.leaf(row, inputs, steps)
        except TypeError:  # a row json cannot encode (actions not a list of mappings): the link is refused too
            with pytest.raises(TypeError):
                decisions.leaf_of(row, decisions.decided_digest(part, row["changes"], inputs, steps_text))
            continue
        assert decisions.leaf_of(row, decisions.decided_digest(part, row["changes"], inputs, steps_text)) == expected


@pytest.mark.parametrize("first, second", [(1, True), (True, 1), (1, 1.0), (1.0, True), (0, False), (False, 0.0)])
def test_a_kept_text_is_never_that_of_an_equal_value_of_another_type(first, second):
    """Equal values of different types have different texts (1, true, 1.0): a row holding one, then a row holding
    the other, in every column and in an action's code and window, each get the link json's own encoder gives."""
    decisions = decisions_module()
    decisions._TEXTS.clear()
    decisions._ACTION_TEXTS.clear()
    for value in (first, second):
        row = {column: [value] if column in decisions.LIST_COLUMNS else value for column in decisions.COLUMNS}
        row["actions"] = [{"code": value, "within_hours": 1, "window": value, "done": True}]
        row["changes"] = [value]
        part = {column: row[column] for column in decisions.DECIDED_COLUMNS}
        joined = decisions.leaf_of(row, decisions.decided_digest(part, row["changes"], "{}", "[]"))
        assert joined == decisions.leaf(row, "{}", []), value
