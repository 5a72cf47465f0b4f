"""Students' Linux users: one per student id, created on first use.

The user name and the uid are derived from the id (names.user_for, names.uid_for),
so a student has the same ones on every host. The id itself is recorded in the
user's GECOS field, in /var/lib/nbunits/students/<user> and in the home
(`.nbunits-student`, root's, 0444), so an admin can go from an edX id to a user
(`nbunits student find ID`) and back (`getent passwd`).

A student's user and group are systemd JSON user records in /etc/userdb (one file
each, plus the uid/gid symlinks nss-systemd looks them up by), not lines in
/etc/passwd, /etc/shadow and /etc/subuid: creating one costs the same with 100,000
students as with none (useradd rewrites those files whole, under a lock), and a
lookup opens one file. No subordinate ids: podman maps the container's root to the
student's own uid alone (docs/admin.md, "Students' users").

A home is only ever its student's. When the user has to be created while its
home exists already (a restored /home, a reinstall, the demo's kept homes), the
home is adopted only if a record proves it is this student's: the record in
/var/lib/nbunits/students, or the root-owned one in the home (a student cannot
write a root-owned file). Its files then change owner to the new uid, without
following any symlink. Otherwise nothing is created and an admin is asked.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nbunits.core.config import Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.names import check_student_id, uid_for, user_for

logger = logging.getLogger(__name__)

# Check-then-create of a user, one at a time (a few ms: four small files).
_create_lock = asyncio.Lock()

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
        return settings.student_record(user).read_text().strip()
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
        raise StudentError(Code.STUDENT_COLLISION,
                           f"user {user} exists but is recorded for another student id",
                           hint="an admin must look at /var/lib/nbunits/students")
    return Student(student_id, user, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


async def ensure(settings: Settings, student_id: str) -> Student:
    """The student's user, created (with a 0700 home) if missing."""
    check_student_id(student_id)
    async with _create_lock:
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
            raise StudentError(Code.STUDENT_COLLISION,
                               f"{settings.student_record(user)} records another student id",
                               hint="an admin must look at /var/lib/nbunits/students")
        uid = uid_for(student_id)
        check_uid_free(uid, user)
        home = settings.home(user)
        adopt = await asyncio.to_thread(existing_home, home, student_id, known)
        write_user_record(settings, user, uid, home, f"nbunits student {student_id}"[:200])
        if adopt:
            if os.lstat(home).st_uid != uid:  # a home from before derived uids
                changed = await asyncio.to_thread(adopt_home, home, uid, uid)
                logger.warning("adopted the existing home %s: %d files now belong to uid %d",
                               home, changed, uid, extra={"STUDENT": user})
        else:
            os.mkdir(home, 0o700)
            os.chown(home, uid, uid)
        os.chmod(home, 0o700)
        write_record(settings, user, student_id)
        await asyncio.to_thread(write_home_record, home, student_id)
        logger.info("created user %s (uid %d) for a new student", user, uid,
                    extra={"STUDENT": user})
        student = lookup(settings, student_id)
        assert student is not None
        return student


def check_uid_free(uid: int, user: str) -> None:
    """Refuse a derived uid that another user or group holds (a hash collision, or an
    admin's own account in the students' range): never share an id."""
    for taken in (_exists(pwd.getpwuid, uid), _exists(grp.getgrgid, uid)):
        if taken is not None:
            raise StudentError(
                Code.STUDENT_COLLISION, f"uid/gid {uid} derived for {user} is taken by {taken}",
                hint="two student ids hash to the same uid (rare) or an account uses the "
                     "students' uid range; see docs/admin.md, Students' users")


def _exists(lookup_id: Callable[[int], Sequence[object]], uid: int) -> str | None:
    try:
        entry = lookup_id(uid)
    except KeyError:
        return None
    return str(entry[0])


def nss_problem(nsswitch: Path = Path("/etc/nsswitch.conf")) -> str | None:
    """Why students' JSON user records would not be seen, if they would not."""
    try:
        lines = nsswitch.read_text().splitlines()
    except OSError as exc:
        return f"cannot read {nsswitch}: {exc.strerror}"
    sources = {line.split(":")[0].strip(): line.split(":", 1)[1].split()
               for line in lines if ":" in line and not line.lstrip().startswith("#")}
    missing = [db for db in ("passwd", "group") if "systemd" not in sources.get(db, [])]
    if missing:
        return (f"{nsswitch} does not list 'systemd' for {' and '.join(missing)}: students' "
                "users (JSON records in /etc/userdb) would not be found")
    return None


def write_user_record(settings: Settings, user: str, uid: int, home: Path, comment: str) -> None:
    """The student's user and group as systemd JSON user records (userdb drop-ins):
    NAME.user/NAME.group, and UID.user/GID.group symlinks for lookups by id.
    Written group first and the name last, so a lookup never finds half a user."""
    folder = settings.userdb_dir
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    group = {"groupName": user, "gid": uid, "disposition": "regular"}
    record = {"userName": user, "uid": uid, "gid": uid, "realName": comment,
              "homeDirectory": str(home), "shell": "/usr/sbin/nologin",
              "disposition": "regular"}
    write_atomic(folder / f"{user}.group", json.dumps(group) + "\n", 0o644)
    _symlink_atomic(folder / f"{uid}.group", f"{user}.group")
    _symlink_atomic(folder / f"{uid}.user", f"{user}.user")
    write_atomic(folder / f"{user}.user", json.dumps(record) + "\n", 0o644)


def remove_user_record(settings: Settings, user: str, uid: int) -> None:
    for name in (f"{user}.user", f"{uid}.user", f"{user}.group", f"{uid}.group"):
        settings.userdb_file(name).unlink(missing_ok=True)


def _symlink_atomic(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


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
    write_atomic(settings.student_record(user), student_id + "\n", 0o600)


def existing_home(home: Path, student_id: str, recorded: str | None) -> bool:
    """Whether `home` exists and may be adopted for `student_id`; raise if it exists
    and nothing proves it is theirs."""
    try:
        st = os.lstat(home)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise StudentError(Code.BAD_HOME, f"{home} exists and is not a directory",
                           hint="an admin must move it away")
    if recorded == student_id or read_home_record(home) == student_id:
        return True
    raise StudentError(
        Code.BAD_HOME, f"{home} exists (owner uid {st.st_uid}) but no record shows it is the "
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
