"""One learner, several LMS ids: which id's work a launch opens (reading the aliases).

Open edX sends a per-course anonymous id in LTI 1.1 (and to FUN's legacy link),
but its global external id as LTI 1.3's `sub`, and no LTI 1.1 migration claim.
So a course that moves from 1.1 to 1.3 would give every learner a second, empty
Linux user. An admin links the two ids (`nbunits student link-ids COURSE KEEP
OTHER`): launches as OTHER then open KEEP's work. Only root links ids (no launch
can), and linking never moves, merges or deletes a file: it refuses when OTHER
already has work in the course.

/var/lib/nbunits/aliases/<course>.json: {"OTHER": "KEEP", ...}, root:nbunits 0640
(the dispatcher, group nbunits, reads it for every launch). Linking is the admin's
(nbunits/admin/identity.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from nbunits.core.config import Settings
from nbunits.core.errors import Code, NbunitsError


class IdentityError(NbunitsError):
    pass


def aliases_file(settings: Settings, course: str) -> Path:
    return settings.aliases_file(course)


def load_aliases(settings: Settings, course: str) -> dict[str, str]:
    path = aliases_file(settings, course)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise IdentityError(Code.BAD_COURSE_CONFIG, f"{path} cannot be read: {exc}",
                            hint="tell the course's administrator") from exc
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise IdentityError(Code.BAD_COURSE_CONFIG, f"{path} is not a table of id = id")
    return data


def canonical(settings: Settings, course: str, student: str) -> str:
    """The id whose work a launch as `student` opens (itself unless linked)."""
    return load_aliases(settings, course).get(student, student)
