"""What the guideline itself leaves open: each of its self-contradictions (inconsistencies.yaml), listed as a
note with the choice the encoding made and what the board must decide."""

from __future__ import annotations

from pathlib import Path

from lumbar_kb.engine.analysis.checks.context import Context
from lumbar_kb.engine.analysis.checks.findings import Check, Finding


def check_inconsistencies(ctx: Context) -> Check:
    kb = ctx.kb
    check = Check(
        "guideline_inconsistencies", "structure", "the guideline's self-contradictions are recorded with a choice"
    )
    file = ctx.display(Path(kb.root) / "inconsistencies.yaml")
    for item in kb.inconsistencies:
        finding = Finding(
            check.id,
            "note",
            f"inconsistency {item.id}",
            item.title,
            file,
            item.line,
        )
        finding.details.append(f"encoded as: {item.choice}")
        finding.details.append(f"rules: {', '.join(item.rules)}")
        finding.details.append(f"the board decides: {item.board}")
        check.findings.append(finding)
    return check
