"""What nbunits' own daemons share: socket activation, readiness, journald logging."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

from systemd import daemon, journal


def setup_logging(level: int = logging.INFO) -> None:
    """Log to journald with structured fields when under systemd, else to stderr.

    Pass COURSE= and STUDENT= as `extra` and `journalctl COURSE=demo` finds them.
    """
    root = logging.getLogger()
    root.setLevel(level)
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER=Path(sys.argv[0]).name)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
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
