"""Provisioning a (course, student, notebook): the privileged steps, in order.

Runs as root inside nbunits-helper.service, never in the internet-facing
dispatcher. Everything is validated before the first side effect, so a bad
request creates no user, writes no file and starts no unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pwd
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import NoReturn

from nbunits.core import i18n, rootfs
from nbunits.core.aliases import canonical
from nbunits.core.config import CourseConfig, Settings, load_course, provisioned_students
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.events import Event
from nbunits.core.events import log as log_event
from nbunits.core.files import write_atomic
from nbunits.core.names import (
    StudentUnits,
    Target,
    check_notebook,
    check_student_id,
    check_user,
    notebook_url,
    user_for,
)
from nbunits.core.protocol import StudentEntry, Students
from nbunits.core.roster import Roster
from nbunits.core.systemctl import systemctl_async
from nbunits.helper import activity, copies, gradebook, hostlock, languages, members, quota, staff, users
from nbunits.helper import capability as caps
from nbunits.helper.admission import Admission
from nbunits.helper.capability import jupyter_config, read_secret
from nbunits.helper.notebooks import exists, find_masters, master_path, modified, read_copy, read_master
from nbunits.helper.notebooks import title as notebook_title

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provisioned:
    target: Target
    token: str
    copied: bool
    running: bool  # the student's Jupyter is up already (a warm open)
    removed: bool = False  # gone from the course; the student's copy is what opens
    interface: str = "notebook"  # the course's: what the link opens the notebook in
    remembered: str = ""  # the student's language, as their LMS last said it

    @property
    def user(self) -> str:
        return self.target.user

    @property
    def prefix(self) -> str:
        """Where the student's Jupyter is: /nb/<course>/<user>/<capability>/."""
        return self.target.units.jupyter_prefix(self.token)

    @property
    def url(self) -> str:
        return notebook_url(self.target.units, self.token, self.target.notebook,
                            self.interface)


async def provision(settings: Settings, target: Target, admission: Admission,
                    reset: bool = False, locale: str = "", fallback: str = "") -> Provisioned:
    """Make the student's user, copies and capability, and start their socket. Their
    language: the launch's `locale`, else the one remembered, else the dispatcher's
    `fallback` (the browser's, the course's); their Jupyter gets it at its next start."""
    # 1. Validate everything (the names are, in Target); no side effects yet.
    config = load_course(settings, target.course)
    check_open(config)
    removed = False
    try:
        read_master(config.source, target.notebook)  # exists, stays in the course, is a notebook
    except NbunitsError as exc:
        # Removed from the course: a student who has a copy still gets to it.
        if exc.code != Code.UNKNOWN_NOTEBOOK or not has_copy(settings, target):
            raise
        removed = True
    units = target.units
    if config.disk_quota:  # set by the container unit at each start
        quota.check(settings.home_base)
    # 2. Admission control (admission.py): past a cap nothing is created or started.
    running = await is_active(units.container)
    if settings.server.multi_host and not running:
        # Several hosts: running on another host counts too (the front's view and
        # that host's differ for a moment): no copy is replaced under its Jupyter.
        running = hostlock.held(units.course, units.user, str(settings.locks_dir))
    if users.lookup(settings, target.student) is None:
        admission.new_student(units.course, units.user,
                              course_cap=config.new_students_per_minute)
    if not running:
        admission.start(units.course, units.user, course_cap=config.max_running)

    # 3. Act: each step is idempotent, so a retried or concurrent request is harmless.
    student = await users.ensure(settings, target.student)
    remembered = languages.remember(settings, student.user, locale)
    language = remembered or languages.valid(fallback) or config.language
    first = not settings.token_file(units).exists()
    token = ensure_token(settings, config, units, running=running, language=language,
                         notebook=target.notebook if config.kernel_ahead else "")
    if first:
        log_event(logger, Event.PROVISIONED, f"provisioned {student.user} in course {config.name}",
                  course=config.name, student=student.user, HOME=student.home)
    copied = await update_copies(settings, config, student, target.notebook, running=running,
                                 reset=reset)
    activity.mark(settings, units)
    code, _, err = await systemctl_async("start", units.socket, check=False)
    if code != 0:
        # The generator skips a course it cannot render (its image gone from the
        # store): say why, as a server that cannot start, rather than "try again".
        server_failed(config.name, units.user, course_problem(settings, config) or err.strip())
    return Provisioned(target, token, copied, running, removed, config.interface, remembered)


