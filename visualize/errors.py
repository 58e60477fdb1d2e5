"""The errors `lumbar-kb graph` reports to a user: one line each on stderr, exit 2, never a traceback.

All are `LumbarKBError`s, so the CLI's single handler prints them like every other bad input.
"""

from __future__ import annotations

from lumbar_kb.engine.errors import LumbarKBError, Problem

INSTALL_HINT = "install it with: apt-get install -y graphviz; on macOS: brew install graphviz"


class GraphvizMissingError(LumbarKBError):
    """The graphviz `dot` binary is not on PATH (needed for SVG, PNG and PDF; not for DOT)."""

    def __init__(self, executable: str = "dot"):
        super().__init__(
            Problem(
                f"the graphviz '{executable}' program was not found on PATH; it is needed to "
                "draw SVG, PNG or PDF (DOT output works without it)",
                hint=INSTALL_HINT,
            )
        )


class GraphvizFailedError(LumbarKBError):
    """`dot` ran but refused the input or crashed (an internal error: the DOT text is generated)."""


class UnknownNodeError(LumbarKBError):
    """A `--focus` name that is no node of the decision graph (or names several)."""


class OutputError(LumbarKBError):
    """The output file cannot be written: unknown extension, missing directory, no permission."""
