"""`nbunits student link-ids`/`unlink-id`: link a learner's LMS ids (root only).

The aliases file and how launches read it: nbunits/core/aliases.py.
"""

from __future__ import annotations

import grp
import json
import logging
import os

from nbunits.core.aliases import IdentityError, aliases_file, load_aliases
from nbunits.core.config import Settings, load_course
from nbunits.core.errors import Code
from nbunits.core.names import StudentUnits, check_student_id, user_for
from nbunits.helper.copies import load_manifest

logger = logging.getLogger(__name__)


def link(settings: Settings, course: str, keep: str, other: str,
         has_work: HasWork) -> str:
    """Make launches as `other` open `keep`'s work. Returns what was done, in words.

    Refused (nothing changes) when `other` has work in this course, or is linked
    to someone else already. The alias is recorded before the check, so that a
    launch as `other` racing with this command cannot create work that is then
    hidden: if `other` has work after the alias is in place, it is taken back.
    """
    load_course(settings, course)
    check_student_id(keep)
    check_student_id(other)
    aliases = load_aliases(settings, course)
    keep = aliases.get(keep, keep)
    if keep == other:
        raise IdentityError(Code.BAD_REQUEST, "both ids are the same student already")
    if aliases.get(other) == keep:
        return f"{other} already opens the work of {keep}"
    if other in aliases:
        raise IdentityError(Code.BAD_REQUEST, f"{other} is linked to {aliases[other]} already",
                            hint=f"nbunits student unlink-id {course} {other} first")
    if has_work(course, other):
        raise IdentityError(Code.HAS_WORK, f"{other} (user {user_for(other)}) has work in "
                            f"course {course}; linking would hide it",
                            hint=f"keep that work instead: nbunits student link-ids {course} "
                                 f"{other} {keep} (if {keep} has none)")
    # Ids that led to `other` now lead to `keep` too (no chains).
    updated = {alias: (keep if target == other else target) for alias, target in aliases.items()}
    updated[other] = keep
    save_aliases(settings, course, updated)
    if has_work(course, other):
        save_aliases(settings, course, aliases)
        raise IdentityError(Code.HAS_WORK, f"{other} started working in {course} just now; "
                            "nothing was linked")
    logger.info("linked %s to %s", other, keep, extra={"COURSE": course})
    return f"launches as {other} now open the work of {keep} (user {user_for(keep)})"


def unlink(settings: Settings, course: str, other: str) -> str:
    aliases = load_aliases(settings, course)
    if other not in aliases:
        raise IdentityError(Code.BAD_REQUEST, f"{other} is not linked in course {course}")
    keep = aliases.pop(other)
    save_aliases(settings, course, aliases)
    return f"{other} opens its own work again (it was linked to {keep})"


def save_aliases(settings: Settings, course: str, aliases: dict[str, str]) -> None:
    path = aliases_file(settings, course)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(json.dumps(aliases, indent=1, sort_keys=True) + "\n")
    try:
        os.chown(tmp, 0, grp.getgrnam("nbunits").gr_gid)
    except KeyError:
        pass  # not installed (unit tests): the file stays root's
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


class HasWork:
    """Whether an id has work in a course: a copy recorded, or files in its folder."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, course: str, student: str) -> bool:
        user = user_for(student)
        folder = self.settings.home(user) / course
        try:
            return bool(load_manifest(self.settings.copies_file(StudentUnits(course, user)))) \
                or (folder.is_dir() and any(folder.iterdir()))
        except (OSError, ValueError, KeyError):
            return True  # unsure: do not link
