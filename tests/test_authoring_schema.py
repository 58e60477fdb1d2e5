"""The keys the loader accepts are exactly the keys the JSON Schemas declare, and the schemas are usable by
an editor (valid Draft 2020-12, every rule and vocabulary file of the bundled knowledge base validates).

"Accepts" is measured, not listed: every mapping the loader reads is wrapped in a dict that records which
keys the builder looks up (`[]`, `get`, `in`), tagged with the schema object it must follow; after loading
the bundled knowledge base and its scenarios, the keys read per schema object must equal that object's
`properties`. A key the builder reads that the schema forbids (dead code), or a schema key the builder
ignores (silently accepted, never used), fails the test.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

import lumbar_kb.engine.loader as loader
import lumbar_kb.engine.scenarios as scenarios
from lumbar_kb.engine.api import Evaluator
from lumbar_kb.engine.errors import KnowledgeBaseError
from lumbar_kb.engine.loader import CONCLUSION_HEADS, CONDITION_HEADS, default_kb_dir, load, load_schema, schema_dir
from lumbar_kb.engine.scenarios import checked_conclusions, compare, load_scenarios

from .guideline import NEUROLOGICAL


class Recording(dict):
    """A dict that notes, under its schema location, every key looked up."""

    def __init__(self, data: dict, where: str, log: dict):
        super().__init__(data)
        self.where, self.log = where, log

    def __getitem__(self, key):
        self.log[self.where].add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.log[self.where].add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.log[self.where].add(key)
        return super().__contains__(key)


def resolve(schema_name: str, node: dict, pointer: str) -> tuple[dict, str]:
    while "$ref" in node:
        pointer = node["$ref"]
        node = load_schema(schema_name)
        for part in pointer.lstrip("#/").split("/"):
            node = node[part]
    return node, pointer


def wrap(data, schema_name: str, node: dict, pointer: str, log: dict):
    node, pointer = resolve(schema_name, node, pointer)
    if isinstance(data, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        out = {}
        for key, value in data.items():
            if key in props:
                out[key] = wrap(value, schema_name, props[key], f"{pointer}/properties/{key}", log)
            elif isinstance(extra, dict):
                out[key] = wrap(value, schema_name, extra, f"{pointer}/additionalProperties", log)
            else:
                out[key] = value
        return Recording(out, f"{schema_name}:{pointer}", log) if props else out
    if isinstance(data, list) and isinstance(node.get("items"), dict):
        return [wrap(item, schema_name, node["items"], f"{pointer}/items", log) for item in data]
    return data


def plain(data):
    if isinstance(data, dict):
        return {k: plain(v) for k, v in dict.items(data)}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data


def schema_for(path: Path) -> str:
    if path.name in ("guideline.yaml", "facts.yaml", "hazards.yaml", "inconsistencies.yaml"):
        return path.stem
    return "rules" if path.parent.name == "rules" else "scenario"


def declared(schema_name: str) -> dict[str, set]:
    """Every object of the schema that has `properties`, by location, with its keys."""
    out = {}

    def walk(node, pointer):
        if isinstance(node, dict):
            if "properties" in node and isinstance(node["properties"], dict):
                out[f"{schema_name}:{pointer}"] = set(node["properties"])
            for key, value in node.items():
                if key not in ("$ref",):
                    walk(value, f"{pointer}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{pointer}/{i}")

    walk(load_schema(schema_name), "#")
    return out


def test_the_keys_the_loader_reads_are_the_keys_the_schemas_declare(monkeypatch):
    log: dict[str, set] = defaultdict(set)
    real_read, real_parse, real_schema = scenarios.read_document, loader.parse_document, loader.schema_problems

    def recorded(path, data):
        if Path(path).name in ("codes.yaml", "board.yaml"):  # checked at load, read whole by clinic/fhir, approvals
            return data
        name = schema_for(Path(path))
        return wrap(data, name, load_schema(name), "#", log)

    def read(path):
        data, pos = real_read(path)
        return recorded(path, data), pos

    def parse(raw, path, bounds):
        data, pos = real_parse(raw, path, bounds)
        return recorded(path, data), pos

    def validate(data, schema_name, pos, subject_of=None):
        return real_schema(plain(data), schema_name, pos, subject_of)

    monkeypatch.setattr(scenarios, "read_document", read)
    monkeypatch.setattr(loader, "parse_document", parse)
    monkeypatch.setattr(loader, "DOCUMENTS_KEPT", 0)  # every document parsed, none kept (a kept one is a copy)
    monkeypatch.setattr(loader, "_DOCUMENTS", {})
    for module in (loader, scenarios):
        monkeypatch.setattr(module, "schema_problems", validate)
    monkeypatch.setenv("LUMBAR_KB_CACHE", "off")  # a full load: every file read through the recording reader
    kb = load()
    found = load_scenarios(kb)
    evaluator = Evaluator(kb)
    for scenario in found:
        compare(scenario, evaluator.evaluate(scenario.patient))
    checked_conclusions(found)

    expected = {}
    for name in ("guideline", "facts", "rules", "scenario", "hazards", "inconsistencies"):
        expected.update(declared(name))
    # objects whose instances the bundled files never contain cannot be read: none may be left out
    assert set(log) == set(expected), set(expected) ^ set(log)
    for where, keys in sorted(expected.items()):
        assert log[where] == keys, (
            f"{where}: read but not declared {sorted(log[where] - keys)}, "
            f"declared but never read {sorted(keys - log[where])}"
        )


def test_condition_and_conclusion_heads_match_the_schema():
    for name in ("rules", "facts"):
        condition = load_schema(name)["$defs"]["condition"]["properties"]
        assert set(CONDITION_HEADS) | {"is", "in"} == set(condition)
    conclusion = load_schema("rules")["$defs"]["conclusion"]["properties"]
    assert set(CONCLUSION_HEADS) | {"within_hours", "within_hours_min", "window", "value"} == set(conclusion)


def test_the_schemas_are_valid_and_the_bundled_files_validate():
    kb_dir = default_kb_dir()
    import yaml

    for path in sorted(schema_dir().glob("*.schema.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
    files = [(kb_dir / "guideline.yaml", "guideline"), (kb_dir / "facts.yaml", "facts")]
    files += [(p, "rules") for p in sorted((kb_dir / "rules").glob("*.yaml"))]
    files += [(p, "scenario") for p in sorted((kb_dir / "scenarios").glob("*.yaml"))]
    for path, name in files:
        jsonschema.Draft202012Validator(load_schema(name)).validate(yaml.safe_load(path.read_text()))


def test_schema_modelines_point_at_existing_files():
    """The bundled files carry yaml-language-server modelines relative to themselves; the targets must exist."""
    kb_dir = default_kb_dir()
    for source, target in (
        ("facts.yaml", "../schema/facts.schema.json"),
        ("rules/imaging.yaml", "../../schema/rules.schema.json"),
        ("scenarios/nothing_known.yaml", "../../schema/scenario.schema.json"),
    ):
        assert (kb_dir / source).parent.joinpath(target).resolve().is_file()
    for path in sorted(kb_dir.glob("**/*.yaml")):
        if path.parent.name == "patients":
            continue
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        assert path.parent.joinpath(first.split("=", 1)[1]).resolve().is_file(), path


@pytest.mark.parametrize(
    "fact, snippet, message",
    [
        ("neuro_symptom", "    derived: true\n", "only an input yes/no fact can be a neurological symptom"),
        ("radiograph", "    type: enum\n", "only an input yes/no fact can be a neurological symptom"),
    ],
)
def test_neurological_flag_only_on_input_yes_no_facts(tmp_path, fact, snippet, message):
    kb_dir = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), kb_dir)
    path = kb_dir / "facts.yaml"
    text = path.read_text()
    start = text.index(f"  {fact}:\n")
    at = text.index(snippet, start) + len(snippet)
    path.write_text(text[:at] + "    neurological: true\n" + text[at:])
    with pytest.raises(KnowledgeBaseError, match=message):
        load(kb_dir)


def test_action_flags_are_refused_on_warnings(tmp_path):
    kb_dir = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), kb_dir)
    path = kb_dir / "guideline.yaml"
    text = path.read_text()
    at = text.index("  do_not_delay_imaging:\n") + len("  do_not_delay_imaging:\n")
    path.write_text(text[:at] + "    imaging: true\n" + text[at:])
    with pytest.raises(KnowledgeBaseError, match="unknown key 'imaging'"):
        load(kb_dir)


def test_bundled_flags():
    kb = load()
    assert [f.name for f in kb.input_facts if f.neurological] == list(NEUROLOGICAL)
    assert {c for c, e in kb.catalog["action"].items() if e.imaging} == {"mri_whole_spine", "xray_lumbar", "mri_lumbar"}
    assert {c for c, e in kb.catalog["action"].items() if e.never_delay} == {"mri_whole_spine"}
    assert copy.deepcopy(kb.catalog["warning"]["do_not_delay_imaging"]).imaging is False
