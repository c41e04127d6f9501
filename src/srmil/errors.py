"""Errors for bad input: one line, naming the file and the problem.

The CLI prints ``SrmilError`` as a single line on stderr and exits non-zero. Bugs are not
``SrmilError`` and keep their traceback.
"""

from __future__ import annotations

import os
import re

_EXC_PREFIX = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")


def exc_line(exc: BaseException) -> str:
    """One line describing ``exc``: the first line of its message, else its type's name."""
    return first_line(str(exc)) or type(exc).__name__


def first_line(text: str) -> str:
    """The one line of an error message that says what went wrong.

    Its first non-blank line; for a re-raised traceback (DataLoader workers), its last line
    without the ``SomeError: `` prefix. ``""`` for a blank message.
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    if len(lines) > 1 and any("Traceback (most recent call last)" in ln for ln in lines):
        return _EXC_PREFIX.sub("", lines[-1])
    return lines[0]


class SrmilError(Exception):
    """Bad input or a refused operation, reported as ``path: problem``."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class BagError(SrmilError):
    """A feature bag that cannot be read or used."""


class CohortError(SrmilError):
    """A labels CSV, features directory or split file that does not fit together."""


class WriteError(SrmilError):
    """An output that could not be written (disk full, permission, I/O error)."""


class ConfigError(SrmilError):
    """An unknown or ill-typed configuration key or value."""


class Problem:
    """One finding of a check: ``severity`` is ``"error"`` (stops training) or ``"warning"``."""

    __slots__ = ("severity", "path", "message")

    def __init__(self, severity: str, message: str, path: str | os.PathLike | None = None) -> None:
        if severity not in ("error", "warning"):
            raise ValueError(f"severity must be 'error' or 'warning', got {severity!r}")
        self.severity = severity
        self.path = None if path is None else os.fspath(path)
        self.message = message

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.severity}: {where}{self.message}"

    def __repr__(self) -> str:
        return f"Problem({self.severity!r}, {self.message!r}, path={self.path!r})"
