"""The analysts' guide's SQL runs, as written, through `query --sql` on a real audit store, and answers what its
comment says it answers (checked against the engine's own decisions for the patients the test wrote)."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

from lumbar_kb.engine.patient import random_patient
from lumbar_kb.main import main

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "analysts-guide.md"


def sql_blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_every_sql_example_of_the_guide_runs_on_a_real_store(capsys, kb, evaluator, tmp_path):
    rng = random.Random(31)
    names = [f.name for f in kb.input_facts]
    extract = tmp_path / "e.csv"
    people = []
    with extract.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *names, "ward"])
        for i in range(200):
            facts, ward = random_patient(kb, rng), rng.choice(["north", "south"])
            people.append((facts, ward))
            writer.writerow([f"p{i}", *[{None: ""}.get(facts.get(n), facts.get(n)) for n in names], ward])
    db = tmp_path / "audit.duckdb"
    assert main(["cohort", str(extract), "--keep-columns", "ward", "--db", str(db), "--quiet"]) == 0
    capsys.readouterr()
    blocks = sql_blocks()
    assert len(blocks) >= 4
    answers = []
    for sql in blocks:
        code = main(["query", str(db), "--sql", sql, "--format", "json"])
        out, err = capsys.readouterr()
        assert code == 0, (sql, err)
        answers.append(json.loads(out))
    results = [(evaluator.evaluate(facts), ward) for facts, ward in people]
    per_urgency = {r["urgency"]: r["patients"] for r in answers[0]}
    assert per_urgency == {u: sum(r.urgency == u for r, _ in results) for u in {r.urgency for r, _ in results}}
    for row in answers[1]:
        emergencies = [r for r, ward in results if ward == row["ward"] and r.urgency == "emergency"]
        assert row["emergencies"] == len(emergencies)
        assert row["incomplete"] == sum(not r.complete for r in emergencies)
    assert answers[2] == [{"run_id": answers[2][0]["run_id"], "patients": 200, "bad_rows": 0, "skipped": 0}]
    fired = {}
    for r, _ in results:
        for rule in r.fired_ids():
            fired[rule] = fired.get(rule, 0) + 1
    top = sorted(fired.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [(r["rule"], r["patients"]) for r in answers[3]] == top
