"""Load a knowledge base directory into the typed model, collecting every problem.

    knowledge/<kb>/guideline.yaml   metadata, references, sections, conclusion catalogue
    knowledge/<kb>/facts.yaml       fact vocabulary
    knowledge/<kb>/rules/*.yaml     rules, one section per file

Each file is read safely with positions (`source`), checked against its JSON Schema (`knowledge/schema/`),
then built into the model with the semantic checks a schema cannot make (unknown names, duplicate ids,
citations). All problems across all files are reported together, each with file, line and subject.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from .errors import KnowledgeBaseError, Problem, did_you_mean
from .model import (
    All,
    AnyOf,
    CodeEntry,
    Conclusion,
    Condition,
    Derive,
    Fact,
    KnowledgeBase,
    Not,
    Recommend,
    Reference,
    Rule,
    Section,
    SetUrgency,
    Test,
)
from .patient import META_KEYS
from .source import DocumentError, Positions, display, read_document

CATALOG_KINDS = {"urgency": "urgency", "actions": "action", "warnings": "warning", "differential": "differential"}
CONCLUSION_HEADS = ("urgency", "action", "warning", "differential", "derive")
CONDITION_HEADS = ("fact", "all", "any", "not")
RESERVED_FACT_NAMES = META_KEYS + ("sid", "t")  # patient-file metadata; keys of the engine's fact messages


# ---- locating things -------------------------------------------------------------------------------------
def knowledge_root() -> Path:
    """The bundled `knowledge/` directory, from a checkout or an installed wheel."""
    return Path(str(resources.files("lumbar_kb.knowledge")))


def default_kb_dir() -> Path:
    return knowledge_root() / "lumbar_mass"


def schema_dir() -> Path:
    return knowledge_root() / "schema"


@cache
def load_schema(name: str) -> dict:
    return json.loads((schema_dir() / f"{name}.schema.json").read_text(encoding="utf-8"))


def stray_files(directory: Path) -> list[Path]:
    """Files that look like YAML or JSON but would not be loaded (`*.yml`, `*.YAML`, `*.json`): an author's
    rule or scenario silently skipped would be worse than an error."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in (".yaml", ".yml", ".json") and p.suffix != ".yaml"
    )


def kb_files(root: Path) -> list[Path]:
    """The files that define a knowledge base's behaviour (hashed into its sha256)."""
    return [root / "guideline.yaml", root / "facts.yaml", *sorted((root / "rules").glob("*.yaml"))]


# ---- schema validation -----------------------------------------------------------------------------------
def schema_problems(data: Any, schema_name: str, pos: Positions, subject_of=None) -> list[Problem]:
    """Validate against a JSON Schema; translate each error into a positioned Problem."""
    schema = load_schema(schema_name)
    validator = jsonschema.Draft202012Validator(schema)
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
        return [pos.problem(path, f"{where} must be {_article(expected)}, not {_typename(error.instance)}", subject)]
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


def _typename(value: Any) -> str:
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


def _subject(data: dict, path: tuple) -> str | None:
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


# ---- the front door ----------------------------------------------------------------------------------------
def load(kb_dir: Path | str | None = None) -> KnowledgeBase:
    """Load and check a knowledge base; raise KnowledgeBaseError listing every problem found."""
    root = Path(kb_dir) if kb_dir is not None else default_kb_dir()
    builder = _Builder(root)
    kb = builder.build()
    if builder.problems:
        raise KnowledgeBaseError(builder.problems)
    assert kb is not None
    return kb


