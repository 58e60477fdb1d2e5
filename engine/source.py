"""Safe YAML/JSON reading that keeps source positions.

`read_document(path)` returns the plain Python data (dicts, lists, scalars) and a `Positions` map from
each node's path (a tuple of keys and indexes) to its 1-based (line, column), so every later check can
point an author at the exact line. Only the safe YAML constructors are used; JSON files go through the
same YAML composer (JSON is YAML 1.2's subset for our purposes) after a strict `json` parse, so a JSON
syntax error is reported with json's own line and column.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem

PathKey = tuple  # tuple[str | int, ...]


@dataclass
class Positions:
    file: str
    lines: dict[PathKey, tuple[int, int]] = field(default_factory=dict)  # where each value starts
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)  # where each mapping key starts

    def at(self, path: PathKey) -> tuple[int | None, int | None]:
        """Position of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return (None, None)
            path = path[:-1]

    def problem(
        self, path: PathKey, message: str, subject: str | None = None, hint: str | None = None, key: bool = False
    ) -> Problem:
        """A Problem located at the value of `path` (or at its key, for problems with the key itself)."""
        line, column = self.keys[tuple(path)] if key and tuple(path) in self.keys else self.at(path)
        return Problem(message, file=self.file, line=line, column=column, subject=subject, hint=hint)


class DocumentError(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """SafeLoader; duplicate keys are detected while converting nodes below."""


def _convert(node: yaml.Node, path: PathKey, pos: Positions, loader: yaml.SafeLoader) -> Any:
    pos.lines[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise DocumentError(pos.problem(path, f"a mapping key must be a string, not {type(key).__name__}"))
            key = str(key)  # keys are names; YAML's `1:` (a reference number) becomes "1"
            if key in out:
                line = key_node.start_mark.line + 1
                raise DocumentError(
                    Problem(f"duplicate key '{key}'", file=pos.file, line=line, column=key_node.start_mark.column + 1)
                )
            pos.keys[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _convert(value_node, path + (key,), pos, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), pos, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_text(text: str, file: str) -> tuple[Any, Positions]:
    """Parse YAML (or JSON) text into plain data plus positions; raises DocumentError.

    A JSON file's data comes from `json` itself (YAML 1.1 would read some JSON differently, and refuses tab
    indentation); the YAML composer then only supplies line numbers, when it can."""
    try:
        if file.endswith(".json"):
            try:
                data = json.loads(text, object_pairs_hook=_unique_json_keys)
            except json.JSONDecodeError as exc:
                raise DocumentError(
                    Problem(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno, column=exc.colno)
                ) from None
            except _DuplicateKey as dup:
                _parse_yaml(text, file)  # names the duplicate's line when YAML can read the file
                raise DocumentError(Problem(f"duplicate key '{dup.key}'", file=file)) from None
            try:
                _, pos = _parse_yaml(text, file)
            except DocumentError:
                pos = Positions(file)  # valid JSON that YAML cannot compose: no line numbers, same data
            return data, pos
        return _parse_yaml(text, file)
    except RecursionError:
        raise DocumentError(Problem("nested too deeply to read", file=file)) from None


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_json_keys(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _parse_yaml(text: str, file: str) -> tuple[Any, Positions]:
    pos = Positions(file)
    loader = _UniqueKeySafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, pos
        return _convert(node, (), pos, loader), pos
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        hint = glued_colon_hint(text, lines=True)
        raise DocumentError(
            Problem(f"invalid YAML: {message}", file=file, line=line, column=column, hint=hint)
        ) from None
    except yaml.YAMLError as exc:
        raise DocumentError(Problem(f"invalid YAML: {exc}", file=file)) from None
    finally:
        loader.dispose()


# `name:value` at the start of a line (or of a list item, or anywhere in a scalar): a key glued to its value
_GLUED = re.compile(r"(?:^|(?<=\s))(?:-\s+)?([A-Za-z_][\w.-]*):(?=[^\s:/])([^\s,}\]]+)")


def glued_colon_hint(text: str, lines: bool = False) -> str | None:
    """The hint for `leg_weakness:true`: YAML reads a colon not followed by a space as part of one piece of
    text, so the file is not the mapping its author meant. With `lines`, only a line that starts with such
    a key is considered (the line is named, since the parser's error usually points at a later line)."""
    for number, line in enumerate(text.splitlines() if lines else [text], 1):
        found = _GLUED.match(line.strip()) if lines else _GLUED.search(line)
        if found:
            key, value = found.groups()
            where = f"line {number}: " if lines else ""
            return (
                f"{where}a space is missing after the colon: write '{key}: {value}'; "
                f"YAML reads '{key}:{value}' as one piece of text"
            )
    return None


def display(path: Path | str) -> str:
    """How a file is named in messages: relative to the working directory when it is below it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def read_document(path: Path | str) -> tuple[Any, Positions]:
    """Read and parse one file; a missing or unreadable file is a DocumentError, not an OSError."""
    path = Path(path)
    shown = display(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not content
    except FileNotFoundError:
        raise DocumentError(Problem("no such file", file=shown)) from None
    except IsADirectoryError:
        raise DocumentError(Problem("is a directory, not a file", file=shown)) from None
    except UnicodeDecodeError as exc:
        raise DocumentError(Problem(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=shown)) from None
    except OSError as exc:
        raise DocumentError(Problem(f"cannot read: {exc.strerror}", file=shown)) from None
    return parse_text(text, shown)
