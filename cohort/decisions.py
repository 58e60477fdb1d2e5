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
import itertools
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
    """One decision row's link in its run's digest, in two levels: the digest of what its decision fixes (the
    decided columns, `changes`, the stored inputs text and the trace, as canonical JSON), then sha256 of the
    row's own columns (who it is, `kept`) with that digest. The same bytes from a row as the worker made it and
    from the row read back from the audit store (hours as numbers, a missing list or map as null).

    This is the definition, encoded with json's own encoder, and what `replay` recomputes. A cohort gets the same
    bytes faster (`decided_digest` once per decision, then `leaf_of` per row: tested equal on every row)."""
    middle = _LEAF(
        [_leaf_value(column, row.get(column)) for column in DECIDED_COLUMNS] + [row.get("changes"), inputs_text]
    )
    decided = hashlib.sha256(f"[{middle[1:-1]},{_LEAF(_steps(steps))}]".encode()).hexdigest()
    own = [row.get(column) for column in WHO_COLUMNS]
    return hashlib.sha256(_LEAF([*own, _leaf_value("kept", row.get("kept")), decided]).encode()).digest()


def decided_digest(part: dict, changes: Any, inputs_text: str, steps_text: str) -> str:
    """The first level of `leaf` (hex), what is the same for every patient with the same answers: the decided
    columns, their `changes`, the stored inputs text and the trace (its text from `Steps`). The text is joined
    from each value's own text (`_text`): JSON with these separators is the join of its elements' texts, and a
    decision's strings (codes, rule ids, fact names, windows) are encoded once, not once a patient."""
    get = part.get
    completeness = get("completeness")
    texts = [
        _text(get("kb_sha256")),
        _text(get("urgency")),
        _text(get("in_scope")),
        _text(completeness if completeness is None else str(completeness)),
        _actions_text(get("actions")),
        _text(get("warnings")),
        _text(get("differential")),
        _text(get("fired")),
        _text(get("unanswered_alarm")),
        _text(get("could_escalate")),
        _text(changes),
        _LEAF(inputs_text),
        steps_text,
    ]
    return hashlib.sha256(f"[{','.join(texts)}]".encode()).hexdigest()


def leaf_of(row: dict, decided: str) -> bytes:
    """A row's link (`leaf`'s second level) from its own columns and its decision's `decided_digest`."""
    get = row.get
    kept = get("kept")
    texts = [
        _text(get("source")),
        _text(get("row")),
        _LEAF(get("patient_id")),
        _LEAF(get("input_sha256")),
        "null" if kept is None else _LEAF(_leaf_value("kept", kept)),
        _LEAF(decided),
    ]
    return hashlib.sha256(f"[{','.join(texts)}]".encode()).digest()


class _Texts(dict):
    """Each value's text as `_LEAF` encodes it, kept for strings (a cohort's decisions repeat a few hundred of
    them). Only a str is kept: no other value is equal to one, so a 1 never finds the text of True. Bounded."""

    KEPT = 50_000

    def __missing__(self, value: Any) -> str:
        text = _LEAF(value)
        if type(value) is str:
            if len(self) >= self.KEPT:
                self.clear()
            self[value] = text
        return text


class _Actions(dict):
    """An action's text in a leaf, by (code, within_hours_min, within_hours, window, done): equal keys give the
    same text (hours are encoded as floats, done as a bool), and one is kept only when its code and window are
    strings, which no other value equals. Bounded."""

    KEPT = 10_000

    def __missing__(self, key: tuple) -> str:
        code, low, hours, window, done = key
        text = _LEAF([code, _hours(low), _hours(hours), window, bool(done)])
        if type(code) is str and (window is None or type(window) is str):
            if len(self) >= self.KEPT:
                self.clear()
            self[key] = text
        return text


_TEXTS = _Texts()
_ACTION_TEXTS = _Actions()


def _text(value: Any) -> str:
    """`_LEAF(value)`, a string or a list of them from the kept texts, and None, a bool or an int directly (the
    encoder's own call costs more than a short list's text)."""
    try:
        if type(value) is str:
            return _TEXTS[value]
        if type(value) is list:
            return "[" + ",".join(map(_TEXTS.__getitem__, value)) + "]"
    except TypeError:  # an element that is not hashable: encoded whole below
        pass
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)  # what json writes for an int (a float's text has its own special cases)
    return _LEAF(value)


def _actions_text(actions: Any) -> str:
    """`_LEAF(_leaf_value("actions", actions))`, each action's text kept."""
    if type(actions) is not list:
        return _LEAF(_leaf_value("actions", actions))
    try:
        keys = [(a["code"], a.get("within_hours_min"), a["within_hours"], a["window"], a["done"]) for a in actions]
        return "[" + ",".join(map(_ACTION_TEXTS.__getitem__, keys)) + "]"
    except (TypeError, AttributeError):  # not dicts, or a value that is not hashable
        return _LEAF(_leaf_value("actions", actions))


