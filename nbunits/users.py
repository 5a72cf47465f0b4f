"""Students' Linux users: one per student id, created on first use.

The user name is derived from the id (names.user_for); the id itself is recorded
in the user's GECOS field and in /var/lib/nbunits/students/<user>, so an admin can
go from an edX id to a user (`nbunits student find ID`) and back (`getent passwd`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import NbunitsError
from .files import write_atomic
from .names import check_student_id, user_for
from .run import run_async

logger = logging.getLogger(__name__)

# useradd takes a lock on /etc/passwd and fails rather than waits: one at a time.
_useradd_lock = asyncio.Lock()


@dataclass(frozen=True)
class Student:
    id: str
    user: str
    uid: int
    gid: int
    home: Path


class StudentError(NbunitsError):
    pass


def recorded_id(settings: Settings, user: str) -> str | None:
    try:
        return (settings.students_dir / user).read_text().strip()
    except FileNotFoundError:
        return None


def lookup(settings: Settings, student_id: str) -> Student | None:
    """The student's user if it exists, checking that it belongs to this id."""
    user = user_for(student_id)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    known = recorded_id(settings, user)
    if known != student_id:
        raise StudentError("student_collision",
                           f"user {user} exists but is recorded for another student id",
                           hint="an admin must look at /var/lib/nbunits/students")
    return Student(student_id, user, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


async def ensure(settings: Settings, student_id: str) -> Student:
    """The student's user, created (with a 0700 home) if missing."""
    check_student_id(student_id)
    async with _useradd_lock:
        student = lookup(settings, student_id)
        if student is not None:
            return student
        user = user_for(student_id)
        record = settings.students_dir / user
        if record.exists():
            raise StudentError("student_collision", f"{record} exists without its user {user}")
        home = settings.home(user)
        await run_async(["useradd", "--create-home", "--home-dir", str(home),
                         "--shell", "/usr/sbin/nologin", "--user-group",
                         "--comment", f"nbunits student {student_id}"[:200], user])
        os.chmod(home, 0o700)
        settings.students_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(record, student_id + "\n", 0o600)
        logger.info("created user %s for a new student", user, extra={"STUDENT": user})
        student = lookup(settings, student_id)
        assert student is not None
        return student
