"""The exported FHIR CPG package run by engines nobody here wrote: the Library's ELM in cql-execution with
cql-exec-fhir (the reference CQL engine), the PlanDefinition's FHIRPath alternatives in fhirpath.js (the HL7
FHIRPath engine), both from npm, through the harness tests/cpg/run.js (one node process for the session, `--serve`).

Each patient is a Bundle (a Patient and a QuestionnaireResponse to the exported Questionnaire, unknowns left
out); `lumbar-kb evaluate` reads the same Bundle. Expectations come from the durable engine on the same data:
urgency, actions with their windows and `done`, warnings, differential, completeness and scope must be equal
(CQL), and the PlanDefinition actions FHIRPath finds applicable must be the rules the engine fired. A test of
the test seeds defects into the exported package (a condition negated, an unknown read as "no") and requires
the harness to see them.
"""

from __future__ import annotations

import atexit
import base64
import json
import random
import select
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lumbar_kb.clinic.fhir.codes import load_codes
from lumbar_kb.clinic.fhir.cql import build_library
from lumbar_kb.clinic.fhir.export import questionnaire_response
from lumbar_kb.clinic.fhir.inbound import map_fhir
from lumbar_kb.engine.analysis.algorithm import build_algorithm, paths
from lumbar_kb.engine.api import Evaluator
from lumbar_kb.engine.loader import load
from lumbar_kb.engine.patient import random_patient
from lumbar_kb.engine.result import conclude
from lumbar_kb.engine.scenarios import load_scenarios
from lumbar_kb.main import main

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "cpg" / "run.js"
GENERATED = 10_000
# fhirpath.js is about six times slower a patient on its 35 conditions than cql-execution on the whole library
# (benchmarks/bench_cpg.py prints both), so the FHIRPath alternatives run on every 20th generated patient here;
# benchmarks/bench_cpg.py runs them on all 10,000
FHIRPATH_EVERY = 20
RECORDS = 250  # random Bundles of Conditions and Observations (and sometimes a QuestionnaireResponse)


def _node_ready() -> None:
    node = shutil.which("node")
    assert node, "node is not installed: `make setup` needs it for the CPG harness"
    missing = [p for p in ("cql-execution", "cql-exec-fhir", "fhirpath") if not (ROOT / "node_modules" / p).is_dir()]
    assert not missing, f"npm packages missing: {missing}; run `make setup` (npm ci at the repository root)"


def export(kb_dir: Path | None, out: Path) -> Path:
    args = ["export", "fhir", "-o", str(out)] + (["--kb", str(kb_dir)] if kb_dir else [])
    assert main(args) == 0
    return out


def bundle(kb, codes, facts: dict, pid: str) -> dict:
    qr = questionnaire_response(kb, codes, facts, f"Patient/{pid}", f"qr-{pid}")
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "id": pid}}, {"resource": qr}],
    }


_HARNESS: dict = {}  # the one `node run.js --serve` of this process, started on first use


