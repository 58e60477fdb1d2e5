"""`lumbar-kb graph`: draw the decision graph, one pathway, or one patient's path through it.

Found by `main` through `add_commands`. Bad input (a patient file, an unknown
`--focus` node, an output extension, a missing `dot`) is a LumbarKBError: one line each, exit 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from lumbar_kb.common import EXIT_CODES_HELP, EXIT_OK, add_kb_option
from lumbar_kb.engine.loader import load
from lumbar_kb.visualize.render import FORMATS, check_output, render_to

DESCRIPTION = """\
Draw the guideline's decision graph from the knowledge base the engine runs: the findings asked of the
patient, every rule clustered by guideline section, the facts they derive and the conclusions they reach
(urgency, actions with their windows, warnings, differential). Hover a node in the SVG for the rule's text
and the full titles of its citations.

Without -o the DOT text is printed to standard output (no graphviz needed). With -o the format follows the
extension: .svg, .png, .pdf (these need graphviz's `dot` program: apt-get install -y graphviz) or .dot/.gv.
"""

EPILOG = """\
examples:
  lumbar-kb graph -o guideline.svg
  lumbar-kb graph --patient patient.yaml -o path.png
  lumbar-kb graph --focus action:mri_whole_spine -o mri.pdf
  lumbar-kb graph --focus red_flag.leg_weakness | dot -Tsvg > leg.svg

node names: fact:<name>, rule:<id>, urgency:<level>, action:<code>, warning:<code>, differential:<code>;
a bare name is enough when only one node has it (mri_whole_spine, red_flag.leg_weakness).
"""


def add_commands(sub) -> None:
    p = sub.add_parser(
        "graph",
        help="draw the decision graph (DOT, SVG, PNG, PDF); a patient's path; a pathway",
        description=DESCRIPTION,
        epilog=EPILOG + "\n" + textwrap.fill(EXIT_CODES_HELP, 80),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--patient",
        metavar="FILE",
        type=Path,
        help="highlight this patient's path: the rules that fired in order, the edges they used, "
        "facts coloured by value; the rest greyed out",
    )
    p.add_argument(
        "--focus", metavar="NODE", help="draw only what leads to NODE and what it leads to, e.g. action:mri_whole_spine"
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        type=Path,
        help=f"write the picture here, format from the extension ({', '.join(sorted(FORMATS))}); "
        "default: print DOT to standard output",
    )
    add_kb_option(p)
    p.set_defaults(run=run_graph)


def run_graph(args) -> int:
    # networkx costs ~0.1 s to import: only `graph` pays it, not every lumbar-kb command
    from lumbar_kb.visualize.dot import to_dot
    from lumbar_kb.visualize.graph import build_graph, resolve
    from lumbar_kb.visualize.overlay import overlay_from_result

    # refuse a bad extension or directory before any work; the only check of the output path
    fmt = check_output(args.output) if args.output is not None else None
    kb = load(args.kb)
    graph = build_graph(kb)
    focus = resolve(graph, args.focus) if args.focus is not None else None  # '' is refused
    overlay = None
    if args.patient is not None:
        from lumbar_kb.engine.api import Evaluator  # compiling the rules costs time: only when a patient is drawn

        result = Evaluator(kb).evaluate_file(args.patient)
        overlay = overlay_from_result(graph, result, patient=args.patient.name)
    source = to_dot(graph, overlay=overlay, focus=focus)
    if args.output is None:
        sys.stdout.write(source)
    else:
        assert fmt is not None  # checked with the output path, before any work
        render_to(args.output, source, fmt)
    return EXIT_OK