def check_open(config: CourseConfig) -> None:
    """An ended course whose retention period is over is closed: its students' work
    was saved and deleted (admin/course_end.py), and no launch makes it again."""
    due = config.deletion_due()
    if due is not None and due <= datetime.now(UTC):
        raise NbunitsError(Code.COURSE_ENDED, f"course {config.name} has ended",
                           student_hint="this course has ended and its notebooks were "
                                        "removed; ask the course's team for your work")


def course_problem(settings: Settings, config: CourseConfig) -> str:
    """Why the generator would skip this course ("" if it would not)."""
    try:
        rootfs.load(settings, config.image)
    except NbunitsError as exc:
        return str(exc)
    return ""


def has_copy(settings: Settings, target: Target) -> bool:
    """Whether an existing student has a copy of the notebook (nothing is created)."""
    student = users.lookup(settings, target.student)
    return student is not None and exists(
        student.home, PurePosixPath(target.course, *PurePosixPath(target.notebook).parts))


async def update_copies(settings: Settings, config: CourseConfig, student: users.Student,
                        notebook: str, *, running: bool, reset: bool) -> bool:
    """Copy new masters, let unmodified copies follow theirs (not under a running
    Jupyter: a notebook open in a tab is never replaced), reset on request.

    Done here, at each launch, so that `course update` need not touch thousands of
    homes at once. Returns whether `notebook` was copied now.
    """
    fields = {"COURSE": config.name, "STUDENT": student.user}
    theirs = copies.for_student(settings, config, student, merging=True)
    if reset:
        kept = await asyncio.to_thread(copies.reset, theirs, notebook, datetime.now())
        kept_text = f"old copy kept as {kept}" if kept else "the copy was unmodified"
        log_event(logger, Event.RESET, f"reset {notebook} for {student.user} (asked by the "
                  f"student); {kept_text}", course=config.name, student=student.user,
                  NOTEBOOK=notebook, KEPT=kept or "", BY="student")
    report = await asyncio.to_thread(copies.sync, theirs, running=running)
    if report.done or report.linked:
        logger.info("copies of %s: %s", student.user, report.summary(), extra=fields)
    return notebook in report.of(copies.Action.INSTALL)


async def is_active(unit: str) -> bool:
    code, _, _ = await systemctl_async("is-active", "--quiet", unit, check=False)
    return code == 0


async def start(settings: Settings, course: str, user: str, presented: str,
                admission: Admission) -> int:
    """Start a just-launched student's server (after provision(), whose admission it
    had), holding one of the host's start slots (admission.py): launches' starts go
    a few at a time, in order of arrival. Returns once Jupyter answers, as wake()
    does; a start that fails is handed to wake(), which says why or tries again."""
    units = checked_units(settings, course, user, presented)
    async with admission.start_slot(course, user):
        # The proxy starts the container first and waits until Jupyter is ready; it
        # gets the front socket's fds (the browser's request then goes straight in).
        code, _, _ = await systemctl_async("start", units.proxy, timeout=150, check=False)
    if code != 0:
        return await wake(settings, course, user, presented, admission)
    return 0


def checked_units(settings: Settings, course: str, user: str, presented: str) -> StudentUnits:
    """A student's units, for the holder of their current capability only."""
    load_course(settings, course)  # a course that is gone says so: course names are public
    try:
        units = StudentUnits(course, check_user(user))
        allowed = caps.is_current(settings, units, presented)
    except NbunitsError:
        allowed = False
    if not allowed:
        raise NbunitsError(Code.FORBIDDEN, "this link is not valid",
                           student_hint="open the notebook from your course page")
    return units


