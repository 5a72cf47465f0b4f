"""Provisioning a (course, student, notebook): the privileged steps, in order.

Runs as root inside nbunits-helper.service, never in the internet-facing
dispatcher. Everything is validated before the first side effect, so a bad
request creates no user, writes no file and starts no unit.
"""

from __future__ import annotations

import asyncio
import logging
import pwd
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from . import activity, copies, staff, users
from .admission import Admission
from .capability import capability, jupyter_config, read_secret
from .config import CourseConfig, Settings, load_course
from .errors import NbunitsError
from .files import write_atomic
from .names import StudentUnits, Target, check_notebook, check_user, notebook_url
from .notebooks import master_path, read_copy, read_master
from .run import run_async
from .systemd import provisioned_students

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provisioned:
    target: Target
    token: str
    copied: bool
    running: bool  # the student's Jupyter is up already (a warm open)

    @property
    def user(self) -> str:
        return self.target.user

    @property
    def prefix(self) -> str:
        """Where the student's Jupyter is: /nb/<course>/<user>/<capability>/."""
        return self.target.units.jupyter_prefix(self.token)

    @property
    def url(self) -> str:
        return notebook_url(self.target.units, self.token, self.target.notebook)


async def provision(settings: Settings, target: Target, admission: Admission,
                    reset: bool = False) -> Provisioned:
    # 1. Validate everything (the names are, in Target); no side effects yet.
    config = load_course(settings, target.course)
    read_master(config.source, target.notebook)  # exists, stays in the course, is a notebook
    units = target.units
    # 2. Admission control (admission.py): past a cap nothing is created or started.
    running = await is_active(units.container)
    if users.lookup(settings, target.student) is None:
        admission.new_student()
    if not running:
        admission.start(units.course, units.user)

    # 3. Act: each step is idempotent, so a retried or concurrent request is harmless.
    student = await users.ensure(settings, target.student)
    token = ensure_token(settings, config, units)
    copied = await update_copies(settings, config, student, target.notebook, running=running,
                                 reset=reset)
    activity.mark(settings, units)
    await run_async(["systemctl", "start", units.socket])
    return Provisioned(target, token, copied, running)


async def update_copies(settings: Settings, config: CourseConfig, student: users.Student,
                        notebook: str, *, running: bool, reset: bool) -> bool:
    """Copy new masters, let unmodified copies follow theirs (not under a running
    Jupyter: a notebook open in a tab is never replaced), reset on request.

    Done here, at each launch, so that `course update` need not touch thousands of
    homes at once. Returns whether `notebook` was copied now.
    """
    fields = {"COURSE": config.name, "STUDENT": student.user}
    theirs = copies.for_student(settings, config, student)
    if reset:
        kept = await asyncio.to_thread(copies.reset, theirs, notebook, datetime.now())
        logger.info("reset %s for %s; old copy kept as %s", notebook, student.user, kept,
                    extra=fields)
    report = await asyncio.to_thread(copies.sync, theirs, running=running)
    if report.done:
        logger.info("copies of %s: %s", student.user, report.summary(), extra=fields)
    return notebook in report.of(copies.Action.INSTALL)


async def is_active(unit: str) -> bool:
    code, _, _ = await run_async(["systemctl", "is-active", "--quiet", unit], check=False)
    return code == 0


async def wake(settings: Settings, course: str, user: str, admission: Admission) -> None:
    """Make a provisioned student's server answer again, whatever stopped it.

    nginx falls back to this when a student's socket does not answer (502): their
    units are not loaded (idle students' are unloaded, activity.py), the container
    was killed a moment ago, an admin stopped the course, or a unit hit its start
    limit. Nothing is created here.
    """
    load_course(settings, course)
    units = StudentUnits(course, check_user(user))
    if not settings.token_file(units).exists():
        raise NbunitsError("unknown_student", f"no student {user} in course {course}",
                           hint="open the notebook from the course page")
    if not await is_active(units.container):
        admission.start(course, user)
    activity.mark(settings, units)
    await run_async(["systemctl", "reset-failed", units.socket, units.proxy, units.container],
                    check=False)
    await run_async(["systemctl", "start", units.socket])
    # Starting the proxy starts the container first (and waits for its readiness gate),
    # so the browser's retry is served at once. The proxy gets the socket's fds.
    await run_async(["systemctl", "start", units.proxy], timeout=150)
    logger.info("woke %s", units.socket, extra={"COURSE": course, "STUDENT": user})


def ensure_token(settings: Settings, config: CourseConfig, units: StudentUnits) -> str:
    """The student's capability for this course, and the Jupyter settings that carry it.

    Both files are root's; the container unit reads them with LoadCredential=, so
    the capability never shows on a command line or in `systemctl show`. Rewritten
    at each launch, so a course's new settings (its LMS origin) apply at the next.
    """
    secret = read_secret(settings)
    token = capability(secret, units)
    path = settings.token_file(units)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, f"JUPYTER_TOKEN={token}\n", 0o600, unless_same=True)
    write_atomic(path.with_suffix(".json"), jupyter_config(config, units, secret, settings.server), 0o600,
                 unless_same=True)
    return token


STAFF_LAUNCH_HOURS = 1


def staff_link(settings: Settings, target: Target) -> str:
    """A signed staff link to a student's copy, for a verified staff LTI launch.

    Only for a student who has opened a notebook of this course; nothing is created.
    """
    course, notebook, user = target.course, target.notebook, target.user
    config = load_course(settings, course)
    master_path(config.source, notebook)  # a notebook of this course
    # The token is written after the user and its id record: no race with a first launch.
    if not settings.token_file(target.units).exists() \
            or users.recorded_id(settings, user) != target.student:
        raise NbunitsError("unknown_student", "no such student in this course",
                           hint="check the student's id; they must have opened a notebook")
    logger.info("staff link for %s", notebook, extra={"COURSE": course, "STUDENT": user})
    return staff.link(read_secret(settings), course, user, notebook, STAFF_LAUNCH_HOURS)


def staff_students(settings: Settings, course: str, notebook: str) -> list[dict[str, str]]:
    """The course's students (whoever opened one of its notebooks), each with a signed
    staff link to their copy of `notebook` ("" if they have none), for a verified
    staff LTI launch that names no student."""
    config = load_course(settings, course)
    master_path(config.source, notebook)  # a notebook of this course
    secret = read_secret(settings)
    found = []
    for user in provisioned_students(settings, course):
        has_copy = notebook in copies.load_manifest(settings.copies_file(StudentUnits(course, user)))
        found.append({"user": user, "id": users.recorded_id(settings, user) or "",
                      "url": staff.link(secret, course, user, notebook, STAFF_LAUNCH_HOURS)
                      if has_copy else ""})
    logger.info("staff list of %s: %d student(s)", notebook, len(found), extra={"COURSE": course})
    return found


async def staff_view(settings: Settings, course: str, user: str, notebook: str,
                     expires: str, sig: str) -> str:
    """A student's copy as static HTML, for a valid staff link (see staff.py)."""
    load_course(settings, course)
    check_user(user)
    relative = PurePosixPath(course, *check_notebook(notebook).parts)
    staff.check(read_secret(settings), course, user, notebook, expires, sig)
    try:
        home = Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        raise NbunitsError("unknown_student", f"no student {user}") from None
    data = await asyncio.to_thread(read_copy, home, relative)
    if data is None:
        raise NbunitsError("unknown_notebook", f"{user} has no copy of {notebook}")
    logger.info("staff view of %s", notebook, extra={"COURSE": course, "STUDENT": user})
    return staff.render(data, f"{course} / {user} / {notebook}")
