"""Per-course disk quotas on btrfs: subvolumes and a qgroup per (course, student).

What a student of a course can write lives in two folders of their home: the
course folder (~/COURSE, Jupyter's root) and the container's home
(~/.nbunits/COURSE/home). On btrfs each is a subvolume, and both are members of
one level-1 qgroup, 1/<id of ~/COURSE>, whose referenced-bytes limit is the
course's disk_quota: a write past it fails with EDQUOT ("Disk quota exceeded"),
whichever of the two folders it goes to, and the student's other courses and
the other students are untouched. `btrfs quota enable` on the homes' file system
is the admin's step (docs/admin.md, "Disk quotas").

Who does what, with the privileges that are already there:
- `make_subvolumes` runs as the student (a plain ExecStartPre= of the container
  unit, before Jupyter starts, so none of the student's code runs meanwhile):
  creating a subvolume needs no capability on btrfs, and whatever the student
  planted in their home (a symlink) can only lead where they could go anyway.
  A folder that exists as a plain directory (a student from before the quota)
  is converted without losing a file: a reflink copy into a new subvolume next to
  it, then the two are swapped atomically (renameat2 RENAME_EXCHANGE) and the old
  directory removed. Crash-safe: until the swap the original is untouched and a
  half copy is thrown away at the next start; after it, only the old directory
  is left to remove (`decide`).
- `limit` runs as root (ExecStartPre=+): qgroups need CAP_SYS_ADMIN. It opens the
  folders by dir fds, never following a symlink, and only reads them.
- `forget` runs as root in `nbunits student delete`: the qgroups go before the
  subvolumes (removing a subvolume, even with rmdir, removes its own 0/N qgroup).

The ioctls are the kernel's (linux/btrfs.h); no btrfs-progs needed at run time.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import fcntl
import logging
import os
import shutil
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nbunits.core.errors import Code, NbunitsError
from nbunits.core.run import run

logger = logging.getLogger(__name__)

BTRFS_SUPER_MAGIC = 0x9123683E
SUBVOLUME_ROOT_INO = 256  # BTRFS_FIRST_FREE_OBJECTID: the inode of every subvolume's root

# _IOW/_IOR/_IOWR(0x94, nr, struct) from linux/btrfs.h, with the structs' sizes.
IOC_SUBVOL_CREATE = 0x5000940E  # struct btrfs_ioctl_vol_args (4096)
IOC_INO_LOOKUP = 0xD0009412  # struct btrfs_ioctl_ino_lookup_args (4096)
IOC_FS_INFO = 0x8400941F  # struct btrfs_ioctl_fs_info_args (1024)
IOC_QGROUP_ASSIGN = 0x40189429  # struct btrfs_ioctl_qgroup_assign_args (3 x u64)
IOC_QGROUP_CREATE = 0x4010942A  # struct btrfs_ioctl_qgroup_create_args (2 x u64)
IOC_QGROUP_LIMIT = 0x8030942B  # struct btrfs_ioctl_qgroup_limit_args (6 x u64)
QGROUP_LIMIT_MAX_RFER = 1
LEVEL_1 = 1 << 48

NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
AT_FDCWD, RENAME_EXCHANGE = -100, 2
_libc = ctypes.CDLL(None, use_errno=True)

# The sibling a folder is converted through (a name no course or Jupyter uses).
CONVERTING = ".{}.nbunits-subvolume"


class QuotaError(NbunitsError):
    pass


def folders(course: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The two folders of a home that a course's student writes, as path parts:
    the course folder and the container's home (units/course/nbunits-@COURSE@@.service)."""
    return (course,), (".nbunits", course, "home")


# --- small wrappers over the kernel's calls ---------------------------------

def fs_type(fd: int) -> int:
    buffer = ctypes.create_string_buffer(256)  # struct statfs; f_type comes first
    if _libc.fstatfs(fd, buffer) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(struct.unpack_from("l", buffer.raw)[0])


def is_btrfs(folder: Path) -> bool:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return fs_type(fd) == BTRFS_SUPER_MAGIC
    finally:
        os.close(fd)


def is_subvolume(fd: int) -> bool:
    return os.fstat(fd).st_ino == SUBVOLUME_ROOT_INO and fs_type(fd) == BTRFS_SUPER_MAGIC


def subvolume_id(fd: int) -> int:
    """The id of the subvolume that `fd` is in (INO_LOOKUP for its root: no capability)."""
    args = bytearray(struct.pack("=QQ", 0, SUBVOLUME_ROOT_INO) + bytes(4080))
    fcntl.ioctl(fd, IOC_INO_LOOKUP, args)
    return int(struct.unpack_from("=Q", args)[0])