def _harness() -> subprocess.Popen:
    proc = _HARNESS.get("proc")
    if proc is None or proc.poll() is not None:
        log = tempfile.TemporaryFile(mode="w+")  # node's own complaints, shown if it dies
        proc = subprocess.Popen(
            ["node", str(HARNESS), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
        )
        _HARNESS.update(proc=proc, log=log)
        atexit.register(_stop_harness, proc)
    return proc


def _stop_harness(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_harness(
    package: Path, bundles: list[dict], names: list[str], tmp: Path, fhirpath: list | None = None, timeout: int = 600
) -> dict:
    """The engines' answers for these bundles, from one node process kept for the session (its start and each
    package's compilation paid once; a package is known by its files' contents, so a changed one is compiled
    anew)."""
    _node_ready()
    patients = tmp / "patients.json"
    request = {"bundles": bundles, "expressions": names}
    if fhirpath is not None:
        request["fhirpath"] = fhirpath
    patients.write_text(json.dumps(request))
    proc = _harness()
    proc.stdin.write(json.dumps({"package": str(package), "patients": str(patients)}) + "\n")
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        log = _HARNESS["log"]
        log.seek(0)
        pytest.fail(f"the CPG harness gave no answer (exit {proc.poll()}): {log.read()[-3000:]}")
    answers = json.loads(line)
    assert "fatal" not in answers, answers.get("fatal")
    return answers


def output_names(lib) -> list[str]:
    o = lib.outputs
    names = [o["urgency"], o["complete"], o["in_scope"], *o["unanswered_alarm"].values()]
    for entry in o["actions"].values():
        names += entry.values()
    names += [*o["warnings"].values(), *o["differential"].values()]
    return names


def from_cql(lib, values: dict) -> dict:
    """The decision as the CQL engine gives it, read by the names the library declares."""
    o = lib.outputs
    actions = {}
    for code, n in o["actions"].items():
        if values[n["given"]]:
            actions[code] = (
                values[n["within_hours"]],
                values[n["within_hours_min"]],
                values[n["window"]],
                values[n["done"]],
            )
    return {
        "urgency": values[o["urgency"]],
        "complete": values[o["complete"]],
        "unanswered_alarm": sorted(f for f, n in o["unanswered_alarm"].items() if values[n]),
        "in_scope": values[o["in_scope"]],
        "actions": actions,
        "warnings": sorted(c for c, n in o["warnings"].items() if values[n]),
        "differential": sorted(c for c, n in o["differential"].items() if values[n]),
    }


def from_engine(kb, evaluator, codes, data: dict) -> tuple[dict, list[str]]:
    """The durable engine's decision on the Bundle, read from FHIR as `lumbar-kb evaluate` reads it."""
    facts = map_fhir(data, kb, codes).facts
    trace = evaluator.engine.run(evaluator.check_inputs(facts))
    d = conclude(kb, trace)
    decision = {
        "urgency": d.urgency,
        "complete": d.complete,
        "unanswered_alarm": sorted(d.unanswered_alarm),
        "in_scope": d.in_scope,
        "actions": {a.code: (a.within_hours, a.within_hours_min, a.window, a.done) for a in d.actions},
        "warnings": sorted(w.code for w in d.warnings),
        "differential": sorted(x.code for x in d.differential),
    }
    return decision, sorted(d.rules)


def disagreements(
    kb, evaluator, package: Path, patients: list[dict], tmp: Path, fhirpath_every: int = 1, bundles=None
) -> tuple[list, list, int]:
    """(CQL disagreements, FHIRPath disagreements, patients run); FHIRPath runs on every `fhirpath_every`-th
    (`fhirpath_every=0`: never). `bundles`, when given, are the patients' data as they are."""
    codes = load_codes(kb)
    lib = build_library(kb, codes)
    if bundles is None:
        bundles = [bundle(kb, codes, p, f"p{i}") for i, p in enumerate(patients)]
    sample = [f"p{i}" for i in range(0, len(patients), fhirpath_every)] if fhirpath_every else []
    answers = run_harness(package, bundles, output_names(lib), tmp, sample)
    assert answers["errors"] == []
    assert sorted(answers["fhirpath"]) == sorted(sample) and len(answers["cql"]) == len(bundles)
    cql_off, fhirpath_off = [], []
    for b, patient in zip(bundles, patients, strict=True):
        pid = b["entry"][0]["resource"]["id"]
        expected, fired = from_engine(kb, evaluator, codes, b)
        got = from_cql(lib, answers["cql"][pid])
        if got != expected:
            cql_off.append((patient, expected, got))
        if pid in answers["fhirpath"] and sorted(answers["fhirpath"][pid]) != fired:
            fhirpath_off.append((patient, fired, sorted(answers["fhirpath"][pid])))
    return cql_off, fhirpath_off, len(bundles)


def algorithm_patients(kb) -> list[dict]:
    """A patient per answer on every path of every decision diagram of the clinical algorithm (unknown is an
    answer of its own there: left out of the patient)."""
    out = []
    for decision in build_algorithm(kb):
        for taken, _leaf in paths(decision):
            widest = max((len(answers) for _, answers in taken), default=1)
            for k in range(widest):
                patient = {}
                for fact, answers in taken:
                    value = answers[min(k, len(answers) - 1)]
                    if value is not None:
                        patient[fact] = value
                out.append(patient)
    unique = {json.dumps(p, sort_keys=True): p for p in out}
    return list(unique.values())


CLINICAL = ("active", "recurrence", "relapse", "inactive", "remission", "resolved", None)
VERIFICATION = ("confirmed", "provisional", "differential", "unconfirmed", "refuted", "entered-in-error", None)


def random_records(kb, codes, rng: random.Random, pid: str) -> dict:
    """A Bundle of random Conditions and Observations (bound codes, codes under a bound prefix, the knowledge base's
    own codes, unbound codes; every status; values of every kind) and sometimes a QuestionnaireResponse: whatever
    `lumbar-kb evaluate` makes of it, the library must make the same."""
    coded = [(c.system, c.code, c.prefix) for b in codes.bindings for c in b.codes]

    def a_code():
        roll = rng.random()
        if roll < 0.6:
            system, code, prefix = rng.choice(coded)
            return system, code + (rng.choice(["", ".9", "1", ".20"]) if prefix else "")
        if roll < 0.85:
            return codes.kb_system, rng.choice(kb.input_facts).name
        return rng.choice(coded)[0], rng.choice(["X99", "C", "Z85.9", "R33.0"])

    def concept(n):
        return {"coding": [{"system": s, "code": c} for s, c in (a_code() for _ in range(n))]}

    def status(values):
        v = rng.choice(values)
        return {"coding": [{"code": v}]} if v else None

    entries = [{"resource": {"resourceType": "Patient", "id": pid}}]
    for i in range(rng.randint(0, 4)):
        res = {"resourceType": "Condition", "id": f"c{i}", "code": concept(rng.randint(1, 2))}
        for key, values in (("clinicalStatus", CLINICAL), ("verificationStatus", VERIFICATION)):
            if (st := status(values)) is not None:
                res[key] = st
        entries.append({"resource": res})
    answers = [c for b in (codes.yes, codes.no) for c in b] + [
        c for v in codes.values.values() for cs in v.values() for c in cs
    ]
    for i in range(rng.randint(0, 4)):
        res = {"resourceType": "Observation", "id": f"o{i}", "code": concept(1)}
        res["status"] = rng.choice(["final", "amended", "preliminary", "cancelled", "registered"])
        kind = rng.random()
        if kind < 0.35:
            res["valueBoolean"] = rng.random() < 0.5
        elif kind < 0.75:
            picks = [rng.choice(answers) for _ in range(rng.randint(1, 2))]
            if rng.random() < 0.3:
                fact = rng.choice([f for f in kb.input_facts if f.type == "enum"])
                picks.insert(0, type(picks[0])(codes.kb_system, str(rng.choice(fact.values))))
            res["valueCodeableConcept"] = {"coding": [{"system": c.system, "code": c.code} for c in picks]}
        elif kind < 0.9:
            fact = rng.choice([f for f in kb.input_facts if f.type == "enum"])
            res["valueString"] = str(rng.choice(fact.values))
        else:
            res["dataAbsentReason"] = {"text": "asked, not known"}
        entries.append({"resource": res})
    if rng.random() < 0.5:
        facts = random_patient(kb, rng)
        entries.append({"resource": questionnaire_response(kb, codes, facts, f"Patient/{pid}", f"qr-{pid}")})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return export(None, tmp_path_factory.mktemp("cpg"))


def test_every_algorithm_path_and_scenario_agrees(kb, evaluator, package, tmp_path):
    patients = algorithm_patients(kb) + [s.patient for s in load_scenarios(kb)]
    assert len(patients) > 100
    cql_off, fhirpath_off, n = disagreements(kb, evaluator, package, patients, tmp_path)
    assert n == len(patients)
    assert cql_off == [] and fhirpath_off == []


SHARDS = 4  # the 10,000 patients in four batches, one node process each, so that `make test`'s workers share them


@pytest.mark.parametrize("shard", range(SHARDS))
def test_ten_thousand_generated_patients_with_unknowns_agree(shard, kb, evaluator, package, tmp_path):
    rng = random.Random(27)
    every = [random_patient(kb, rng) for _ in range(GENERATED)]  # the same 10,000 whichever shard runs
    assert sum(1 for p in every if len(p) < len(kb.input_facts)) > GENERATED // 2  # unknowns are common
    patients = every[shard::SHARDS]
    cql_off, fhirpath_off, n = disagreements(kb, evaluator, package, patients, tmp_path, FHIRPATH_EVERY)
    assert n == len(patients) and sum(len(every[s::SHARDS]) for s in range(SHARDS)) == GENERATED
    assert len(cql_off) == 0, cql_off[:3]
    assert len(fhirpath_off) == 0, fhirpath_off[:3]


def test_conditions_and_observations_are_read_as_evaluate_reads_them(kb, evaluator, package, tmp_path):
    rng = random.Random(2727)
    codes = load_codes(kb)
    bundles = [random_records(kb, codes, rng, f"p{i}") for i in range(RECORDS)]
    known = [map_fhir(b, kb, codes).facts for b in bundles]
    assert sum(1 for k in known if k) > RECORDS // 2  # the records do make facts known (and conflict) often
    cql_off, _, n = disagreements(kb, evaluator, package, bundles, tmp_path, 0, bundles)
    assert n == RECORDS and cql_off == [], cql_off[:3]
    # a test of the test: a library that reads cancelled Observations too must disagree
    broken = tmp_path / "cancelled-used"
    shutil.copytree(package, broken)
    path, library, elm = _elm(broken)
    statement = _statement(elm, "Observations")
    statement["expression"] = statement["expression"]["source"][0]["expression"]  # the retrieve, unfiltered
    _save_elm(path, library, elm)
    # only a record with a cancelled Observation can be read differently: those of the first hundred
    cancelled = [
        b
        for b in bundles[:100]
        if any(
            e["resource"].get("status") == "cancelled"
            for e in b["entry"]
            if e["resource"]["resourceType"] == "Observation"
        )
    ]
    cql_off, _, _ = disagreements(kb, evaluator, broken, cancelled, tmp_path, 0, cancelled)
    assert cql_off, "a library reading cancelled Observations passed"


def _elm(package: Path) -> tuple[Path, dict, dict]:
    path = next(package.glob("Library-*.json"))
    library = json.loads(path.read_text())
    content = next(c for c in library["content"] if c["contentType"] == "application/elm+json")
    return path, library, json.loads(base64.b64decode(content["data"]))


def _save_elm(path: Path, library: dict, elm: dict) -> None:
    content = next(c for c in library["content"] if c["contentType"] == "application/elm+json")
    content["data"] = base64.b64encode(json.dumps(elm).encode()).decode()
    path.write_text(json.dumps(library))


def _statement(elm: dict, name: str) -> dict:
    return next(d for d in elm["library"]["statements"]["def"] if d["name"] == name)


def test_the_harness_sees_seeded_defects_in_the_package(kb, evaluator, package, tmp_path):
    """A test of the test: an exported package that is wrong must disagree."""
    patients = [s.patient for s in load_scenarios(kb)]
    # 1. an unknown read as "no": the completeness of an alarm question ignores whether it was answered
    broken = tmp_path / "unknown-as-no"
    shutil.copytree(package, broken)
    path, library, elm = _elm(broken)
    name = "Unanswered alarm leg_weakness"
    _statement(elm, name)["expression"] = {
        "type": "Literal",
        "valueType": "{urn:hl7-org:elm-types:r1}Boolean",
        "value": "false",
    }
    _save_elm(path, library, elm)
    cql_off, _, _ = disagreements(kb, evaluator, broken, patients, tmp_path)
    assert cql_off, "a package that never asks for an unanswered alarm question passed"
    # 2. a red flag's condition negated, in the ELM and in the FHIRPath alternative
    broken = tmp_path / "negated"
    shutil.copytree(package, broken)
    path, library, elm = _elm(broken)
    statement = _statement(elm, "Rule red_flag.leg_weakness")
    statement["expression"] = {"type": "Not", "operand": statement["expression"]}
    _save_elm(path, library, elm)
    plan_path = next(broken.glob("PlanDefinition-*.json"))
    plan = json.loads(plan_path.read_text())
    for section in plan["action"]:
        for action in section["action"]:
            if action["id"] == "red_flag.leg_weakness":
                alt = action["condition"][0]["expression"]["extension"][0]["valueExpression"]
                alt["expression"] = f"({alt['expression']}).not()"
    plan_path.write_text(json.dumps(plan))
    cql_off, fhirpath_off, _ = disagreements(kb, evaluator, broken, patients, tmp_path)
    assert cql_off and fhirpath_off
    # 3. the completeness of before "reads the relations both ways": every unanswered alarm question counts, even
    # one whose yes could no longer change the decision
    broken = tmp_path / "every-unanswered"
    shutil.copytree(package, broken)
    path, library, elm = _elm(broken)
    for fact in kb.input_facts:
        if fact.alarm:
            _statement(elm, f"Unanswered alarm {fact.name}")["expression"] = {
                "type": "IsNull",
                "operand": {"type": "ExpressionRef", "name": fact.name},
            }
    _save_elm(path, library, elm)
    rng = random.Random(3)
    cql_off, _, _ = disagreements(kb, evaluator, broken, [random_patient(kb, rng) for _ in range(200)], tmp_path, 0)
    assert cql_off, "a package that counts every unanswered alarm question passed"


def test_a_changed_rule_changes_the_cql_and_the_elm_and_they_still_agree(kb_copy, package, tmp_path):
    rules = kb_copy / "rules" / "concerning.yaml"
    text = rules.read_text()
    changed = text.replace(
        "    when: {fact: night_pain, is: true}\n    then:\n      - urgency: prompt\n",
        "    when: {fact: night_pain, is: true}\n    then:\n      - urgency: emergency\n",
    )
    assert changed != text
    rules.write_text(changed)
    kb2 = load(kb_copy)
    out = export(kb_copy, tmp_path / "changed")
    _, _, before = _elm(package)
    _, library, after = _elm(out)
    assert before != after
    cql_text = next(c for c in library["content"] if c["contentType"] == "text/cql")
    _, old_library, _ = _elm(package)
    old_text = next(c for c in old_library["content"] if c["contentType"] == "text/cql")
    assert cql_text["data"] != old_text["data"]
    rng = random.Random(5)
    patients = [s.patient for s in load_scenarios(kb2)] + [random_patient(kb2, rng) for _ in range(300)]
    patients.append({"night_pain": True})
    cql_off, fhirpath_off, _ = disagreements(kb2, Evaluator(kb2), out, patients, tmp_path)
    assert cql_off == [] and fhirpath_off == []


def test_completeness_follows_a_changed_vocabulary_and_still_agrees(kb_copy, tmp_path):
    """Completeness is generated from the model: an alarm question of several values with an only_if, a relation
    that excludes, a question made moot by a derived fact, all in a copy of the knowledge base."""
    facts = kb_copy / "facts.yaml"
    text = facts.read_text()
    changed = text.replace(
        "  primary_cancer:\n    type: enum\n", "  primary_cancer:\n    type: enum\n    alarm: true\n"
    )
    changed = changed.replace(
        "relations:\n",
        "relations:\n  - id: unable_to_walk_has_difficulty\n    when: {fact: unable_to_walk, is: true}\n"
        "    excludes: {fact: gait_difficulty, is: false}\n    because: unable to walk is a gait difficulty\n",
    )
    assert changed.count("alarm: true") == text.count("alarm: true") + 1 and "excludes:" in changed
    facts.write_text(changed)
    guideline = kb_copy / "guideline.yaml"
    text = guideline.read_text()
    changed = text.replace(
        "  not_asked_when:\n", "  not_asked_when:\n    rapid_progression: {fact: leg_weakness, is: true}\n"
    )
    assert changed != text
    guideline.write_text(changed)
    kb2 = load(kb_copy)
    out = export(kb_copy, tmp_path / "changed")
    rng = random.Random(23)
    patients = [s.patient for s in load_scenarios(kb2)] + [random_patient(kb2, rng) for _ in range(400)]
    cql_off, fhirpath_off, _ = disagreements(kb2, Evaluator(kb2), out, patients, tmp_path, 0)
    assert cql_off == [] and fhirpath_off == []
