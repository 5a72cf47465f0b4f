"""Students' work of a course, exported: one zip archive per student, named by their id.

`nbunits course export COURSE --to DIR` and, before an ended course's work is
deleted, nbunits-course-end.timer (course_end.py) write here. Each archive holds one
student's course folder (<home>/<course>: their notebooks and files) under a folder
named after the course, so that it unzips as it was. It is named by the student's
LMS id as nbunits records it (users.recorded_id: the id their user was made for),
which is what an admin hands work back by; zip, because every student's system opens
it without installing anything.

The course folder is the student's: it is read as notebooks.py reads it, with
directory file descriptors and O_NOFOLLOW. No symlink is ever followed or stored
(the links nbunits makes into the published course, notebooks.link_tree, and any a
student made), nor anything but folders and regular files. A running student's
server is not stopped: their files are exported as they are on disk (what a browser
tab has not saved is not there). Each archive is written to a temporary file in DIR,
then renamed: DIR holds whole archives only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nbunits.admin.students import all_users
from nbunits.core.config import Settings, provisioned_students
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import STUDENT_ID_RE, USER_RE, check_course
from nbunits.helper.users import recorded_id

SUFFIX = ".zip"
MAX_NAME_BYTES = 255  # a file name, on every Linux file system
# Deeper folders than this in a student's course are an error (their export fails,
# so nothing of theirs is deleted), not a recursion without end.
MAX_DEPTH = 256
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ExportError(NbunitsError):
    pass


@dataclass(frozen=True)
class Work:
    """One student of a course: their user, their id ("" if no record says), whether
    they have a course folder, and the name of their archive."""

    user: str
    id: str
    has_folder: bool
    archive: str


@dataclass
class Counts:
    files: int = 0
    bytes: int = 0  # the files' own sizes
    folders: int = 0
    links: int = 0  # symlinks left out (never followed)
    other: int = 0  # sockets, fifos, devices: left out


@dataclass
class Exported:
    work: Work
    counts: Counts
    size: int = 0  # the archive's
    error: str = ""  # why it failed ("": written)


def archive_name(student_id: str, user: str) -> str:
    """<id>.zip; <user>.zip when the id is unknown or too long for a file name. An
    id never holds '/' and never starts with '.' (names.STUDENT_ID_RE)."""
    name = f"{student_id}{SUFFIX}"
    if student_id and STUDENT_ID_RE.fullmatch(student_id) \
            and len(name.encode()) <= MAX_NAME_BYTES:
        return name
    return f"{user}{SUFFIX}"


def works(settings: Settings, course: str) -> list[Work]:
    """Every student of the course: who opened one of its notebooks, or has its folder."""
    check_course(course)
    users = set(provisioned_students(settings, course))
    users |= {user for user in all_users(settings) if has_folder(settings, user, course)}
    found = [(user, recorded_id(settings, user) or "") for user in sorted(users)]
    names = [archive_name(sid, user) for user, sid in found]
    # Two archives never share a name: an id that looks like another's user name.
    taken = {n for n in names if names.count(n) > 1}
    return [Work(user, sid, has_folder(settings, user, course),
                 name if name not in taken else f"{user}{SUFFIX}")
            for (user, sid), name in zip(found, names, strict=True)]


def has_folder(settings: Settings, user: str, course: str) -> bool:
    folder = settings.course_folders(user, course)[0]
    return folder.is_dir() and not folder.is_symlink()


def check_destination(settings: Settings, target: Path) -> Path:
    """DIR as it really is (links resolved); refused in a student's home or in a
    published course, or if it is not a folder."""
    resolved = Path(os.path.realpath(target))
    homes = Path(os.path.realpath(settings.home_base))
    if resolved.is_relative_to(homes) and resolved != homes \
            and USER_RE.fullmatch(resolved.relative_to(homes).parts[0]):
        raise ExportError(Code.BAD_EXPORT_DIR, f"{target} is in a student's home",
                          hint="export to a folder of the admin's (a student could read "
                               "or replace everyone's archives there)")
    for published in (settings.masters_dir, settings.git_dir):
        if resolved.is_relative_to(os.path.realpath(published)):
            raise ExportError(Code.BAD_EXPORT_DIR, f"{target} is in the published courses "
                              f"({published})", hint="export to a folder of the admin's")
    if resolved.exists() and not resolved.is_dir():
        raise ExportError(Code.BAD_EXPORT_DIR, f"{target} is not a folder")
    return resolved


@contextlib.contextmanager
def destination(target: Path) -> Iterator[int]:
    """DIR's descriptor; DIR made 0700, root's, if missing (and removed again if it
    is still empty at the end: a failed export leaves nothing)."""
    made = not target.exists()
    try:
        if made:
            target.mkdir(mode=0o700, parents=True)
            os.chmod(target, 0o700)
        fd = os.open(target, _DIR_FLAGS)
    except OSError as exc:
        raise ExportError(Code.BAD_EXPORT_DIR, f"cannot use {target}: {exc.strerror}",
                          hint="give a folder root can write to") from exc
    try:
        yield fd
    finally:
        os.close(fd)
        if made:
            with contextlib.suppress(OSError):
                target.rmdir()  # only if empty


def export_all(settings: Settings, course: str, dir_fd: int, found: list[Work]
               ) -> list[Exported]:
    """An archive for each student with a course folder. An archive that cannot be
    written (DIR full or read-only) stops the export there (ExportError: whole
    archives written before it stay); a student whose folder cannot be read fails
    alone, and the others go on."""
    done = []
    for work in found:
        if not work.has_folder:
            continue
        try:
            counts, size = write_archive(dir_fd, work.archive, settings.home(work.user),
                                         course)
        except (OSError, NbunitsError, RecursionError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.filename is None:
                # Writing failed, not reading: every other archive would too.
                raise ExportError(Code.EXPORT_FAILED, f"cannot write {work.archive}: "
                                  f"{exc.strerror}", hint="is the folder full or read-only?"
                                  ) from exc
            done.append(Exported(work, Counts(), error=str(getattr(exc, "message", exc))))
            continue
        done.append(Exported(work, counts, size))
    return done


def write_archive(dir_fd: int, name: str, home: Path, course: str) -> tuple[Counts, int]:
    """Write name in DIR from home/course, atomically; (what it holds, its size)."""
    tmp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
    except OSError as exc:
        exc.filename = None  # DIR's fault, not the student's
        raise
    try:
        with os.fdopen(fd, "wb") as raw:
            counts = Counts()
            # An OSError without a file name is the archive's (writing: DIR full...).
            with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
                _add_course(archive, home, course, counts)
            raw.flush()
            os.fsync(raw.fileno())
            size = os.fstat(raw.fileno()).st_size
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return counts, size


def _add_course(archive: zipfile.ZipFile, home: Path, course: str, counts: Counts) -> None:
    home_fd = os.open(home, _DIR_FLAGS)
    try:
        fd = os.open(course, _DIR_FLAGS, dir_fd=home_fd)
    except OSError as exc:  # ELOOP: a symlink where the course folder should be
        raise ExportError(Code.BAD_HOME, f"cannot read {home}/{course}: {exc.strerror}",
                          ) from exc
    finally:
        os.close(home_fd)
    try:
        _add_folder(archive, fd, course, counts, 0)
    finally:
        os.close(fd)


def _add_folder(archive: zipfile.ZipFile, dir_fd: int, path: str, counts: Counts,
                depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ExportError(Code.BAD_HOME, f"{path}: folders deeper than {MAX_DEPTH}")
    archive.writestr(_info(path + "/", os.fstat(dir_fd)), b"")
    counts.folders += 1
    with os.scandir(dir_fd) as scan:
        entries = sorted((entry.name, entry.stat(follow_symlinks=False)) for entry in scan)
    for name, st in entries:
        inner = f"{path}/{_printable(name)}"
        if stat.S_ISLNK(st.st_mode):
            counts.links += 1
        elif stat.S_ISDIR(st.st_mode):
            child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                _add_folder(archive, child, inner, counts, depth + 1)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            _add_file(archive, dir_fd, name, inner, counts)
        else:
            counts.other += 1


def _add_file(archive: zipfile.ZipFile, dir_fd: int, name: str, inner: str,
              counts: Counts) -> None:
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):  # replaced since it was listed
            counts.other += 1
            return
        with archive.open(_info(inner, st), "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    counts.files += 1
    counts.bytes += st.st_size


def _info(inner: str, st: os.stat_result) -> zipfile.ZipInfo:
    # zip's dates start in 1980.
    when = time.gmtime(max(st.st_mtime, 315532800))[:6]
    info = zipfile.ZipInfo(inner, date_time=when)
    info.external_attr = (st.st_mode & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _printable(name: str) -> str:
    """A file name as zip stores it (UTF-8): bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
