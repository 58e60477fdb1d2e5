"""The medical board's subcommands: `review` (the HTML pack), `approve`, `status` and `diff`.

Glue only: parse arguments, call `lumbar_kb.visualize.review` and `engine.analysis` (approvals, diff), print,
choose the exit code (0 ok, 1 a finding: `diff` with changes is not a finding; 2 bad input).
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

from lumbar_kb.common import EXIT_FAILED, EXIT_OK, add_kb_option, dumps, feedback_rates, kb_from
from lumbar_kb.engine.errors import safe_text
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
        "tables, example patients, review status, and with --against the changes since an older version. "
        "It runs `check` and `test`: any failure is listed on the overview with its patient, flagged on the "
        "rule cards and hazard controls involved, and put on a red banner on every page; the pack is written "
        "all the same and the command exits 1.",
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
    pack = build_pack(kb, diff, overrides=overrides)
    written = write_pack(pack, args.output)
    print(f"review pack: {args.output / 'index.html'} ({len(written)} files)")
    for f in pack.failures:  # every page carries them too, on a red banner
        what = {"proof": "safety proof", "scenario": "scenario", "step": "could not work out"}[f.kind]
        where = f" ({f.file}{f':{f.line}' if f.line else ''})" if f.file else ""
        print(
            safe_text(f"FAILING {what} {f.title if f.kind == 'scenario' else f.id}{where}: {f.message}"),
            file=sys.stderr,
        )
    print(f"written in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return EXIT_FAILED if pack.failures else EXIT_OK


# ---- approve -------------------------------------------------------------------------------------------------
def _add_approve(sub) -> None:
    p = sub.add_parser(
        "approve",
        help="record a board member's signed approval of items (bound to each item's content hash)",
        description="Append a signed approval per item to the knowledge base's approvals.yaml: who (the board "
        "member whose key signs), today's date, the note, and the item's content hash. Items are rules (by id) "
        "and everything else that decides or is read: fact:NAME, relation:ID, catalog:KIND:CODE, "
        "safety:completeness, safety:scope, floor:ID, guideline:texts, codes:..., text:SENTENCE (`lumbar-kb "
        "status` lists them). Editing an item later voids its approvals. --all approves every item not yet "
        "approved by this member in its current content. With --under-review, record that items are under "
        "review instead (no key needed).",
    )
    p.add_argument("items", metavar="ITEM", nargs="*")
    p.add_argument("--all", action="store_true", help="every item this member has not approved in its current content")
    p.add_argument("--key", metavar="FILE", type=Path, default=None, help="your private key (lumbar-kb board-key)")
    p.add_argument("--by", metavar="NAME", default=None, help="who (must be the key's member; needed without --key)")
    p.add_argument("--note", metavar="TEXT", default="", help="a note kept with the record")
    p.add_argument("--under-review", action="store_true", help="record 'under review', not an approval")
    add_kb_option(p)
    p.set_defaults(run=_run_approve)


def _run_approve(args) -> int:
    from lumbar_kb.engine.analysis.approvals import approvals_path, item_statuses, read_private_key, record
    from lumbar_kb.engine.errors import LumbarKBError

    kb = kb_from(args)
    decision = "under_review" if args.under_review else "approved"
    key = read_private_key(args.key) if args.key is not None else None
    ids = list(args.items)
    if args.all:
        if key is None:
            raise LumbarKBError("--all needs --key: it approves what this member has not yet approved")
        from lumbar_kb.engine.analysis.approvals import _signer, board_of

        me = _signer(board_of(kb), key, args.by)
        ids += [iid for iid, st in item_statuses(kb).items() if me not in st.signers]
    if not ids:
        raise LumbarKBError("name the items to approve (or --all)" if not args.all else "nothing left to approve")
    added = record(kb, ids, args.by, datetime.date.today().isoformat(), args.note, decision, key)
    for r in added:
        print(f"{decision.replace('_', ' ')}: {r.item} by {r.by} ({r.content_hash[:19]}…)")
    print(f"recorded in {approvals_path(kb)}")
    return EXIT_OK


# ---- status --------------------------------------------------------------------------------------------------
def _add_status(sub) -> None:
    p = sub.add_parser(
        "status",
        help="review status of every item, the board's open decisions, and records that do not count",
        description="List every item (rules, facts, catalogue, safety declarations, code bindings, guideline "
        "sentences) with its review status, decided by content hash and valid signatures alone: approved (a "
        "quorum of board members signed its current content), changed (approved before, edited since), under "
        "review (something recorded, short of a quorum), submitted (nothing recorded); then every decision "
        "the board must make (inconsistencies, interpretations, residual risks) with its state, and every "
        "record that does not count (unsigned, forged, edited, by a non-member). --format fhir writes the "
        "approvals as FHIR ArtifactAssessment resources (the shape CRMI's $approve creates) in a Bundle.",
    )
    p.add_argument("--format", choices=("text", "json", "fhir"), default="text")
    p.add_argument("--rules-only", action="store_true", help="list the rules only (the other items are counted)")
    add_kb_option(p)
    p.set_defaults(run=_run_status)


def _run_status(args) -> int:
    from lumbar_kb.engine.analysis.approvals import (
        artifact_assessments,
        board_of,
        decision_statuses,
        item_statuses,
        load_records,
        orphans,
        record_problems,
    )

    kb = kb_from(args)
    records = load_records(kb)
    if args.format == "fhir":
        sys.stdout.write(dumps(artifact_assessments(kb, records)))
        return EXIT_OK
    board = board_of(kb)
    table = item_statuses(kb, records, board)
    decisions = decision_statuses(kb, board=board)
    problems = record_problems(kb)
    rule_ids = {r.id for r in kb.rules}
    if args.format == "json":
        counts = {s: sum(1 for st in table.values() if st.status == s) for s in STATUS_ORDER}
        sys.stdout.write(
            dumps(
                {
                    "knowledge_base": kb.identity(),
                    "board": None if board is None else {"quorum": board.quorum, "members": sorted(board.members)},
                    "counts": counts,
                    "rules": [st.to_dict() for st in table.values() if st.item in rule_ids],
                    "items": [st.to_dict() for st in table.values() if st.item not in rule_ids],
                    "decisions": [d.to_dict() for d in decisions.values()],
                    "open_decisions": [d.item for d in decisions.values() if d.open],
                    "records_not_counted": problems,
                    "orphans": [r.to_dict() for r in orphans(kb, records)],
                }
            )
        )
        return EXIT_OK
    if board is None:
        print("board: none (no board.yaml): no approval or decision can be signed, so none counts")
    else:
        print(f"board: {board.size} member(s), {board.quorum} distinct signature(s) needed")
    shown = [st for st in table.values() if st.item in rule_ids or not args.rules_only]
    width = max(len(st.item) for st in shown)
    for st in shown:
        extra = ""
        if st.approval is not None:
            verb = "approved" if st.status == "approved" else "was approved" if st.status == "changed" else "signed"
            who = ", ".join(st.signers) if st.status == "approved" else st.approval.by
            extra = f"  ({verb} by {who}, {st.approval.date})"
        print(safe_text(f"{st.item:<{width}}  {st.words}{extra}"))
    tally: dict[str, int] = {}
    for st in table.values():
        tally[st.words] = tally.get(st.words, 0) + 1
    print(", ".join(f"{n} {w}" for w, n in tally.items()))
    open_ones = [d for d in decisions.values() if d.open]
    print(f"decisions: {len(decisions) - len(open_ones)} of {len(decisions)} made")
    for d in decisions.values():
        print(safe_text(f"  {d.item}: {d.words} ({d.title})"))
    for line in problems:
        print(safe_text(f"not counted: {line}"), file=sys.stderr)
    for r in orphans(kb, records):
        print(safe_text(f"note: a record names '{r.item}', which the knowledge base no longer has"), file=sys.stderr)
    return EXIT_OK


STATUS_ORDER = ("submitted", "under_review", "approved", "changed")


# ---- diff ----------------------------------------------------------------------------------------------------
def _add_diff(sub) -> None:
    p = sub.add_parser(
        "diff",
        help="what changed, clinically: for whom, before -> after, proofs broken, approvals voided",
        description="Compare two knowledge bases: the rules and every other item the board approves (facts, "
        "catalogue, safety declarations, code bindings, guideline sentences) added, removed and edited field by "
        "field, with the approvals each edit voids; then, over every answer combination (each input fact "
        "unknown or one of its values), each behaviour change in words: the patients affected (a smallest "
        "example), before and after (urgency raised or LOWERED, a window earlier or LATER with hours, an action "
        "added or removed), how many answer combinations, the safety proofs that held and now fail, and the "
        "example re-evaluated by the engine on both versions. Exits 1 when both versions carry one version "
        "label but their content differs (a release must carry a new label), 0 otherwise.",
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
    return EXIT_FAILED if diff.same_label else EXIT_OK
