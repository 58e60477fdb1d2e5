"""One exception tree for everything a user can get wrong.

Every problem names where it is (file, line, column), what it is about (a rule id or a fact name) and,
where one exists, a "did you mean" hint. The CLI prints one line per problem and exits 2.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# what must never reach a terminal raw: C0/C1 controls (ANSI escapes start with ESC or CSI), DEL, lone
# surrogates (an undecodable byte of a file name), non-characters, and the bidirectional/invisible formatting
# characters that can make text read differently from what it is
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff]"
)  # controls, lone surrogates, zero-width and bidirectional marks (U+061C too), line and paragraph separators


def _escape(match: re.Match) -> str:
    ch = match.group()
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return ch.encode("unicode_escape").decode("ascii") if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: object) -> str:
    """`text` fit for a terminal: every control character, escape sequence and undecodable byte shown
    repr-style (\\x1b, \\n, \\xff), everything else as it is."""
    return _UNSAFE.sub(_escape, str(text))


@dataclass(frozen=True)
class Problem:
    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    subject: str | None = None  # "rule red_flag.leg_weakness", "fact leg_weakness", ...
    hint: str | None = None

    def __str__(self) -> str:
        """One line, safe for a terminal: whatever came from a file or a command line is escaped."""
        where = ""
        if self.file:
            where = safe_text(self.file)
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        subject = f"{safe_text(self.subject)}: " if self.subject else ""
        hint = f" ({safe_text(self.hint)})" if self.hint else ""
        return f"{where}{subject}{safe_text(self.message)}{hint}"


class LumbarKBError(Exception):
    """Base of every error the tool reports to a user (never shown as a traceback)."""

    def __init__(self, problems: Sequence[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class KnowledgeBaseError(LumbarKBError):
    """The knowledge base (rule, fact or guideline files) is invalid."""


class ContradictoryRules(KnowledgeBaseError):
    """Two rules derive one fact with two values for the patient being evaluated: the knowledge base contradicts
    itself, which is the author's to fix (exit 2, naming both rules), never an internal error."""

    def __init__(self, fact: str, first, first_value, second, second_value):
        def at(rule) -> str:
            return f"{rule.file}:{rule.line}" if rule is not None and rule.file and rule.line else "?"

        def shown(value) -> str:
            return ("true" if value else "false") if isinstance(value, bool) else str(value)

        first_id = first.id if first is not None else "?"
        message = (
            f"rules {first_id} ({at(first)}) and {second.id} derive {fact} = {shown(first_value)} and {fact} = "
            f"{shown(second_value)} for this patient: the knowledge base contradicts itself; fix one of the two rules "
            "(`lumbar-kb validate` names a patient for whom both fire)"
        )
        super().__init__(Problem(message, second.file or None, second.line, subject=f"rule {second.id}"))
        self.fact, self.rules = fact, (first_id, second.id)


class PatientError(LumbarKBError):
    """A patient file is invalid."""


class EngineError(LumbarKBError):
    """The rules engine failed while evaluating (an internal error, never the user's input)."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint for a misspelt name, or None when nothing is close."""
    matches = difflib.get_close_matches(str(word), sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None
