"""Errors that a person reads: a machine-readable code, a message and two hints.

`hint` is for the admin (a command to run, a file to look at); `student_hint` is
for whoever clicked a link, and is all a student's page ever shows beside the
message. Errors are chained (`raise ... from exc`), so `--debug` and the journal
keep the cause.
"""

from __future__ import annotations


class NbunitsError(Exception):
    """An error with a stable `code`, a one-line message and optional hints."""

    def __init__(self, code: str, message: str, *, hint: str | None = None,
                 student_hint: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.student_hint = student_hint
        # Seconds after which trying again may work (admission control's caps).
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
