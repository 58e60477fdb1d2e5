"""`lumbar-kb hazards`: the clinical safety hazard log and the guideline's own inconsistencies."""

from __future__ import annotations

import argparse
import sys

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


def _run(args: argparse.Namespace) -> int:
    kb = kb_from(args)
    sys.stdout.write(dumps(to_dict(kb)) if args.format == "json" else to_markdown(kb))
    return EXIT_OK
