"""Students as an admin sees them: who they are, which courses, and deleting one.

A student is a Linux user named nb... (names.user_for; a JSON user record in
/etc/userdb, users.py) with a record of their LMS id in
/var/lib/nbunits/students/<user>. What belongs to them: the user and its home,
that record, their marks of recent activity (activity.py), in each course a
capability (tokens/<course>/<user>.*) and a manifest of copies
(copies/<course>/<user>.json), the static versions they share (shares/, with
their pages), the units of each course, and id links (aliases/<course>.json)
that name their id. Deleting takes all of it, after a
tarball of the home unless asked not to (`nbunits student delete`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from nbunits.admin.identity import save_aliases
from nbunits.admin.status import resolve_student
from nbunits.core.aliases import load_aliases
from nbunits.core.config import Settings, load_course
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.events import Event
from nbunits.core.events import send as send_event
from nbunits.core.names import (
    COURSE_RE,
    USER_RE,
    StudentUnits,
    check_notebook,
    parse_unit,
    user_unit_patterns,
)
from nbunits.core.run import run
from nbunits.core.systemctl import daemon_reload, list_units, systemctl
from nbunits.helper import btrfs, copies, shares, staff
from nbunits.helper.capability import read_secret
from nbunits.helper.notebooks import as_text, read_copy
from nbunits.helper.users import Student, recorded_id, remove_user_record

BACKUPS = "backups"


@dataclass(frozen=True)
class StudentInfo:
    user: str
    id: str  # the LMS id ("" if no record says)
    home: str
    courses: tuple[str, ...]  # where they have a capability (opened a notebook)
    since: str  # ISO 8601: when their record was written (first launch)


def all_users(settings: Settings) -> list[str]:
    """Every student user: recorded ones, and nb... users that nbunits made (GECOS)."""
    found = {p.name for p in _listdir(settings.students_dir) if USER_RE.fullmatch(p.name)}
    found |= {e.pw_name for e in pwd.getpwall() if USER_RE.fullmatch(e.pw_name)
              and e.pw_gecos.startswith("nbunits student")}
    return sorted(found)


def courses_of(settings: Settings, user: str) -> list[str]:
    return sorted(d.name for d in _listdir(settings.tokens_dir)
                  if COURSE_RE.fullmatch(d.name)
                  and settings.token_file(StudentUnits(d.name, user)).exists())


def info(settings: Settings, user: str) -> StudentInfo:
    record = settings.student_record(user)
    try:
        since = datetime.fromtimestamp(record.stat().st_mtime, UTC).isoformat()
    except FileNotFoundError:
        since = ""
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        home = ""
    return StudentInfo(user, recorded_id(settings, user) or "", home,
                       tuple(courses_of(settings, user)), since)


def listing(settings: Settings, course: str | None = None) -> list[StudentInfo]:
    found = [info(settings, user) for user in all_users(settings)]
    return [s for s in found if course is None or course in s.courses]


def remove_user(settings: Settings, user: str) -> None:
    """The user's JSON records (users.py); a user from before them, with userdel."""
    if settings.userdb_file(f"{user}.user").exists():
        remove_user_record(settings, user, pwd.getpwnam(user).pw_uid)
    else:
        run(["userdel", user])


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


# --- deleting ---------------------------------------------------------------

@dataclass
class Deletion:
    """Exactly what `student delete` removes: shown first, then done, nothing else."""

    user: str
    id: str
    home: Path | None  # None: no such user (left-overs only)
    units: list[str] = field(default_factory=list)  # loaded units, stopped first
    running: list[str] = field(default_factory=list)  # courses where Jupyter runs now
    files: list[Path] = field(default_factory=list)  # records, tokens, manifests
    aliases: dict[str, list[str]] = field(default_factory=dict)  # course -> ids unlinked
    backup: Path | None = None

    def describe(self) -> list[str]:
        lines = [f"student {self.user}" + (f" (id {self.id})" if self.id else "") + ":"]
        if self.home:
            lines.append(f"  the Linux user {self.user} and its home {self.home}, all of it "
                         "(with its courses' subvolumes and qgroups on btrfs)")
        for unit in self.units:
            lines.append(f"  the unit {unit} (stopped"
                         + (", Jupyter running now)" if unit.endswith(".service")
                            and (parsed := parse_unit(unit)) is not None
                            and parsed.units.course in self.running else ")"))
        lines += [f"  {path}" for path in self.files]
        for course, ids in self.aliases.items():
            lines.append(f"  the id links of {', '.join(ids)} in {aliases_file_name(course)}")
        lines.append(f"  (first, the home is saved to {self.backup})" if self.backup
                     else "  (no backup)")
        return lines


