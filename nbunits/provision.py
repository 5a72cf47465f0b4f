"""Provisioning a (course, student, notebook): the privileged steps, in order.

Runs as root inside nbunits-helper.service, never in the internet-facing
dispatcher. Everything is validated before the first side effect, so a bad
request creates no user, writes no file and starts no unit.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import PurePosixPath

from . import users
from .config import Settings, load_course
from .names import StudentUnits, check_student_id, user_for
from .notebooks import install_copy, read_master
from .run import run_async

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provisioned:
    course: str
    user: str
    notebook: str
    token: str
    copied: bool

    @property
    def url(self) -> str:
        return f"{StudentUnits(self.course, self.user).url_prefix}notebooks/{self.notebook}"


async def provision(settings: Settings, course: str, student_id: str, notebook: str) -> Provisioned:
    # 1. Validate everything; no side effects yet.
    config = load_course(settings, course)
    check_student_id(student_id)
    data = read_master(config.source, notebook)
    units = StudentUnits(course, user_for(student_id))
    fields = {"COURSE": course, "STUDENT": units.user}

    # 2. Act: each step is idempotent, so a retried or concurrent request is harmless.
    student = await users.ensure(settings, student_id)
    token = ensure_token(settings, units)
    copied = install_copy(student.home, PurePosixPath(course, notebook), data,
                          student.uid, student.gid)
    if copied:
        logger.info("copied %s for %s", notebook, units.user, extra=fields)
    await run_async(["systemctl", "start", units.socket])
    return Provisioned(course, units.user, notebook, token, copied)


def ensure_token(settings: Settings, units: StudentUnits) -> str:
    """The student's Jupyter token for this course, created once (root-only file).

    The container unit reads it with LoadCredential=, so it never shows in a
    command line or in `systemctl show`.
    """
    path = settings.token_file(units)
    try:
        return _parse_token(path.read_text())
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"JUPYTER_TOKEN={token}\n")
    try:
        os.link(tmp, path)  # never replaces a token written concurrently
    except FileExistsError:
        token = _parse_token(path.read_text())
    finally:
        os.unlink(tmp)
    return token


def _parse_token(text: str) -> str:
    return text.strip().removeprefix("JUPYTER_TOKEN=")
