"""One decision row per patient: what `lumbar-kb evaluate` shows for that patient, flattened for analysis.

Columns (in this order; the same in `--out` .jsonl, .csv and .parquet, and in the audit store):

| column | what |
| --- | --- |
| source | the file the patient came from |
| row | the line (JSON Lines, CSV) or 1-based row (Parquet) in it; empty for a patient file |
| patient_id | the patient's `id` (key or column), when given |
| input_sha256 | sha256 of the validated answers as canonical JSON: the same patient hashes alike in any format |
| kb_sha256 | the knowledge base's content hash (`lumbar-kb validate` shows its first 12 digits) |
| urgency | the urgency code (emergency, urgent, soon, routine) |
| in_scope | false when the knowledge base's out-of-scope condition holds (then no differential is given) |
| completeness | the Result's completeness, when the knowledge base's Result has one (else empty) |
| actions | each action: code, within_hours_min, within_hours, window (the words), done; the Result's order |
| warnings, differential | their codes, the Result's order |
| fired | the rules that fired, in firing order |
| unanswered_alarm | the unanswered alarm questions (fact names), most important first |
| could_escalate | the unanswered questions whose answer would escalate (fact names), most urgent first |
| changes | only with --compare-kb: how the decision differs under the other knowledge base |
| kept | only with --keep-columns: the extract's own cells of those columns (text), for subgroups |

In CSV a list is joined with ";" and `actions` is JSON text; in JSON Lines and Parquet they are lists.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lumbar_kb.engine.prepared import Fragments

COLUMNS = (
    "source",
    "row",
    "patient_id",
    "input_sha256",
    "kb_sha256",
    "urgency",
    "in_scope",
    "completeness",
    "actions",
    "warnings",
    "differential",
    "fired",
    "unanswered_alarm",
    "could_escalate",
)
LIST_COLUMNS = ("warnings", "differential", "fired", "unanswered_alarm", "could_escalate")


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def canonical(inputs: dict) -> str:
    """The validated answers as canonical JSON: what `input_sha256` hashes, and the decision cache's key."""
    return _CANONICAL(inputs)


class Canonical:
    """`canonical` for one knowledge base's answers, joined from each vocabulary answer's fragment encoded once
    (`"fact":value`, `prepared.Fragments`): the same text (tested), in about half the time. Anything else (a key
    or value outside the vocabulary, a value of another type) is encoded as it is."""

    def __init__(self, kb: Any):
        self.fragments = Fragments(kb, _CANONICAL)

    def __call__(self, inputs: dict) -> str:
        joined = self.fragments.join(sorted(inputs.items()), ",")
        return canonical(inputs) if joined is None else "{" + joined + "}"


def input_hash(inputs: dict) -> str:
    return hashlib.sha256(canonical(inputs).encode()).hexdigest()


def _action(a: Any) -> dict:
    return {
        "code": a.code,
        "within_hours_min": getattr(a, "within_hours_min", None),  # a window range (issue 9), when present
        "within_hours": a.within_hours,
        "window": a.window,
        "done": bool(a.done),
    }


def who(patient: Any, input_sha256: str) -> dict:
    """The columns that say whose decision a row is."""
    return {
        "source": patient.source,
        "row": patient.row,
        "patient_id": patient.patient_id,
        "input_sha256": input_sha256,
    }


def decided(result: Any, kb_sha256: str) -> dict:
    """The columns that come from the Result (or its Decision): the same for every patient with the same answers."""
    return {
        "kb_sha256": kb_sha256,
        "urgency": result.urgency,
        "in_scope": bool(result.in_scope),
        "completeness": "complete" if result.complete else "incomplete",
        "actions": [_action(a) for a in result.actions],
        "warnings": [w.code for w in result.warnings],
        "differential": [d.code for d in result.differential],
        "fired": list(result.fired_ids()),
        "unanswered_alarm": list(result.unanswered_alarm),
        "could_escalate": [e.fact for e in result.could_escalate],
    }


WHO_COLUMNS = COLUMNS[:4]  # source .. input_sha256: `who`
DECIDED_COLUMNS = COLUMNS[4:]  # kb_sha256 .. could_escalate: `decided`, the same for the same answers


def _hours(value: Any) -> float | None:
    return None if value is None else float(value)


def _leaf_value(column: str, value: Any) -> Any:
    if column == "actions":
        return [
            [a["code"], _hours(a.get("within_hours_min")), _hours(a["within_hours"]), a["window"], bool(a["done"])]
            for a in value
        ]
    if column == "kept" and value is not None:
        return sorted(dict(value).items())
    if column == "completeness" and value is not None:
        return str(value)
    return value


def _steps(steps: list) -> list:
    return [[int(step), rule, matched] for step, rule, matched in steps]


def leaf(row: dict, inputs_text: str, steps: list) -> bytes:
    """One decision row's link in its run's digest, in two levels: the digest of what its decision fixes
    (`decided_digest`: the decided columns, `changes`, the stored inputs text and the trace, as canonical JSON),
    then sha256 of the row's own columns (who it is, `kept`) with that digest (`leaf_of`). The same bytes from a
    row as the worker made it and from the row read back from the audit store (hours as numbers, a missing list
    or map as null). A cohort works the first level out once per decision, so a repeated answer costs a row
    only its own columns."""
    decided = decided_digest(
        {column: row.get(column) for column in DECIDED_COLUMNS}, row.get("changes"), inputs_text, _LEAF(_steps(steps))
    )
    return leaf_of(row, decided)


