"""Turn a Trace into the Result a user reads: urgency, actions, warnings, differential, trace, questions.

Aggregation only; every decision was made by the rules. Urgency is the highest level any fired rule
concluded (the lowest level when none did). Where several rules give one action a window, the earliest
wins (with its lower end, where the guideline gives a range) and every rule is listed under `because`. An
action another one in the result covers (the catalogue's `superseded_by`) is dropped. Texts come from the
knowledge base's catalogue.

Three generic readings of the knowledge base's declarations (no clinical logic here): `complete` and
`unanswered_alarm` (the `alarm: true` questions not answered and not moot, `completeness.not_asked_when`);
while incomplete the urgency is at least `completeness.floor`; `in_scope` is false when
`scope.out_of_scope_when` holds, and such a patient gets no differential.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .logic import asked, evaluate, unanswered_alarms
from .model import Derive, KnowledgeBase, Recommend, SetUrgency
from .trace import Trace


@dataclass
class Item:
    code: str
    text: str
    because: list  # rule ids, in firing order
    citations: list  # reference numbers, ascending
    within_hours: float | None = None
    window: str | None = None
    label: str = ""
    done: bool = False  # actions only: the patient's answers show it already done (the catalogue's done_when)
    within_hours_min: float | None = None  # actions only: the lower end where the guideline gives a range


@dataclass
class FiredRule:
    rule: str
    title: str
    order: int
    matched: dict
    citations: list
    section: str


@dataclass
class Question:
    fact: str
    question: str
    alarm: bool


@dataclass
class Result:
    urgency: str
    urgency_text: str
    actions: list  # list[Item]
    warnings: list
    differential: list
    fired: list  # list[FiredRule]
    unanswered: list  # list[Question]
    inputs: dict
    derived: dict
    knowledge_base: dict
    complete: bool  # every alarm question is answered (or moot for this patient)
    unanswered_alarm: list  # the alarm questions' fact names still to ask
    incomplete_text: str  # the knowledge base's words for an incomplete result ("" when complete)
    in_scope: bool  # False: the knowledge base's `out_of_scope_when` holds (no differential is given)
    scope_text: str  # the knowledge base's words for an out-of-scope patient ("" in scope)
    audience: str = "clinician"
    could_escalate: list = field(default_factory=list)  # list[analysis.escalation.Escalation], most urgent first

    def fired_ids(self) -> list[str]:
        return [f.rule for f in self.fired]

    def to_dict(self) -> dict:
        items = lambda xs, with_window: [_item_dict(x, with_window) for x in xs]
        out = {
            "urgency": self.urgency,
            "urgency_text": self.urgency_text,
            "actions": items(self.actions, True),
            "warnings": items(self.warnings, False),
            "differential": items(self.differential, False),
            "fired": [
                {"rule": f.rule, "title": f.title, "order": f.order, "matched": f.matched, "citations": f.citations}
                for f in self.fired
            ],
            "unanswered": [asdict(q) for q in self.unanswered],
            "could_escalate": [e.to_dict() for e in self.could_escalate],
            "complete": self.complete,
            "unanswered_alarm": list(self.unanswered_alarm),
            "incomplete_text": self.incomplete_text,
            "in_scope": self.in_scope,
            "scope_text": self.scope_text,
            "inputs": self.inputs,
            "derived": self.derived,
        }
        out["knowledge_base"] = self.knowledge_base
        return out


def _item_dict(item: Item, with_window: bool) -> dict:
    d: dict[str, object] = {"code": item.code}
    if with_window:
        d["within_hours"] = item.within_hours
        d["within_hours_min"] = item.within_hours_min
        d["window"] = item.window
        d["done"] = item.done
    d.update({"label": item.label, "text": item.text, "because": item.because, "citations": item.citations})
    return d


def merge_window(current: tuple, conclusion: Recommend) -> tuple:
    """One action's (within_hours, window words[, within_hours_min]) after one more rule concludes it; start from
    (None, None) or (None, None, None): the answer has the same length. The earliest upper figure wins, with its
    words and lower end (so 12-24 h stays a range); words without a figure stand only while no rule gave one."""
    hours, words = current[0], current[1]
    if conclusion.within_hours is not None and (hours is None or conclusion.within_hours < hours):
        new = (conclusion.within_hours, conclusion.window, conclusion.within_hours_min)
        return new[: len(current)]
    if hours is None and words is None:
        return (None, conclusion.window, None)[: len(current)]
    return current


def build(kb: KnowledgeBase, trace: Trace, audience: str = "clinician") -> Result:
    """The Result of one evaluation, without the look-ahead: `analysis.escalation.decide` adds
    `could_escalate` beside it (a chained re-evaluation per possible answer to each unanswered question)."""
    rules = {r.id: r for r in kb.rules}
    text_of = (lambda e: e.patient_text) if audience == "patient" else (lambda e: e.text)
    urgency = kb.lowest_urgency
    groups: dict[str, dict[str, Item]] = {"action": {}, "warning": {}, "differential": {}}
    for firing in trace.firings:
        rule = rules[firing.rule]
        for conclusion in rule.then:
            if isinstance(conclusion, SetUrgency):
                if kb.urgency_rank(conclusion.level) > kb.urgency_rank(urgency):
                    urgency = conclusion.level
            elif isinstance(conclusion, Recommend):
                entry = kb.catalog[conclusion.kind][conclusion.code]
                item = groups[conclusion.kind].get(conclusion.code)
                if item is None:
                    item = groups[conclusion.kind][conclusion.code] = Item(
                        conclusion.code, text_of(entry), [], [], label=entry.label
                    )
                if rule.id not in item.because:
                    item.because.append(rule.id)
                item.citations = sorted(set(item.citations) | set(rule.cites))
                item.within_hours, item.window, item.within_hours_min = merge_window(
                    (item.within_hours, item.window, item.within_hours_min), conclusion
                )
            elif not isinstance(conclusion, Derive):  # pragma: no cover - the model has no other kind
                raise TypeError(conclusion)

    def ordered(kind: str) -> list[Item]:
        catalog = kb.catalog[kind]
        key = (
            (lambda i: (i.done, i.within_hours is None, i.within_hours or 0, catalog[i.code].order))
            if kind == "action"
            else (lambda i: catalog[i.code].order)
        )
        return sorted(groups[kind].values(), key=key)

    for code in list(groups["action"]):  # an action covered by another the result has (the catalogue's superseded_by)
        if any(other in groups["action"] for other in kb.catalog["action"][code].superseded_by):
            del groups["action"][code]
    missing_alarms = unanswered_alarms(kb, trace.inputs)
    floor = kb.incomplete_floor
    if missing_alarms and floor is not None and kb.urgency_rank(floor) > kb.urgency_rank(urgency):
        urgency = floor  # unanswered is never "no": an unasked alarm question is never the lowest level
    in_scope = kb.out_of_scope_when is None or evaluate(kb.out_of_scope_when, trace.inputs) is not True
    if not in_scope:
        groups["differential"].clear()  # the differential is of a mass; the guideline is not for this patient
    facts = trace.facts()
    for item in groups["action"].values():
        done_when = kb.catalog["action"][item.code].done_when
        item.done = done_when is not None and evaluate(done_when, facts) is True
    # a question that cannot be answered for this patient (its only_if is false) is not "unanswered"
    unanswered = [f for f in kb.input_facts if f.name not in trace.inputs and asked(f, trace.inputs, kb.not_asked_when)]
    unanswered.sort(key=lambda f: (not f.alarm, f.order))
    question_of = (lambda f: f.patient_question) if audience == "patient" else (lambda f: f.question)
    result = Result(
        urgency=urgency,
        urgency_text=text_of(kb.catalog["urgency"][urgency]),
        actions=ordered("action"),
        warnings=ordered("warning"),
        differential=ordered("differential"),
        fired=[
            FiredRule(
                f.rule, rules[f.rule].title, f.order, dict(f.matched), list(rules[f.rule].cites), rules[f.rule].section
            )
            for f in trace.firings
        ],
        unanswered=[Question(f.name, question_of(f) or "", f.alarm) for f in unanswered],
        inputs={f.name: trace.inputs[f.name] for f in kb.input_facts if f.name in trace.inputs},
        derived=dict(trace.derived),
        knowledge_base=kb.identity(),
        audience=audience,
        complete=not missing_alarms,
        unanswered_alarm=missing_alarms,
        incomplete_text=(kb.incomplete_patient_text if audience == "patient" else kb.incomplete_text)
        if missing_alarms
        else "",
        in_scope=in_scope,
        scope_text=""
        if in_scope
        else (kb.out_of_scope_patient_text if audience == "patient" else kb.out_of_scope_text),
    )
    return result
