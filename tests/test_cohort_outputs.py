"""What a cohort writes must be safe to open: in a spreadsheet, on a terminal, whatever the input's names.

Expectations come from OWASP's CSV-injection rule (a cell starting with = + - @, a tab or a carriage return is
prefixed with a single quote) and from `evaluate`: whatever it refuses, `cohort` refuses on every path.
"""

from __future__ import annotations

import csv
import io
import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from lumbar_kb.engine.errors import safe_text

from .commands import cli

FORMULAS = [
    '=HYPERLINK("http://x","y")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\tx",
]  # a CR in a cell is refused as input


def formula_cells(rows):
    return [c for r in rows for c in r if isinstance(c, str) and c[:1] in ("=", "+", "-", "@", "\t", "\r")]


def test_csv_cells_a_spreadsheet_would_run_are_neutralised_everywhere(capsys, tmp_path):
    extract = tmp_path / "e.csv"
    with extract.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "leg_weakness", "ward"])
        for formula in FORMULAS:
            writer.writerow([formula, "no", formula])
    db = tmp_path / "audit.duckdb"
    out_file = tmp_path / "rows.csv"
    code, stdout, _ = cli(
        capsys,
        "cohort",
        extract,
        "--keep-columns",
        "ward",
        "--out",
        out_file,
        "--format",
        "csv",
        "--db",
        db,
        "--quiet",
    )
    assert code == 0
    code, queried, _ = cli(
        capsys, "query", db, "--sql", "SELECT patient_id, kept['ward'] AS ward FROM decisions", "--format", "csv"
    )
    assert code == 0
    for text in (out_file.read_text(), stdout, queried):
        rows = list(csv.reader(io.StringIO(text)))
        assert not formula_cells(rows)
        ids = [r[0] if text is queried else r[2] for r in rows[1:]]
        assert ids == ["'" + f for f in FORMULAS]  # the value kept, made text
    wards = [r[-1] for r in csv.reader(io.StringIO(out_file.read_text()))][1:]
    assert wards == ["'" + f for f in FORMULAS]

    from lumbar_kb.cohort.output import spreadsheet_safe

    assert spreadsheet_safe("\rx") == "'\rx" and spreadsheet_safe("a=b") == "a=b" and spreadsheet_safe(-3) == -3
    code, raw, _ = cli(capsys, "cohort", extract, "--keep-columns", "ward", "--format", "csv", "--csv-raw", "--quiet")
    assert [r[2] for r in list(csv.reader(io.StringIO(raw)))[1:]] == FORMULAS


