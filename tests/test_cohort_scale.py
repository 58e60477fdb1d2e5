"""`lumbar-kb cohort` at scale: extracts in, decision rows out, bad rows skipped, every core, Dask.

Random valid patients (seeded) are written as JSON Lines, CSV and Parquet; every decision row must be what
`evaluate` gives for that patient, whatever the format, the number of processes, or the engine running them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random

import pytest

from lumbar_kb.engine.patient import random_patient

from .commands import cli

N = 120


@pytest.fixture(scope="module")
def cohort(kb, tmp_path_factory):
    """N random patients with ids, and the same patients as JSON Lines, CSV (own column names and Y/N
    spellings, read through a mapping file) and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(13)
    people = [{"id": f"p{i}", **random_patient(kb, rng)} for i in range(N)]
    for i in range(10):  # patients with the same answers as others (a decision may be reused: still theirs)
        people[N - 1 - i] = {**people[i], "id": f"p{N - 1 - i}"}
    folder = tmp_path_factory.mktemp("cohort")
    names = [f.name for f in kb.input_facts]
    (folder / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in people))
    with (folder / "p.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["patient_no", "extract_date"] + [n.upper() for n in names])
        for p in people:
            cells = [{True: "Y", False: "N", None: ""}.get(p.get(n), p.get(n)) for n in names]
            writer.writerow([p["id"], "2026-11-30"] + cells)
    (folder / "mapping.yaml").write_text(
        "columns:\n  patient_no: id\n"
        + "".join(f"  {n.upper()}: {n}\n" for n in names)
        + "ignore: [extract_date]\nvalues:\n  '*': {Y: true, N: false}\n"
    )
    columns = {"id": pa.array([p["id"] for p in people])}
    for n in names:
        kind = pa.bool_() if kb.facts[n].type == "bool" else pa.string()
        columns[n] = pa.array([p.get(n) for p in people], kind)
    pq.write_table(pa.table(columns), folder / "p.parquet")
    return folder, people


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_row_is_what_evaluate_gives(capsys, cohort, evaluator, tmp_path):
    folder, people = cohort
    code, _, err = cli(capsys, "cohort", folder / "p.jsonl", "--out", tmp_path / "rows.jsonl", "--jobs", "1")
    assert code == 0 and f"cohort: {N} patient(s)" in err and "patients/s" in err
    rows = rows_of(tmp_path / "rows.jsonl")
    assert len(rows) == N
    for number, (row, person) in enumerate(zip(rows, people, strict=True), 1):
        facts = {k: v for k, v in person.items() if k != "id"}
        expected = evaluator.evaluate(facts).to_dict()
        assert (row["source"].endswith("p.jsonl"), row["row"], row["patient_id"]) == (True, number, person["id"])
        assert row["urgency"] == expected["urgency"]
        assert [(a["code"], a["within_hours"], a["window"], a["done"]) for a in row["actions"]] == [
            (a["code"], a["within_hours"], a["window"], a["done"]) for a in expected["actions"]
        ]
        assert row["warnings"] == [w["code"] for w in expected["warnings"]]
        assert row["differential"] == [d["code"] for d in expected["differential"]]
        assert row["fired"] == [f["rule"] for f in expected["fired"]]
        assert row["unanswered_alarm"] == expected["unanswered_alarm"]
        assert row["could_escalate"] == [e["fact"] for e in expected["could_escalate"]]
        assert row["kb_sha256"] == expected["knowledge_base"]["sha256"]
        # the documented hash: sha256 of the answers as JSON with sorted keys and no spaces
        answered = {k: v for k, v in facts.items() if v is not None}
        canonical = json.dumps(answered, sort_keys=True, separators=(",", ":"))
        assert row["input_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()


def test_the_same_patients_give_the_same_decisions_in_every_format(capsys, cohort, tmp_path):
    folder, _ = cohort
    decided = {}
    for name, extra in (("p.jsonl", []), ("p.csv", ["--mapping", folder / "mapping.yaml"]), ("p.parquet", [])):
        code, _, err = cli(capsys, "cohort", folder / name, "--out", tmp_path / f"{name}.jsonl", "--quiet", *extra)
        assert (code, err) == (0, "")
        decided[name] = [
            {k: v for k, v in r.items() if k not in ("source", "row")} for r in rows_of(tmp_path / f"{name}.jsonl")
        ]
    assert decided["p.jsonl"] == decided["p.csv"] == decided["p.parquet"]
    assert len(decided["p.csv"]) == N


def test_output_formats_hold_the_same_rows(capsys, cohort, tmp_path):
    import pyarrow.parquet as pq

    folder, _ = cohort
    for suffix in ("jsonl", "csv", "parquet"):
        assert cli(capsys, "cohort", folder / "p.jsonl", "--out", tmp_path / f"o.{suffix}", "--quiet")[0] == 0
    jsonl = rows_of(tmp_path / "o.jsonl")
    parquet = pq.read_table(tmp_path / "o.parquet").to_pylist()
    table = list(csv.DictReader((tmp_path / "o.csv").open()))
    assert parquet == jsonl
    assert [json.loads(r["actions"]) for r in table] == [r["actions"] for r in jsonl]
    assert [r["fired"].split(";") if r["fired"] else [] for r in table] == [r["fired"] for r in jsonl]


def test_bad_rows_are_reported_by_file_and_row_and_skipped(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"leg_weakness": true}\n'
        '{"leg_weaknes": true}\n'  # misspelt fact
        "\n"  # a blank line is not a row
        '{"leg_weakness": "sometimes"}\n'
        "{not json\n"
        '{"palpable_mass": true, "palpable_mass": false}\n'
        '{"palpable_mass": true}\n'
    )
    code, out, err = cli(capsys, "cohort", bad, "--out", tmp_path / "rows.jsonl", "--format", "json")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert lines[0].startswith("skipped: ") and ":2:2: fact 'leg_weaknes': unknown fact" in lines[0]
    assert "did you mean 'leg_weakness'?" in lines[0]
    assert ":4:18: fact 'leg_weakness': must be true or false" in lines[1]
    assert ":5:" in lines[2] and "invalid JSON" in lines[2]
    assert ":6:" in lines[3] and "duplicate key 'palpable_mass'" in lines[3]
    assert len(lines) == 4
    summary = json.loads(out)["summary"]
    assert (summary["patients"], summary["bad_rows"]) == (2, 4)
    assert [r["row"] for r in rows_of(tmp_path / "rows.jsonl")] == [1, 7]


def test_bad_table_cells_name_the_column(capsys, kb, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    extract = tmp_path / "e.csv"
    extract.write_text("id,leg_weakness,primary_cancer\na,yes,\nb,maybe,\nc,,lung\nd,no,lungs\ne,no\n")
    code, out, err = cli(capsys, "cohort", extract, "--format", "json")
    assert code == 1
    assert "e.csv:3:2: fact 'leg_weakness': must be true or false" in err
    assert "e.csv:5:3: fact 'primary_cancer': must be one of" in err and "did you mean 'lung'?" in err
    assert "e.csv:6: this row has 2 cells; the header has 3" in err
    assert json.loads(out)["summary"]["patients"] == 2
    pq.write_table(pa.table({"pain": pa.array([True, None]), "leg_weakness": pa.array(["x", None])}), tmp_path / "t.pq")
    code, out, err = cli(capsys, "cohort", tmp_path / "t.pq", "--format", "json")
    assert code == 2 and out == "" and "t.pq:1:1: column 'pain' is not an input fact" in err


def test_a_header_that_is_not_the_vocabulary_is_bad_input_before_anything_runs(capsys, tmp_path):
    extract = tmp_path / "e.csv"
    extract.write_text("id,leg_weaknes\na,true\n")
    code, out, err = cli(capsys, "cohort", extract, "--out", tmp_path / "o.jsonl")
    assert (code, out) == (2, "") and "e.csv:1:2: column 'leg_weaknes' is not an input fact" in err
    assert "did you mean 'leg_weakness'?" in err and not (tmp_path / "o.jsonl").exists()


def test_two_processes_give_byte_identical_output_to_one(capsys, cohort, tmp_path):
    folder, _ = cohort
    outputs = []
    for jobs in ("1", "2"):
        out_file = tmp_path / f"j{jobs}.jsonl"
        code, summary, _ = cli(
            capsys, "cohort", folder / "p.parquet", "--jobs", jobs, "--chunk-size", "15", "--out", out_file
        )
        assert code == 0
        outputs.append((out_file.read_bytes(), summary))
    assert outputs[0] == outputs[1] and outputs[0][0].count(b"\n") == N


def test_a_dask_local_cluster_of_two_workers_gives_identical_output(capsys, cohort, tmp_path):
    """Both ways of --dask: a LocalCluster the command starts, and a scheduler address (here one of a
    LocalCluster this test starts, as a real cluster's would be given)."""
    from distributed import LocalCluster

    folder, _ = cohort
    code, summary, _ = cli(capsys, "cohort", folder / "p.jsonl", "--jobs", "1", "--out", tmp_path / "one.jsonl")
    assert code == 0
    argv = ("cohort", folder / "p.jsonl", "--chunk-size", "40")
    code, own_cluster, _ = cli(capsys, *argv, "--dask", "--jobs", "2", "--out", tmp_path / "d.jsonl")
    assert code == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        code, at_address, _ = cli(capsys, *argv, "--dask", cluster.scheduler_address, "--out", tmp_path / "a.jsonl")
    assert code == 0
    expected = (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "d.jsonl").read_bytes() == expected == (tmp_path / "a.jsonl").read_bytes()
    assert own_cluster == summary == at_address


def test_a_bad_mapping_file_is_bad_input_naming_its_line(capsys, cohort, tmp_path):
    folder, _ = cohort
    mapping = tmp_path / "m.yaml"
    mapping.write_text("columns:\n  patient_no: id\n  WEAK: leg_weaknes\nvalues: {'*': {Y: true}}\n")
    code, out, err = cli(capsys, "cohort", folder / "p.csv", "--mapping", mapping)
    assert (code, out) == (2, "") and "m.yaml:3:9: 'leg_weaknes' is not an input fact" in err
    assert "did you mean 'leg_weakness'?" in err


def test_progress_is_plain_lines_off_a_terminal_and_ends_with_the_rate(monkeypatch):
    import io

    from lumbar_kb.cohort import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    stream = io.StringIO()
    bar = progress.Progress(total=30, stream=stream)
    bar.advance(10)
    bar.advance(18, bad=2)
    last = bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("cohort: 10 of 30 rows") and lines[1].startswith("cohort: 30 of 30 rows")
    assert lines[-1] == last and last.startswith("cohort: 28 patient(s), 2 bad row(s) skipped in ")
    assert last.endswith(" patients/s") and "\x1b" not in stream.getvalue()  # no terminal codes in a log


def test_a_parquet_file_gets_row_groups_of_several_chunks_and_every_row(capsys, cohort, tmp_path, monkeypatch):
    """Chunks' rows are held until ROW_GROUP_ROWS and written as one row group; the rest at the end: 120 rows
    in chunks of 15 with groups of at least 50 rows are groups of 60 and 60, the rows those of JSON Lines."""
    import pyarrow.parquet as pq

    from lumbar_kb.cohort import output

    monkeypatch.setattr(output, "ROW_GROUP_ROWS", 50)
    folder, _ = cohort
    for suffix in ("parquet", "jsonl"):
        code, _, _ = cli(
            capsys, "cohort", folder / "p.jsonl", "--chunk-size", "15", "--out", tmp_path / f"o.{suffix}", "--quiet"
        )
        assert code == 0
    meta = pq.ParquetFile(tmp_path / "o.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [60, 60]
    assert pq.read_table(tmp_path / "o.parquet").to_pylist() == rows_of(tmp_path / "o.jsonl")


def test_the_command_uses_the_system_allocator_for_arrow_unless_the_user_chose_one(capsys, cohort, monkeypatch):
    """pyarrow's own allocator keeps ~20 MB more resident over a run: the cohort command (and the workers it
    starts, which inherit the environment) asks for the C library's, but an allocator the user chose stays."""
    import os

    folder, _ = cohort
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    assert cli(capsys, "cohort", folder / "p.jsonl", "--quiet")[0] == 0
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system"
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    assert cli(capsys, "cohort", folder / "p.jsonl", "--quiet")[0] == 0
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "jemalloc"


def test_canonical_answers_joined_from_fragments_are_the_encoders(kb):
    """A cohort hashes and keys each patient's answers by their canonical JSON, joined from each vocabulary answer's
    fragment: byte for byte the encoder's text (sorted keys, no spaces) for random patients, and for what only an
    API caller could pass (1 for yes, a key or value outside the vocabulary, no answers), encoded as it is."""
    from lumbar_kb.cohort.decisions import Canonical, canonical

    joined = Canonical(kb)
    rng = random.Random(43)
    odd = [{}, {"leg_weakness": 1}, {"primary_cancer": "ünïcode"}, {"not_a_fact": True}, {"night_pain": None}]
    for inputs in [random_patient(kb, rng) for _ in range(500)] + odd:
        assert joined(inputs) == canonical(inputs) == json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    assert joined({"radiograph": "normal", "leg_weakness": True}) == '{"leg_weakness":true,"radiograph":"normal"}'


def test_parquet_columns_built_from_flattened_lists_are_the_rows(kb):
    """A chunk's decision rows become an Arrow table column by column, each list column from its values flattened
    with offsets (an action's from a column per field): the table Arrow makes of the same rows one by one, for
    random patients' rows, rows with no actions or an empty list, an action with no window, the --compare-kb
    column, and a missing list (None)."""
    import pyarrow as pa

    from lumbar_kb.cohort.inputs import Chunk
    from lumbar_kb.cohort.output import _for_arrow, arrow_schema, encode
    from lumbar_kb.cohort.runner import Job, evaluate_chunk, remember

    remember(kb)
    rng = random.Random(47)
    items = [(n, json.dumps(random_patient(kb, rng))) for n in range(1, 301)]
    rows = evaluate_chunk(Chunk(0, "jsonl", "p.jsonl", items), Job(kb.sha256)).rows
    assert any(not r["actions"] for r in rows) and any(len(r["actions"]) > 1 for r in rows)
    no_window = {"code": "x", "within_hours_min": None, "within_hours": None, "window": None, "done": False}
    odd = [{**rows[0], "actions": [no_window], "warnings": []}, {**rows[1], "fired": None}]
    for compared, chunk in ((False, rows), (False, odd), (True, [{**r, "changes": ["urgency a -> b"]} for r in rows])):
        expected = pa.Table.from_pylist([_for_arrow(r) for r in chunk], arrow_schema(compared))
        assert encode(chunk, "parquet", compared).equals(expected)
