"""Commands about patients and the vocabulary: `evaluate`, `facts` (`cohort` is in cli/cohort_cmd.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lumbar_kb.common import EXIT_OK, add_kb_option, dumps, dumps_line, kb_from
from lumbar_kb.engine.errors import LumbarKBError, Problem, safe_text


def add_commands(sub: argparse._SubParsersAction) -> None:
    for add in (_add_evaluate, _add_facts):
        add(sub)


# ---- evaluate ----------------------------------------------------------------------------------------------
def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate patient files against the guideline",
        description="Evaluate one or more patient files (YAML or JSON mapping of fact: value). "
        "One file gives one JSON object; several give one JSON object per line.",
    )
    p.add_argument("patients", nargs="+", metavar="PATIENT", type=Path)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--audience", choices=("clinician", "patient"), default="clinician")
    p.add_argument(
        "--contradictions",
        choices=("refuse", "most-urgent"),
        default="refuse",
        help="answers that contradict each other: refuse the file (exit 2, the default, for authors' files), or "
        "evaluate it under the most urgent reading they allow, naming both answers (never drops an alarm)",
    )
    add_kb_option(p)
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    from lumbar_kb.engine.analysis.escalation import decide_most_urgent
    from lumbar_kb.engine.api import Evaluator
    from lumbar_kb.engine.result_text import render

    evaluator = Evaluator(kb_from(args))
    kb = evaluator.kb
    read = "read" if args.contradictions == "most-urgent" else "refuse"
    inputs = _load_all(args.patients, kb, read)
    chunks = []
    for path, facts in zip(args.patients, inputs, strict=False):
        result = decide_most_urgent(kb, evaluator.engine.run, facts, args.audience)  # no contradiction: decide
        if args.format == "json":
            data = result.to_dict()
            if len(args.patients) > 1:
                chunks.append(dumps_line({"patient_file": safe_text(path), **data}))
            else:
                chunks.append(dumps(data))
        else:
            header = f"== {safe_text(path)} ==\n" if len(args.patients) > 1 else ""
            chunks.append(header + render(result, kb))
    sys.stdout.write(("\n" if args.format == "text" else "").join(chunks))
    return EXIT_OK


def _load_all(paths: list[Path], kb, contradictions: str = "refuse") -> list[dict]:
    """Every patient file validated before any is evaluated: one bad file means nothing is written."""

    problems: list[Problem] = []
    inputs = []
    for path in paths:
        try:
            inputs.append(_load_one(path, kb, contradictions))
        except LumbarKBError as exc:
            problems.extend(exc.problems)
    if problems:
        raise LumbarKBError(problems)
    return inputs


def _load_one(path: Path, kb, contradictions: str = "refuse") -> dict:
    """A patient file, or a FHIR Bundle / QuestionnaireResponse (a document with a `resourceType`), read once
    through the bounded front door."""
    from lumbar_kb.clinic.fhir.inbound import facts_from_document, is_fhir
    from lumbar_kb.engine.errors import PatientError
    from lumbar_kb.engine.patient import parse_patient
    from lumbar_kb.engine.source import DocumentError, read_document

    try:
        data, pos = read_document(path)
    except DocumentError as exc:
        raise PatientError(exc.problem) from None
    if is_fhir(data):
        return facts_from_document(data, pos, kb)
    return parse_patient(data, pos, kb, contradictions=contradictions)


# ---- facts -------------------------------------------------------------------------------------------------
def _add_facts(sub) -> None:
    p = sub.add_parser("facts", help="the fact vocabulary and its questions")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--audience", choices=("clinician", "patient"), default="clinician")
    p.add_argument("--derived", action="store_true", help="also list the facts the rules derive")
    add_kb_option(p)
    p.set_defaults(run=_run_facts)


def _run_facts(args) -> int:
    kb = kb_from(args)
    facts = [f for f in kb.facts.values() if args.derived or not f.derived]
    if args.format == "json":
        sys.stdout.write(
            dumps(
                [
                    {
                        "name": f.name,
                        "type": f.type,
                        "values": list(f.values),
                        "alarm": f.alarm,
                        "derived": f.derived,
                        "meaning": f.meaning,
                        "question": f.question,
                        "patient_question": f.patient_question,
                    }
                    for f in facts
                ]
            )
        )
        return EXIT_OK
    width = max(len(f.name) for f in facts)
    for f in facts:
        kind = "yes/no" if f.type == "bool" else " | ".join(map(str, f.values))
        ask = f.patient_question if args.audience == "patient" else f.question
        flag = "ALARM " if f.alarm else ("derived " if f.derived else "")
        print(f"{f.name:<{width}}  {flag}{kind}")
        print(f"{'':<{width}}  {ask or f.meaning}")
    return EXIT_OK
