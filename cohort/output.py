"""Decision rows written to a file, by its suffix: `.jsonl`, `.csv` or `.parquet` (columns: decisions.COLUMNS).

Rows are written as they come (memory stays flat) to a temporary file beside the target, renamed into place
when the run finishes: a failed run leaves no half-written file under the name asked for, and a killed run's
temporary is removed by the next run writing beside it. CSV cells a spreadsheet would run as a formula are
neutralised (`spreadsheet_safe`, OWASP's rule) unless the user asks for them raw. A Parquet file gets
row groups of ROW_GROUP_ROWS rows or a few more, the last one smaller (a few chunks' rows written together: a
smaller file, quicker to read and to write than a row group per chunk).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import IO, Any

from lumbar_kb.cohort.decisions import COLUMNS, csv_cells
from lumbar_kb.engine.errors import LumbarKBError, Problem

SUFFIXES = (".jsonl", ".csv", ".parquet")
ROW_GROUP_ROWS = 4096  # Parquet rows held before they are written as one row group (a few MB of decisions)


def arrow_schema(compared: bool = False, kept: tuple = (), whole_hours: bool = False) -> Any:
    """The decision rows' columns (decisions.COLUMNS), `changes` when compared, then each kept column (text).
    An action's hours are integers when `whole_hours` (every window of the run's knowledge bases is a whole
    number of hours: 336 as `evaluate` shows it, not 336.0), else floating point."""
    import pyarrow as pa

    hours = pa.int64() if whole_hours else pa.float64()
    text_list = pa.list_(pa.string())
    action = pa.struct(
        [
            ("code", pa.string()),
            ("within_hours_min", hours),
            ("within_hours", hours),
            ("window", pa.string()),
            ("done", pa.bool_()),
        ]
    )
    fields = [
        ("source", pa.string()),
        ("row", pa.int64()),
        ("patient_id", pa.string()),
        ("input_sha256", pa.string()),
        ("kb_sha256", pa.string()),
        ("urgency", pa.string()),
        ("in_scope", pa.bool_()),
        ("completeness", pa.string()),
        ("actions", pa.list_(action)),
        ("warnings", text_list),
        ("differential", text_list),
        ("fired", text_list),
        ("unanswered_alarm", text_list),
        ("could_escalate", text_list),
    ]
    if compared:
        fields.append(("changes", text_list))
    fields.extend((name, pa.string()) for name in kept)
    return pa.schema(fields)


# OWASP's rule for CSV injection: a cell a spreadsheet would read as a formula (it starts with =, +, -, @, a tab
# or a carriage return) is prefixed with a single quote, which makes it text; nothing else is changed
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text, never runs (OWASP); numbers, booleans and empty cells as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _flat_kept(row: dict, kept: tuple) -> dict:
    cells = row.get("kept") or {}
    return {**row, **{name: cells.get(name) for name in kept}}


def _for_arrow(row: dict) -> dict:
    c = row.get("completeness")
    return row if c is None or isinstance(c, str) else {**row, "completeness": str(c)}


def encode_table(rows: list[dict], compared: bool = False, kept: tuple | bool = (), whole_hours: bool = False) -> Any:
    """Rows as an Arrow table of `arrow_schema`: kept=True gives the `kept` cells as one map column (the audit
    store's), a tuple of names gives each as its own column (--out)."""
    import pyarrow as pa

    if kept is True:
        schema = arrow_schema(compared).append(pa.field("kept", pa.map_(pa.string(), pa.string())))
    else:
        schema = arrow_schema(compared, kept or (), whole_hours)
        if kept:
            rows = [_flat_kept(r, kept) for r in rows]
    rows = [_for_arrow(r) for r in rows]
    arrays = []
    for f in schema:
        name, kind = f.name, f.type  # read once: pyarrow makes a new object each time they are read
        values = [r.get(name) for r in rows]
        if name == "kept":
            values = [None if v is None else list(v.items()) for v in values]
            arrays.append(pa.array(values, kind))
        else:
            arrays.append(_list_array(values, kind) if pa.types.is_list(kind) else pa.array(values, kind))
    return pa.Table.from_arrays(arrays, schema=schema)


def from_stored(table: Any, compared: bool = False, kept: tuple = (), whole_hours: bool = False) -> Any:
    """The --out Parquet table (`encode_table(rows, compared, kept, whole_hours)`) from the audit store's table of
    the same rows (`encode_table(rows, compared=True, kept=True)`), by Arrow's own column work instead of a second
    encoding from Python: the same table (tested)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = arrow_schema(compared, kept, whole_hours)
    arrays = [table.column(name) for name in schema.names[: len(schema) - len(kept)]]
    arrays += [pc.map_lookup(table.column("kept"), name, "first") for name in kept]
    return pa.Table.from_arrays(arrays, names=schema.names).cast(schema)


def encode(
    rows: list[dict], kind: str, compared: bool = False, kept: tuple = (), raw: bool = False, whole_hours: bool = False
) -> Any:
    """Rows in a file's format: an Arrow table (parquet), or text (csv without its header, jsonl). A CSV cell
    that a spreadsheet would run is neutralised unless `raw`."""
    if kind == "parquet":
        return encode_table(rows, compared, kept, whole_hours)
    if kind == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if raw:
            writer.writerows(csv_cells(r, kept) for r in rows)
        else:
            writer.writerows([spreadsheet_safe(c) for c in csv_cells(r, kept)] for r in rows)
        return buffer.getvalue()
    if kept:
        rows = [_flat_kept(r, kept) for r in rows]
    return "".join(json.dumps(_without_map(r), ensure_ascii=False) + "\n" for r in rows)


def _without_map(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "kept"} if "kept" in row else row


def whole_hours(*kbs: Any) -> bool:
    """Whether every action window of these knowledge bases is a whole number of hours (then Parquet's hours are
    integers)."""
    from lumbar_kb.engine.model import Recommend

    return all(
        float(h).is_integer()
        for kb in kbs
        if kb is not None
        for rule in kb.rules
        for c in rule.then
        if isinstance(c, Recommend)
        for h in (c.within_hours, c.within_hours_min)
        if h is not None
    )


def _list_array(values: list, kind: Any) -> Any:
    """A list column from its rows' Python lists, built from the values flattened and their offsets (a struct's
    from a column per field): the array `pa.array(values, kind)` gives (tested), in about half the time of
    converting each list, and each action's dict, one by one. A missing list (None) takes that slower way."""
    import pyarrow as pa

    if any(v is None for v in values):
        return pa.array(values, kind)
    offsets = [0]
    flat: list = []
    for v in values:
        flat.extend(v)
        offsets.append(len(flat))
    value_type = kind.value_type
    if pa.types.is_struct(value_type):
        fields = list(value_type)
        children = []
        for f in fields:
            name = f.name  # read once: pyarrow makes a new str each time it is read
            children.append(pa.array([item.get(name) for item in flat], f.type))
        items = pa.StructArray.from_arrays(children, fields=fields)
    else:
        items = pa.array(flat, value_type)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items)


