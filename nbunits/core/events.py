"""The events an admin searches the journal for, each with a fixed MESSAGE_ID.

`journalctl MESSAGE_ID=<id>` finds every occurrence; `journalctl -x` adds the
explanation from units/catalog/nbunits.catalog (installed by `nbunits install` in
/usr/local/lib/systemd/catalog, then `journalctl --update-catalog`). Every event carries COURSE= and STUDENT=.

Standard library only: the container unit's stop hook (`python3 -m nbunits.core.events
stopped COURSE USER`) sends an event at every stop, so this module must import
fast (the "started" one is sent without Python: units/bin/started-event.sh, which
repeats its MESSAGE_ID). It speaks journald's native protocol (one
datagram to /run/systemd/journal/socket) and falls back to stderr.
"""

from __future__ import annotations

import enum
import os
import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not imported at run time: the stop hook starts faster
    import logging

JOURNAL_SOCKET = "/run/systemd/journal/socket"


class Event(enum.Enum):
    """name = what happened; value = its MESSAGE_ID (fixed forever: admins' searches
    and the catalog refer to it)."""

    PROVISIONED = "a66ac456e46f4460aad52ebe1abdda57"  # a student's first launch in a course
    STARTED = "1f4132122a444969877e85da90c1725f"      # their Jupyter answers (READY=1)
    STOPPED = "e675fc19727f468dabd3ec7364c0b21e"      # it stopped: idle, lifetime or an admin
    RESET = "103b7452c49b4beb807fd81c07d09972"        # a notebook reset (student or admin)
    REFUSED = "751c93b82c284334a247fc368459f818"      # a launch or request refused
    CAPPED = "241b5dd39f434edd82fc35eb6cf2ee8a"       # a limit stopped or refused it
    FAILED = "4f8489fa7ba34004b42b4b6f15424bd0"       # something failed (unit, helper step)
    DELETED = "1893095f73954886858597c5b19efd8d"      # an admin deleted a student or a course's work
    EXPORTED = "84d7b4058c7e492b8aeec3fec65c3427"     # students' work of a course exported (archives)
    SCORE_SENT = "bd7d22d4642747658ca67d4fc1f8ef81"   # a student's score reached the LMS
    SCORE_FAILED = "dc2e287d66a3466fbb4837dc4924c993"  # sending a score failed; it is kept, retried
    GRADED = "5b0f0d3e7c9a4f7e9d2a61c8e4b7a913"       # a student's submission graded (its score)


# Python logging levels of each event (journald's PRIORITY follows), by number:
# logging.ERROR, WARNING, INFO (importing logging is a third of the gate's start-up).
ERROR, WARNING, INFO = 40, 30, 20
LEVELS = {Event.FAILED: ERROR, Event.CAPPED: WARNING, Event.REFUSED: WARNING,
          Event.DELETED: WARNING, Event.SCORE_FAILED: WARNING}
_SYSLOG = {ERROR: 3, WARNING: 4, INFO: 6}


def fields(event: Event, course: str | None, student: str | None,
           extra: Mapping[str, object] | None = None) -> dict[str, str]:
    """The journal fields of an event. COURSE/STUDENT only where given: in the
    daemons, the request's own (service.log_context) fill the others."""
    return {"MESSAGE_ID": event.value, "NBUNITS_EVENT": event.name.lower(),
            **({"COURSE": course} if course else {}),
            **({"STUDENT": student} if student else {}),
            **{k: str(v) for k, v in (extra or {}).items()}}


def log(logger: logging.Logger, event: Event, message: str, *, course: str | None,
        student: str | None, **extra: object) -> None:
    """An event through `logging` (the daemons' JournalHandler sends the fields)."""
    logger.log(LEVELS.get(event, INFO), message,
               extra=fields(event, course, student, extra))


def send(event: Event, message: str, *, course: str | None, student: str | None,
         identifier: str = "nbunits", **extra: object) -> None:
    """An event straight to journald (from short-lived processes that do not set up
    logging: the CLI, the stop hook)."""
    entry = {"MESSAGE": message, "PRIORITY": str(_SYSLOG[LEVELS.get(event, INFO)]),
             "SYSLOG_IDENTIFIER": identifier, "COURSE": "-", "STUDENT": "-",
             **fields(event, course, student, extra)}
    data = b"".join(_field(k, v) for k, v in entry.items())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, JOURNAL_SOCKET)
    except OSError:  # no journald (a development machine): say it on stderr
        print(f"{identifier}: {message}", file=sys.stderr)


def _field(key: str, value: str) -> bytes:
    raw = value.encode()
    if b"\n" not in raw:
        return f"{key}=".encode() + raw + b"\n"
    # journald's binary form: NAME\n, a 64-bit little-endian length, the bytes.
    return key.encode() + b"\n" + len(raw).to_bytes(8, "little") + raw + b"\n"


def stopped_main(argv: list[str]) -> None:
    """ExecStopPost= of a student's container unit: say how it ended.

    systemd gives the result in SERVICE_RESULT, EXIT_CODE and EXIT_STATUS. Jupyter's
    own idle shutdown and the lifetime cap end in success (0 or 143); the backstop
    (RuntimeMaxSec=) is a timeout; anything else is a failure.
    """
    course, user = argv
    result = os.environ.get("SERVICE_RESULT", "")
    code, status = os.environ.get("EXIT_CODE", ""), os.environ.get("EXIT_STATUS", "")
    how = {"SERVICE_RESULT": result, "EXIT_CODE": code, "EXIT_STATUS": status}
    if result == "success":
        # Jupyter ends with 0 whether it shut itself down or was stopped (SIGTERM):
        # the lines before this one say which.
        send(Event.STOPPED, f"{user}'s Jupyter stopped: idle, its lifetime cap, or an admin",
             course=course, student=user, **how)
    elif result in ("timeout", "oom-kill"):
        send(Event.CAPPED, f"{user}'s Jupyter was stopped by a limit ({result})",
             course=course, student=user, **how)
    else:
        send(Event.FAILED, f"{user}'s Jupyter failed ({result or '?'}, {code} {status})",
             course=course, student=user, **how)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "stopped":
        stopped_main(sys.argv[2:])
    else:
        sys.exit("usage: python3 -m nbunits.core.events stopped COURSE USER")
