"""Turn a Trace into the Decision the rules made and the Result a user reads (the Decision with its words).

`conclude` gives the Decision: urgency, actions, warnings, differential, the rules fired, completeness and
scope (what a cohort's decision row reads); `build` gives the Result: the Decision with its texts, each fired
rule's title and evidence, the questions left and the answers.

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

from .model import CodeEntry, KnowledgeBase, Recommend
from .prepared import prepared
from .trace import Trace


@dataclass
class Item:
    code: str
    text: str
    because: list  # rule ids, in firing order
    citations: list  # reference numbers, ascending
    within_hours: float | None  # the earliest window in hours (None: none given)
    window: str | None  # the window in words
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
    audience: str  # "clinician" or "patient": whose words the texts are in
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


@dataclass
class Decision:
    """What the rules decided for one patient, without the words around it: the part of the Result every view
    shares, and all a cohort's decision row reads (`conclude`; `build` dresses it as the Result)."""

    urgency: str
    actions: list  # list[Item], the Result's order
    warnings: list
    differential: list
    rules: list  # the ids of the rules that fired, in firing order
    complete: bool
    unanswered_alarm: list
    in_scope: bool
    could_escalate: list = field(default_factory=list)  # analysis.escalation.decision fills it

    def fired_ids(self) -> list[str]:
        return self.rules


def conclude(kb: KnowledgeBase, trace: Trace, audience: str = "clinician") -> Decision:
    """The Decision of one evaluation, without the look-ahead (`analysis.escalation.decision` adds it)."""
    plan = prepared(kb)
    patient = audience == "patient"
    urgency = plan.lowest
    top = plan.rank[urgency]
    # each code concluded: [catalogue entry, the rules in firing order, their citations, the window so far]
    found: dict[str, dict[str, list]] = {"action": {}, "warning": {}, "differential": {}}
    rules = []
    for firing in trace.firings:
        step = plan.rules[firing.rule]
        rule = step.rule
        for level, rank in step.urgencies:
            if rank > top:
                urgency, top = level, rank
        for conclusion, entry in step.recommends:
            group = found[conclusion.kind]
            seen = group.get(conclusion.code)
            if seen is None:
                group[conclusion.code] = [
                    entry,
                    [rule.id],
                    set(rule.cites),
                    merge_window((None, None, None), conclusion),
                ]
                continue
            if rule.id not in seen[1]:
                seen[1].append(rule.id)
            seen[2].update(rule.cites)
            seen[3] = merge_window(seen[3], conclusion)
        rules.append(rule.id)
    groups: dict[str, dict[str, Item]] = {
        kind: {
            code: Item(
                code,
                text_of(entry, patient),
                because,
                sorted(cites),
                within_hours=window[0],
                window=window[1],
                label=entry.label,
                within_hours_min=window[2],
            )
            for code, (entry, because, cites, window) in group.items()
        }
        for kind, group in found.items()
    }

    def ordered(kind: str) -> list[Item]:
        catalog = kb.catalog[kind]
        key = (
            (lambda i: (i.done, i.within_hours is None, i.within_hours or 0, catalog[i.code].order))
            if kind == "action"
            else (lambda i: catalog[i.code].order)
        )
        return sorted(groups[kind].values(), key=key)

    actions = groups["action"]
    for code in list(actions):  # an action covered by another the result has (the catalogue's superseded_by)
        if any(other in actions for other in plan.action_entries[code].superseded_by):
            del actions[code]
    inputs = trace.inputs
    missing_alarms = plan.unanswered_alarms(inputs)
    floor = kb.incomplete_floor
    if missing_alarms and floor is not None and plan.rank[floor] > top:
        urgency = floor  # unanswered is never "no": an unasked alarm question is never the lowest level
    in_scope = plan.out_of_scope is None or plan.out_of_scope(inputs) is not True
    if not in_scope:
        groups["differential"].clear()  # the differential is of a mass; the guideline is not for this patient
    if actions:
        facts = trace.facts()
        for item in actions.values():
            done_when = plan.done_when.get(item.code)
            item.done = done_when is not None and done_when(facts) is True
    return Decision(
        urgency=urgency,
        actions=ordered("action"),
        warnings=ordered("warning"),
        differential=ordered("differential"),
        rules=rules,
        complete=not missing_alarms,
        unanswered_alarm=missing_alarms,
        in_scope=in_scope,
    )


def build(kb: KnowledgeBase, trace: Trace, audience: str = "clinician") -> Result:
    """The Result of one evaluation, without the look-ahead: `analysis.escalation.decide` adds
    `could_escalate` beside it (a chained re-evaluation per possible answer to each unanswered question)."""
    plan = prepared(kb)
    patient = audience == "patient"
    decision = conclude(kb, trace, audience)
    fired = []
    for firing in trace.firings:
        rule = plan.rules[firing.rule].rule
        fired.append(FiredRule(rule.id, rule.title, firing.order, dict(firing.matched), list(rule.cites), rule.section))
    inputs = trace.inputs
    # a question that cannot be answered for this patient (its only_if is false) is not "unanswered";
    # alarm questions first, then vocabulary order (plan.question_order)
    unanswered = [
        Question(f.name, (f.patient_question if patient else f.question) or "", f.alarm)
        for f in plan.question_order
        if f.name not in inputs and plan.asked(f, inputs)
    ]
    missing_alarms = decision.unanswered_alarm
    in_scope = decision.in_scope
    return Result(
        urgency=decision.urgency,
        urgency_text=text_of(kb.catalog["urgency"][decision.urgency], patient),
        actions=decision.actions,
        warnings=decision.warnings,
        differential=decision.differential,
        fired=fired,
        unanswered=unanswered,
        inputs={f.name: inputs[f.name] for f in plan.input_facts if f.name in inputs},
        derived=dict(trace.derived),
        knowledge_base=kb.identity(),
        audience=audience,
        complete=decision.complete,
        unanswered_alarm=missing_alarms,
        incomplete_text=(kb.incomplete_patient_text if patient else kb.incomplete_text) if missing_alarms else "",
        in_scope=in_scope,
        scope_text="" if in_scope else (kb.out_of_scope_patient_text if patient else kb.out_of_scope_text),
    )


def text_of(entry: CodeEntry, patient: bool) -> str:
    """A catalogue entry's words for the audience."""
    return entry.patient_text if patient else entry.text
