"""The typed model of a knowledge base: the one thing every other module shares.

Plain frozen dataclasses, built by `loader`, read by `compiler`, `session`, `reference`, `result`,
`report` and `visualize`. Conditions are data (Test / All / AnyOf / Not), never code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

Value = bool | str


# ---- facts -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fact:
    name: str
    type: str  # "bool" | "enum"
    values: tuple[Value, ...]  # the domain: (True, False) for bool, the allowed strings for enum
    meaning: str
    question: str | None = None
    patient_question: str | None = None
    alarm: bool = False
    derived: bool = False
    order: int = 0  # position in the vocabulary file
    line: int | None = None
    only_if: Condition | None = None  # the fact may be given only when this is not false
    neurological: bool = False  # a neurological symptom (input yes/no facts only): a yes must give the top urgency

    def label(self, value: Value | None) -> str:
        if value is None:
            return "unknown"
        if self.type == "bool":
            return "yes" if value else "no"
        return str(value)


# ---- conditions (three-valued: a condition is true, false or unknown) -------------------------------------
@dataclass(frozen=True)
class Test:
    """`fact` has one of `values`. Unknown when the fact is unknown."""

    fact: str
    values: frozenset  # frozenset[Value]
    line: int | None = field(default=None, compare=False)

    def describe(self) -> str:
        if len(self.values) == 1:
            (value,) = tuple(self.values)
            return f"{self.fact} is {_show(value)}"
        return f"{self.fact} in [{', '.join(sorted(_show(v) for v in self.values))}]"


@dataclass(frozen=True)
class All:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Test | All | AnyOf | Not


def _show(value: Value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def condition_facts(cond: Condition) -> tuple[str, ...]:
    """Fact names a condition reads, in first-mention order, without repeats."""
    seen: dict[str, None] = {}

    def walk(c: Condition) -> None:
        if isinstance(c, Test):
            seen.setdefault(c.fact, None)
        elif isinstance(c, (All, AnyOf)):
            for item in c.items:
                walk(item)
        else:
            walk(c.item)

    walk(cond)
    return tuple(seen)


# ---- conclusions -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetUrgency:
    level: str


@dataclass(frozen=True)
class Recommend:
    """An action, warning or differential entry. `kind` is "action", "warning" or "differential"."""

    kind: str
    code: str
    within_hours: float | None = None  # actions only; None = no window stated; the upper end of a range
    window: str | None = None  # the guideline's words for the window, e.g. "within 12-24 hours"
    within_hours_min: float | None = None  # actions only: the lower end where the guideline gives a range (12 of 12-24)


@dataclass(frozen=True)
class Derive:
    fact: str
    value: Value


Conclusion = SetUrgency | Recommend | Derive


def hours_text(hours: float | None, lower: float | None = None) -> str:
    """A window figure in words, for where no rule gave the guideline's own words for it; with `lower`, the
    range the guideline gives ("within 12-24 hours")."""
    if hours is None:
        return "no fixed window"
    if lower is not None and 0 < lower < hours:
        return f"within {lower:g}-{hours:g} hours"
    if hours == 0:
        return "immediately"
    if hours >= 48 and hours % 24 == 0:
        days = int(hours // 24)
        return f"within {days // 7} weeks" if days % 7 == 0 and days >= 14 else f"within {days} days"
    return f"within {hours:g} hours"


# ---- rules, catalogue, references ------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    number: int
    title: str
    source: str
    year: int | None
    kind: str

    def cite(self) -> str:
        year = f", {self.year}" if self.year else ""
        return f"[{self.number}] {self.title} — {self.source}{year}"


@dataclass(frozen=True)
class Section:
    id: str
    title: str


@dataclass(frozen=True)
class CodeEntry:
    """An entry of the conclusion catalogue: an urgency level, action, warning or differential code."""

    kind: str  # "urgency" | "action" | "warning" | "differential"
    code: str
    label: str
    text: str
    patient_text: str
    rank: int = 0  # urgency only
    order: int = 0
    imaging: bool = False  # actions only: an imaging study (could_escalate reports it brought forward)
    never_delay: bool = False  # actions only: a yes to any question must never delay or remove it (check proves)
    time_critical: bool = False  # actions only: like imaging, could_escalate watches it being required sooner
    done_when: Condition | None = None  # actions only: the answers show it already done (e.g. radiographs read)
    referral: bool = False  # actions only: a referral (check proves every imaging or referral action has a window)
    emergency_within_hours: float | None = None  # actions only: every EMERGENCY result has it within this (check)
    emergency_unless: Condition | None = None  # ... except for patients for whom this is true
    superseded_by: tuple = ()  # actions only: dropped from a result that has any of these (it covers this one)


@dataclass(frozen=True)
class Floor:
    """A safety floor `lumbar-kb check` proves: whenever `when` is true the urgency is at least `at_least`."""

    id: str
    claim: str
    when: Condition
    at_least: str


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    section: str
    when: Condition
    then: tuple[Conclusion, ...]
    cites: tuple[int, ...]
    rationale: str
    priority: int = 0
    interpretation: str | None = None
    file: str = ""
    line: int | None = None
    order: int = 0  # global definition order (files in guideline section order, then by name; rules in file order)

    @property
    def reads(self) -> tuple[str, ...]:
        return condition_facts(self.when)

    def derives(self) -> tuple[Derive, ...]:
        return tuple(c for c in self.then if isinstance(c, Derive))


@dataclass(frozen=True)
class Relation:
    """A relation between answers, declared in the vocabulary: when `when` is true, `implies` may not be false
    and `excludes` may not be true. A patient breaking one is contradictory and is refused; `check` never
    reasons about such a patient. Unknown never breaks a relation (nothing is inferred from it)."""

    id: str
    when: Condition
    implies: Condition | None
    excludes: Condition | None
    because: str
    line: int | None = None


@dataclass(frozen=True)
class Inconsistency:
    """A place where the guideline contradicts itself, the choice the encoding made, and why."""

    id: str
    title: str
    sentences: tuple[str, ...]  # quoted verbatim from the guideline
    choice: str
    why: str
    rules: tuple[str, ...]  # the rules that carry the choice
    board: str  # what the medical board must decide
    line: int | None = None


SEVERITIES = ("minor", "significant", "considerable", "major", "catastrophic")  # DCB0129, 1-5
LIKELIHOODS = ("very_low", "low", "medium", "high", "very_high")  # DCB0129, 1-5
# DCB0129's risk matrix: RISK_MATRIX[likelihood][severity] is the risk rating, 1 (lowest) to 5
RISK_MATRIX = (
    (1, 1, 2, 2, 3),  # very low
    (1, 2, 2, 3, 4),  # low
    (2, 2, 3, 3, 4),  # medium
    (2, 3, 3, 4, 5),  # high
    (3, 4, 4, 5, 5),  # very high
)


def risk_rating(severity: str, likelihood: str) -> int:
    return RISK_MATRIX[LIKELIHOODS.index(likelihood)][SEVERITIES.index(severity)]


@dataclass(frozen=True)
class Control:
    """What keeps a hazard in check, named so a test can prove it exists and runs."""

    kind: str  # "rule" | "check" | "test" | "relation" | "knowledge"
    ref: str  # a rule id, a `lumbar-kb check` check id, a test (tests/file.py::name), a relation id, a file
    what: str


@dataclass(frozen=True)
class Hazard:
    id: str
    title: str
    cause: str
    effect: str
    severity: str
    likelihood: str  # before the controls
    controls: tuple[Control, ...]
    residual_severity: str
    residual_likelihood: str
    line: int | None = None

    @property
    def initial_risk(self) -> int:
        return risk_rating(self.severity, self.likelihood)

    @property
    def residual_risk(self) -> int:
        return risk_rating(self.residual_severity, self.residual_likelihood)


@dataclass(frozen=True)
class KnowledgeBase:
    name: str
    title: str
    version: str
    last_updated: str
    review_status: str
    publisher: str
    disclaimer: str
    question: str
    root: str  # directory it was loaded from
    sha256: str  # over every knowledge file except scenarios and patients
    facts: dict  # dict[str, Fact], vocabulary order
    rules: tuple[Rule, ...]  # definition order
    references: dict  # dict[int, Reference]
    sections: dict  # dict[str, Section]
    catalog: dict  # dict[str, dict[str, CodeEntry]] keyed by kind then code
    relations: tuple[Relation, ...] = ()  # facts.yaml `relations:`: answers that contradict each other
    inconsistencies: tuple[Inconsistency, ...] = ()  # inconsistencies.yaml: the guideline against itself
    hazards: tuple[Hazard, ...] = ()  # hazards.yaml: the clinical safety hazard log (DCB0129 style)
    # completeness: while an alarm question is unanswered (and not `not_asked_when`), the urgency is at least
    # `incomplete_floor` and the result says it is incomplete, with these texts
    incomplete_floor: str | None = None
    incomplete_text: str = ""
    incomplete_patient_text: str = ""
    not_asked_when: dict = field(default_factory=dict)  # dict[str, Condition]: the question is moot when true
    # scope: a patient for whom `out_of_scope_when` is true is outside the guideline (no differential)
    out_of_scope_when: Condition | None = None
    out_of_scope_text: str = ""
    out_of_scope_patient_text: str = ""
    floors: tuple = ()  # tuple[Floor, ...]

    # -- convenience views (a knowledge base is immutable: each is worked out once) --
    @cached_property
    def input_facts(self) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts.values() if not f.derived)

    @cached_property
    def derived_facts(self) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts.values() if f.derived)

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def urgency_rank(self, level: str) -> int:
        return self.catalog["urgency"][level].rank

    @cached_property
    def lowest_urgency(self) -> str:
        return min(self.catalog["urgency"].values(), key=lambda e: e.rank).code

    @property
    def watched_actions(self) -> list[str]:
        """The actions could_escalate watches: imaging studies and other time-critical steps."""
        return [code for code, e in self.catalog["action"].items() if e.imaging or e.time_critical]

    def identity(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}