def aliases_file_name(course: str) -> str:
    return f"aliases/{course}.json"


def plan_deletion(settings: Settings, user: str, *, backup: bool) -> Deletion:
    try:
        home: Path | None = Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        home = None
    student_id = recorded_id(settings, user) or ""
    units = list_units(user_unit_patterns(user))
    running = [parsed.units.course for u in
               list_units(user_unit_patterns(user), "active,activating,deactivating")
               if (parsed := parse_unit(u)) and parsed.kind == "container"]
    files = [p for p in (settings.student_record(user), settings.student_language(user))
             if p.exists()]
    for folder in (*_listdir(settings.tokens_dir), *_listdir(settings.copies_dir)):
        files += sorted(p for p in folder.glob(f"{user}.*") if p.is_file())
    files += [mark for folder in _listdir(settings.recent_dir)
              if (mark := folder / user).is_file()]
    # The static versions they share, in each course: pages, index, lock.
    files += [path for folder in _listdir(settings.shares_dir) if COURSE_RE.fullmatch(folder.name)
              for path in shares.files_of(settings, StudentUnits(folder.name, user))]
    # The results of their graded submissions (helper/grading.py), in each course.
    files += [path for folder in _listdir(settings.grades_dir) if COURSE_RE.fullmatch(folder.name)
              and (folder / user).is_dir() for path in sorted((folder / user).iterdir())]
    aliases = {}
    for path in _listdir(settings.aliases_dir):
        course = path.stem
        if student_id and COURSE_RE.fullmatch(course):
            ids = sorted({k for k, v in load_aliases(settings, course).items()
                          if student_id in (k, v)})
            if ids:
                aliases[course] = ids
    if home is None and not files and not units:
        raise NbunitsError(Code.UNKNOWN_STUDENT, f"no student {user}",
                           hint="nbunits student list shows them; nbunits student find ID "
                                "gives the user of an LMS id")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = settings.backup_file(user, stamp) \
        if backup and home is not None and home.is_dir() else None
    return Deletion(user, student_id, home, units, running, files, aliases, target)


def delete(settings: Settings, plan: Deletion, *, course: str | None = None,
           why: str = "", saved: Path | None = None) -> None:
    """Do exactly what `plan` lists, in an order that loses nothing if interrupted:
    stop, save, then delete. For the journal: the course, why, and where the work was
    saved before (a course's end: its archive, admin/export.py)."""
    if plan.units:
        systemctl("stop", *plan.units, check=False)
        systemctl("reset-failed", *plan.units, check=False)
    if plan.backup and plan.home is not None:
        plan.backup.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Numeric owners, no symlink followed: a faithful copy of the home.
        run(["tar", "--create", "--gzip", "--numeric-owner", "--file", str(plan.backup),
             "--directory", str(plan.home.parent), plan.home.name], timeout=3600)
        os.chmod(plan.backup, 0o600)
    if plan.home is not None:
        remove_user(settings, plan.user)
        if plan.home.is_dir() and not plan.home.is_symlink():
            # On btrfs: each course's qgroup first (btrfs.py), then its subvolumes go
            # with the rest (rmdir removes an empty subvolume, and its own qgroup).
            btrfs.forget(plan.home)
            shutil.rmtree(plan.home)  # fd-based: never follows a symlink in it
    for path in plan.files:
        path.unlink(missing_ok=True)
        if path.parent.parent.parent == settings.grades_dir:
            with contextlib.suppress(OSError):  # their folder of results, now empty
                path.parent.rmdir()
    for course, ids in plan.aliases.items():
        save_aliases(settings, course, {k: v for k, v in load_aliases(settings, course).items()
                                        if k not in ids})
    # Their units were stopped: systemd forgets them at the reload.
    daemon_reload()
    said = [line.strip() for line in plan.describe()[1:]
            if not (saved and line.strip() == "(no backup)")]
    send_event(Event.DELETED, f"deleted student {plan.user}{why}: " + "; ".join(said),
               course=course, student=plan.user, ADMIN=admin(),
               BACKUP=plan.backup or saved or "")