def decided_digest(part: dict, changes: Any, inputs_text: str, steps_text: str) -> str:
    """The digest (hex) of what is the same for every patient with the same answers: the decided columns, their
    `changes`, the stored inputs text and the trace (`trace_parts`' text)."""
    middle = _LEAF([_leaf_value(column, part.get(column)) for column in DECIDED_COLUMNS] + [changes, inputs_text])
    return hashlib.sha256(f"[{middle[1:-1]},{steps_text}]".encode()).hexdigest()


def leaf_of(row: dict, decided: str) -> bytes:
    """A row's link from its own columns and its decision's `decided_digest`."""
    own = [row.get(column) for column in WHO_COLUMNS]
    return hashlib.sha256(_LEAF([*own, _leaf_value("kept", row.get("kept")), decided]).encode()).digest()


_MATCHED = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False
).encode  # json.dumps' text, without a new encoder each call
_LEAF = json.JSONEncoder(separators=(",", ":")).encode


_STEP_TEXT: dict[tuple, tuple[str, str]] = {}  # (rule, matched items) -> (matched JSON, its step's leaf text)
STEPS_KEPT = 100_000


def trace_parts(trace: Any) -> tuple[list[tuple], str]:
    """(step, rule, matched facts as JSON) for each firing of an evaluation's Trace (the audit store's trace table),
    and those rows as a leaf encodes them (`_LEAF(_steps(rows))`). A firing's matched text and its text inside the
    leaf (a JSON string in JSON, every quote escaped) are kept by rule and matched facts, which a cohort's firings
    repeat; the matched facts' values are a fact's (a bool or an enum's string), so equal keys are equal texts
    (tested against the encoder's own)."""
    rows, parts = [], []
    for f in trace.firings:
        key = (f.rule, tuple(f.matched.items()))
        got = _STEP_TEXT.get(key)
        if got is None:
            if len(_STEP_TEXT) >= STEPS_KEPT:
                _STEP_TEXT.clear()
            text = _MATCHED(f.matched)
            got = _STEP_TEXT[key] = (text, _LEAF([f.rule, text])[1:-1])
        rows.append((f.order, f.rule, got[0]))
        parts.append(f"[{int(f.order)},{got[1]}]")
    return rows, "[" + ",".join(parts) + "]"


class TraceText:
    """`trace_parts` for one knowledge base's traces, kept by what determines them: the rules fired, in order, and
    the patient's answers to the facts those rules read or derive. The derived facts, how many were known at each
    firing and so each firing's matched facts follow from those alone (a rule derives fixed values, and its
    matched facts are read from its condition's facts), so equal keys are equal traces; a cohort's decisions
    repeat far fewer traces than answers (tested equal to `trace_parts` on generated patients)."""

    KEPT = 5_000  # ~2 KB each: a bound on memory (a cohort of random answers repeats the common ones)

    def __init__(self, kb: Any):
        self._reads = {r.id: frozenset(r.reads) | {d.fact for d in r.derives()} for r in kb.rules}
        self._facts: dict[tuple, tuple] = {}  # rules fired -> the facts they read or derive
        self._kept: dict[tuple, tuple[list[tuple], str]] = {}

    def __call__(self, trace: Any) -> tuple[list[tuple], str]:
        fired = tuple(f.rule for f in trace.firings)
        facts = self._facts.get(fired)
        if facts is None:
            if len(self._facts) >= self.KEPT:
                self._facts.clear()
            facts = self._facts[fired] = tuple(sorted(set().union(*(self._reads[r] for r in fired))))
        answers = trace.inputs
        key = (fired, tuple([answers.get(f) for f in facts]))
        got = self._kept.get(key)
        if got is None:
            if len(self._kept) >= self.KEPT:
                self._kept.clear()
            got = self._kept[key] = trace_parts(trace)
        return got


DECIDING = ("urgency", "actions", "warnings")


def differences(old: dict, new: dict) -> list[str]:
    """How a decision changed, in words an analyst reads: urgency, actions added or removed, windows moved,
    warnings added or removed. Empty when the decision is the same (rules fired may still differ)."""
    out = []
    if old["urgency"] != new["urgency"]:
        out.append(f"urgency {old['urgency']} -> {new['urgency']}")
    before = {a["code"]: a for a in old["actions"]}
    after = {a["code"]: a for a in new["actions"]}
    for code in after:
        if code not in before:
            out.append(f"action {code} added ({window_text(after[code])})")
        elif _window(before[code]) != _window(after[code]):
            out.append(f"action {code} window {window_text(before[code])} -> {window_text(after[code])}")
        elif before[code]["done"] != after[code]["done"]:
            out.append(f"action {code} done {before[code]['done']} -> {after[code]['done']}")
    out.extend(f"action {code} removed" for code in before if code not in after)
    for code in new["warnings"]:
        if code not in old["warnings"]:
            out.append(f"warning {code} added")
    out.extend(f"warning {code} removed" for code in old["warnings"] if code not in new["warnings"])
    return out


def _window(action: dict) -> tuple:
    return (action.get("within_hours_min"), action["within_hours"], action["window"])


def window_text(action: dict) -> str:
    hours = action["within_hours"]
    if hours is None:
        return action["window"] or "no window"
    low = action.get("within_hours_min")
    return f"{low:g}-{hours:g} h" if low is not None else f"{hours:g} h"


def csv_cells(row: dict, kept: tuple = ()) -> list:
    """A row's CSV cells: decisions.COLUMNS, `changes` when compared, then each kept column's cell."""
    out = []
    for column in COLUMNS:
        value = row[column]
        if column == "actions":
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif column in LIST_COLUMNS:
            value = ";".join(value)
        out.append("" if value is None else value)
    if "changes" in row:
        out.append(";".join(row["changes"]))
    if kept:
        cells = row.get("kept") or {}
        out.extend("" if cells.get(name) is None else cells[name] for name in kept)
    return out
