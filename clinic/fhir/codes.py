"""The terminology bindings (`codes.yaml` beside the knowledge base), loaded and checked against it.

The bindings are data: which SNOMED CT / ICD-10 / LOINC codes set which fact, how a Condition's status sets
true / unknown / false, how the catalogue's actions are ordered, and which draft orders perform which action.
Every name in the file is checked against the knowledge base (facts, values, actions) with file:line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lumbar_kb.engine.errors import KnowledgeBaseError, Problem, did_you_mean
from lumbar_kb.engine.model import KnowledgeBase, Value
from lumbar_kb.engine.source import DocumentError, read_document

CODES_FILE = "codes.yaml"


@dataclass(frozen=True)
class Coding:
    system: str  # the URI
    code: str
    display: str | None = None
    prefix: bool = False
    to_confirm: bool = False  # chosen without a terminologist: to be confirmed before clinical use

    def to_fhir(self) -> dict:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


@dataclass(frozen=True)
class Binding:
    fact: str
    value: Value | None  # None: read the value from the Observation (or true, for a Condition)
    profile: str
    codes: tuple[Coding, ...]


@dataclass(frozen=True)
class OrderKind:
    name: str
    display: str
    performs: str | None
    requires_first: str | None
    imaging: bool
    codes: tuple[Coding, ...]
    unclassified: bool = False  # the kind given to imaging of the lumbar spine no other kind names


@dataclass(frozen=True)
class LumbarImaging:
    """How a draft order no kind names is recognised as imaging of the lumbar spine all the same."""

    kind: OrderKind  # the kind such an order is given ("cannot classify")
    categories: frozenset  # (system, code) of ServiceRequest.category meaning imaging
    body_sites: frozenset  # (system, code) of ServiceRequest.bodySite meaning the lumbar spine
    imaging_systems: frozenset  # code systems whose every code is an imaging procedure
    imaging_words: re.Pattern
    site_words: re.Pattern


def _words(words: list[str]) -> re.Pattern:
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in words) + r")(?![\w-])", re.IGNORECASE)


class MalformedOrder(Exception):
    """A draft order whose code, category or bodySite has the wrong shape; `field` names where."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(message)


def _concepts(value, at: str, many: bool) -> list[tuple[str, list[tuple[str | None, str | None, str]]]]:
    """CodeableConcept(s) as (text, [(system, code, display)]); raise MalformedOrder naming the field."""
    if value is None:
        return []
    items = value if many else [value]
    if many and not isinstance(value, list):
        raise MalformedOrder(at, "must be a list of CodeableConcepts")
    out = []
    for i, concept in enumerate(items):
        here = f"{at}[{i}]" if many else at
        if not isinstance(concept, dict):
            raise MalformedOrder(here, "must be a CodeableConcept with a list of codings")
        codings = concept.get("coding", [])
        if not isinstance(codings, list):
            raise MalformedOrder(f"{here}.coding", "must be a list of codings")
        found = []
        for j, coding in enumerate(codings):
            if not isinstance(coding, dict):
                raise MalformedOrder(f"{here}.coding[{j}]", "a coding must be an object")
            system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
            found.append(
                (
                    system if isinstance(system, str) else None,
                    code if isinstance(code, str) else None,
                    display if isinstance(display, str) else "",
                )
            )
        text = concept.get("text")
        out.append((text if isinstance(text, str) else "", found))
    return out


