"""Traceability between the guideline's sentences and the rules (knowledge/<kb>/guideline_text.yaml).

Three claims: every rule is named by some sentence (a rule no sentence asks for is an encoding nobody can
check against the text); every sentence is either encoded by rules or says why not (a sentence silently
left out is a gap the board cannot see); every rule id the mapping names exists (a renamed rule must not
leave a dead link). A knowledge base without a guideline_text.yaml skips the three (it has no text to trace).
"""

from __future__ import annotations

from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import Check, Finding
from lumbar_kb.engine.errors import did_you_mean
from lumbar_kb.engine.guideline_text import FILE_NAME, load_text


def check_traceability(ctx: Context) -> list[Check]:
    rules_traced = Check("rules_traced", "structure", "every rule is traced to a sentence of the guideline")
    sentences_accounted = Check(
        "sentences_accounted", "structure", "every sentence of the guideline is encoded by rules or says why not"
    )
    ids_known = Check("trace_ids_known", "structure", "every rule id in the sentence mapping exists")
    checks = [rules_traced, sentences_accounted, ids_known]
    text = load_text(ctx.kb)
    if text is None:
        for check in checks:
            check.skipped = f"the knowledge base has no {FILE_NAME}"
        return checks
    known = {r.id for r in ctx.kb.rules}
    named = {rid for s in text.sentences for rid in s.rules}
    for rule in ctx.kb.rules:
        if rule.id not in named:
            rules_traced.findings.append(
                Finding(
                    rules_traced.id,
                    "problem",
                    f"rule {rule.id}",
                    f"no sentence of {FILE_NAME} names this rule: add its id to the sentences it encodes",
                    rule.file,
                    rule.line,
                )
            )
    for sentence in text.sentences:
        if not sentence.rules and not sentence.not_encoded:
            sentences_accounted.findings.append(
                Finding(
                    sentences_accounted.id,
                    "problem",
                    f"sentence {sentence.id}",
                    f'"{sentence.text}" lists no rules and no not_encoded reason',
                    text.file,
                    sentence.line,
                )
            )
        for rid in sentence.rules:
            if rid not in known:
                hint = did_you_mean(rid, known)
                ids_known.findings.append(
                    Finding(
                        ids_known.id,
                        "problem",
                        f"sentence {sentence.id}",
                        f"names rule '{rid}', which does not exist" + (f" ({hint})" if hint else ""),
                        text.file,
                        sentence.line,
                    )
                )
    return checks
