"""`make fuzz`: coverage-guided fuzzing (atheris, libFuzzer) of everything a hostile file reaches.

Each input is one file, its first byte choosing what it is: a YAML patient file, a JSON patient file, or a
rule file. It goes the way the command line takes it: the reading front door, the patient checks and the
engine (a patient); or the front door, the schema, the loader's rule building against the bundled vocabulary
and the compiler (a rule file). The result's JSON is written with the one JSON writer. A refusal (a
LumbarKBError) is the expected outcome; anything else raised, a message with a raw control character, or
JSON with NaN is a crash that libFuzzer reports and saves (crash-<sha1> in the working directory).

    python tests/fuzz_atheris.py -atheris_runs=20000 build/fuzz-corpus     # or: make fuzz

The corpus folder is seeded with the bundled patient and rule files when empty. Without atheris installed,
`make fuzz` runs the hypothesis suite (tests/test_fuzz.py) with many more examples instead.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import atheris

# coverage feedback from our modules that read and check hostile bytes. Not from PyYAML: atheris 2.3's
# instrumentation of its scanner on Python 3.11 breaks it ("'str' object has no attribute 'prefix'" in
# scan_flow_scalar_breaks, on inputs PyYAML itself refuses cleanly): a crash of the harness, not of ours.
_OURS = ["lumbar_kb.engine.source", "lumbar_kb.engine.patient", "lumbar_kb.engine.loader"]
with atheris.instrument_imports(include=_OURS):
    from lumbar_kb.common import dumps
    from lumbar_kb.engine.api import Evaluator
    from lumbar_kb.engine.compiler import compile_kb
    from lumbar_kb.engine.errors import KnowledgeBaseError, LumbarKBError, Problem
    from lumbar_kb.engine.loader import default_kb_dir, load, schema_problems
    from lumbar_kb.engine.loader.rules import build_rule
    from lumbar_kb.engine.loader.schema import subject_of
    from lumbar_kb.engine.patient import load_patient
    from lumbar_kb.engine.source import DocumentError, read_document

RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e]")
WORK = Path(tempfile.mkdtemp(prefix="lumbar-kb-fuzz-"))
RULES = WORK / "rules.yaml"
BASE = load()
EVALUATOR = Evaluator(BASE)
KINDS = ("p.yaml", "p.json", "rules")


def _refused(exc: LumbarKBError) -> None:
    for problem in exc.problems:
        text = str(problem)
        if RAW_CONTROL.search(text):
            raise AssertionError(f"a raw control character in a message: {text!r}")


def one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = KINDS[data[0] % len(KINDS)], data[1:]
    if kind == "rules":
        RULES.write_bytes(body)
        try:
            compile_kb(replace(BASE, rules=_rules(RULES)))
        except LumbarKBError as exc:
            _refused(exc)
        except DocumentError as exc:
            _refused(LumbarKBError(exc.problem))
        return
    path = WORK / kind
    path.write_bytes(body)
    try:
        inputs = load_patient(path, EVALUATOR.kb)
    except LumbarKBError as exc:
        _refused(exc)
        return
    result = EVALUATOR.evaluate(inputs)
    json.loads(dumps(result.to_dict()), parse_constant=lambda token: (_ for _ in ()).throw(ValueError(token)))


def _rules(path: Path) -> tuple:
    """One rule file the loader's way (front door, schema, build), against the bundled facts and catalogue:
    what `load` does for each rules/*.yaml, without re-reading the nine files that did not change."""
    data, pos = read_document(path)
    if not isinstance(data, dict):
        raise KnowledgeBaseError(Problem("must be a mapping at the top", file=pos.file))
    problems = schema_problems(data, "rules", pos, lambda p: subject_of(data, p))
    if problems:
        raise KnowledgeBaseError(problems)
    built = []
    for i, raw in enumerate(data["rules"]):
        rule = build_rule(
            raw, ("rules", i), pos, data["section"], BASE.facts, BASE.catalog, BASE.references, i, problems
        )
        if rule is not None:
            built.append(rule)
    if problems:
        raise KnowledgeBaseError(problems)
    return tuple(built)


def seed(corpus: Path) -> None:
    """Give an empty corpus the bundled files, each behind the byte that says what it is."""
    if corpus.exists() and any(corpus.iterdir()):
        return
    corpus.mkdir(parents=True, exist_ok=True)
    for path in sorted((default_kb_dir() / "patients").iterdir()):
        first = KINDS.index("p.json" if path.suffix == ".json" else "p.yaml")
        (corpus / f"patient-{path.name}").write_bytes(bytes([first]) + path.read_bytes())
    for path in sorted((default_kb_dir() / "rules").glob("*.yaml")):
        (corpus / f"rules-{path.name}").write_bytes(bytes([KINDS.index("rules")]) + path.read_bytes())


def main() -> None:
    corpora = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    for corpus in corpora:
        seed(corpus)
    try:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
