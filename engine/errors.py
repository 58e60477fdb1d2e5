"""One exception tree for everything a user can get wrong.

Every problem names where it is (file, line, column), what it is about (a rule id or a fact name) and,
where one exists, a "did you mean" hint. The CLI prints one line per problem and exits 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    subject: str | None = None  # "rule red_flag.leg_weakness", "fact leg_weakness", ...
    hint: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        subject = f"{self.subject}: " if self.subject else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{subject}{self.message}{hint}"


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


class PatientError(LumbarKBError):
    """A patient file is invalid."""


class EngineError(LumbarKBError):
    """The rules engine failed while evaluating (an internal error, never the user's input)."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint for a misspelt name, or None when nothing is close."""
    matches = difflib.get_close_matches(str(word), sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None
