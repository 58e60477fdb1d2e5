"""`lumbar-kb hazards` (the clinical safety hazard log and the guideline's inconsistencies) and the board's
decision tools: `decide` (a signed decision on an inconsistency, an interpretation or a residual risk) and
`board-key` (a member's Ed25519 key pair)."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from lumbar_kb.common import EXIT_OK, add_kb_option, dumps, kb_from
from lumbar_kb.visualize.hazard_log import to_dict, to_markdown


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hazards",
        help="the clinical safety hazard log (DCB0129 style) and the guideline's inconsistencies",
        description="Print the hazard log kept in the knowledge base (hazards.yaml, inconsistencies.yaml): each "
        "hazard with cause, effect, severity, likelihood, controls and residual risk. docs/hazard-log.md is this "
        "command's Markdown output.",
    )
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    add_kb_option(p)
    p.set_defaults(run=_run)

    d = sub.add_parser(
        "decide",
        help="record a board member's signed decision on an inconsistency, interpretation or residual risk",
        description="Append a signed decision to the knowledge base's decisions.yaml, bound to the item's "
        "content hash: ITEM is inconsistency:ID, interpretation:RULE_ID or hazard:ID (`lumbar-kb status` "
        "lists the open ones). Only 'accept' by a quorum of the board lets a release go; 'reject' and "
        "'change' keep it blocked until the item changes and is decided again.",
    )
    d.add_argument("item", metavar="ITEM")
    d.add_argument("decision", choices=("accept", "reject", "change"))
    d.add_argument("--rationale", metavar="TEXT", required=True, help="why (recorded and signed)")
    d.add_argument("--key", metavar="FILE", type=Path, required=True, help="your private key (lumbar-kb board-key)")
    d.add_argument("--by", metavar="NAME", default=None, help="your name as in board.yaml (checked against the key)")
    add_kb_option(d)
    d.set_defaults(run=_run_decide)

    k = sub.add_parser(
        "board-key",
        help="make a board member's Ed25519 key pair (private key file 0600; prints the public key)",
        description="Write a new Ed25519 private key to FILE (PEM, readable by you only, never overwritten) and "
        "print the public key line to add under `members:` in the knowledge base's board.yaml. Keep the "
        "private key out of the knowledge base and out of git.",
    )
    k.add_argument("output", metavar="FILE", type=Path)
    k.add_argument("--name", metavar="NAME", required=True, help="the member's name as board.yaml will list it")
    k.set_defaults(run=_run_key)


def _run(args: argparse.Namespace) -> int:
    kb = kb_from(args)
    sys.stdout.write(dumps(to_dict(kb)) if args.format == "json" else to_markdown(kb))
    return EXIT_OK


def _run_decide(args: argparse.Namespace) -> int:
    from lumbar_kb.engine.analysis.approvals import decide, decisions_path, read_private_key

    kb = kb_from(args)
    key = read_private_key(args.key)
    rec = decide(kb, args.item, args.decision, args.rationale, args.by, datetime.date.today().isoformat(), key)
    print(f"{rec.decision}: {rec.item} by {rec.by} ({rec.content_hash[:19]}…)")
    print(f"recorded in {decisions_path(kb)}")
    return EXIT_OK


def _run_key(args: argparse.Namespace) -> int:
    import json

    from lumbar_kb.engine.analysis.approvals import new_key

    public = new_key(args.output)
    print(f"private key: {args.output} (mode 0600: keep it to yourself, never in the knowledge base)")
    print("add to board.yaml under members:")
    print(f"  - {{name: {json.dumps(args.name, ensure_ascii=False)}, public_key: {public}}}")
    return EXIT_OK
