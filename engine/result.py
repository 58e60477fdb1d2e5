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

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from lumbar_kb.engine.model import CodeEntry, KnowledgeBase, Recommend
from lumbar_kb.engine.prepared import Prepared, prepared
from lumbar_kb.engine.trace import Trace


@dataclass(frozen=True, slots=True)
class Item:
    """One action, warning or differential entry of a Decision. Immutable (Decisions with the same firing
    sequence share their Items; `because` and `citations` are read-only)."""

    code: str
    text: str
    because: list  # rule ids, in firing order
    citations: list  # reference numbers, ascending
    within_hours: float | None  # the earliest window in hours (None: none given)
    window: str | None  # the window in words
    label: str = ""
    done: bool = False  # actions only: the patient's answers show it already done (the catalogue's done_when)
    within_hours_min: float | None = None  # actions only: the lower end where the guideline gives a range
    # actions only: each concluding rule whose own window never took effect here, as (rule, its words, the rule
    # whose earlier window won): a window that does not apply is shown as overridden, naming by which rule
    overridden: tuple = ()


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
    # answers that contradict each other (list[patient.Contradiction]): the result is then computed under the most
    # urgent reading they allow (`analysis.escalation.decide_most_urgent`), and says so with both answers named
    contradictions: list = field(default_factory=list)

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
            "contradictions": [c.to_dict() for c in self.contradictions],
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
    if with_window:
        d["overridden"] = [{"rule": r, "window": w, "by": by} for r, w, by in item.overridden]
    d.update({"label": item.label, "text": item.text, "because": list(item.because), "citations": list(item.citations)})
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


CONCLUDED_KEPT = 2048  # the conclusions of this many distinct firing sequences kept per knowledge base (bounded)
ITEMS_KEPT = 4096  # the items of this many distinct (item, concluding rules, audience) kept per knowledge base


def _concluded(kb: KnowledgeBase, plan: Prepared, rules: tuple[str, ...], patient: bool) -> tuple:
    """What a sequence of fired rules concludes before the patient's answers are read: the urgency (level, rank)
    and the actions, warnings and differential as Items in the Result's order (no action done yet), an action
    another one covers already dropped.

    An item depends only on the rules among them that conclude it, in firing order (`_item`), so items are kept
    by that (sequences that differ elsewhere share them)."""
    urgency = plan.lowest
    top = plan.rank[urgency]
    by: dict[tuple[str, str], list[str]] = {}  # (kind, code) -> the rules concluding it, in firing order
    for rule_id in rules:
        step = plan.rules[rule_id]
        for level, rank in step.urgencies:
            if rank > top:
                urgency, top = level, rank
        for key in step.concludes:
            seen = by.get(key)
            if seen is None:
                by[key] = [rule_id]
            else:
                seen.append(rule_id)
    kept = plan.items
    groups: dict[str, list[Item]] = {"action": [], "warning": [], "differential": []}
    for key, because in by.items():
        item_key = (key, tuple(because), patient)
        item = kept.get(item_key)
        if item is None:
            if len(kept) >= ITEMS_KEPT:
                kept.clear()
            item = kept[item_key] = _item(plan, key, because, patient)
        groups[key[0]].append(item)
    actions = groups["action"]
    codes = {item.code for item in actions}
    for item in list(actions):  # an action covered by another the result still has (the catalogue's superseded_by)
        if any(other in codes for other in plan.action_entries[item.code].superseded_by):
            codes.discard(item.code)
            actions.remove(item)
    catalog = kb.catalog
    return (
        urgency,
        top,
        tuple(sorted(actions, key=_action_order(catalog["action"]))),
        tuple(sorted(groups["warning"], key=lambda i: catalog["warning"][i.code].order)),
        tuple(sorted(groups["differential"], key=lambda i: catalog["differential"][i.code].order)),
    )


def _item(plan: Prepared, key: tuple[str, str], because: list[str], patient: bool) -> Item:
    """One action, warning or differential concluded by these rules (in firing order): their citations, and where
    several give an action a window, the earliest with its words and lower end (`merge_window`)."""
    entry = plan.kb.catalog[key[0]][key[1]]
    cites: set[int] = set()
    window: tuple = (None, None, None)
    own: list[tuple[str, Recommend]] = []  # each rule's own conclusion of this item
    for rule_id in because:
        step = plan.rules[rule_id]
        cites.update(step.rule.cites)
        for conclusion, _ in step.recommends:
            if (conclusion.kind, conclusion.code) == key:
                window = merge_window(window, conclusion)
                own.append((rule_id, conclusion))
    hours, words, low = window
    text = entry.patient_text if patient else entry.text
    overridden: tuple = ()
    if hours is not None:  # the rules whose later window lost to the earliest, and the first rule that gave it
        by = next(r for r, c in own if c.within_hours == hours)
        overridden = tuple(
            (r, c.window or "", by) for r, c in own if c.within_hours is not None and c.within_hours > hours
        )
    return Item(key[1], text, because, sorted(cites), hours, words, entry.label, False, low, overridden)


def _action_order(entries: dict[str, CodeEntry]) -> Callable[[Item], tuple]:
    """The Result's order of actions: not yet done first, then by window (the earliest first, none last), then
    the catalogue's order (unique, so the order is total)."""
    return lambda i: (i.done, i.within_hours is None, i.within_hours or 0, entries[i.code].order)


def conclude(kb: KnowledgeBase, trace: Trace, audience: str = "clinician") -> Decision:
    """The Decision of one evaluation, without the look-ahead (`analysis.escalation.decision` adds it).

    What the fired rules conclude depends on nothing else (`_concluded`), so it is kept by their sequence and
    audience, its Items shared (they are immutable); the answers then decide completeness, scope and which
    actions are already done."""
    plan = prepared(kb)
    rules = tuple(firing.rule for firing in trace.firings)
    key = (rules, audience == "patient")
    made = plan.concluded.get(key)
    if made is None:
        if len(plan.concluded) >= CONCLUDED_KEPT:
            plan.concluded.clear()
        made = plan.concluded[key] = _concluded(kb, plan, rules, key[1])
    urgency, top, actions, warnings, differential = made
    inputs = trace.inputs
    # an unanswered alarm question keeps the result incomplete only while an answer to it could still change it
    missing_alarms = plan.unanswered_alarms(inputs, top, {item.code: item.within_hours for item in actions})
    floor = kb.incomplete_floor
    if missing_alarms and floor is not None and plan.rank[floor] > top:
        urgency = floor  # unanswered is never "no": an unasked alarm question is never the lowest level
    in_scope = plan.out_of_scope is None or plan.out_of_scope(inputs) is not True
    done_when = plan.done_when
    if done_when and any(item.code in done_when for item in actions):
        facts = trace.facts()
        done = [
            replace(item, done=True)
            if (check := done_when.get(item.code)) is not None and check(facts) is True
            else item
            for item in actions
        ]
        if any(item.done for item in done):
            actions = tuple(sorted(done, key=_action_order(kb.catalog["action"])))
    return Decision(
        urgency=urgency,
        actions=list(actions),
        warnings=list(warnings),
        differential=list(differential) if in_scope else [],  # the differential is of a mass: none out of scope
        rules=list(rules),
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
