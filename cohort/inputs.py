"""The inputs analysts have, read in chunks: patient files and folders, JSON Lines, CSV and Parquet.

* a patient file (`*.yaml`, `*.yml`, `*.json`) is one patient, as for `lumbar-kb evaluate`; a folder means
  the patient files directly inside it, sorted by name;
* JSON Lines (`*.jsonl`, `*.ndjson`): one patient mapping (fact: value, as in a patient file) a line; blank
  lines are not rows;
* CSV (`*.csv`, UTF-8, a header row): one patient a row, the columns are fact names (or `id`, `note`); an
  empty cell is unknown;
* Parquet (`*.parquet`, `*.pq`, read with pyarrow): the same, one patient a row; a null is unknown.

A mapping file (`--mapping FILE`, YAML) translates an extract's own column names and value spellings:

    columns: {pt_number: id, weak_legs: leg_weakness}   # column -> fact name (or id / note)
    ignore: [extract_date]                              # columns that are not patient facts
    values:                                             # cell spelling -> value; "*" applies to every fact
      "*": {Y: true, N: false, "n/k": null}
      primary_cancer: {Breast: breast}

Without a mapping a yes/no cell may read true/false/yes/no (any case); other cells must be spelt as the
vocabulary spells them. A column that is neither a fact, `id`, `note`, nor ignored is bad input for the whole
file (exit 2, before anything runs). A row that fails validation is reported as `file:row[:column]: problem`
and skipped; it is never counted as a patient. Valid rows take the fast path (json.loads, PyYAML's C loader,
no positions); a row is re-read for positions only when it fails.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lumbar_kb.engine import discovery
from lumbar_kb.engine.errors import LumbarKBError, PatientError, Problem, did_you_mean
from lumbar_kb.engine.model import KnowledgeBase
from lumbar_kb.engine.patient import META_KEYS, parse_patient
from lumbar_kb.engine.prepared import prepared
from lumbar_kb.engine.source import DocumentError, Positions, display, limits, parse_text, read_bytes, read_document

PATIENT_SUFFIXES = (".yaml", ".yml", ".json")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
BOOL_SPELLINGS = {"true": True, "false": False, "yes": True, "no": False}


# ---- the mapping file --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mapping:
    """Column names and value spellings of an extract (see the module's docstring)."""

    columns: dict = field(default_factory=dict)  # extract column -> fact name / id / note
    ignore: frozenset = frozenset()
    values: dict = field(default_factory=dict)  # fact name or "*" -> {spelling: value}
    keep: tuple = ()  # --keep-columns: extract columns carried into the rows as they are (CSV, Parquet)

    @classmethod
    def read(cls, path: Path | None, kb: KnowledgeBase) -> Mapping:
        if path is None:
            return cls()
        try:
            data, pos = read_document(path)
        except DocumentError as exc:
            raise LumbarKBError(exc.problem) from None
        if data is None:
            data = {}
        problems: list[Problem] = []
        if not isinstance(data, dict):
            raise LumbarKBError(pos.problem((), "a mapping file must be a mapping with columns, ignore, values"))
        for key in data:
            if key not in ("columns", "ignore", "values"):
                problems.append(
                    pos.problem((key,), f"unknown key '{key}'", hint="allowed: columns, ignore, values", key=True)
                )
        columns = data.get("columns") or {}
        ignore = data.get("ignore") or []
        values = data.get("values") or {}
        names = [f.name for f in kb.input_facts]
        if not isinstance(columns, dict):
            problems.append(pos.problem(("columns",), "columns must map an extract's column to a fact name"))
            columns = {}
        for column, fact in columns.items():
            if fact not in META_KEYS and (fact not in kb.facts or kb.facts[fact].derived):
                problems.append(
                    pos.problem(
                        ("columns", column), f"'{fact}' is not an input fact", hint=did_you_mean(str(fact), names)
                    )
                )
        if not isinstance(ignore, list) or not all(isinstance(c, str) for c in ignore):
            problems.append(pos.problem(("ignore",), "ignore must be a list of column names"))
            ignore = []
        if not isinstance(values, dict):
            problems.append(pos.problem(("values",), "values must map a fact name (or '*') to {spelling: value}"))
            values = {}
        clean: dict[str, dict] = {}
        for fact, spellings in values.items():
            if fact != "*" and fact not in kb.facts:
                problems.append(
                    pos.problem(("values", fact), "unknown fact", f"fact '{fact}'", did_you_mean(fact, names), key=True)
                )
            elif not isinstance(spellings, dict):
                problems.append(pos.problem(("values", fact), "must map a spelling to a value"))
            else:
                clean[fact] = {str(k): v for k, v in spellings.items()}
        if problems:
            raise LumbarKBError(problems)
        return cls({str(k): str(v) for k, v in columns.items()}, frozenset(ignore), clean)

    def convert(self, fact_name: str, cell: Any, bool_fact: bool) -> Any:
        """One cell's value: a mapped spelling, else the default spellings; '' and None are unknown."""
        if cell is None or cell == "":
            return None
        if isinstance(cell, str):
            for table in (self.values.get(fact_name), self.values.get("*")):
                if table and cell in table:
                    return table[cell]
            if bool_fact:
                return BOOL_SPELLINGS.get(cell.strip().lower(), cell)
        return cell


# ---- chunks ------------------------------------------------------------------------------------------------
@dataclass
class Chunk:
    """A slice of the input, small enough to ship to a worker: evaluated as one task, in order."""

    index: int
    kind: str  # "file" | "jsonl" | "table" (CSV rows) | "arrow" (Parquet: [first row, record batch]) | "stored"
    source: str  # the file the rows come from ("" for patient files: each item names its own)
    items: list  # file: [(path, text or None)]; jsonl: [(line number, text)]; table: [(row, [cells])]
    header: tuple = ()  # table: the fact each column holds (None: ignored)
    columns: tuple = ()  # table: the extract's own column names


@dataclass
class Patient:
    source: str
    row: int | None  # line (JSON Lines), row (CSV: the line it ends on; Parquet: 1-based), None for a file
    patient_id: str | None
    inputs: dict
    kept: dict | None = None  # --keep-columns: the row's own cells of those columns, as text


def _refusal(file: Path) -> Problem:
    """Why `evaluate` refuses a file that could not be read as bounded UTF-8 text (read again to say so)."""
    try:
        read_document(file)
    except DocumentError as exc:
        return exc.problem
    return Problem("cannot be read as a patient file (changed while it was read?)", file=_name(file))


def _name(path: Path) -> str:
    """A file's name for the rows: `display`, with a byte that is not UTF-8 written as \\xNN (a name need not
    be UTF-8; the rows, JSON, CSV, Parquet and DuckDB all want text)."""
    shown = display(path)
    try:
        shown.encode("utf-8")
    except UnicodeEncodeError:
        return shown.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return shown


def kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in PATIENT_SUFFIXES:
        return "file"
    for kind, suffixes in (("jsonl", JSONL_SUFFIXES), ("csv", CSV_SUFFIXES), ("parquet", PARQUET_SUFFIXES)):
        if suffix in suffixes:
            return kind
    return "unknown"


def patient_files(paths: list[Path]) -> list[Path]:
    """The patient files the paths name (engine.discovery: extensions in any case, each file once)."""
    return discovery.patient_files(paths)[0]


class Listing:
    """The patient files each input names (`discovery.patient_files`), listed once a run: the check before the
    run, the progress bar's total and the chunks read the same listing (a folder of a million files took ~25 s
    to list, three times). The chunks take each listing out as they read it."""

    def __init__(self) -> None:
        self._listed: dict[Path, tuple[list[Path], list[Problem]]] = {}

    def __call__(self, path: Path) -> tuple[list[Path], list[Problem]]:
        listed = self._listed.get(path)
        if listed is None:
            listed = self._listed[path] = discovery.patient_files([path])
        return listed

    def take(self, path: Path) -> tuple[list[Path], list[Problem]]:
        return self._listed.pop(path, None) or discovery.patient_files([path])


class _Discovered:
    """Patient files across all the inputs of a run: each file once however often it is named (a folder and a
    file inside it, two links to one file), and every entry that cannot be a patient file as a problem."""

    def __init__(self, listing: Listing) -> None:
        self.seen: set[tuple[int, int]] = set()
        self.listing = listing

    def entries(self, path: Path) -> list[tuple[Path | None, Problem | None]]:
        files, problems = self.listing.take(path)
        out: list[tuple[Path | None, Problem | None]] = [(None, p) for p in problems]
        for file in files:
            info = file.stat()
            if (info.st_dev, info.st_ino) not in self.seen:
                self.seen.add((info.st_dev, info.st_ino))
                out.append((file, None))
        return out


def count_rows(paths: list[Path], listing: Listing | None = None) -> int | None:
    """How many rows the inputs hold, for the progress bar's total and time left: patient files as listed,
    Parquet from its metadata, JSON Lines and CSV by their non-blank lines (a CSV cell holding a line break
    makes this a little more than the rows: the bar then ends short of its total, nothing else)."""
    listing = listing or Listing()
    total = 0
    for path in paths:
        kind = kind_of(path)
        if kind == "file":
            files, problems = listing(path)
            total += len(files) + len(problems)
        elif kind == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
        elif kind in ("jsonl", "csv"):
            try:
                with path.open("rb") as f:
                    lines = sum(1 for line in f if line.strip())
            except OSError:
                return None
            total += lines - 1 if kind == "csv" and lines else lines
        else:
            return None
    return total


def check_inputs(paths: list[Path], kb: KnowledgeBase, mapping: Mapping, listing: Listing | None = None) -> None:
    """Bad input for a whole file, found before anything runs: a missing file, an unknown kind, an empty
    folder, a table column that is not a fact."""
    listing = listing or Listing()
    problems: list[Problem] = []
    for path in paths:
        shown = display(path)
        if not path.exists():
            problems.append(Problem("no such file or folder", file=shown))
            continue
        kind = kind_of(path)
        if kind == "unknown":
            problems.append(
                Problem(
                    "not an input this command reads",
                    file=shown,
                    hint="patient files *.yaml/*.yml/*.json, a folder of them, *.jsonl, *.csv or *.parquet",
                )
            )
        elif kind == "file" and path.is_dir() and listing(path) == ([], []):
            problems.append(Problem("no patient files (*.yaml, *.yml, *.json) found", file=shown))
        elif kind in ("csv", "parquet"):
            try:
                columns = _csv_header(path) if kind == "csv" else _parquet_columns(path)
            except LumbarKBError as exc:
                problems.extend(exc.problems)
                continue
            problems.extend(_header_problems(columns, shown, kb, mapping)[1])
            problems.extend(
                Problem(f"no column '{name}' to keep", file=shown, line=1, hint="columns: " + ", ".join(columns))
                for name in mapping.keep
                if name not in columns
            )
        if mapping.keep and kind in ("file", "jsonl"):
            problems.append(
                Problem("--keep-columns carries an extract's columns: CSV or Parquet inputs only", file=shown)
            )
    if problems:
        raise LumbarKBError(problems)


def _header_problems(columns: list[str], shown: str, kb: KnowledgeBase, mapping: Mapping) -> tuple:
    names = [f.name for f in kb.input_facts]
    header: list[str | None] = []
    problems = []
    seen: dict[str, str] = {}
    for i, column in enumerate(columns, 1):
        fact = mapping.columns.get(column, column)
        if column in mapping.ignore or (column in mapping.keep and fact not in kb.facts and fact not in META_KEYS):
            header.append(None)  # not a patient fact: ignored, or only carried through
            continue
        if fact not in META_KEYS and (fact not in kb.facts or kb.facts[fact].derived):
            hint = did_you_mean(fact, names)
            problems.append(
                Problem(
                    f"column '{column}' is not an input fact",
                    file=shown,
                    line=1,
                    column=i,
                    hint=(hint + " " if hint else "") + "map it or list it under ignore in a --mapping file",
                )
            )
        elif fact in seen:
            problems.append(
                Problem(f"columns '{seen[fact]}' and '{column}' both give '{fact}'", file=shown, line=1, column=i)
            )
        seen[fact] = column
        header.append(fact)
    return tuple(header), problems


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LumbarKBError(Problem(f"cannot read the CSV header: {exc}", file=display(path))) from None


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
        raise LumbarKBError(Problem(f"cannot read as Parquet: {exc}", file=display(path))) from None


def chunks(
    paths: list[Path], kb: KnowledgeBase, mapping: Mapping, size: int = 1000, listing: Listing | None = None
) -> Iterator[Chunk]:
    """The inputs, in order, as chunks of at most `size` rows: streamed, never all in memory."""
    index = 0
    pending: list = []
    discovered = _Discovered(listing or Listing())
    bounds = limits()  # read once a run, not once a file
    for path in paths:
        kind = kind_of(path)
        shown = _name(path)
        if kind == "file":
            for file, problem in discovered.entries(path):
                if file is None:  # not a patient file (a FIFO, a dangling link, a subfolder): a bad row
                    pending.append((problem.file if problem else shown, None, problem))
                else:
                    try:  # regular files only, bounded
                        pending.append((_name(file), read_bytes(file, bounds).decode("utf-8-sig"), None))
                    except (DocumentError, UnicodeDecodeError):
                        pending.append((_name(file), None, _refusal(file)))
                if len(pending) >= size:
                    yield Chunk(index, "file", "", pending)
                    index, pending = index + 1, []
            continue
        if pending:
            yield Chunk(index, "file", "", pending)
            index, pending = index + 1, []
        if kind == "jsonl":
            items: list = []
            with path.open(encoding="utf-8-sig", errors="surrogateescape") as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        items.append((number, line))
                        if len(items) >= size:
                            yield Chunk(index, "jsonl", shown, items)
                            index, items = index + 1, []
            if items:
                yield Chunk(index, "jsonl", shown, items)
                index += 1
        elif kind == "csv":
            with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
                reader = csv.reader(f)
                columns = next(reader, [])
                header, _ = _header_problems(columns, shown, kb, mapping)
                items = []
                while True:
                    try:
                        cells = next(reader)
                    except StopIteration:
                        break
                    except csv.Error as exc:
                        items.append((reader.line_num, exc))
                        continue
                    if cells:
                        items.append((reader.line_num, cells))
                        if len(items) >= size:
                            yield Chunk(index, "table", shown, items, header, tuple(columns))
                            index, items = index + 1, []
                if items:
                    yield Chunk(index, "table", shown, items, header, tuple(columns))
                    index += 1
        elif kind == "parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            columns = list(parquet.schema_arrow.names)
            header, _ = _header_problems(columns, shown, kb, mapping)
            row = 0
            for batch in parquet.iter_batches(batch_size=size):
                # the Arrow batch itself travels to the worker, which turns it into rows (materialize)
                yield Chunk(index, "arrow", shown, [row, batch], header, tuple(columns))
                row += batch.num_rows
                index += 1
    if pending:
        yield Chunk(index, "file", "", pending)


# ---- one chunk's patients, validated -----------------------------------------------------------------------
class _DuplicateKey(Exception):
    pass


def _unique(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


try:  # PyYAML's C loader when libyaml is there; the pure-Python one otherwise (same results, slower)
    _FastBase: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _FastBase = yaml.SafeLoader


class _FastLoader(_FastBase):
    def construct_mapping(self, node, deep=False):
        if len({k.value for k, _ in node.value}) != len(node.value):
            raise _DuplicateKey
        return super().construct_mapping(node, deep)


_FastLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _FastLoader.construct_mapping)


def materialize(chunk: Chunk) -> Chunk:
    """An Arrow chunk (Parquet rows as a record batch) as table rows; other chunks as they are."""
    if chunk.kind != "arrow":
        return chunk
    start, batch = chunk.items
    values = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
    items = [(start + i + 1, list(cells)) for i, cells in enumerate(zip(*values, strict=True))]
    return Chunk(chunk.index, "table", chunk.source, items, chunk.header, chunk.columns)


def patients(chunk: Chunk, kb: KnowledgeBase, mapping: Mapping) -> Iterator[Patient | list[Problem]]:
    """Each row of a chunk: a validated Patient, or the problems that make it a bad row."""
    if chunk.kind == "file":
        for path, text, problem in chunk.items:
            yield [problem] if problem is not None else _file_patient(path, text, kb)
    elif chunk.kind == "jsonl":
        for number, line in chunk.items:
            yield _jsonl_patient(chunk.source, number, line, kb)
    elif chunk.kind == "table":
        # each column's fact, whether it is yes/no, and whether the mapping respells its cells (once per chunk)
        respelt = "*" in mapping.values
        columns = [
            (
                name,
                name is not None and name in kb.facts and kb.facts[name].type == "bool",
                respelt or name in mapping.values,
            )
            for name in chunk.header
        ]
        for row, cells in chunk.items:
            yield _table_patient(chunk, row, cells, kb, mapping, columns)
    elif chunk.kind == "stored":  # an audit store's inputs text, checked as a JSON Lines row is (replay)
        for source, row, patient_id, inputs, *_ in chunk.items:
            where = f"stored inputs of {source}"
            line = row if type(row) is int and row > 0 else 1  # a patient file's one document: its line 1
            read = _jsonl_patient(where, line, inputs, kb) if isinstance(inputs, str) else None
            if isinstance(read, Patient):
                yield Patient(source, row, patient_id, read.inputs)
            else:
                yield read or [Problem("missing (NULL), not a JSON text", file=where)]
    else:  # pragma: no cover - the chunker makes no other kind
        raise ValueError(chunk.kind)


def _meta_id(data: dict) -> str | None:
    value = data.get("id")
    return None if value is None else str(value)


def _facts(data: Any, pos: Positions, kb: KnowledgeBase) -> dict:
    """A patient mapping, or a FHIR Bundle / QuestionnaireResponse (it has a `resourceType`), mapped by engine.fhir."""
    if isinstance(data, dict) and "resourceType" in data:
        from lumbar_kb.clinic.fhir.inbound import facts_from_document

        return facts_from_document(data, pos, kb)
    return _quick(data, kb) if pos is _NOWHERE else parse_patient(data, pos, kb)


def _file_patient(path: str, text: str | None, kb: KnowledgeBase) -> Patient | list[Problem]:
    if text is not None and not _UNSAFE_TEXT.search(text):  # else the reading `evaluate` does says why
        try:
            if path.endswith(".json"):
                data = json.loads(text, object_pairs_hook=_unique)
            else:
                data = yaml.load(text, Loader=_FastLoader)  # a safe loader (C)
            inputs = _facts(data, _NOWHERE, kb)  # no positions: a refusal is read again below
            if _safe_meta(data):
                return Patient(path, None, _meta_id(data), inputs)
        except (ValueError, yaml.YAMLError, _DuplicateKey, PatientError, RecursionError, TypeError):
            pass  # the slow path below says where and why
    try:
        if text is None:
            data, pos = read_document(path)
        else:
            data, pos = parse_text(text, path)
        inputs = _facts(data, pos, kb)
    except DocumentError as exc:
        return [exc.problem]
    except PatientError as exc:
        return list(exc.problems)
    return Patient(path, None, _meta_id(data), inputs)


def _quick(data: Any, kb: KnowledgeBase) -> dict:
    """A patient mapping's inputs: the fast check (`Prepared.known_inputs`) when it accepts them, else
    `parse_patient` without positions (which raises PatientError for a mapping it refuses)."""
    inputs = prepared(kb).known_inputs(data) if type(data) is dict else None
    return inputs if inputs is not None else parse_patient(data, _NOWHERE, kb)


def _jsonl_patient(source: str, number: int, line: str, kb: KnowledgeBase) -> Patient | list[Problem]:
    try:
        if not _UNSAFE_TEXT.search(line):
            data = json.loads(line, object_pairs_hook=_unique)
            inputs = _quick(data, kb)
            if _safe_meta(data):
                return Patient(source, number, _meta_id(data), inputs)
    except (ValueError, _DuplicateKey, PatientError, RecursionError, TypeError):
        pass
    try:
        data, pos = parse_text(line, source + ".json")  # the suffix selects the JSON reading
        inputs = parse_patient(data, _on_row(pos, source, number), kb)
    except DocumentError as exc:
        return [_relocate(exc.problem, source, number)]
    except PatientError as exc:
        return [_relocate(p, source, number) for p in exc.problems]
    return Patient(source, number, _meta_id(data), inputs)


_NOWHERE = Positions("")
# what `evaluate`'s reading refuses (engine.source): C0/C1 controls (a line's own newline aside), DEL, lone
# surrogates, non-characters, and the bidirectional controls; the fast paths below check for them and leave a
# row that has any to the full reading, which refuses it with its place
_UNSAFE_TAIL = "\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\ud800-\\udfff\\ufdd0-\\ufdef\\ufffe\\uffff"
_UNSAFE_TEXT = re.compile("[\\x00-\\x08\\x0b-\\x0c\\x0e-\\x1f" + _UNSAFE_TAIL + "]")  # a line keeps tab, LF, CR
_UNSAFE_CELL = re.compile("[\\x00-\\x08\\x0b-\\x1f" + _UNSAFE_TAIL + "]")  # a value keeps tab and LF


def _safe_meta(data: Any) -> bool:
    """Whether a patient's id and note (free text, shown to people) are free of what `evaluate` refuses (a
    JSON escape such as \\u001b gets past a check of the text)."""
    if not isinstance(data, dict):
        return True
    return not any(isinstance(data.get(k), str) and _UNSAFE_CELL.search(data[k]) for k in META_KEYS)


def _on_row(pos: Positions, source: str, row: int) -> Positions:
    """A one-line document's positions, moved to the row it is on in its file."""
    return Positions(
        source,
        {k: (row, c) for k, (_, c) in pos.lines.items()},
        {k: (row, c) for k, (_, c) in pos.keys.items()},
    )


def _relocate(problem: Problem, source: str, row: int) -> Problem:
    return Problem(problem.message, source, row, problem.column, problem.subject, problem.hint)


def _table_patient(
    chunk: Chunk, row: int, cells: Any, kb: KnowledgeBase, mapping: Mapping, columns: list
) -> Patient | list[Problem]:
    source = chunk.source
    if isinstance(cells, Exception):
        return [Problem(f"cannot read this CSV row: {cells}", file=source, line=row)]
    if len(cells) != len(chunk.header):
        return [Problem(f"this row has {len(cells)} cells; the header has {len(chunk.header)}", file=source, line=row)]
    data: dict[str, Any] = {}
    convert = mapping.convert
    for i, cell in enumerate(cells, 1):
        if type(cell) is str and _UNSAFE_CELL.search(cell):
            bad = _UNSAFE_CELL.search(cell)
            assert bad is not None
            column = chunk.columns[i - 1] if i <= len(chunk.columns) else str(i)
            return [
                Problem(
                    f"control character U+{ord(bad.group()):04X} in a value: refused",
                    file=source,
                    line=row,
                    column=i,
                    subject=f"column '{column}'",
                )
            ]
    for (fact_name, bool_fact, respelt), cell in zip(columns, cells, strict=True):
        if fact_name is None or cell is None or cell == "":
            continue  # an ignored column, or an unknown answer
        if not respelt and (cell is True or cell is False or not bool_fact):
            data[fact_name] = cell  # what Mapping.convert gives a cell no spelling applies to
            continue
        value = convert(fact_name, cell, bool_fact)
        if value is not None:
            data[fact_name] = value
    kept = None
    if mapping.keep:
        where = chunk.columns
        kept = {name: _kept_text(cells[where.index(name)]) for name in mapping.keep if name in where}
    try:
        return Patient(source, row, _meta_id(data), _quick(data, kb), kept)
    except PatientError:
        pass
    pos = Positions(source)
    for i, fact_name in enumerate(chunk.header):
        if fact_name is not None:
            pos.lines[(fact_name,)] = pos.keys[(fact_name,)] = (row, i + 1)
    pos.lines[()] = (row, None)  # type: ignore[assignment]
    try:
        parse_patient(data, pos, kb)
    except PatientError as exc:
        return [_name_column(p, chunk) for p in exc.problems]
    return [Problem("this row failed validation once and passed once: report this", file=source, line=row)]


def _kept_text(cell: Any) -> str | None:
    """A kept cell as text: a date as ISO 8601, a whole number without a fraction, empty as missing."""
    if cell is None or cell == "":
        return None
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if hasattr(cell, "isoformat"):
        return str(cell.isoformat())
    return str(cell)


def _name_column(problem: Problem, chunk: Chunk) -> Problem:
    """A table cell's problem names the extract's column as well as the fact."""
    if problem.column is None or not chunk.columns:
        return problem
    column = chunk.columns[problem.column - 1]
    fact = chunk.header[problem.column - 1]
    subject = problem.subject if column == fact else f"column '{column}' ({problem.subject or fact})"
    return Problem(problem.message, problem.file, problem.line, problem.column, subject, problem.hint)
