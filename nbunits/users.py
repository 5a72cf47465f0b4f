"""Students' Linux users: one per student id, created on first use.

The user name is derived from the id (names.user_for); the id itself is recorded
in the user's GECOS field, in /var/lib/nbunits/students/<user> and in the home
(`.nbunits-student`, root's, 0444), so an admin can go from an edX id to a user
(`nbunits student find ID`) and back (`getent passwd`).

A home is only ever its student's. When the user has to be created while its
home exists already (a restored /home, a reinstall, the demo's kept homes), the
home is adopted only if a record proves it is this student's: the record in
/var/lib/nbunits/students, or the root-owned one in the home (a student cannot
write a root-owned file). Its files then change owner to the new uid, without
following any symlink. Otherwise nothing is created and an admin is asked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import stat
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

# The record in a student's home of whose home it is (root-owned, read-only).
HOME_RECORD = ".nbunits-student"
# podman's storage in a home (units/course/nbunits-@COURSE@@.service): a cache of
# container state, owned partly by the old user's subordinate ids. An adopted
# home starts it afresh.
PODMAN_STORAGE = (".local", "share", "nbunits")


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
    if known is None and read_home_record(Path(entry.pw_dir)) == student_id:
        known = student_id  # the state record was lost (a reinstall): the home's says
    if known != student_id:
        raise StudentError("student_collision",
                           f"user {user} exists but is recorded for another student id",
                           hint="an admin must look at /var/lib/nbunits/students")
    return Student(student_id, user, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


async def ensure(settings: Settings, student_id: str) -> Student:
    """The student's user, created (with a 0700 home) if missing."""
    check_student_id(student_id)
    async with _useradd_lock:
        user = user_for(student_id)
        student = lookup(settings, student_id)
        if student is not None:
            await asyncio.to_thread(repair_home, settings, student)
            if recorded_id(settings, user) is None:
                write_record(settings, user, student_id)
            await asyncio.to_thread(write_home_record, student.home, student_id)
            return student
        known = recorded_id(settings, user)
        if known is not None and known != student_id:
            raise StudentError("student_collision",
                               f"{settings.students_dir / user} records another student id",
                               hint="an admin must look at /var/lib/nbunits/students")
        home = settings.home(user)
        adopt = await asyncio.to_thread(existing_home, home, student_id, known)
        await run_async(["useradd", "--home-dir", str(home),
                         "--no-create-home" if adopt else "--create-home",
                         "--shell", "/usr/sbin/nologin", "--user-group",
                         "--comment", f"nbunits student {student_id}"[:200], user])
        entry = pwd.getpwnam(user)
        if adopt:
            changed = await asyncio.to_thread(adopt_home, home, entry.pw_uid, entry.pw_gid)
            logger.warning("adopted the existing home %s: %d files now belong to uid %d",
                           home, changed, entry.pw_uid, extra={"STUDENT": user})
        os.chmod(home, 0o700)
        write_record(settings, user, student_id)
        await asyncio.to_thread(write_home_record, home, student_id)
        logger.info("created user %s for a new student", user, extra={"STUDENT": user})
        student = lookup(settings, student_id)
        assert student is not None
        return student


def repair_home(settings: Settings, student: Student) -> None:
    """The user exists: make sure its home is there and is its own. A home restored
    from a backup (or kept from an install whose users had other uids) is adopted
    with the same proof as at creation; a missing one is made anew."""
    try:
        st = os.lstat(student.home)
    except FileNotFoundError:
        os.mkdir(student.home, 0o700)
        os.chown(student.home, student.uid, student.gid)
        logger.warning("made a new, empty home %s: it was missing", student.home,
                       extra={"STUDENT": student.user})
        return
    if stat.S_ISDIR(st.st_mode) and (st.st_uid, st.st_gid) == (student.uid, student.gid):
        return
    existing_home(student.home, student.id, recorded_id(settings, student.user))  # or raise
    changed = adopt_home(student.home, student.uid, student.gid)
    os.chmod(student.home, 0o700)
    logger.warning("adopted the home %s (owned by uid %d): %d files now belong to uid %d",
                   student.home, st.st_uid, changed, student.uid, extra={"STUDENT": student.user})


def write_record(settings: Settings, user: str, student_id: str) -> None:
    settings.students_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(settings.students_dir / user, student_id + "\n", 0o600)


def existing_home(home: Path, student_id: str, recorded: str | None) -> bool:
    """Whether `home` exists and may be adopted for `student_id`; raise if it exists
    and nothing proves it is theirs."""
    try:
        st = os.lstat(home)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise StudentError("bad_home", f"{home} exists and is not a directory",
                           hint="an admin must move it away")
    if recorded == student_id or read_home_record(home) == student_id:
        return True
    raise StudentError(
        "bad_home", f"{home} exists (owner uid {st.st_uid}) but no record shows it is the "
        f"home of student {student_id!r}: nbunits will not give it to them",
        hint=f"an admin must check it: restore /var/lib/nbunits/students/{home.name}, "
             "or move the home away to start afresh")


def read_home_record(home: Path) -> str | None:
    """The student id recorded in a home, if root wrote it (never follows a symlink)."""
    try:
        dir_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = os.open(HOME_RECORD, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0:
            return None
        return f.read(1024).decode(errors="replace").strip()


def write_home_record(home: Path, student_id: str) -> None:
    """Record in the home whose it is (once; older homes get it at their next launch)."""
    if read_home_record(home) == student_id:
        return
    dir_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tmp = f".{HOME_RECORD}.tmp"
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o444, dir_fd=dir_fd)
        with os.fdopen(fd, "w") as f:
            f.write(student_id + "\n")
        os.rename(tmp, HOME_RECORD, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def adopt_home(home: Path, uid: int, gid: int) -> int:
    """Give the files of a kept home to the student's new uid and gid: those that
    belonged to the home's old owner, never following a symlink. Returns how many."""
    old = os.lstat(home)
    _drop_podman_storage(home)
    changed = 0
    for _dir, dirs, files, dir_fd in os.fwalk(home, follow_symlinks=False):
        for name in (*dirs, *files):
            st = os.lstat(name, dir_fd=dir_fd)
            if st.st_uid == old.st_uid or st.st_gid == old.st_gid:
                new_uid = uid if st.st_uid == old.st_uid else st.st_uid
                new_gid = gid if st.st_gid == old.st_gid else st.st_gid
                os.chown(name, new_uid, new_gid, dir_fd=dir_fd, follow_symlinks=False)
                changed += 1
    os.chown(home, uid, gid, follow_symlinks=False)
    return changed + 1


def _drop_podman_storage(home: Path) -> None:
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in PODMAN_STORAGE[:-1]:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except OSError:
                return
            os.close(fd)
            fd = child
        try:
            shutil.rmtree(PODMAN_STORAGE[-1], dir_fd=fd)
        except FileNotFoundError:
            pass
    finally:
        os.close(fd)
