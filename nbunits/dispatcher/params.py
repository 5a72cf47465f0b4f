"""Query parameters: each one the dispatcher reads is checked in one place.

A parameter it knows must appear at most once and fit its pattern; anything else
is a 400 before any work (no helper request, no int() of 5,000 digits).
Parameters it does not know are ignored, as an LMS may append its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp import web

from nbunits.core.errors import Code, NbunitsError

EXPIRES = re.compile(r"[0-9]{1,12}")  # Unix time, ~31,000 years
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
FLAG = re.compile(r"[01]")
# A hand-off between hosts (handoff.py); checked fully there.
HANDOFF = re.compile(r"[A-Za-z0-9._-]{1,6100}")


def query(request: web.Request, known: Mapping[str, re.Pattern[str]]) -> dict[str, str]:
    """The known parameters present, checked; raises a 400 error on a bad one."""
    found = {}
    for name, pattern in known.items():
        values = request.query.getall(name, [])
        if len(values) > 1 or (values and not pattern.fullmatch(values[0])):
            raise NbunitsError(Code.BAD_REQUEST, f"invalid parameter {name!r} in this link",
                               student_hint="open the notebook again from your course page")
        if values:
            found[name] = values[0]
    return found
