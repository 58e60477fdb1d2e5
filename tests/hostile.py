"""Hostile documents for the fuzz suite (tests/test_fuzz.py, `make fuzz`): hypothesis strategies for patient
files and rule files, and the contract every run of the command line must keep with them.

The contract: exit 0, 1 or 2 (never 3, an internal error), a message of a few lines with no traceback and
no raw control character, nothing on standard output unless the exit is 0 (and then, for --format json,
JSON without NaN), within a generous time and memory bound.
"""

from __future__ import annotations

import io
import json
import re
import resource
import time
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import strategies as st

from lumbar_kb.main import main

# ---- pieces ----------------------------------------------------------------------------------------------------
FACT_NAMES = [
    "leg_weakness",
    "radiograph",
    "cancer_history",
    "primary_cancer",
    "palpable_mass",
    "neuro_symptom",
    "id",
    "note",
]
CONTROLS = [
    "\x00",
    "\x07",
    "\x08",
    "\x0b",
    "\x1b",
    "\x1b[2J",
    "\x1b]0;x\x07",
    "\x7f",
    "\x85",
    "\x9b",
    "\ufffe",
    "\u202e",
]
YAML_SCALARS = [
    "true",
    "false",
    "null",
    "~",
    "yes",
    "No",
    "0",
    "1",
    "-0",
    "0x1F",
    "0o17",
    "0b101",
    "1_000",
    "1:30:00",
    "1.5",
    ".nan",
    ".NaN",
    ".inf",
    "-.inf",
    "1e400",
    "1.0e+400",
    "-1.0e+400",
    "2024-01-01",
    "2024-13-45",
    "2024-01-01T25:61:00Z",
    '!!bool "0"',
    "!!bool maybe",
    '!!int "x"',
    "!!int 0xZZ",
    '!!float "x"',
    "!!float 1e99999",
    '!!timestamp "x"',
    "!!timestamp 2024-02-30",
    "!!null x",
    "!!str 1",
    "!foo bar",
    "!<tag:evil.example,2024:x> y",
    "!!binary aGk=",
    "!!python/object:os.system echo",
    "!!python/name:os.system",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!pairs [a: 1]",
    "*undefined",
    "normal",
    "abnormal",
    "lung",
    "'quoted'",
    '"\\e[31mred"',
    '"\\x00"',
    '"\\u0085"',
    '"\\uFFFE"',
    '"\\ud800"',
    "[]",
    "{}",
    "[true, false]",
    "{a: 1}",
    "|\n  block\n  text",
    ">-\n  folded",
]


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8


huge_integer = st.integers(1, 6000).map(lambda n: "9" * n)
control_text = st.lists(st.sampled_from(list("ab_: -[]{}&*!|>'\"#,?%@`") + CONTROLS), max_size=12).map("".join)
# mostly well-formed pieces: one control character anywhere refuses a whole file, so they are the rare draw
_named = st.sampled_from(YAML_SCALARS)
scalar = st.one_of(_named, _named, _named, _named, _named, _named, huge_integer, control_text, st.text(max_size=12))
_fact = st.sampled_from(FACT_NAMES)
key = st.one_of(_fact, _fact, _fact, _fact, _fact, control_text, st.sampled_from(["<<", "? [a]", "1", "true", "~"]))


def laughs(width: int, depth: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, depth):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