# --- one student's notebooks, for the admin ------------------------------------

def admin() -> str:
    """Who runs this command, for the journal (sudo's caller, else the user)."""
    return os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name


def known_student(settings: Settings, course: str, student: str) -> str:
    """The user of a student who opened a notebook of `course` (else an error)."""
    load_course(settings, course)
    user = resolve_student(student)
    if not settings.token_file(StudentUnits(course, user)).exists():
        raise NbunitsError(Code.UNKNOWN_STUDENT, f"no student {student} in course {course}",
                           hint=f"nbunits student list --course {course} shows them")
    return user


def student_copies(settings: Settings, course: str, student: str) -> copies.Copies:
    config = load_course(settings, course)
    user = resolve_student(student)
    found = local_student(settings, user)
    if found is None:
        raise NbunitsError(Code.UNKNOWN_STUDENT, f"no student user {user}",
                           hint="nbunits student list shows them; nbunits student find ID "
                                "gives the user of an edX id")
    return copies.for_student(settings, config, found)


def local_student(settings: Settings, user: str) -> Student | None:
    """A user of this host, with the student id recorded for it if any."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return Student(recorded_id(settings, user) or "", user, entry.pw_uid, entry.pw_gid,
                   Path(entry.pw_dir))


def stop(settings: Settings, course: str, student: str) -> StudentUnits:
    user = known_student(settings, course, student)
    units = StudentUnits(course, user)
    systemctl("stop", units.proxy, units.container)
    send_event(Event.STOPPED, f"{user}'s Jupyter stopped by an admin", course=course,
               student=user, ADMIN=admin(), BY="admin")
    return units


def reset(settings: Settings, course: str, student: str, notebook: str
          ) -> tuple[Path, str | None]:
    """A fresh copy of `notebook`: (where it is, the name the old copy is kept as)."""
    theirs = student_copies(settings, course, student)
    kept = copies.reset(theirs, str(check_notebook(notebook)), datetime.now())
    user = resolve_student(student)
    kept_text = f"old copy kept as {kept}" if kept else "the copy was unmodified"
    send_event(Event.RESET, f"reset {notebook} for {user} (asked by an admin); {kept_text}",
               course=course, student=user, NOTEBOOK=notebook, KEPT=kept or "",
               BY="admin", ADMIN=admin())
    return theirs.home / course, kept


def copy_text(settings: Settings, course: str, student: str, notebook: str) -> str:
    """One copy as text (read-only), for `student show COURSE STUDENT NOTEBOOK`."""
    theirs = student_copies(settings, course, student)
    data = read_copy(theirs.home, theirs.rel(check_notebook(notebook)))
    if data is None:
        raise NbunitsError(Code.NO_COPY, f"{resolve_student(student)} has no copy of {notebook}")
    return as_text(data)


def staff_link(settings: Settings, course: str, student: str, notebook: str,
               hours: float) -> str:
    user = known_student(settings, course, student)
    config = load_course(settings, course)
    notebook = str(check_notebook(notebook))
    if read_copy(settings.home(user), PurePosixPath(course, notebook)) is None:
        raise NbunitsError(Code.UNKNOWN_NOTEBOOK, f"{user} has no copy of {notebook}",
                           hint=f"nbunits student show {course} {user} lists them")
    return staff.link(read_secret(settings), config.name, user, notebook, hours)
