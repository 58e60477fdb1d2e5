"""The exported CPG package as FHIR: every resource valid against two validators nobody here wrote (the official
FHIR R4 JSON Schema, run by ajv in node, and the fhir.resources models), the CPG profiles' elements present, the
Library's CQL and ELM naming the same expressions, and every PlanDefinition condition pointing at one of them.

Expectations come from the specifications (the CPG profiles' required elements, R4's element definitions) and
from the knowledge base (one expression per input fact, derived fact and rule), not from the export's output.
"""

from __future__ import annotations

import base64
import copy
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lumbar_kb.clinic.fhir.codes import load_codes
from lumbar_kb.clinic.fhir.cql import limitations
from lumbar_kb.clinic.fhir.export import export_all
from lumbar_kb.engine.loader import load
from lumbar_kb.main import main

from .bundled import KB

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

ROOT = Path(__file__).resolve().parent.parent
VALIDATE = ROOT / "tests" / "cpg" / "validate.js"

CODES = load_codes(KB)
CPG = "http://hl7.org/fhir/uv/cpg/StructureDefinition"
SHAREABLE = ("url", "version", "name", "title", "status", "experimental", "publisher", "description")


def schema_errors(resources: dict[str, dict], tmp: Path) -> dict[str, list]:
    """The official R4 JSON Schema's verdict on each resource (file name -> errors)."""
    assert shutil.which("node") and (ROOT / "node_modules" / "@asymmetrik").is_dir(), "run `make setup` (npm ci)"
    folder = tmp / "resources"
    folder.mkdir(exist_ok=True)
    for name, resource in resources.items():
        (folder / name).write_text(json.dumps(resource))
    done = subprocess.run(["node", str(VALIDATE), str(folder)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["schema"] == "http://hl7.org/fhir/json-schema/4.0"
    return report["files"]


def model_error(resource: dict) -> str | None:
    kind = resource["resourceType"]
    model = getattr(importlib.import_module(f"fhir.resources.R4B.{kind.lower()}"), kind)
    try:
        model.model_validate(resource)
    except ValueError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("cpg")
    assert main(["export", "fhir", "-o", str(out)]) == 0
    return {p.name: json.loads(p.read_text()) for p in sorted(out.iterdir())}


def _one(package: dict, kind: str) -> dict:
    (found,) = [r for r in package.values() if r["resourceType"] == kind]
    return found


def _content(library: dict, kind: str) -> str:
    (found,) = [c for c in library["content"] if c["contentType"] == kind]
    return base64.b64decode(found["data"]).decode("utf-8")


def test_every_resource_passes_the_official_r4_json_schema_and_the_fhir_resources_models(package, tmp_path):
    assert sorted({r["resourceType"] for r in package.values()}) == [
        "ActivityDefinition",
        "Library",
        "PlanDefinition",
        "Questionnaire",
    ]
    assert schema_errors(package, tmp_path) == {name: [] for name in package}
    assert {name: model_error(r) for name, r in package.items()} == dict.fromkeys(package)


BOTH, SCHEMA = ("schema", "model"), ("schema",)  # which validators must reject (fhir.resources checks no codes)
DEFECTS = {  # the R4 JSON Schema requires only complex elements and checks codes; fhir.resources checks no codes
    "Library without its type": ("Library", BOTH, lambda r: r.pop("type")),
    "Library of an unknown status": ("Library", SCHEMA, lambda r: r.update(status="finished")),
    "Library with an element R4 does not have": ("Library", BOTH, lambda r: r.update(logic="CQL")),
    "PlanDefinition conditions not a list": (
        "PlanDefinition",
        BOTH,
        lambda r: r["action"][0]["action"][0].update(condition=r["action"][0]["action"][0]["condition"][0]),
    ),
    "PlanDefinition condition of no kind": (
        "PlanDefinition",
        SCHEMA,
        lambda r: r["action"][0]["action"][0]["condition"][0].update(kind="sometimes"),
    ),
    "PlanDefinition condition in an unknown language": (
        "PlanDefinition",
        SCHEMA,
        lambda r: r["action"][0]["action"][0]["condition"][0]["expression"].update(language="text/python"),
    ),
    "ActivityDefinition with an element R4 does not have": ("ActivityDefinition", BOTH, lambda r: r.update(urgency=1)),
    "ActivityDefinition of an unknown status": ("ActivityDefinition", SCHEMA, lambda r: r.update(status="finished")),
}


@pytest.fixture(scope="module")
def damaged(package, tmp_path_factory) -> tuple[dict, dict]:
    """Every seeded defect's resource (file name -> resource) and the JSON Schema's verdicts, in one node run."""
    out = {}
    for i, (defect, (kind, _, damage)) in enumerate(sorted(DEFECTS.items())):
        resource = copy.deepcopy(next(r for r in package.values() if r["resourceType"] == kind))
        damage(resource)
        out[f"{i:02d}-{kind}.json"] = (defect, resource)
    verdicts = schema_errors({name: r for name, (_, r) in out.items()}, tmp_path_factory.mktemp("damaged"))
    return dict(out.values()), {out[name][0]: errors for name, errors in verdicts.items()}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_the_validators_reject_a_seeded_defect(damaged, defect):
    resources, verdicts = damaged
    assert verdicts[defect], f"the JSON Schema accepted: {defect}"
    if "model" in DEFECTS[defect][1]:
        assert model_error(resources[defect]), f"fhir.resources accepted: {defect}"


def test_the_cpg_profiles_and_their_elements_are_present(package):
    for resource in package.values():
        assert all(resource.get(key) not in (None, "") for key in SHAREABLE), resource["id"]
        profiles = resource["meta"]["profile"]
        capabilities = {e["valueCode"] for e in resource["extension"] if e["url"] == f"{CPG}/cpg-knowledgeCapability"}
        assert {"shareable", "computable"} <= capabilities
        kind = resource["resourceType"]
        if kind == "Library":
            assert f"{CPG}/cpg-computablelibrary" in profiles and "executable" in capabilities
            assert resource["type"]["coding"][0]["code"] == "logic-library"
            assert {c["contentType"] for c in resource["content"]} == {"text/cql", "application/elm+json"}
            assert [d["type"] for d in resource["dataRequirement"]] == ["QuestionnaireResponse"]
        if kind == "PlanDefinition":
            assert f"{CPG}/cpg-computableplandefinition" in profiles
            for section in resource["action"]:
                assert {t["type"] for t in section["trigger"]} == {"named-event", "data-changed"}
                assert [i["type"] for i in section["input"]] == ["QuestionnaireResponse"]
        if kind == "ActivityDefinition":
            assert f"{CPG}/cpg-computableactivity" in profiles and resource["kind"] == "ServiceRequest"


def _cql_defines(text: str) -> list[str]:
    return [m.replace('\\"', '"') for m in re.findall(r'^define "((?:[^"\\]|\\.)*)":', text, flags=re.M)]


def test_the_cql_and_the_elm_define_an_expression_per_fact_and_rule_and_the_plan_points_at_them(package):
    library, plan = _one(package, "Library"), _one(package, "PlanDefinition")
    cql_text = _content(library, "text/cql")
    elm = json.loads(_content(library, "application/elm+json"))
    assert cql_text.startswith(f"library {library['name']} version '{KB.version}'\n")
    assert elm["library"]["identifier"] == {"id": library["name"], "version": KB.version}
    defined = _cql_defines(cql_text)
    statements = [d["name"] for d in elm["library"]["statements"]["def"]]
    assert statements == ["Patient", *defined]  # the same expressions, in the same order
    for fact in KB.facts.values():
        assert fact.name in defined
    for rule in KB.rules:
        assert f"Rule {rule.id}" in defined
    assert plan["library"] == [library["url"]]
    conditions = {a["id"]: a["condition"][0]["expression"] for section in plan["action"] for a in section["action"]}
    assert sorted(conditions) == sorted(r.id for r in KB.rules)
    for rule_id, expression in conditions.items():
        assert expression["language"] == "text/cql" and expression["reference"] == library["url"]
        assert json.loads(expression["expression"]) == f"Rule {rule_id}"  # a quoted identifier of the library
        (alternative,) = expression["extension"]
        assert alternative["url"] == "http://hl7.org/fhir/StructureDefinition/cqf-alternativeExpression"
        assert alternative["valueExpression"]["language"] == "text/fhirpath"
        assert "%resource" not in alternative["valueExpression"]["expression"]
    for section in plan["action"]:  # no dynamicValue setting a "path" that is no element of any resource
        for action in section["action"]:
            assert all("dynamicValue" not in sub for sub in action["action"])


def test_a_changed_rule_changes_the_exported_cql_and_elm(kb_copy):
    rules = kb_copy / "rules" / "imaging.yaml"
    text = rules.read_text()
    changed = text.replace(
        "        within_hours: 12\n        window: within 12 hours\n",
        "        within_hours: 7\n        window: within 7 hours\n",
        1,
    )
    assert changed != text
    rules.write_text(changed)
    before = export_all(KB, CODES)
    kb2 = load(kb_copy)
    after = export_all(kb2, load_codes(kb2))
    name = next(n for n in before if n.startswith("Library-"))
    old, new = before[name], after[name]
    assert "then 7.0 else" in _content(new, "text/cql") and "then 7.0 else" not in _content(old, "text/cql")
    assert "'within 7 hours'" in _content(new, "text/cql")
    assert _content(new, "application/elm+json") != _content(old, "application/elm+json")


def test_the_export_says_what_the_package_cannot_express(tmp_path, capsys):
    assert main(["export", "fhir", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    library = json.loads(next(tmp_path.glob("Library-*.json")).read_text())
    said = limitations(KB)
    assert any("could_escalate" in line for line in said) and any("Condition" in line for line in said)
    for line in said:
        assert line in out and line in library["usage"]


def test_an_activity_definition_without_a_standard_code_is_named_in_the_export(tmp_path, capsys):
    """Every ActivityDefinition carries a standard code beside the knowledge base's own, or the export's output
    names it (never silently uncoded); an order kind's codes removed from codes.yaml make its action named."""
    assert main(["export", "fhir", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    named = re.search(r"^ActivityDefinitions with no standard code.*: (.*)$", out, flags=re.M)
    named_codes = set(named.group(1).split(", ")) if named else set()
    for path in tmp_path.glob("ActivityDefinition-*.json"):
        resource = json.loads(path.read_text())
        codings = resource["code"]["coding"]
        code = codings[0]["code"]
        standard = [c for c in codings if c["system"] != CODES.action_system]
        assert bool(standard) != (code in named_codes), code
    assert named_codes <= set(KB.catalog["action"])
    kb_copy = tmp_path / "kb"
    shutil.copytree(KB.root, kb_copy)
    codes_file = kb_copy / "codes.yaml"
    text = codes_file.read_text()
    cut = re.sub(r"(  emergency_referral:\n(?:    .*\n)*?    codes:)\n(?:      - .*\n)+", r"\1 []\n", text)
    assert cut != text
    codes_file.write_text(cut)
    assert main(["export", "fhir", "--kb", str(kb_copy), "-o", str(tmp_path / "out")]) == 0
    line = re.search(r"^ActivityDefinitions with no standard code.*$", capsys.readouterr().out, flags=re.M)
    assert line is not None and "emergency_department" in line.group(0)


def test_the_docs_quote_the_export_as_it_is(package):
    """docs/fhir-cpg.md's CQL excerpt is in the exported CQL, and its condition example has the exported shape."""
    doc = (ROOT / "docs" / "fhir-cpg.md").read_text()
    blocks = dict.fromkeys(("cql", "json"), "")
    for kind, body in re.findall(r"```(cql|json)\n(.*?)```", doc, flags=re.S):
        blocks[kind] += body
    cql_text = _content(_one(package, "Library"), "text/cql")
    lines = [line for line in blocks["cql"].splitlines() if line.strip()]
    assert lines and all(line in cql_text.splitlines() for line in lines)
    shown = json.loads(blocks["json"].replace('"..."', '""'))
    plan = _one(package, "PlanDefinition")
    real = next(a for s in plan["action"] for a in s["action"] if a["id"] == "red_flag.leg_weakness")["condition"][0]
    assert shown["kind"] == real["kind"]
    for key in ("language", "expression", "reference"):
        assert shown["expression"][key] == real["expression"][key]
    assert shown["expression"]["extension"][0]["url"] == real["expression"]["extension"][0]["url"]
    assert f"PlanDefinition/{plan['id']}/$apply" in doc


def test_the_export_is_deterministic(tmp_path):
    """Two exports of one knowledge base are byte-identical (a platform can diff a new release against the old)."""
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["export", "fhir", "-o", str(first)]) == 0 and main(["export", "fhir", "-o", str(second)]) == 0
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