def test_control_and_bidi_characters_never_reach_the_terminal(capsys, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    hostile = "x\x1b[2J\u202eevil"
    (folder / f"{hostile}.yaml").write_text("leg_weakness: true\n")
    db = tmp_path / "audit.duckdb"
    code, out, err = cli(capsys, "cohort", folder, "--db", db)
    assert code == 0 and "\x1b" not in out + err and "\u202e" not in out + err
    assert safe_text(hostile) in out  # the patient listed, escaped
    code, out, err = cli(capsys, "query", db, "fired", "red_flag.leg_weakness")
    assert code == 0 and "\x1b" not in out and "\u202e" not in out and safe_text(hostile) in out
    # the Arabic letter mark (a bidi control too) and the line and paragraph separators: escaped as well
    for mark in ("\u061c", "\u2028", "\u2029"):
        assert safe_text(f"a{mark}b") == f"a\\u{ord(mark):04x}b"


def test_an_audit_store_named_as_duckdbs_special_names_is_that_file(capsys, tmp_path, monkeypatch):
    """`--db :memory:` is a file of that name, not an in-memory database that loses the run at its end."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "p.yaml").write_text("leg_weakness: true\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "cohort", folder, "--db", ":memory:", "--quiet")
    assert code == 0 and (tmp_path / ":memory:").stat().st_size > 0, err
    code, out, err = cli(capsys, "query", ":memory:", "runs", "--format", "json")
    assert code == 0 and len(json.loads(out)) == 1


def test_cohort_refuses_what_evaluate_refuses_on_every_path(capsys, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.yaml").write_text('leg_weakness: true\nid: "a\x1b[31m"\n')  # a raw ESC byte
    (folder / "b.json").write_text('{"id": "b\\u001b[31m", "leg_weakness": true}')  # escaped in JSON
    (folder / "c.yaml").write_text('id: "c\u202e"\nleg_weakness: true\n')  # a bidi override
    (folder / "ok.yaml").write_text("leg_weakness: true\n")
    for name in ("a.yaml", "b.json", "c.yaml"):
        code, _, err = cli(capsys, "evaluate", folder / name)
        assert code == 2 and "refused" in err, name
    code, out, err = cli(capsys, "cohort", folder, "--format", "json")
    assert code == 1 and json.loads(out)["summary"]["patients"] == 1
    skipped = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 3 and all("refused" in line for line in skipped)
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"id": "d\\u001b", "leg_weakness": true}\n{"leg_weakness": true}\n')
    code, _, err = cli(capsys, "cohort", lines)
    assert code == 1 and "p.jsonl:1" in err and "refused" in err
    table = tmp_path / "t.csv"
    table.write_text("id,leg_weakness\ne\x1b,yes\nf,yes\n")
    code, _, err = cli(capsys, "cohort", table)
    assert code == 1 and "t.csv:2:1: column 'id': control character U+001B in a value: refused" in err


def test_a_file_name_that_is_not_utf8_works(capsys, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsencode(folder) + b"/caf\xe9.yaml"
    with open(name, "w") as f:
        f.write("leg_weakness: true\n")
    for suffix in ("jsonl", "csv", "parquet"):
        out_file = tmp_path / f"rows.{suffix}"
        code, _, err = cli(capsys, "cohort", folder, "--out", out_file, "--db", tmp_path / "a.duckdb", "--quiet")
        assert code == 0, err
    row = json.loads((tmp_path / "rows.jsonl").read_text())
    assert row["source"].endswith("caf\\xe9.yaml") and row["urgency"] == "emergency"


def test_rows_carry_in_scope_as_evaluate_gives_it(capsys, tmp_path, evaluator):
    people = [{"leg_weakness": True}, {}, {"palpable_mass": True, "cancer_history": True}]
    lines = tmp_path / "p.jsonl"
    lines.write_text("".join(json.dumps(p) + "\n" for p in people))
    code, _, _ = cli(capsys, "cohort", lines, "--out", tmp_path / "o.jsonl", "--quiet")
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert code == 0 and [r["in_scope"] for r in rows] == [evaluator.evaluate(p).in_scope for p in people]


def test_progress_shows_a_total_and_time_left_for_every_input_kind(capsys, tmp_path, monkeypatch):
    from lumbar_kb.cohort import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"leg_weakness": true}\n\n{"pain": 1}\n{}\n')  # a blank line is not a row
    table = tmp_path / "t.csv"
    table.write_text("id,leg_weakness\na,yes\nb,no\n")
    for path, rows in ((lines, 3), (table, 2)):
        code, _, err = cli(capsys, "cohort", path, "--chunk-size", "1", "--jobs", "1")
        assert f" of {rows} rows" in err and " left" in err, err
    assert progress.time_left(25, 100, 10.0) == "0:00:30"
    assert progress.time_left(0, 100, 10.0) == "-" and progress.time_left(5, None, 1.0) == "-"


def test_whole_hours_stay_integers_in_parquet_and_the_stores_answers(capsys, tmp_path, evaluator, kb_copy):
    """The knowledge base's windows are whole hours (12, 336): Parquet holds them as integers, as `evaluate`
    gives them; a window that is not whole (a knowledge base with 0.5 h) makes the column floating point."""
    import pyarrow.parquet as pq

    lines = tmp_path / "p.jsonl"
    lines.write_text('{"leg_weakness": true}\n{"palpable_mass": true, "mass_persists": true}\n')
    code, _, _ = cli(capsys, "cohort", lines, "--out", tmp_path / "o.parquet", "--quiet")
    table = pq.read_table(tmp_path / "o.parquet")
    hours = [a["within_hours"] for r in table.to_pylist() for a in r["actions"]]
    expected = [
        a.within_hours
        for p in ({"leg_weakness": True}, {"palpable_mass": True, "mass_persists": True})
        for a in evaluator.evaluate(p).actions
    ]
    assert code == 0 and hours == expected and all(type(h) is int for h in hours if h is not None)
    assert str(table.schema.field("actions").type.value_type.field("within_hours").type) == "int64"
    imaging = kb_copy / "rules" / "imaging.yaml"
    imaging.write_text(imaging.read_text().replace("within_hours: 12\n", "within_hours: 12.5\n", 1))
    code, _, err = cli(capsys, "cohort", lines, "--kb", kb_copy, "--out", tmp_path / "f.parquet", "--quiet")
    assert code == 0, err
    kind = pq.read_table(tmp_path / "f.parquet").schema.field("actions").type.value_type.field("within_hours").type
    assert str(kind) == "double"

    db = tmp_path / "a.duckdb"
    first = json.loads(cli(capsys, "cohort", lines, "--db", db, "--format", "json", "--quiet")[1])["run_id"]
    second = json.loads(cli(capsys, "cohort", lines, "--kb", kb_copy, "--db", db, "--format", "json", "--quiet")[1])
    code, out, _ = cli(capsys, "query", db, "changed", first, second["run_id"], "--format", "json")
    actions = [a for r in json.loads(out) for a in r["actions_a"]]
    assert code == 0 and actions and all(not a.endswith(".0") for a in actions) and "mri_whole_spine@12" in actions


def test_an_output_that_cannot_be_written_is_bad_input_naming_it(capsys, tmp_path):
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"leg_weakness": true}\n')
    (tmp_path / "afile").write_text("")
    for option in ("--db", "--out"):
        code, out, err = cli(capsys, "cohort", lines, option, tmp_path / "afile" / "x.csv", "--quiet")
        assert (code, out) == (2, "") and "afile/x.csv" in err and "Traceback" not in err, err


_hours = st.one_of(st.none(), st.integers(0, 10_000).map(float))
_action = st.fixed_dictionaries(
    {
        "code": st.sampled_from(["mri_lumbar", "xray_lumbar"]),
        "within_hours_min": _hours,
        "within_hours": _hours,
        "window": st.one_of(st.none(), st.text(max_size=12)),
        "done": st.booleans(),
    }
)
_codes = st.lists(st.sampled_from(["a", "b", "=c"]), max_size=3)
_row = st.fixed_dictionaries(
    {
        "source": st.text(max_size=8),
        "row": st.one_of(st.none(), st.integers(1, 10**9)),
        "patient_id": st.one_of(st.none(), st.text(max_size=8)),
        "input_sha256": st.text("0123456789abcdef", min_size=64, max_size=64),
        "kb_sha256": st.just("k" * 64),
        "urgency": st.sampled_from(["emergency", "routine"]),
        "in_scope": st.booleans(),
        "completeness": st.sampled_from(["complete", "incomplete"]),
        "actions": st.lists(_action, max_size=3),
        "warnings": _codes,
        "differential": _codes,
        "fired": _codes,
        "unanswered_alarm": _codes,
        "could_escalate": _codes,
    },
    optional={
        "changes": st.lists(st.text(max_size=10), max_size=2),
        "kept": st.dictionaries(st.sampled_from(["ward", "admit_date"]), st.one_of(st.none(), st.text(max_size=6))),
    },
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(_row, min_size=1, max_size=6),
    compared=st.booleans(),
    kept=st.sampled_from([(), ("ward",), ("admit_date", "ward")]),
    whole_hours=st.booleans(),
)
def test_the_parquet_out_table_taken_from_the_stores_is_the_one_encoded_directly(rows, compared, kept, whole_hours):
    """With --db and a Parquet --out, the file's table is selected from the store's Arrow table of the same rows
    (`output.from_stored`) rather than encoded twice: it must equal the table encoded from the rows, with
    compared changes, kept columns (a cell missing or null) and whole hours."""
    from lumbar_kb.cohort.output import encode_table, from_stored

    stored = encode_table(rows, compared=True, kept=True)
    direct = encode_table(rows, compared, kept, whole_hours)
    assert from_stored(stored, compared, kept, whole_hours).equals(direct)