class Writer:
    """Decision rows to `path` (or to `stream`, CSV): through `.NAME.cohort-PID.tmp` beside it, held under a
    lock while the run lives and renamed into place when it succeeds; a killed run's temporary is swept by the
    next run writing there (`temporary`)."""

    def __init__(
        self,
        path: Path,
        compared: bool = False,
        stream: IO[str] | None = None,
        kept: tuple = (),
        raw: bool = False,
        whole_hours: bool = False,
    ):
        self.path = path
        self.whole_hours = whole_hours
        self.compared = compared
        self.kept = tuple(kept)
        self.raw = raw
        self.kind = "csv" if stream is not None else path.suffix.lower().lstrip(".")
        if stream is None and path.suffix.lower() not in SUFFIXES:
            raise LumbarKBError(
                Problem("--out must end in .jsonl, .csv or .parquet", file=str(path), hint="the suffix is the format")
            )
        self._lock: Any = None
        if stream is None:
            from lumbar_kb.cohort.temporary import hold, sweep

            self.tmp = path.with_name(f".{path.name}.cohort-{os.getpid()}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                sweep(path.parent, f".{path.name}.cohort-", ".tmp")
                self._lock = hold(self.tmp)  # made here (mode from the umask), held until close
            except OSError as exc:
                raise LumbarKBError(Problem(f"cannot write --out: {exc.strerror or exc}", file=str(path))) from None
        else:
            self.tmp = path
        self._parquet: Any = None
        self._held: list = []  # Parquet: Arrow tables not yet written (fewer than ROW_GROUP_ROWS rows in all)
        self._held_rows = 0
        self._file: IO[str] | None = stream
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(str(self.tmp), arrow_schema(compared, self.kept, whole_hours))
        else:
            if self._file is None:
                self._file = open(self.tmp, "w", encoding="utf-8", newline="")  # closed in close()
            if self.kind == "csv":
                header = list(COLUMNS) + (["changes"] if compared else []) + list(self.kept)
                if not raw:
                    header = [spreadsheet_safe(c) for c in header]
                csv.writer(self._file, lineterminator="\n").writerow(header)

    def write(self, rows: list[dict]) -> None:
        if rows:
            self.write_encoded(encode(rows, self.kind, self.compared, self.kept, self.raw, self.whole_hours))

    def write_encoded(self, payload: Any) -> None:
        """A chunk's rows already encoded by `encode` (in a worker, off this process's critical path)."""
        if self._parquet is not None:
            self._held.append(payload)
            self._held_rows += payload.num_rows
            if self._held_rows >= ROW_GROUP_ROWS:
                self._flush()
        else:
            assert self._file is not None
            self._file.write(payload)

    def _flush(self) -> None:
        if self._held:
            import pyarrow as pa

            table = pa.concat_tables(self._held) if len(self._held) > 1 else self._held[0]
            self._parquet.write_table(table, row_group_size=max(table.num_rows, 1))
            self._held, self._held_rows = [], 0

    def close(self, keep: bool = True) -> None:
        if self._parquet is not None:
            if keep:
                self._flush()
            self._parquet.close()
        elif self._file is not None and self.tmp is not self.path:
            self._file.close()
        if self.tmp is not self.path:
            if keep:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
