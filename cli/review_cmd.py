"""The medical board's subcommands: `review` (the HTML pack), `approve`, `status` and `diff`.

Glue only: parse arguments, call `lumbar_kb.visualize.review` and `engine.analysis` (approvals, diff), print,
choose the exit code (0 ok, 1 a finding: `diff` with changes is not a finding; 2 bad input).
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

from lumbar_kb.common import EXIT_OK, add_kb_option, dumps, feedback_rates, kb_from
from lumbar_kb.engine.loader import load


def add_commands(sub) -> None:
    _add_review(sub)
    _add_approve(sub)
    _add_status(sub)
    _add_diff(sub)


# ---- review --------------------------------------------------------------------------------------------------
def _add_review(sub) -> None:
    p = sub.add_parser(
        "review",
        help="write the medical board's review pack (static HTML, opens from disk)",
        description="Write a self-contained HTML folder (DIR/index.html and its pages; no network needed) for "
        "the medical board: the guideline beside the rules, rule cards, diagrams per section, decision "
        "tables, example patients, review status, and with --against the changes since an older version.",
    )
    p.add_argument("-o", "--output", metavar="DIR", type=Path, required=True, help="folder to write (created)")
    p.add_argument("--against", metavar="OLD_KB_DIR", type=Path, default=None, help="an older knowledge base")
    p.add_argument(
        "--feedback",
        metavar="FILE",
        type=Path,
        default=None,
        help="the CDS service's store (lumbar-kb serve --db FILE): each rule card shows how often clinicians "
        "accepted or overrode the cards it was behind, and why",
    )
    add_kb_option(p)
    p.set_defaults(run=_run_review)


def _run_review(args) -> int:
    from lumbar_kb.visualize.review.content import build_pack
    from lumbar_kb.visualize.review.pack import write_pack

    started = time.perf_counter()
    kb = kb_from(args)
    diff = None
    if args.against is not None:
        from lumbar_kb.engine.analysis.diff import compare

        diff = compare(load(args.against), kb)
    overrides = None
    if args.feedback is not None:
        overrides = feedback_rates(args.feedback)
    written = write_pack(build_pack(kb, diff, overrides=overrides), args.output)
    print(f"review pack: {args.output / 'index.html'} ({len(written)} files)")
    print(f"written in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return EXIT_OK


# ---- approve -------------------------------------------------------------------------------------------------
def _add_approve(sub) -> None:
    p = sub.add_parser(
        "approve",
        help="record the board's approval of rules (bound to each rule's content hash)",
        description="Append an approval per rule to the knowledge base's approvals.yaml: who, today's date, "
        "the note, and the rule's content hash (condition, conclusions with their catalogue texts, "
        "citations, title, rationale, interpretation). Editing the rule later voids the approval. With "
        "--under-review, record that the rule is under review instead of approving it.",
    )
    p.add_argument("rules", metavar="RULE_ID", nargs="+")
    p.add_argument("--by", metavar="NAME", required=True, help="who approves (recorded)")
    p.add_argument("--note", metavar="TEXT", default="", help="a note kept with the record")
    p.add_argument("--under-review", action="store_true", help="record 'under review', not an approval")
    add_kb_option(p)
    p.set_defaults(run=_run_approve)


def _run_approve(args) -> int:
    from lumbar_kb.engine.analysis.approvals import approvals_path, record

    kb = kb_from(args)
    decision = "under_review" if args.under_review else "approved"
    added = record(kb, args.rules, args.by, datetime.date.today().isoformat(), args.note, decision)
    for r in added:
        print(f"{decision.replace('_', ' ')}: {r.rule} by {r.by} ({r.content_hash[:19]}…)")
    print(f"recorded in {approvals_path(kb)}")
    return EXIT_OK


# ---- status --------------------------------------------------------------------------------------------------
def _add_status(sub) -> None:
    p = sub.add_parser(
        "status",
        help="each rule's review status: submitted, under review, approved, changed since approval",
        description="List every rule with its review status, decided by content hash alone: approved (an "
        "approval carries the rule's current hash), changed (approved before, edited since), under "
        "review (a reviewer recorded it so), submitted (nothing recorded). --format fhir writes the "
        "records as FHIR ArtifactAssessment resources (the shape CRMI's $approve creates) in a Bundle.",
    )
    p.add_argument("--format", choices=("text", "json", "fhir"), default="text")
    add_kb_option(p)
    p.set_defaults(run=_run_status)


def _run_status(args) -> int:
    from lumbar_kb.engine.analysis.approvals import artifact_assessments, load_records, orphans, statuses

    kb = kb_from(args)
    records = load_records(kb)
    table = statuses(kb, records)
    if args.format == "fhir":
        sys.stdout.write(dumps(artifact_assessments(kb, records)))
        return EXIT_OK
    if args.format == "json":
        counts = {
            s: sum(1 for st in table.values() if st.status == s)
            for s in ("submitted", "under_review", "approved", "changed")
        }
        sys.stdout.write(
            dumps(
                {
                    "knowledge_base": kb.identity(),
                    "counts": counts,
                    "rules": [st.to_dict() for st in table.values()],
                    "orphans": [r.to_dict() for r in orphans(kb, records)],
                }
            )
        )
        return EXIT_OK
    width = max(len(r) for r in table)
    for st in table.values():
        extra = ""
        if st.approval is not None:
            verb = "approved" if st.status == "approved" else "was approved"
            extra = f"  ({verb} by {st.approval.by}, {st.approval.date})"
        print(f"{st.rule:<{width}}  {st.words}{extra}")
    counts = {}
    for st in table.values():
        counts[st.words] = counts.get(st.words, 0) + 1
    print(", ".join(f"{n} {w}" for w, n in counts.items()))
    for r in orphans(kb, records):
        print(f"note: a record names rule '{r.rule}', which the knowledge base no longer has", file=sys.stderr)
    return EXIT_OK


# ---- diff ----------------------------------------------------------------------------------------------------
def _add_diff(sub) -> None:
    p = sub.add_parser(
        "diff",
        help="what changed between two versions: rule text, and for which patients (z3 over every input state)",
        description="Compare two knowledge bases: the rules added, removed and edited (field by field), then, "
        "over every input state (each input fact unknown or one of its values), how many patients "
        "get a different urgency, gain or lose an action, or get a different window, each with a "
        "smallest example patient the engine re-evaluates on both versions. Exits 0 either way.",
    )
    p.add_argument("old", metavar="OLD_KB", type=Path)
    p.add_argument("new", metavar="NEW_KB", type=Path)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=_run_diff)


def _run_diff(args) -> int:
    from lumbar_kb.engine.analysis.diff import compare, render

    started = time.perf_counter()
    diff = compare(load(args.old), load(args.new))
    sys.stdout.write(dumps(diff.to_dict()) if args.format == "json" else render(diff))
    print(f"compared in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return EXIT_OK