_MATCHED = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False
).encode  # json.dumps' text, without a new encoder each call
_LEAF = json.JSONEncoder(separators=(",", ":")).encode


_GENERATIONS = itertools.count(1)


class Steps:
    """One process's trace steps, interned: each distinct firing gets a number once, with its matched facts' JSON
    and its text inside a leaf, and a trace is the tuple of its firings' numbers. A firing is known by its rule
    and the values the facts its rule reads had when it fired (`Firing.values_of`), which fix the facts it
    matched; a firing without that evidence (one unpickled) by its matched facts. A cohort's firings repeat a
    few hundred steps (280 over 100,000 random patients), so a firing seen before costs a lookup, not the
    supporter walk, and the audit store's trace table is taken from the steps by number (`table`), never
    encoded from Python strings. A trace's leaf text is kept by its tuple. A trace's rows are (step, rule, its
    matched facts as `json.dumps(matched, sort_keys=True, ensure_ascii=False)`), and its text is
    `_LEAF(_steps(rows))` (tested on random patients, with both bounds reached).

    Numbers mean their steps until `renew`, which a cohort calls between chunks when a bound is reached; each
    renewal (and each Steps) has a `generation` of its own, which a decision kept with numbers is kept by."""

    KEPT = 100_000  # distinct steps (a step ~200 bytes)
    TEXTS_KEPT = 10_000  # traces' leaf texts (~1 KB each)

    def __init__(self, kb: Any) -> None:
        self._reads = {rule.id: rule.reads for rule in kb.rules}  # rule id -> the facts its condition reads
        self.renew()

    def renew(self) -> None:
        self.generation = next(_GENERATIONS)
        self._ids: dict[tuple, int] = {}  # (rule, 0, values read) or (rule, 1, matched items) -> number
        self.rules: list[str] = []  # number -> rule
        self.matched: list[str] = []  # number -> matched facts as JSON
        self._leaf: list[str] = []  # number -> the step's text inside a leaf, without its order
        self._texts: dict[tuple, str] = {}
        self._arrays: tuple = (-1, None, None)  # (steps when made, rules, matched) as Arrow arrays

    def full(self) -> bool:
        return len(self._ids) >= self.KEPT

    def __call__(self, trace: Any) -> tuple[tuple[int, ...], str]:
        """The trace's step numbers, in firing order, and its text as a leaf encodes it."""
        ids = self._ids
        reads = self._reads
        numbers = []
        for f in trace.firings:
            # a firing is known by the values of the facts its rule reads (they fix its matched facts), so a
            # step seen before costs a lookup, not the supporter walk; without its evidence, by its matched facts
            values = f.values_of(reads[f.rule])
            key = (f.rule, 1, tuple(f.matched.items())) if values is None else (f.rule, 0, values)
            n = ids.get(key)
            if n is None:
                n = ids[key] = len(self.rules)
                matched = _MATCHED(f.matched)
                self.rules.append(f.rule)
                self.matched.append(matched)
                self._leaf.append(_LEAF([f.rule, matched])[1:-1])
            numbers.append(n)
        steps = tuple(numbers)
        got = self._texts.get(steps)
        if got is None:
            if len(self._texts) >= self.TEXTS_KEPT:
                self._texts.clear()
            leaf = self._leaf
            got = self._texts[steps] = "[" + ",".join(f"[{i},{leaf[n]}]" for i, n in enumerate(steps, 1)) + "]"
        return steps, got

    def table(self, traces: list[tuple[int, ...]]) -> Any:
        """The trace rows of a chunk's rows as an Arrow table: row (0-based, in the chunk), step, rule, matched."""
        import numpy as np
        import pyarrow as pa

        made, rules, matched = self._arrays
        if made != len(self.rules):
            rules, matched = pa.array(self.rules, pa.string()), pa.array(self.matched, pa.string())
            self._arrays = (len(self.rules), rules, matched)
        counts = np.fromiter(map(len, traces), np.int64, len(traces))
        flat: list[int] = []
        for t in traces:
            flat.extend(t)
        numbers = pa.array(np.array(flat, np.int32))
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        return pa.table(
            {
                "row": pa.array(np.repeat(np.arange(len(traces), dtype=np.int64), counts)),
                "step": pa.array((np.arange(len(starts), dtype=np.int64) - starts + 1).astype(np.int32)),
                "rule": rules.take(numbers),
                "matched": matched.take(numbers),
            }
        )


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