def quotas_enabled(folder: Path, sysfs: Path = Path("/sys/fs/btrfs")) -> bool:
    """Whether the btrfs file system of `folder` has quotas on (the kernel shows a
    qgroups folder in sysfs only then; reading it needs no capability)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        args = bytearray(1024)
        fcntl.ioctl(fd, IOC_FS_INFO, args)
    finally:
        os.close(fd)
    fsid = args[16:32].hex()
    uuid = f"{fsid[:8]}-{fsid[8:12]}-{fsid[12:16]}-{fsid[16:20]}-{fsid[20:]}"
    if not (sysfs / uuid).is_dir():
        raise QuotaError(Code.QUOTA_UNAVAILABLE, f"cannot tell whether {folder} has btrfs "
                         f"quotas: {sysfs / uuid} is not visible (no sysfs?)",
                         hint="nbunits-helper reads it: mount sysfs on /sys")
    return (sysfs / uuid / "qgroups").is_dir()


def create_subvolume(dir_fd: int, name: str) -> None:
    encoded = os.fsencode(name)
    # A mutable buffer: fcntl copies an immutable one only up to 1024 bytes.
    args = bytearray(struct.pack("=q", 0) + encoded + bytes(4088 - len(encoded)))
    fcntl.ioctl(dir_fd, IOC_SUBVOL_CREATE, args)


def syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _exchange(dir_fd: int, a: str, b: str) -> None:
    if _libc.renameat2(dir_fd, os.fsencode(a), dir_fd, os.fsencode(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), b)


@contextmanager
def open_dir(parent_fd: int | None, parts: tuple[str, ...], *, make: int | None = None
             ) -> Iterator[int]:
    """A dir fd for `parts` under `parent_fd` (or an absolute first part), never
    following a symlink; with `make` (a mode), missing folders are created."""
    fd = os.dup(parent_fd) if parent_fd is not None else os.open(parts[0], NOFOLLOW_DIR)
    try:
        for part in parts if parent_fd is not None else parts[1:]:
            try:
                child = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            except FileNotFoundError:
                if make is None:
                    raise
                os.mkdir(part, make, dir_fd=fd)
                child = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


# --- as the student: the course's folders become subvolumes --------------------

class Kind(enum.Enum):
    MISSING = "missing"
    DIRECTORY = "directory"  # a plain directory: to convert
    SUBVOLUME = "subvolume"
    OTHER = "other"  # a file, a symlink: nothing nbunits made


class Step(enum.Enum):
    DROP_CONVERTING = "drop the half-made copy, or the old directory after a swap"
    CREATE = "create the folder as an empty subvolume"
    CONVERT = "copy into a new subvolume (reflinks), swap, drop the old directory"
    REFUSE = "refuse: not a directory"


def decide(folder: Kind, converting: bool) -> list[Step]:
    """What to do with one folder, from what is on disk (a pure decision).

    `converting`: the sibling used for the conversion exists. Before the swap it is
    a copy that may be incomplete (a crash), so it is thrown away and the copy
    redone; after the swap it is the old directory, whose files are all in the
    subvolume already."""
    if folder is Kind.OTHER:
        return [Step.REFUSE]
    steps = [Step.DROP_CONVERTING] if converting else []
    if folder is Kind.MISSING:
        steps.append(Step.CREATE)
    elif folder is Kind.DIRECTORY:
        steps.append(Step.CONVERT)
    return steps


def kind_of(dir_fd: int, name: str) -> Kind:
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return Kind.MISSING
    if not stat.S_ISDIR(st.st_mode):
        return Kind.OTHER
    if st.st_ino != SUBVOLUME_ROOT_INO:
        return Kind.DIRECTORY
    fd = os.open(name, NOFOLLOW_DIR, dir_fd=dir_fd)
    try:
        return Kind.SUBVOLUME if is_subvolume(fd) else Kind.DIRECTORY
    finally:
        os.close(fd)


def make_subvolumes(home: Path, course: str) -> None:
    """Make both folders of `course` in `home` subvolumes (nothing on other file systems)."""
    if not is_btrfs(home):
        return
    with open_dir(None, (str(home),)) as home_fd:
        for parts in folders(course):
            with open_dir(home_fd, parts[:-1], make=0o700) as parent_fd:
                ensure_subvolume(parent_fd, parts[-1], Path(home, *parts))


def ensure_subvolume(parent_fd: int, name: str, shown: Path) -> None:
    converting = CONVERTING.format(name)
    steps = decide(kind_of(parent_fd, name), kind_of(parent_fd, converting) is not Kind.MISSING)
    for step in steps:
        if step is Step.REFUSE:
            raise QuotaError(Code.QUOTA_FAILED, f"{shown} is not a directory: it cannot hold a "
                             "course's files under a disk quota",
                             hint="an admin must move it away")
        if step is Step.DROP_CONVERTING:
            shutil.rmtree(converting, dir_fd=parent_fd)  # subvolumes too (rmdir, Linux 4.18+)
        elif step is Step.CREATE:
            create_subvolume(parent_fd, name)
            os.chmod(name, 0o700 if name == "home" else 0o755, dir_fd=parent_fd)
        elif step is Step.CONVERT:
            convert(parent_fd, name, converting, shown)


def convert(parent_fd: int, name: str, converting: str, shown: Path) -> None:
    create_subvolume(parent_fd, converting)
    # cp: every kind of file, modes and times, symlinks as symlinks; data shared by
    # reflink (no second copy on disk). Paths through /proc: the parent is our fd.
    where = f"/proc/{os.getpid()}/fd/{parent_fd}"
    run(["cp", "-a", "--reflink=always", "--no-target-directory",
         f"{where}/{name}", f"{where}/{converting}"], timeout=3600)
    syncfs(parent_fd)  # the whole copy is on disk before the swap makes it the folder
    _exchange(parent_fd, name, converting)
    logger.warning("converted %s into a subvolume (its files kept, by reflink) for the "
                   "course's disk quota", shown)
    shutil.rmtree(converting, dir_fd=parent_fd)


# --- as root: the qgroup and its limit ---------------------------------------

def group_of(course_folder_id: int) -> int:
    """The level-1 qgroup of a (course, student): 1/<id of the course folder>."""
    return LEVEL_1 | course_folder_id


def limit(home: Path, uid: int, course: str, limit_bytes: int) -> None:
    """Put both folders of `course` in their qgroup and limit it to `limit_bytes`."""
    ids = []
    with open_dir(None, (str(home),)) as home_fd:
        for parts in folders(course):
            with open_dir(home_fd, parts) as fd:
                st = os.fstat(fd)
                if not is_subvolume(fd) or st.st_uid != uid:
                    raise QuotaError(Code.QUOTA_FAILED, f"{Path(home, *parts)} is not a subvolume "
                                     f"of uid {uid}", hint="the unit's step before this one "
                                     "makes it (nbunits.helper.quota folders): see its journal")
                ids.append(subvolume_id(fd))
        group = group_of(ids[0])
        if _qgroup(home_fd, IOC_QGROUP_CREATE, struct.pack("=QQ", 1, group), errno.EEXIST):
            # A new group (a first start, a converted folder): members are added with
            # settled counts (the old directory's removal committed), so their bytes
            # are added to the group's without a rescan.
            syncfs(home_fd)
        for member in ids:
            _qgroup(home_fd, IOC_QGROUP_ASSIGN, struct.pack("=QQQ", 1, member, group),
                    errno.EEXIST)
        _qgroup(home_fd, IOC_QGROUP_LIMIT, struct.pack("=6Q", group, QGROUP_LIMIT_MAX_RFER,
                                                       limit_bytes, 0, 0, 0), None)


def forget(home: Path) -> None:
    """Before a home is removed: unlink and remove every course's qgroup in it."""
    try:
        home_fd = os.open(home, NOFOLLOW_DIR)
    except OSError:
        return
    try:
        if fs_type(home_fd) != BTRFS_SUPER_MAGIC:
            return
        for name in os.listdir(home_fd):
            if kind_of(home_fd, name) is Kind.SUBVOLUME:
                _forget_course(home_fd, name)
    finally:
        os.close(home_fd)


