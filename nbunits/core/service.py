"""What nbunits' own daemons share: socket activation, readiness, journald logging."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import socket
import sys
from pathlib import Path

from systemd import daemon, journal

# The course and student the current request is about: set where a request enters
# (the dispatcher's middleware, the helper's request handler), per asyncio task.
_course: contextvars.ContextVar[str] = contextvars.ContextVar("course", default="-")
_student: contextvars.ContextVar[str] = contextvars.ContextVar("student", default="-")


def log_context(course: str | None = None, student: str | None = None, *,
                new: bool = False) -> None:
    """Say which course and student the lines logged from here on (in this task) are
    about; None leaves a value as it is, `new` starts from none (a new request)."""
    if new:
        _course.set("-")
        _student.set("-")
    if course:
        _course.set(course)
    if student:
        _student.set(student)


class ContextFields(logging.Filter):
    """Give every record COURSE= and STUDENT= ("-" when it is about none), from
    `extra` if the call gave them, else from the request being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "COURSE", None):
            record.COURSE = _course.get()
        if not getattr(record, "STUDENT", None):
            record.STUDENT = _student.get()
        return True


# What a log line must never carry, whoever put it in a request: a capability
# (capability.py) or a 64-hex HMAC (staff and signed legacy links); in a path, a
# course link's student id (with the legacy link, it opens that student's
# notebook) and a share's token, cut as nginx's access log cuts them
# (nbunits_log_uri in nginx/nbunits-http.conf).
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{22}\.[0-9]{1,9}\.[0-9]{1,11}|(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
# A path already cut (log_path: "GET /shared/[token]: ...") is left as it is: the
# marker, then ": ", a space, a quote or the end.
PATH_SECRET_RE = re.compile(
    r"(/ipythonExercice/(?>(?:[^/\s'\"]*/)?))(?!\[student\](?:: |[\s'\"]|$))[^\s'\"]*"
    r"|(/shared/)(?!\[token\](?:: |[\s'\"]|$))[^\s'\"]*")


def redact(text: str) -> str:
    """`text` without anything SECRET_RE or PATH_SECRET_RE finds."""
    return PATH_SECRET_RE.sub(lambda m: f"{m[1]}[student]" if m[1] else f"{m[2]}[token]",
                              SECRET_RE.sub("[redacted]", text))


class Redact(logging.Filter):
    """Replaces secrets in a record's message (requests echo what clients sent:
    aiohttp quotes a request line it cannot parse)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        # A traceback quotes values too (the formatter then uses this text as it is).
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        # The exception itself would go out as well: JournalHandler sends its repr as
        # EXCEPTION_INFO= (aiohttp's quotes the request line). The text is enough.
        record.exc_info = None
        return True


def setup_logging(level: int = logging.INFO) -> None:
    """Log to journald with structured fields when under systemd, else to stderr.

    Every line carries COURSE= and STUDENT= (see `log_context`), so
    `journalctl COURSE=demo STUDENT=nb...` finds all that is about one student.
    """
    root = logging.getLogger()
    root.setLevel(level)
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER=Path(sys.argv[0]).name)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "%(levelname)s %(name)s [%(COURSE)s %(STUDENT)s]: %(message)s"))
    handler.addFilter(ContextFields())
    handler.addFilter(Redact())
    root.addHandler(handler)


def listen_socket(fallback: Path) -> socket.socket:
    """The socket systemd passed us, or (for development) one bound at `fallback`."""
    fds = daemon.listen_fds()
    if fds:
        return socket.socket(fileno=fds[0])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fallback.unlink(missing_ok=True)
    sock.bind(str(fallback))
    sock.listen(128)
    return sock


def notify_ready() -> None:
    daemon.notify("READY=1")