@dataclass
class Codes:
    canonical: str
    systems: dict  # alias -> URI
    yes: tuple[Coding, ...]
    no: tuple[Coding, ...]
    observation_status: frozenset
    questionnaire_response_status: frozenset
    profiles: dict  # name -> {"clinical": {...}, "verification": {...}}
    bindings: tuple[Binding, ...]
    values: dict  # fact -> value -> tuple[Coding, ...]
    action_orders: dict  # action code -> order kind name
    orders: dict  # name -> OrderKind
    file: str = ""
    lumbar_imaging: LumbarImaging | None = None
    _exact: dict = field(default_factory=dict, repr=False)  # (system, code) -> [Binding]
    _prefix: dict = field(default_factory=dict, repr=False)  # system -> [(prefix, Binding)]

    @property
    def kb_system(self) -> str:
        return str(self.systems["kb"])

    @property
    def action_system(self) -> str:
        return str(self.systems["kb_action"])

    @property
    def order_system(self) -> str:
        return str(self.systems["kb_order"])

    def url(self, kind: str, name: str) -> str:
        return f"{self.canonical.rstrip('/')}/{kind}/{name}"

    def bindings_for(self, system: str | None, code: str | None) -> list[Binding]:
        """Every binding a coding matches: exact codes, then for each fact the longest matching prefix."""
        if not system or not code:
            return []
        found = list(self._exact.get((system, code), ()))
        best: dict[tuple, tuple[int, Binding]] = {}
        for prefix, binding in self._prefix.get(system, ()):
            if code.startswith(prefix):
                key = (binding.fact,)
                if key not in best or len(prefix) > best[key][0]:
                    best[key] = (len(prefix), binding)
        exact_facts = {b.fact for b in found}
        found.extend(b for _, b in best.values() if b.fact not in exact_facts)
        return found

    def answer_of(self, system: str | None, code: str | None) -> bool | None:
        for value, codings in ((True, self.yes), (False, self.no)):
            if any(c.system == system and c.code == code for c in codings):
                return value
        return None

    def enum_value(self, fact: str, system: str | None, code: str | None, allowed: tuple) -> Value | None:
        if system == self.kb_system and code in allowed:
            return code
        for value, codings in self.values.get(fact, {}).items():
            if any(c.system == system and c.code == code for c in codings):
                return value
        return None

    def order_kind(self, system: str | None, code: str | None) -> OrderKind | None:
        for kind in self.orders.values():
            if system == self.order_system and code == kind.name:
                return kind
            if any(c.system == system and c.code == code for c in kind.codes):
                return kind
        return None

    def classify_order(self, resource: dict, at: str = "") -> OrderKind | None:
        """The kind of a draft order (a ServiceRequest): the first of its codings a kind names; else, when it is
        recognisably imaging of the lumbar spine (see `lumbar_imaging` in codes.yaml), the "cannot classify"
        kind; else None. A malformed code, category or bodySite raises MalformedOrder naming the field."""
        code = _concepts(resource.get("code"), f"{at}.code", many=False)
        for _text, codings in code:
            for system, value, _display in codings:
                kind = self.order_kind(system, value)
                if kind is not None:
                    return kind
        hint = self.lumbar_imaging
        if hint is None:
            return None
        categories = _concepts(resource.get("category"), f"{at}.category", many=True)
        sites = _concepts(resource.get("bodySite"), f"{at}.bodySite", many=True)
        texts = " | ".join([t for t, _ in code] + [d for _, cs in code for _, _, d in cs])
        site_texts = texts + " | " + " | ".join([t for t, _ in sites] + [d for _, cs in sites for _, _, d in cs])
        imaging = (
            any((s, c) in hint.categories for _, cs in categories for s, c, _ in cs)
            or any(s in hint.imaging_systems for _, cs in code for s, _, _ in cs)
            or bool(hint.imaging_words.search(texts))
        )
        lumbar = any((s, c) in hint.body_sites for _, cs in sites for s, c, _ in cs) or bool(
            hint.site_words.search(site_texts)
        )
        return hint.kind if imaging and lumbar else None

    def action_coding(self, kb: KnowledgeBase, action: str) -> list[dict]:
        """The codings of an order carrying out a catalogue action: the kb's own code, then the standard codes
        of the order kind that performs it, the first of each code system (the codings of one CodeableConcept
        say one thing)."""
        entry = kb.catalog["action"][action]
        out = [{"system": self.action_system, "code": action, "display": entry.label}]
        kind = self.orders.get(self.action_orders.get(action, ""))
        if kind is not None:
            seen: set[str] = set()
            for c in kind.codes:
                if c.system not in seen:
                    seen.add(c.system)
                    out.append(c.to_fhir())
        return out