class _Builder:
    def __init__(self, root: Path):
        self.root = root
        self.problems: list[Problem] = []

    def read(self, path: Path, schema: str) -> tuple[Any, Positions] | None:
        try:
            data, pos = read_document(path)
        except DocumentError as exc:
            self.problems.append(exc.problem)
            return None
        if not isinstance(data, dict):
            self.problems.append(Problem(f"must be a mapping at the top, not {_typename(data)}", file=pos.file, line=1))
            return None
        found = schema_problems(data, schema, pos, lambda p: _subject(data, p))
        self.problems.extend(found)
        return (None if found else data), pos

    def build(self) -> KnowledgeBase | None:
        if not self.root.is_dir():
            what = "is not a directory" if self.root.exists() else "knowledge base directory not found"
            self.problems.append(Problem(what, file=display(self.root)))
            return None
        guideline = self.read(self.root / "guideline.yaml", "guideline")
        facts_doc = self.read(self.root / "facts.yaml", "facts")
        rule_files = sorted((self.root / "rules").glob("*.yaml"))
        for stray in stray_files(self.root / "rules"):
            self.problems.append(Problem("not loaded: rule files end in .yaml", file=display(stray)))
        if not rule_files:
            self.problems.append(Problem("no rule files (rules/*.yaml)", file=display(self.root / "rules")))
        rule_docs = []
        for path in rule_files:
            doc = self.read(path, "rules")
            if doc is not None:
                rule_docs.append(doc)
        if guideline is None or facts_doc is None or guideline[0] is None or facts_doc[0] is None:
            return None  # nothing more can be checked without the catalogue and vocabulary
        g, gpos = guideline
        references = {
            int(n): Reference(int(n), r["title"], r["source"], r.get("year"), r["kind"])
            for n, r in g["references"].items()
        }
        sections = {sid: Section(sid, s["title"]) for sid, s in g["sections"].items()}
        facts = self.facts(*facts_doc)
        catalog = self.catalog(g, gpos, facts)
        rules: list[Rule] = []
        seen_ids: dict[str, Problem] = {}
        # Rules are ordered as the guideline orders its sections, then by file name and position in the file.
        section_index = {sid: i for i, sid in enumerate(sections)}
        rule_docs.sort(key=lambda doc: section_index.get((doc[0] or {}).get("section"), len(section_index)))
        for data, pos in rule_docs:
            if data is None:
                continue
            section = data["section"]
            if section not in sections:
                self.problems.append(
                    pos.problem(("section",), f"unknown section '{section}'", None, did_you_mean(section, sections))
                )
            for i, raw in enumerate(data["rules"]):
                rule = self.rule(raw, ("rules", i), pos, section, facts, catalog, references, len(rules))
                if rule is None:
                    continue
                if rule.id in seen_ids:
                    first = seen_ids[rule.id]
                    self.problems.append(
                        pos.problem(
                            ("rules", i, "id"),
                            f"duplicate rule id (first defined at {first.file}:{first.line})",
                            f"rule {rule.id}",
                        )
                    )
                    continue
                seen_ids[rule.id] = pos.problem(("rules", i), "")
                rules.append(rule)
        return KnowledgeBase(
            name=g["name"],
            title=g["title"],
            version=str(g["version"]),
            last_updated=str(g["last_updated"]),
            review_status=g["review_status"],
            publisher=g.get("publisher", ""),
            disclaimer=g.get("disclaimer", ""),
            question=g.get("question", ""),
            root=str(self.root),
            sha256=self.digest(),
            facts=facts,
            rules=tuple(rules),
            references=references,
            sections=sections,
            catalog=catalog,
        )

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in kb_files(self.root):
            if path.exists():
                h.update(path.relative_to(self.root).as_posix().encode() + b"\0")
                h.update(path.read_bytes() + b"\0")
        return h.hexdigest()

    def catalog(self, g: dict, pos: Positions, facts: dict) -> dict:
        catalog: dict[str, dict[str, CodeEntry]] = {}
        for key, kind in CATALOG_KINDS.items():
            catalog[kind] = {
                code: CodeEntry(
                    kind,
                    code,
                    e["label"],
                    e["text"],
                    e["patient_text"],
                    e["rank"] if kind == "urgency" else 0,
                    i,
                    **(_action_flags(e) if kind == "action" else {}),
                )
                for i, (code, e) in enumerate(g[key].items())
            }
        ranks: dict[int, str] = {}
        for code, entry in catalog["urgency"].items():
            if entry.rank in ranks:
                self.problems.append(
                    pos.problem(
                        ("urgency", code, "rank"), f"urgency rank {entry.rank} is also used by '{ranks[entry.rank]}'"
                    )
                )
            ranks[entry.rank] = code
        for code, e in g["actions"].items():  # conditions are parsed once the vocabulary is known
            if "done_when" in e:
                cond = self.condition(e["done_when"], ("actions", code, "done_when"), pos, f"action {code}", facts)
                if cond is not None:
                    catalog["action"][code] = replace(catalog["action"][code], done_when=cond)
        return catalog

    def facts(self, data: dict, pos: Positions) -> dict[str, Fact]:
        facts: dict[str, Fact] = {}
        for i, (name, f) in enumerate(data["facts"].items()):
            where = ("facts", name)
            subject = f"fact {name}"
            if name in RESERVED_FACT_NAMES:
                self.problems.append(
                    pos.problem(
                        where,
                        f"'{name}' is reserved (patient files use id and note; the "
                        f"engine's fact messages use sid and t)",
                        subject,
                        key=True,
                    )
                )
                continue
            derived = bool(f.get("derived", False))
            if f["type"] == "enum":
                if "values" not in f:
                    self.problems.append(pos.problem(where, "an enum fact needs 'values'", subject))
                    continue
                values = tuple(f["values"])
            else:
                if "values" in f:
                    self.problems.append(pos.problem(where + ("values",), "a bool fact has no 'values'", subject))
                values = (True, False)
            if not derived:
                for key in ("question", "patient_question"):
                    if key not in f:
                        self.problems.append(pos.problem(where, f"an input fact needs '{key}'", subject))
            elif f.get("alarm"):
                self.problems.append(
                    pos.problem(where + ("alarm",), "a derived fact is never asked, so never an alarm", subject)
                )
            neurological = bool(f.get("neurological", False))
            if neurological and (derived or f["type"] != "bool"):
                self.problems.append(
                    pos.problem(
                        where + ("neurological",), "only an input yes/no fact can be a neurological symptom", subject
                    )
                )
            facts[name] = Fact(
                name,
                f["type"],
                values,
                f["meaning"],
                f.get("question"),
                f.get("patient_question"),
                bool(f.get("alarm", False)),
                derived,
                i,
                pos.at(where)[0],
                neurological=neurological,
            )
        for name, f in data["facts"].items():  # constraints may name facts defined further down
            if "only_if" in f and name in facts:
                subject = f"fact {name}"
                if facts[name].derived:
                    self.problems.append(
                        pos.problem(("facts", name, "only_if"), "a derived fact has no 'only_if'", subject)
                    )
                    continue
                cond = self.condition(f["only_if"], ("facts", name, "only_if"), pos, subject, facts)
                if cond is not None:
                    facts[name] = replace(facts[name], only_if=cond)
        return facts

    # -- rules --
    def rule(
        self, raw: dict, where: tuple, pos: Positions, section: str, facts, catalog, references, order: int
    ) -> Rule | None:
        rule_id = raw["id"]
        subject = f"rule {rule_id}"
        before = len(self.problems)
        when = self.condition(raw["when"], where + ("when",), pos, subject, facts)
        then = tuple(
            done
            for i, item in enumerate(raw["then"])
            if (done := self.conclusion(item, where + ("then", i), pos, subject, facts, catalog)) is not None
        )
        for i, n in enumerate(raw["cites"]):
            if n not in references:
                self.problems.append(
                    pos.problem(
                        where + ("cites", i),
                        f"cites reference {n}, which is not in the reference list (1-{max(references)})",
                        subject,
                    )
                )
        if len(self.problems) > before or when is None:
            return None
        return Rule(
            rule_id,
            raw["title"],
            section,
            when,
            then,
            tuple(raw["cites"]),
            raw["rationale"],
            raw.get("priority", 0),
            raw.get("interpretation"),
            pos.file,
            pos.at(where)[0],
            order,
        )

    def condition(self, raw: dict, where: tuple, pos: Positions, subject: str, facts) -> Condition | None:
        heads = [k for k in CONDITION_HEADS if k in raw]
        if len(heads) != 1:
            message = (
                "a condition needs one of fact/all/any/not"
                if not heads
                else f"a condition has exactly one of fact/all/any/not, not {' and '.join(heads)}"
            )
            self.problems.append(pos.problem(where, message, subject))
            return None
        head = heads[0]
        if head == "fact":
            return self.test(raw, where, pos, subject, facts)
        extra = [k for k in raw if k != head]
        if extra:
            self.problems.append(
                pos.problem(where + (extra[0],), f"'{extra[0]}' does not belong beside '{head}'", subject)
            )
            return None
        if head == "not":
            item = self.condition(raw["not"], where + ("not",), pos, subject, facts)
            return None if item is None else Not(item)
        parsed = [self.condition(c, where + (head, i), pos, subject, facts) for i, c in enumerate(raw[head])]
        items = tuple(i for i in parsed if i is not None)
        if len(items) != len(parsed):
            return None
        return All(items) if head == "all" else AnyOf(items)

    def test(self, raw: dict, where: tuple, pos: Positions, subject: str, facts) -> Test | None:
        name = raw["fact"]
        if name not in facts:
            self.problems.append(
                pos.problem(where + ("fact",), f"unknown fact '{name}'", subject, did_you_mean(name, facts))
            )
            return None
        fact = facts[name]
        tests = [k for k in ("is", "in") if k in raw]
        if len(tests) != 1:
            self.problems.append(pos.problem(where, f"a test of '{name}' needs exactly one of 'is' or 'in'", subject))
            return None
        values = [raw["is"]] if tests[0] == "is" else list(raw["in"])
        for i, value in enumerate(values):
            at = where + (("is",) if tests[0] == "is" else ("in", i))
            if not self.value_ok(fact, value, at, pos, subject):
                return None
        return Test(name, frozenset(values), pos.at(where)[0])

    def value_ok(self, fact: Fact, value: Any, at: tuple, pos: Positions, subject: str) -> bool:
        if fact.type == "bool" and not isinstance(value, bool):
            self.problems.append(pos.problem(at, f"'{fact.name}' is true or false, not {_typename(value)}", subject))
            return False
        if fact.type == "enum" and value not in fact.values:
            self.problems.append(
                pos.problem(
                    at,
                    f"'{value}' is not a value of '{fact.name}' ({', '.join(map(str, fact.values))})",
                    subject,
                    did_you_mean(str(value), [str(v) for v in fact.values]),
                )
            )
            return False
        return True

    def conclusion(self, raw: dict, where: tuple, pos: Positions, subject: str, facts, catalog) -> Conclusion | None:
        heads = [k for k in CONCLUSION_HEADS if k in raw]
        if len(heads) != 1:
            message = (
                f"a conclusion needs one of {', '.join(CONCLUSION_HEADS)}"
                if not heads
                else f"a conclusion has exactly one of {', '.join(CONCLUSION_HEADS)}, not {' and '.join(heads)}"
            )
            self.problems.append(pos.problem(where, message, subject))
            return None
        head = heads[0]
        allowed_extra = {"action": {"within_hours", "window"}, "derive": {"value"}}.get(head, set())
        for key in raw:
            if key != head and key not in allowed_extra:
                self.problems.append(
                    pos.problem(where + (key,), f"'{key}' does not belong in a '{head}' conclusion", subject)
                )
                return None
        code = raw[head]
        if head == "derive":
            if code not in facts:
                self.problems.append(
                    pos.problem(
                        where + ("derive",),
                        f"unknown fact '{code}'",
                        subject,
                        did_you_mean(code, [f for f in facts if facts[f].derived]),
                    )
                )
                return None
            if not facts[code].derived:
                self.problems.append(
                    pos.problem(
                        where + ("derive",),
                        f"'{code}' is an input fact; only facts marked 'derived: true' in facts.yaml can be derived",
                        subject,
                    )
                )
                return None
            if "value" not in raw:
                self.problems.append(pos.problem(where, f"derive '{code}' needs a 'value'", subject))
                return None
            if not self.value_ok(facts[code], raw["value"], where + ("value",), pos, subject):
                return None
            return Derive(code, raw["value"])
        kind = "urgency" if head == "urgency" else head
        known = catalog[kind]
        if code not in known:
            self.problems.append(
                pos.problem(where + (head,), f"unknown {head} '{code}'", subject, did_you_mean(code, known))
            )
            return None
        if head == "urgency":
            return SetUrgency(code)
        return Recommend(head, code, raw.get("within_hours"), raw.get("window"))
