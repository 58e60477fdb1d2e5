"""The one reading front door: every file a user (or an attacker) hands us is read here, bounded.

`read_document(path)` returns the plain Python data (dicts, lists, scalars) and a `Positions` map from
each node's path (a tuple of keys and indexes) to its 1-based (line, column), so every later check can
point an author at the exact line. Only the safe YAML constructors are used; JSON files go through a
strict `json` parse (a JSON syntax error is reported with json's own line and column) and then through the
YAML composer for positions.

Every read is bounded by `Limits` (named, documented, configurable through `LUMBAR_KB_LIMIT_<NAME>`
environment variables; docs/security-and-limits.md lists them): only regular files are read (a FIFO,
a device such as /dev/zero, a directory or a symlink loop is refused by name, and a FIFO is opened
non-blocking so it never hangs), at most `max_bytes` of them; aliases are counted and their expansion
measured once per anchor, so a "billion laughs" document is refused before it is expanded; nesting depth,
integer digits and string length are bounded; control characters, unknown or ill-fitting tags and numbers
that are not finite are refused with file:line, never a traceback.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from yaml._yaml import CParser

from lumbar_kb.engine.errors import LumbarKBError, Problem, safe_text

PathKey = tuple  # tuple[str | int, ...]


@dataclass(frozen=True)
class Limits:
    """How much of a file is ever read or built. Each default is far above what a real knowledge base or
    patient file needs (the bundled guideline: 7 KB, 281 values, 8 levels, strings up to 406 characters)."""

    max_bytes: int = 256 * 1024  # size of one file
    max_values: int = 20_000  # values in one document once every alias is expanded
    max_aliases: int = 100  # alias uses (*name) in one document
    max_depth: int = 40  # nesting of mappings and lists
    max_int_digits: int = 18  # digits of an integer
    max_string: int = 10_000  # characters of one string (or any one scalar)
    max_errors: int = 20  # problems printed before "... and N more"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, each overridden by `LUMBAR_KB_LIMIT_<NAME>` (e.g. LUMBAR_KB_LIMIT_MAX_BYTES=1000000)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            name = f"LUMBAR_KB_LIMIT_{f.name.upper()}"
            if name in environ:
                raw = environ[name]
                if not re.fullmatch(r"[1-9][0-9]{0,11}", raw.strip()):
                    raise LumbarKBError(Problem(f"{name} must be a positive whole number, not {raw!r}"))
                values[f.name] = int(raw)
        return cls(**values)


def limits() -> Limits:
    """The limits in force (defaults and environment), read afresh so a test or a caller can change them."""
    return Limits.from_env()


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


# C0 controls but tab, newline and carriage return; DEL; C1 controls; non-characters; lone surrogates
_BAD_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
# in a value, only tab and newline (a folded or literal block) may remain; in a key, nothing. The bidirectional
# embedding, override and isolate controls go too: they make text display as something it is not
_BAD_IN_VALUE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]"
)
_BAD_IN_KEY = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_INT, _SEQ, _MAP = _TAG + "int", _TAG + "seq", _TAG + "map"


def _tag_name(tag: str) -> str:
    return safe_text("!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag)


def _char_name(ch: str) -> str:
    return f"U+{ord(ch):04X}"


class _BoundedLoader(yaml.composer.Composer, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """A safe loader composing at most `max_depth` levels and `max_aliases` alias uses (duplicate keys, tags and
    values are checked while converting nodes below). libyaml scans and parses (the C parser: most of the time a
    load takes); the nodes are composed here, in Python, so the bounds hold before any deep or wide document is
    built (libyaml's own composer recurses in C, unbounded)."""

    def __init__(self, text: str, file: str, bounds: Limits):
        CParser.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._file, self._limits, self._depth, self.aliases, self._nodes = file, bounds, 0, 0, 0

    def _refuse(self, message: str) -> DocumentError:
        event = self.peek_event()
        mark = event.start_mark if event is not None else None
        if mark is None:
            return DocumentError(Problem(message, file=self._file))
        return DocumentError(Problem(message, file=self._file, line=mark.line + 1, column=mark.column + 1))

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self._limits.max_aliases:
                raise self._refuse(f"more than {self._limits.max_aliases} aliases (*name): refused")
        else:
            self._nodes += 1  # values as written; `_measure` counts them again with every alias expanded
            if self._nodes > self._limits.max_values:
                raise self._refuse(f"more than {self._limits.max_values:,} values: refused")
        self._depth += 1
        try:
            if self._depth > self._limits.max_depth:
                raise self._refuse(f"nested more than {self._limits.max_depth} levels deep: refused")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(root: yaml.Node, file: str, bounds: Limits) -> None:
    """Refuse a document with aliases whose expansion (every alias replaced by what it names) is too big, too deep
    or cyclic, measuring each node once: a few microseconds per anchor however large the expansion would be."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) of its expansion
    open_: set[int] = set()  # nodes whose expansion is being measured: the ancestors of what is popped
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = [done[id(c)] for c in _children(node)]
            done[key] = (1 + sum(k[0] for k in kids), 1 + max((k[1] for k in kids), default=0))
            open_.discard(key)
            continue
        if key in done:
            continue
        if key in open_:
            raise _at(node, file, "an alias refers to a mapping or list that contains it (a cycle): refused")
        open_.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    values, depth = done[id(root)]
    if values > bounds.max_values:
        raise DocumentError(
            Problem(
                f"expands to {values:,} values (more than {bounds.max_values:,}; aliases repeat what they name): "
                "refused",
                file=file,
            )
        )
    if depth > bounds.max_depth:
        raise DocumentError(Problem(f"nested more than {bounds.max_depth} levels deep (through aliases)", file=file))


def _at(node: yaml.Node, file: str, message: str) -> DocumentError:
    mark = node.start_mark
    return DocumentError(Problem(message, file=file, line=mark.line + 1, column=mark.column + 1))


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[:width] + "..."


class _Converter:
    """Nodes into plain data with positions; every scalar checked (tag, size, finiteness, control characters)."""

    def __init__(self, loader: _BoundedLoader, pos: Positions, bounds: Limits):
        self.loader, self.pos, self.limits, self.count = loader, pos, bounds, 0

    def convert(self, node: yaml.Node, path: PathKey) -> Any:
        self.count += 1
        if self.count > self.limits.max_values:  # a guard; `_measure` refuses such documents first
            raise _at(node, self.pos.file, f"more than {self.limits.max_values:,} values: refused")
        self.pos.lines[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                raise _at(
                    node, self.pos.file, f"the tag {_tag_name(node.tag)} is not allowed here (plain mappings only)"
                )
            try:
                self.loader.flatten_mapping(node)
            except yaml.MarkedYAMLError as exc:
                raise _at(node, self.pos.file, f"invalid merge (<<): {exc.problem}") from None
            out: dict = {}
            for key_node, value_node in node.value:
                key = self.key(key_node, path)
                if key in out:
                    raise _at(key_node, self.pos.file, f"duplicate key '{key}'")
                self.pos.keys[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self.convert(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise _at(node, self.pos.file, f"the tag {_tag_name(node.tag)} is not allowed here (plain lists only)")
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def key(self, node: yaml.Node, path: PathKey) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise _at(node, self.pos.file, "a mapping key must be a string, not a mapping or list")
        bad = _BAD_IN_KEY.search(node.value)
        if bad:
            raise _at(node, self.pos.file, f"control character {_char_name(bad.group())} in a key: refused")
        key = self.scalar(node)
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise _at(node, self.pos.file, f"a mapping key must be a string, not {type(key).__name__}")
        key = str(key)  # keys are names; YAML's `1:` (a reference number) becomes "1"
        bad = _BAD_IN_KEY.search(key)
        if bad:
            raise _at(node, self.pos.file, f"control character {_char_name(bad.group())} in a key: refused")
        return key

    def scalar(self, node: yaml.Node) -> Any:
        text, tag, file = node.value, node.tag, self.pos.file
        if tag not in _SCALAR_TAGS:
            raise _at(node, file, f"the tag {_tag_name(tag)} is not allowed (plain text, numbers, true/false, null)")
        if len(text) > self.limits.max_string:
            raise _at(node, file, f"a value of {len(text):,} characters (more than {self.limits.max_string:,})")
        if tag == _INT and len(text.lstrip("+-").replace("_", "")) > self.limits.max_int_digits:
            raise _at(node, file, f"an integer of more than {self.limits.max_int_digits} digits: refused")
        try:
            value = self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
            raise _at(node, file, f"'{safe_text(_short(text))}' is not a valid {_tag_name(tag)}") from None
        return _checked_value(value, lambda message: _at(node, file, message))


def _checked_value(value: Any, refuse) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise refuse("a number must be finite (not .nan, .inf or beyond 1.8e308)")
    if isinstance(value, str):
        bad = _BAD_IN_VALUE.search(value)
        if bad:
            raise refuse(f"control character {_char_name(bad.group())} in a value: refused")
    return value


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def is_json(name: str) -> bool:
    """Whether a file is read as JSON (by its name's suffix), else as YAML."""
    return name.lower().endswith(".json")


def parse_text(text: str, file: str, bounds: Limits | None = None) -> tuple[Any, Positions]:
    """Parse YAML (or JSON) text into plain data plus positions; raises DocumentError.

    A JSON file's data comes from `json` itself (YAML 1.1 would read some JSON differently, and refuses tab
    indentation); the YAML composer then only supplies line numbers, when it can."""
    bounds = bounds or limits()
    bad = _BAD_IN_TEXT.search(text)
    if bad:
        line, column = _line_col(text, bad.start())
        raise DocumentError(
            Problem(f"control character {_char_name(bad.group())}: refused", file=file, line=line, column=column)
        )
    try:
        if is_json(file):
            return _parse_json(text, file, bounds)
        return _parse_yaml(text, file, bounds)
    except RecursionError:
        raise DocumentError(Problem("nested too deeply to read: refused", file=file)) from None


class _JSONRefused(Exception):
    def __init__(self, token: str, message: str):
        self.token, self.message = token, message


def _parse_json(text: str, file: str, bounds: Limits) -> tuple[Any, Positions]:
    def parse_int(token: str) -> int:
        if len(token.lstrip("-")) > bounds.max_int_digits:
            raise _JSONRefused(token, f"an integer of more than {bounds.max_int_digits} digits: refused")
        return int(token)

    def parse_float(token: str) -> float:
        if len(token) > bounds.max_string:
            raise _JSONRefused(token, "a number too long to read")
        value = float(token)
        if not math.isfinite(value):
            raise _JSONRefused(token, "a number must be finite (not beyond 1.8e308)")
        return value

    def parse_constant(token: str) -> float:
        raise _JSONRefused(token, f"{token} is not a JSON number: refused")

    try:
        data = json.loads(
            text,
            object_pairs_hook=_unique_json_keys,
            parse_int=parse_int,
            parse_float=parse_float,
            parse_constant=parse_constant,
        )
    except RecursionError:  # json's own guard, long before the stack is in danger
        raise DocumentError(Problem(f"nested more than {bounds.max_depth} levels deep: refused", file=file)) from None
    except json.JSONDecodeError as exc:
        raise DocumentError(Problem(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno, column=exc.colno)) from None
    except _JSONRefused as refused:
        offset = text.find(refused.token)
        line, column = _line_col(text, offset) if offset >= 0 else (None, None)
        raise DocumentError(Problem(refused.message, file=file, line=line, column=column)) from None
    except _DuplicateKey as dup:
        try:
            _parse_yaml(text, file, bounds)  # names the duplicate's line when YAML can read the file
        except DocumentError as exc:
            if exc.problem.message.startswith("duplicate key"):
                raise
        raise DocumentError(Problem(f"duplicate key '{dup.key}'", file=file)) from None
    _check_json_data(data, file, bounds)
    try:
        _, pos = _parse_yaml(text, file, bounds)
    except DocumentError:
        pos = Positions(file)  # valid JSON that YAML cannot compose: no line numbers, same data
    return data, pos


def _check_json_data(data: Any, file: str, bounds: Limits) -> None:
    """The limits YAML's composer enforces, on data `json` built (no aliases in JSON: a tree)."""

    def refuse(message: str) -> DocumentError:
        return DocumentError(Problem(message, file=file))

    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > bounds.max_values:
            raise refuse(f"more than {bounds.max_values:,} values: refused")
        if depth > bounds.max_depth:
            raise refuse(f"nested more than {bounds.max_depth} levels deep: refused")
        if isinstance(value, dict):
            for key, item in value.items():
                bad = _BAD_IN_KEY.search(key)
                if bad:
                    raise refuse(f"control character {_char_name(bad.group())} in a key: refused")
                if len(key) > bounds.max_string:
                    raise refuse(f"a key of {len(key):,} characters (more than {bounds.max_string:,})")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if len(value) > bounds.max_string:
                raise refuse(f"a value of {len(value):,} characters (more than {bounds.max_string:,})")
            _checked_value(value, refuse)


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


def _parse_yaml(text: str, file: str, bounds: Limits) -> tuple[Any, Positions]:
    pos = Positions(file)
    loader = _BoundedLoader(text, file, bounds)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, pos
        if loader.aliases:  # without one, the composer has already bounded the values and depth as written
            _measure(node, file, bounds)
        return _Converter(loader, pos, bounds).convert(node, ()), pos
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        if "exceeded maximum nesting depth" in message:  # libyaml's own bound (1,000), far beyond ours
            deep = f"nested more than {bounds.max_depth} levels deep: refused"
            raise DocumentError(Problem(deep, file=file, line=line, column=column)) from None
        hint = glued_colon_hint(text, lines=True) or yaml_syntax_hint(text, message, line)
        raise DocumentError(
            Problem(f"invalid YAML: {message}", file=file, line=line, column=column, hint=hint)
        ) from None
    except yaml.reader.ReaderError as exc:
        raise DocumentError(Problem(f"invalid YAML: character {exc.character!r} not allowed", file=file)) from None
    except yaml.YAMLError as exc:
        raise DocumentError(Problem(f"invalid YAML: {exc}", file=file)) from None
    finally:
        loader.dispose()


def yaml_syntax_hint(text: str, message: str, line: int | None) -> str | None:
    """Plain words for PyYAML's commonest complaints: a `: ` inside an unquoted value, a line indented unlike
    its neighbours, a tab used to indent."""
    rows = text.splitlines()
    if line is None or not 1 <= line <= len(rows):
        return None
    here = rows[line - 1]
    if "\t" in here[: len(here) - len(here.lstrip())] or "'\\t'" in message:
        return "YAML indents with spaces, never with tabs: replace the tab at the start of the line"
    if "mapping values are not allowed" in message:
        key, _, value = here.strip().removeprefix("- ").partition(": ")
        if value and ": " in value:
            return (
                f"the value of '{key}' contains ': ', which YAML reads as another key: put the value in quotes, "
                f'e.g. {key}: "{value}"'
            )
    misplaced = ("expected <block end>", "did not find expected key", "did not find expected '-'", "mapping values")
    if any(words in message for words in misplaced):

        def indent(row: str) -> int:  # where the row's key starts (after a list item's "- ")
            body = row.lstrip(" ")
            return len(row) - len(body) + (len(body) - len(body[1:].lstrip(" ")) if body.startswith("- ") else 0)

        previous = next((r for r in reversed(rows[: line - 1]) if r.strip() and not r.lstrip().startswith("#")), None)
        if previous is not None and indent(here) != indent(previous):
            return (
                f"an indentation mistake? this line starts at column {indent(here) + 1}, the line above at column "
                f"{indent(previous) + 1}: the keys of one mapping must start in the same column"
            )
        return "an indentation mistake? the keys of one mapping must start in the same column"
    return None


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
    """How a file is named in messages: relative to the working directory when it is below it (the name as
    given otherwise; a symbolic link is not followed: a dangling one is named, not its target). A cohort names
    every file it reads, so this is string work, not pathlib's (the same names: tested)."""
    try:
        absolute = os.path.abspath(path)  # normalised: no "." or ".." parts, no doubled or trailing separators
        cwd = os.getcwd()
    except (ValueError, OSError):  # a NUL in the name; a working directory that no longer exists
        return str(Path(path))
    if absolute == cwd:
        return "."
    below = cwd if cwd.endswith(os.sep) else cwd + os.sep
    return absolute[len(below) :] if absolute.startswith(below) else str(Path(path))


_KINDS = (
    (stat.S_ISDIR, "is a directory, not a file"),
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file: refused"),
    (stat.S_ISCHR, "is a character device, not a regular file: refused"),
    (stat.S_ISBLK, "is a block device, not a regular file: refused"),
    (stat.S_ISSOCK, "is a socket, not a regular file: refused"),
)


def _kind_problem(mode: int) -> str | None:
    for test, message in _KINDS:
        if test(mode):
            return message
    return None if stat.S_ISREG(mode) else "is not a regular file: refused"


def _os_problem(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file"
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop (too many levels of symbolic links)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot read: permission denied"
    return f"cannot read: {exc.strerror or exc}"


def read_bytes(path: Path | str, bounds: Limits | None = None) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; anything else is a DocumentError naming the file.

    The file is checked before it is opened (a device is never opened), then opened non-blocking (a FIFO put
    in its place in between never blocks) and checked again on the open descriptor."""
    bounds = bounds or limits()
    try:
        kind = _kind_problem(os.stat(path).st_mode)
        if kind:
            raise DocumentError(Problem(kind, file=display(path)))
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        try:
            info = os.fstat(fd)
            kind = _kind_problem(info.st_mode)
            if kind:
                raise DocumentError(Problem(kind, file=display(path)))
            if info.st_size > bounds.max_bytes:
                raise DocumentError(
                    Problem(
                        f"{info.st_size:,} bytes, more than the {bounds.max_bytes:,} allowed: refused",
                        file=display(path),
                    )
                )
            chunks, size = [], 0
            while size <= bounds.max_bytes:
                chunk = os.read(fd, min(65536, bounds.max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > bounds.max_bytes:
                raise DocumentError(
                    Problem(f"more than the {bounds.max_bytes:,} bytes allowed: refused", file=display(path))
                )
            return b"".join(chunks)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DocumentError(Problem(_os_problem(exc), file=display(path))) from None
    except ValueError:  # a NUL byte in the name
        raise DocumentError(Problem("not a valid file name", file=display(path))) from None


def read_document(path: Path | str, bounds: Limits | None = None) -> tuple[Any, Positions]:
    """Read and parse one file; a missing, unreadable or oversized file is a DocumentError, not an OSError."""
    bounds = bounds or limits()
    return parse_document(read_bytes(path, bounds), path, bounds)


def parse_document(raw: bytes, path: Path | str, bounds: Limits) -> tuple[Any, Positions]:
    """Parse one file's bytes (`read_bytes`' own): UTF-8 text, YAML or JSON (by the name); a DocumentError."""
    shown = display(path)
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is not content
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DocumentError(
            Problem(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=shown, line=line)
        ) from None
    return parse_text(text, shown, bounds)
