"""Errors that a person reads: a machine-readable code, a message and a hint."""

from __future__ import annotations


class NbunitsError(Exception):
    """An error with a stable `code`, a one-line message and an optional hint."""

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