@st.composite
def yaml_document(draw) -> bytes:
    """A patient-file-shaped YAML document with hostile parts, or a structural attack, or random bytes."""
    kind = draw(st.sampled_from(["mapping", "mapping", "mapping", "laughs", "deep", "recursive", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "laughs":
        return _encode(laughs(draw(st.integers(2, 12)), draw(st.integers(2, 12))))
    if kind == "deep":
        n = draw(st.integers(1, 3000))
        opener = draw(st.sampled_from(["[", "{a: ", "- ", "[{a: "]))
        return _encode("x: " + opener * n + "1\n")
    if kind == "recursive":
        return _encode(draw(st.sampled_from(["a: &a [*a]\n", "a: &a {b: *a}\n", "&a [*a, *a]\n", "a: &a\n  b: *a\n"])))
    entries = draw(st.lists(st.tuples(key, scalar), min_size=1, max_size=8))
    lines = []
    for k, v in entries:
        if "\n" in v and not v.startswith(("|", ">")):
            v = json.dumps(v)
        lines.append(f"{k}: {v}")
    prefix = draw(st.sampled_from(["", "---\n", "%YAML 1.1\n---\n", "\ufeff", "x: &x 1\n", "# c\n"]))
    return _encode(prefix + "\n".join(lines) + "\n")


class _Raw(str):
    """A JSON token written as it is (NaN, Infinity, a 5,000-digit number)."""


json_leaf = st.one_of(
    st.booleans(),
    st.none(),
    st.sampled_from(FACT_NAMES + ["normal", "abnormal", "lung"]),
    st.sampled_from([_Raw("NaN"), _Raw("Infinity"), _Raw("-Infinity"), _Raw("1e400"), _Raw("-1e400"), _Raw("1E309")]),
    huge_integer.map(_Raw),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: _Raw(repr(f))),
    control_text,
)


def _write_json(value) -> str:
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_write_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_write_json(v) for v in value) + "]"
    return json.dumps(value)


@st.composite
def json_document(draw) -> bytes:
    """A patient-file-shaped JSON document with hostile numbers, strings and nesting, or random bytes."""
    kind = draw(st.sampled_from(["mapping", "mapping", "deep", "duplicate", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        n = draw(st.integers(1, 5000))
        return _encode('{"x": ' + "[" * n + "]" * n + "}")
    values = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
    data = draw(st.dictionaries(st.one_of(st.sampled_from(FACT_NAMES), control_text), values, max_size=6))
    text = _write_json(data)
    if kind == "duplicate" and data:
        first = next(iter(data))
        text = text[:-1] + f", {json.dumps(first)}: true}}"
    return _encode(text)


# ---- rule files ------------------------------------------------------------------------------------------------
RULE_FIELDS = {
    # a field of the first rule of red_flags.yaml and its text there
    "id": "id: red_flag.leg_weakness",
    "title": "title: Decreased strength in the legs is a red flag",
    "when": "when: {fact: leg_weakness, is: true}",
    "within_hours": "within_hours: 24",
    "cites": "cites: [1]",
    "rationale": "rationale: Red flag symptoms require emergency evaluation within 12-24 hours.",
}


def nested_not(depth: int) -> str:
    text = "{fact: leg_weakness, is: true}"
    for _ in range(depth):
        text = "{not: " + text + "}"
    return text


def product(anys: int) -> str:
    one = "{any: [{fact: leg_weakness, is: true}, {fact: gait_difficulty, is: true}, {fact: night_pain, is: true}]}"
    return "{all: [" + ", ".join([one] * anys) + "]}"


condition = st.one_of(
    st.integers(1, 300).map(nested_not),
    st.integers(1, 12).map(product),
    st.sampled_from(["{fact: leg_weakness, is: maybe}", "{fact: zz_x, is: true}", "{all: []}", "{any: {}}", "[]"]),
)


@st.composite
def rule_file_edit(draw, original: str) -> bytes:
    """red_flags.yaml with one field of its first rule made hostile, or the whole file replaced."""
    kind = draw(st.sampled_from(["field", "field", "field", "condition", "whole"]))
    if kind == "whole":
        return draw(yaml_document())
    if kind == "condition":
        return _encode(original.replace(RULE_FIELDS["when"], "when: " + draw(condition), 1))
    field = draw(st.sampled_from(sorted(RULE_FIELDS)))
    value = draw(scalar)
    if "\n" in value and not value.startswith(("|", ">")):
        value = json.dumps(value)
    return _encode(original.replace(RULE_FIELDS[field], f"{field}: {value}", 1))


# ---- the contract ----------------------------------------------------------------------------------------------
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]")  # a newline ends a line; nothing else
MAX_SECONDS = 20.0  # a hang guard, far above the ~0.1 s a refusal takes (make bench-hostile)
MAX_RSS_BYTES = 1536 * 1024 * 1024  # the test process's peak, pytest included


class ContractBroken(AssertionError):
    pass


def run_cli(argv: list[str], allowed: tuple[int, ...]) -> tuple[int, str, str]:
    """Run the real entry point in-process and check the contract; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    elapsed = time.perf_counter() - started
    stdout, stderr = out.getvalue(), err.getvalue()
    check(code, stdout, stderr, allowed, json_out="json" in argv, elapsed=elapsed)
    return code, stdout, stderr


def _no_constant(token: str):
    raise ContractBroken(f"{token} in JSON output")


def check(code: int, stdout: str, stderr: str, allowed, json_out: bool, elapsed: float) -> None:
    def broken(why: str) -> ContractBroken:
        return ContractBroken(f"{why}\nexit {code}\nstderr: {stderr[:2000]!r}\nstdout: {stdout[:500]!r}")

    if code not in allowed:
        raise broken(f"exit {code} not in {allowed}")
    if "Traceback" in stderr or "internal error" in stderr:
        raise broken("a traceback or an internal error")
    if RAW_CONTROL.search(stderr):
        raise broken("a raw control character in the message")
    if len(stderr.splitlines()) > 24:
        raise broken("more than a paragraph of errors")
    if code == 2 and stdout:
        raise broken("output written although the input was refused")
    if code == 0 and json_out:
        json.loads(stdout, parse_constant=_no_constant)  # one patient: one JSON document
    if elapsed > MAX_SECONDS:
        raise broken(f"took {elapsed:.1f} s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    if rss > MAX_RSS_BYTES:
        raise broken(f"peak memory {rss / 2**20:.0f} MB")