async def wake(settings: Settings, course: str, user: str, presented: str,
               admission: Admission) -> int:
    """Make a provisioned student's server answer again, whatever stopped it; returns
    0, or the seconds to wait when its units failed too recently to be reset.

    nginx falls back to this when a student's socket does not answer (502): their
    units are not loaded (idle students' are unloaded, activity.py), the container
    was killed a moment ago, an admin stopped the course, or a unit hit its start
    limit. It acts only for the holder of the student's current
    capability (checked again here, whatever the dispatcher was handed), answers
    the same for a student who does not exist, and never resets a failed unit
    sooner than its start limit's interval after it failed, so nobody can restart
    a failing server faster than systemd itself would. A start passes admission
    control (admission.py) like a launch. Nothing is created here, but, on one of
    several hosts, the user of a student who comes from another host (ensure_here).
    """
    units = checked_units(settings, course, user, presented)
    if settings.server.multi_host:
        await ensure_here(settings, user)
    wait = await failed_recently(units)
    if wait:
        reason = await start_failure(units, only_lasting=True)
        if reason:  # no image, its command missing, its start limit: waiting cannot help
            server_failed(course, user, reason)
        logger.warning("not waking %s: a unit failed less than its start limit "
                       "interval ago; retry in %d s", units.socket, wait,
                       extra={"COURSE": course, "STUDENT": user})
        return wait
    if not await is_active(units.container):
        admission.start(course, user, course_cap=load_course(settings, course).max_running)
    activity.mark(settings, units)
    await systemctl_async("reset-failed", *units.started,
                          *([units.lock] if settings.server.multi_host else []), check=False)
    await systemctl_async("start", units.socket)
    # Starting the proxy starts the container first (and waits until Jupyter says it is ready),
    # so the browser's retry is served at once. The proxy gets the socket's fds.
    async with admission.start_slot(course, user):
        code, _, _ = await systemctl_async("start", units.proxy, timeout=150, check=False)
    if code != 0 and not (settings.server.multi_host and await runs_elsewhere(units)) \
            and not await start_failure(units, only_lasting=True):
        # A failure that waiting may mend (seen once in the tests, a wake right after a
        # whole course was stopped; not reproduced in 50 more): tried once more, as
        # systemd's own Restart=on-failure would, rather than showing an error page.
        logger.warning("%s did not start (%s); trying once more", units.container,
                       await start_failure(units), extra={"COURSE": course, "STUDENT": user})
        await systemctl_async("reset-failed", *units.started, check=False)
        await systemctl_async("start", units.socket)
        code, _, _ = await systemctl_async("start", units.proxy, timeout=150, check=False)
    if code != 0:
        if settings.server.multi_host and await runs_elsewhere(units):
            moving(course, user)
        server_failed(course, user, await start_failure(units))
    logger.info("woke %s", units.socket, extra={"COURSE": course, "STUDENT": user})
    return 0


async def ensure_here(settings: Settings, user: str) -> None:
    """Several hosts: a student who ran on another host (one that failed, or was
    removed) has no user on this one yet. Their record on the shared storage says
    who they are; the user is made as at a launch (same uid, derived from the id;
    the shared home is theirs by the same proof)."""
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    student_id = users.recorded_id(settings, user)
    if student_id is not None:
        await users.ensure(settings, student_id)
        logger.info("%s came from another host", user, extra={"STUDENT": user})


async def runs_elsewhere(units: StudentUnits) -> bool:
    """Several hosts: whether this host's start failed because another host runs
    the student (their lock on the shared storage is held: hostlock.py)."""
    _, out, _ = await systemctl_async("show", units.lock, "--property=ExecMainStatus",
                                      check=False)
    return out.strip() == f"ExecMainStatus={hostlock.HELD_ELSEWHERE}"


RUNS_ELSEWHERE_RETRY = 15


def moving(course: str, user: str) -> NoReturn:
    """The front sends the student here while another host still runs them (its view
    and that host's differ for a moment): a page that retries, not a failure."""
    logger.warning("not starting %s here: another host runs them (see nbunits-%s-lock@%s); "
                   "their retry starts them here once it stops there", user, course, user,
                   extra={"COURSE": course, "STUDENT": user})
    raise NbunitsError(Code.BUSY, "Your notebook is still open on another server of this service. "
                       "It opens here as soon as it has stopped there.",
                       retry_after=RUNS_ELSEWHERE_RETRY)


# What a container's exit status says (podman's own codes: podman-run(1)).
EXIT_MEANINGS = {125: "podman could not run the container (is the course's image in the "
                      "store? nbunits course show)",
                 126: "the container's command could not be run",
                 127: "the container's command was not found"}


def server_failed(course: str, user: str, reason: str) -> NoReturn:
    logger.error("nbunits-%s@%s cannot start: %s", course, user, reason,
                 extra={"COURSE": course, "STUDENT": user, "ERROR_CODE": Code.SERVER_FAILED})
    raise NbunitsError(
        Code.SERVER_FAILED, "Your notebook server could not start.", hint=reason,
        student_hint="This is not something you can fix: the course team can see why "
                     "in the server's log. Your saved work is safe; please try again later.")


