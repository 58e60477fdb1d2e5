"""JSON Schema validation of a knowledge-base document, each error translated into a positioned Problem."""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from lumbar_kb.engine.errors import Problem, did_you_mean
from lumbar_kb.engine.loader.files import schema_dir
from lumbar_kb.engine.source import Positions

if TYPE_CHECKING:
    import jsonschema


@cache
def load_schema(name: str) -> dict:
    return json.loads((schema_dir() / f"{name}.schema.json").read_text(encoding="utf-8"))


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    """One validator per schema. jsonschema is imported here, on the first full load: a command whose knowledge
    base comes from the cache never validates, and the import was a sixth of its start (65 ms)."""
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema(name))


def schema_problems(data: Any, schema_name: str, pos: Positions, subject_of=None) -> list[Problem]:
    """Validate against a JSON Schema; translate each error into a positioned Problem."""
    validator = _validator(schema_name)
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        path = tuple(error.absolute_path)
        subject = subject_of(path) if subject_of else None
        problems.extend(_translate(error, path, pos, subject))
    return problems


def _translate(error: jsonschema.ValidationError, path: tuple, pos: Positions, subject: str | None) -> list[Problem]:
    inside = path[2:] if subject and subject.startswith("rule") else path  # the rule is named as the subject
    where = "/".join(str(p) for p in inside) or ("the rule" if inside is not path else "the file")
    kind = error.validator
    schema: dict = error.schema if isinstance(error.schema, dict) else {}
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key not in schema.get("properties", {}):
                hint = did_you_mean(key, allowed)
                hint = f"{hint} allowed: {', '.join(allowed)}" if hint else f"allowed: {', '.join(allowed)}"
                out.append(pos.problem(path + (key,), f"unknown key '{key}'", subject, hint, key=True))
        return out
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [pos.problem(path, f"missing required key '{missing}' in {where}", subject)]
    if kind == "type":
        value = error.validator_value
        expected = " or ".join(value) if isinstance(value, list) else str(value)
        return [pos.problem(path, f"{where} must be {_article(expected)}, not {typename(error.instance)}", subject)]
    if kind == "enum":
        options = [str(v) for v in error.validator_value]  # type: ignore[union-attr]  # an enum's list
        return [
            pos.problem(
                path,
                f"{where} must be one of {', '.join(options)}, not '{error.instance}'",
                subject,
                did_you_mean(str(error.instance), options),
            )
        ]
    if kind in ("minItems", "minProperties"):
        return [pos.problem(path, f"{where} must not be empty", subject)]
    if kind == "pattern":
        return [
            pos.problem(
                path, f"{where} '{error.instance}' is not a valid name (lower case letters, digits, _)", subject
            )
        ]
    if kind == "propertyNames":
        return [pos.problem(path, f"{where}: {error.message}", subject)]
    return [pos.problem(path, f"{where}: {error.message}", subject)]


def _action_flags(entry: dict) -> dict:
    """The flags only an action entry of the catalogue has (see guideline.schema.json#/$defs/action)."""
    return {flag: bool(entry.get(flag, False)) for flag in ("imaging", "never_delay", "time_critical")}


def _article(type_name: str) -> str:
    names = {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "boolean or string": "true/false or a string",
        "number or null": "a number or null",
    }
    return names.get(type_name, type_name)


def typename(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: f"the string '{value}'",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def subject_of(data: dict, path: tuple) -> str | None:
    """Name what a schema error is about: the rule (by id, when it has one) or the fact."""
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        rules = data.get("rules")
        rule = rules[path[1]] if isinstance(rules, list) and path[1] < len(rules) else None
        if isinstance(rule, dict) and isinstance(rule.get("id"), str):
            return f"rule {rule['id']}"
        return f"rule #{path[1] + 1}"
    if len(path) >= 2 and path[0] == "facts":
        return f"fact {path[1]}"
    return None