def forget_course(home: Path, course: str) -> None:
    """Before a course's folders are removed from a home: its qgroup."""
    try:
        home_fd = os.open(home, NOFOLLOW_DIR)
    except OSError:
        return
    try:
        if kind_of(home_fd, course) is Kind.SUBVOLUME:
            _forget_course(home_fd, course)
    finally:
        os.close(home_fd)


def _forget_course(home_fd: int, course: str) -> None:
    members = []
    for parts in folders(course):
        try:
            with open_dir(home_fd, parts) as fd:
                if is_subvolume(fd):
                    members.append(subvolume_id(fd))
        except OSError:
            continue
    if not members:
        return
    group = group_of(members[0])
    for member in members:
        _qgroup(home_fd, IOC_QGROUP_ASSIGN, struct.pack("=QQQ", 0, member, group),
                errno.ENOENT, errno.ENOTCONN)
    _qgroup(home_fd, IOC_QGROUP_CREATE, struct.pack("=QQ", 0, group), errno.ENOENT,
            errno.ENOTCONN)


def _qgroup(fd: int, request: int, args: bytes, *ignored: int | None) -> bool:
    """One qgroup ioctl; False if it failed with one of the `ignored` errnos."""
    try:
        fcntl.ioctl(fd, request, args)
        return True
    except OSError as exc:
        if exc.errno in ignored:
            return False
        if exc.errno == errno.ENOTCONN:
            raise QuotaError(Code.QUOTA_UNAVAILABLE, "quotas are not enabled on the homes' "
                             "btrfs file system", hint=ENABLE_HINT) from exc
        raise QuotaError(Code.QUOTA_FAILED, f"btrfs qgroup call failed: {exc.strerror}",
                         hint="see docs/admin.md, 'Disk quotas'") from exc


ENABLE_HINT = ("run `btrfs quota enable` on the homes' file system (docs/admin.md, 'Disk quotas'), "
               "or remove disk_quota from the course")