async def start_failure(units: StudentUnits, *, only_lasting: bool = False) -> str:
    """Why a student's container did not start, from systemd's own record; with
    `only_lasting`, "" unless it is a failure that waiting does not mend (podman
    could not run it, or its start limit was hit)."""
    _, out, _ = await systemctl_async("show", units.container, "--property=Result",
                                      "--property=ExecMainStatus", "--property=ActiveState",
                                      check=False)
    shown = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    result, status = shown.get("Result", "?"), shown.get("ExecMainStatus", "")
    meaning = EXIT_MEANINGS.get(int(status)) if status.isdigit() else None
    if result == "start-limit-hit":
        meaning = "it failed to start too often in a row"
    if only_lasting and meaning is None:
        return ""
    return f"{units.container}: {result}" + (f", exit status {status}" if status not in (
        "", "0") else "") + (f": {meaning}" if meaning else "")


async def failed_recently(units: StudentUnits) -> int:
    """Seconds until the most recently failed of the student's units may be reset
    (its StartLimitIntervalSec= after it failed); 0 if none is failed."""
    _, out, _ = await systemctl_async(
        "show", "--property=Id,ActiveState,StateChangeTimestampMonotonic,"
        "StartLimitIntervalUSec", *units.started, check=False)
    return reset_wait(out, time.monotonic())


def reset_wait(show_output: str, now: float) -> int:
    """From `systemctl show` blocks: seconds left before every failed unit's start
    limit interval has passed since it failed (pure, for tests)."""
    wait = 0.0
    for block in show_output.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("ActiveState") != "failed":
            continue
        failed_at = int(props.get("StateChangeTimestampMonotonic", "0") or 0) / 1e6
        interval = parse_usec(props.get("StartLimitIntervalUSec", "")) or 10.0
        wait = max(wait, failed_at + interval - now)
    return int(wait + 0.999) if wait > 0 else 0