def load_codes(kb: KnowledgeBase, path: Path | str | None = None) -> Codes:
    """Read and check `codes.yaml` (default: beside the knowledge base); raise KnowledgeBaseError if wrong."""
    path = Path(path) if path is not None else Path(kb.root) / CODES_FILE
    try:
        data, pos = read_document(path)
    except DocumentError as exc:
        raise KnowledgeBaseError(exc.problem) from None
    from lumbar_kb.engine.loader.schema import schema_problems  # jsonschema: only when a codes file is read

    problems = schema_problems(data, "codes", pos) if isinstance(data, dict) else []
    if not isinstance(data, dict):
        problems.append(Problem("must be a mapping at the top", file=pos.file, line=1))
    if problems:
        raise KnowledgeBaseError(problems)
    systems = dict(data["systems"])
    if not re.fullmatch(r"https?://[^\s]+", data["canonical"]):
        problems.append(pos.problem(("canonical",), f"canonical must be an http(s) URL, not {data['canonical']!r}"))

    def coding(raw: dict, at: tuple) -> Coding:
        system = systems.get(raw["system"])
        if system is None:
            hint = did_you_mean(raw["system"], systems)
            problems.append(pos.problem(at + ("system",), f"unknown system alias '{raw['system']}'", None, hint))
            system = raw["system"]
        return Coding(
            system,
            str(raw["code"]),
            raw.get("display"),
            bool(raw.get("prefix", False)),
            bool(raw.get("to_confirm", False)),
        )

    def codings(raw: list, at: tuple) -> tuple[Coding, ...]:
        return tuple(coding(c, at + (i,)) for i, c in enumerate(raw))

    profiles = data["condition_profiles"]
    bindings = []
    for i, raw in enumerate(data["bindings"]):
        at = ("bindings", i)
        fact = kb.facts.get(raw["fact"])
        if fact is None or fact.derived:
            what = "unknown fact" if fact is None else "a derived fact cannot be bound"
            problems.append(
                pos.problem(
                    at + ("fact",),
                    what,
                    f"fact '{raw['fact']}'",
                    did_you_mean(raw["fact"], [f.name for f in kb.input_facts]),
                )
            )
            continue
        value = raw.get("value")
        if value is not None and value not in fact.values:
            problems.append(
                pos.problem(at + ("value",), f"'{value}' is not a value of the fact", f"fact '{fact.name}'")
            )
        if fact.type == "enum" and value is None:
            problems.append(pos.problem(at, "an enum fact's binding must name its value", f"fact '{fact.name}'"))
        if raw["profile"] not in profiles:
            problems.append(
                pos.problem(
                    at + ("profile",),
                    f"unknown profile '{raw['profile']}'",
                    None,
                    did_you_mean(raw["profile"], profiles),
                )
            )
        bindings.append(Binding(fact.name, value, raw["profile"], codings(raw["codes"], at + ("codes",))))
    values: dict[str, dict] = {}
    for name, by_value in (data.get("values") or {}).items():
        fact = kb.facts.get(name)
        if fact is None or fact.type != "enum":
            problems.append(pos.problem(("values", name), "not an enum fact of the vocabulary", f"fact '{name}'"))
            continue
        for value in by_value:
            if value not in fact.values:
                problems.append(pos.problem(("values", name, value), f"'{value}' is not a value of the fact"))
        values[name] = {v: codings(raw, ("values", name, v)) for v, raw in by_value.items()}
    orders = {}
    for name, raw in data["orders"].items():
        for key in ("performs", "requires_first"):
            if raw.get(key) is not None and raw[key] not in kb.catalog["action"]:
                problems.append(
                    pos.problem(
                        ("orders", name, key),
                        f"unknown action '{raw[key]}'",
                        None,
                        did_you_mean(raw[key], kb.catalog["action"]),
                    )
                )
        orders[name] = OrderKind(
            name,
            raw["display"],
            raw.get("performs"),
            raw.get("requires_first"),
            bool(raw.get("imaging", False)),
            codings(raw["codes"], ("orders", name, "codes")),
        )
    action_orders = {}
    for action, raw in data["actions"].items():
        if action not in kb.catalog["action"]:
            problems.append(
                pos.problem(("actions", action), "unknown action", None, did_you_mean(action, kb.catalog["action"]))
            )
        if raw["order"] not in orders:
            problems.append(pos.problem(("actions", action, "order"), f"unknown order kind '{raw['order']}'"))
        action_orders[action] = raw["order"]
    for action in kb.catalog["action"]:
        if action not in action_orders:
            problems.append(Problem(f"action '{action}' of the catalogue has no order under `actions`", file=pos.file))
    answers = data["answers"]
    yes, no = codings(answers["yes"], ("answers", "yes")), codings(answers["no"], ("answers", "no"))
    lumbar_imaging = None
    if data.get("lumbar_imaging") is not None:
        raw = data["lumbar_imaging"]
        lumbar_imaging = LumbarImaging(
            OrderKind("unclassified_lumbar_imaging", raw["display"], None, None, True, (), unclassified=True),
            frozenset((c.system, c.code) for c in codings(raw["categories"], ("lumbar_imaging", "categories"))),
            frozenset((c.system, c.code) for c in codings(raw["body_sites"], ("lumbar_imaging", "body_sites"))),
            frozenset(systems.get(alias, alias) for alias in raw.get("imaging_systems", [])),
            _words(raw["imaging_words"]),
            _words(raw["site_words"]),
        )
    if problems:
        raise KnowledgeBaseError(problems)
    codes = Codes(
        canonical=data["canonical"],
        systems=systems,
        yes=yes,
        no=no,
        observation_status=frozenset(data["observation_status"]),
        questionnaire_response_status=frozenset(data["questionnaire_response_status"]),
        profiles=profiles,
        bindings=tuple(bindings),
        values=values,
        action_orders=action_orders,
        orders=orders,
        file=pos.file,
        lumbar_imaging=lumbar_imaging,
    )
    for binding in codes.bindings:
        for c in binding.codes:
            if c.prefix:
                codes._prefix.setdefault(c.system, []).append((c.code, binding))
            else:
                codes._exact.setdefault((c.system, c.code), []).append(binding)
    return codes