def parse_usec(text: str) -> float:
    """A systemd time span as `systemctl show` prints it ("1min", "10s", "1min 30s")."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600, "d": 86400}
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*(us|ms|min|s|h|d)?", text):
        total += float(number) * units[unit or "s"]
    return total


def ensure_token(settings: Settings, config: CourseConfig, units: StudentUnits, *,
                 running: bool, language: str = i18n.DEFAULT, notebook: str = "") -> str:
    """The student's capability for this course, and the Jupyter settings that carry it.

    Both files are root's; the container unit's first command copies them for podman
    into that start's settings folder (the student's, 0700), so the capability never
    shows on a command line or in `systemctl show`. Rewritten
    at each launch while the server is stopped, so a course's new settings (its LMS
    origin, terminals) and a new capability (revoked, expired) apply at its next start.
    """
    grant = caps.current_grant(settings, config, units, running=running)
    token = caps.capability(read_secret(settings), units, grant)
    path = settings.token_file(units)
    if running and path.exists():
        return token  # the running Jupyter's files, as it read them
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The interface's language: units/jupyter/jupyter_server_config.py makes it
    # JupyterLab's default (a student's own choice in Settings > Language wins).
    # The notebook being opened: Jupyter starts its kernel with the server, so it is
    # ready when the notebook asks for it.
    write_atomic(path, f"JUPYTER_TOKEN={token}\n"
                 f"NBUNITS_JUPYTER_LOCALE={i18n.text(language, 'jupyter.locale')}\n"
                 f"NBUNITS_OPEN_NOTEBOOK={notebook}\n",
                 0o600, unless_same=True)
    write_atomic(path.with_suffix(".json"),
                 jupyter_config(config, units, token, settings.server, language),
                 0o600, unless_same=True)
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
        raise NbunitsError(Code.UNKNOWN_STUDENT, "no such student in this course",
                           hint="check the student's id; they must have opened a notebook")
    logger.info("staff link for %s", notebook, extra={"COURSE": course, "STUDENT": user})
    return staff.link(read_secret(settings), course, user, notebook, STAFF_LAUNCH_HOURS)


def staff_students(settings: Settings, course: str, notebook: str,
                   where: Roster | None = None) -> Students:
    """For a verified staff LTI launch that names no student: the course's students,
    each with a signed staff link to their copy of `notebook` (none without a copy),
    when they were last active and their current score for it. With `where` (the
    launch's NRPS claim), every active learner the LMS lists comes first, opened a
    notebook or not; those who opened one and are not on the list follow."""
    config = load_course(settings, course)
    master_path(config.source, notebook)  # a notebook of this course
    secret = read_secret(settings)
    scores = gradebook.results(settings, course)
    listed, state = [], ""
    if where is not None:
        try:
            read = members.read_in_unit(settings, course, where)
            listed, state = read.learners, "read" if read.complete else "partial"
        except NbunitsError as exc:
            logger.warning("the LMS's list of learners could not be read: %s", exc.message,
                           extra={"COURSE": course})
            state = "failed"

    def entry(user: str, student_id: str, name: str = "") -> StudentEntry:
        units = StudentUnits(course, user)
        has_copy = notebook in copies.load_manifest(settings.copies_file(units))
        score = scores.get((user, notebook))
        return StudentEntry(
            user, student_id, staff.link(secret, course, user, notebook, STAFF_LAUNCH_HOURS)
            if has_copy else "", name, last_active(settings, units, notebook),
            (score.given, score.maximum) if score else None)

    opened = set(provisioned_students(settings, course))
    found = []
    for member in listed:
        user = _user_of(settings, course, member.user_id)
        if user in opened:
            opened.discard(user)
            found.append(entry(user, member.user_id, member.name))
        else:
            found.append(StudentEntry("", member.user_id, "", member.name))
    found += [entry(user, users.recorded_id(settings, user) or "") for user in sorted(opened)]
    logger.info("staff list of %s: %d student(s)%s", notebook, len(found),
                f" (the LMS's list: {state})" if state else "", extra={"COURSE": course})
    return Students(tuple(found), state, len(listed))


def _user_of(settings: Settings, course: str, student_id: str) -> str:
    """The Linux user a launch as `student_id` opens ("" for an id no launch takes)."""
    try:
        return user_for(canonical(settings, course, check_student_id(student_id)))
    except NbunitsError:
        return ""


def last_active(settings: Settings, units: StudentUnits, notebook: str) -> float:
    """The later of their last launch (root's mark, kept while they are recent) and
    their copy's last save (0: neither)."""
    times = []
    with contextlib.suppress(OSError):
        times.append(settings.recent_mark(units).stat().st_mtime)
    home = home_of(settings, units.user)
    if home is not None:
        saved = modified(home, PurePosixPath(units.course, *check_notebook(notebook).parts))
        if saved is not None:
            times.append(min(saved, time.time()))  # a student's file may say any time
    return max(times, default=0.0)


def home_of(settings: Settings, user: str) -> Path | None:
    try:
        return Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        # Several hosts: a student who never ran here has their home on the shared storage.
        if settings.server.multi_host and users.recorded_id(settings, user):
            return settings.home(user)
        return None


# Notebooks listed to an author picking one (deep linking): a course has tens.
MAX_LISTED = 2000


def course_notebooks(settings: Settings, course: str) -> list[dict[str, str]]:
    """The course's published notebooks and their titles, for a verified LTI 1.3
    deep-linking launch. Masters nbunits cannot open (a name check_notebook
    refuses, a symbolic link) are left out, as a launch would refuse them."""
    config = load_course(settings, course)
    found = []
    for notebook in itertools.islice(find_masters(config.source), MAX_LISTED):
        try:
            data = master_path(config.source, notebook).read_bytes()
        except (NbunitsError, OSError) as exc:
            logger.warning("not listing %s: %s", notebook, getattr(exc, "message", exc),
                           extra={"COURSE": course})
            continue
        found.append({"path": notebook, "title": notebook_title(data)})
    logger.info("deep linking: %d notebook(s) listed", len(found), extra={"COURSE": course})
    return found


async def staff_view(settings: Settings, course: str, user: str, notebook: str,
                     expires: str, sig: str, language: str = "") -> str:
    """A student's copy as static HTML, for a valid staff link (see staff.py), in
    `language` (else the course's)."""
    config = load_course(settings, course)
    check_user(user)
    relative = PurePosixPath(course, *check_notebook(notebook).parts)
    staff.check(read_secret(settings), course, user, notebook, expires, sig)
    home = home_of(settings, user)
    if home is None:
        raise NbunitsError(Code.UNKNOWN_STUDENT, f"no student {user}")
    data = await asyncio.to_thread(read_copy, home, relative)
    if data is None:
        raise NbunitsError(Code.UNKNOWN_NOTEBOOK, f"{user} has no copy of {notebook}")
    logger.info("staff view of %s", notebook, extra={"COURSE": course, "STUDENT": user})
    return staff.render(data, f"{course} / {user} / {notebook}", language or config.language)
