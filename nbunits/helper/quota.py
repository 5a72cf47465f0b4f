"""Per-student disk quotas, enforced by the file system (the course setting
`disk_quota`), set at each start of the student's server by the container unit:

- on btrfs, per course: the course's folders in the home are subvolumes in a
  qgroup limited to disk_quota (btrfs.py; `python3 -m nbunits.helper.quota folders HOME
  COURSE` as the student, then `... limit USER COURSE SIZE` as root);
- elsewhere (ext4, xfs), per student: a user quota on the homes' file system
  (`... limit USER COURSE SIZE`), with quotactl_fd(2), which names the file system
  by an open directory rather than by its block device: it works where the device
  node is not visible (a container, a loop device) and needs no quota tools. The
  file system must have user quotas on (ext4: `mkfs.ext4 -O quota` or `tune2fs -O
  quota`, mounted with `usrquota`; xfs: mounted with `usrquota`).

Root's step runs with the privileges quotactl and qgroups need (ExecStartPre=+),
which the helper does not have. Without quotas on the homes' file system a launch
of such a course is refused (`check`, in the helper) before anything is made.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from pathlib import Path

from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import check_course, check_user
from nbunits.helper import btrfs

SYS_QUOTACTL_FD = 443  # the same number on every architecture (Linux 5.14+)
Q_SETQUOTA, Q_GETQUOTA, USRQUOTA = 0x800008, 0x800007, 0
QIF_BLIMITS = 1
# struct if_dqblk: 8 x u64 (limits in 1 KiB blocks, usage in bytes, ...), u32 valid.
DQBLK = struct.Struct("=8QI")
SIZES = {"K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}

_libc = ctypes.CDLL(None, use_errno=True)


def kib(size: str) -> int:
    """A disk_quota setting ("2G") in KiB."""
    m = re.fullmatch(r"([1-9][0-9]*)([KMGT])", size)
    if not m:
        raise NbunitsError(Code.BAD_COURSE_CONFIG, f"invalid disk_quota {size!r}")
    return int(m[1]) * SIZES[m[2]]


def _quotactl(folder: Path, command: int, uid: int, buffer: ctypes.Array[ctypes.c_char]) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syscall(SYS_QUOTACTL_FD, fd, (command << 8) | USRQUOTA, uid, buffer) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


def set_limit(folder: Path, uid: int, limit_kib: int) -> None:
    """Limit `uid`'s blocks on the file system of `folder` (soft = hard)."""
    buffer = ctypes.create_string_buffer(DQBLK.pack(limit_kib, limit_kib, 0, 0, 0, 0, 0, 0,
                                                    QIF_BLIMITS))
    try:
        _quotactl(folder, Q_SETQUOTA, uid, buffer)
    except OSError as exc:
        missing = exc.errno in (errno.ESRCH, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTTY,
                                errno.EINVAL)
        raise NbunitsError(
            Code.QUOTA_UNAVAILABLE if missing else Code.QUOTA_FAILED,
            f"cannot set a disk quota on {folder}: {exc.strerror}",
            hint="the course sets disk_quota: mount the homes' file system with user "
                 "quotas (docs/admin.md, 'Disk quotas'), or remove disk_quota") from exc


QUOTA_OPTIONS = {"usrquota", "quota", "uquota", "usrjquota", "uqnoenforce"}


def mount_of(folder: Path, mountinfo: str) -> tuple[str, set[str]]:
    """The file system type and mount options (their names) of `folder`'s mount."""
    best, fs_type, options = "", "", set()
    for line in mountinfo.splitlines():
        fields = line.split()
        point = fields[4]
        inside = str(folder) == point or str(folder).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            after = fields[fields.index("-") + 1:] if "-" in fields else []
            best, fs_type = point, after[0] if after else ""
            options = set(fields[5].split(",")) | set(",".join(after[2:3]).split(","))
            options = {o.split("=")[0] for o in options}
    return fs_type, options


def check(folder: Path, mountinfo: str | None = None,
          sysfs: Path = Path("/sys/fs/btrfs")) -> None:
    """Refuse early (before any user or file is made) where the homes' file system
    has no quotas: btrfs without `btrfs quota enable`, others not mounted with
    user quotas."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    fs_type, options = mount_of(folder, mountinfo)
    if fs_type == "btrfs":
        if not btrfs.quotas_enabled(folder, sysfs):
            raise NbunitsError(
                Code.QUOTA_UNAVAILABLE, f"the course sets disk_quota, but the btrfs file "
                f"system of {folder} has no quotas enabled", hint=btrfs.ENABLE_HINT)
        return
    if not options & QUOTA_OPTIONS:
        raise NbunitsError(
            Code.QUOTA_UNAVAILABLE, f"the course sets disk_quota, but {folder} has no user "
            "quotas (mounted without usrquota)",
            hint="mount the homes' file system with user quotas (docs/admin.md, 'Disk quotas'), "
                 "or remove disk_quota from the course")


def describe(folder: Path) -> str:
    """What `nbunits install` says about disk quotas on the homes' file system."""
    try:
        fs_type, _ = mount_of(folder, Path("/proc/self/mountinfo").read_text())
        check(folder)
    except NbunitsError as exc:
        return f"courses that set disk_quota will be refused: {exc}"
    per = "per course (btrfs qgroups)" if fs_type == "btrfs" else "per student (user quotas)"
    return f"courses may set disk_quota: {folder} ({fs_type}) enforces it {per}"


def get_limit(folder: Path, uid: int) -> int:
    """`uid`'s block hard limit on the file system of `folder`, in KiB (0: none)."""
    buffer = ctypes.create_string_buffer(DQBLK.size)
    _quotactl(folder, Q_GETQUOTA, uid, buffer)
    return int(DQBLK.unpack(buffer.raw)[0])


def limit(user: str, course: str, size: str) -> None:
    """Root's step: the course's qgroup limit on btrfs, else the user's quota."""
    import pwd

    entry = pwd.getpwnam(check_user(user))
    home = Path(entry.pw_dir)
    if btrfs.is_btrfs(home):
        btrfs.limit(home, entry.pw_uid, check_course(course), kib(size) * 1024)
    else:
        set_limit(home.parent, entry.pw_uid, kib(size))


USAGE = ("usage: python3 -m nbunits.helper.quota folders HOME COURSE (as the student)\n"
         "       python3 -m nbunits.helper.quota limit USER COURSE SIZE (as root)")


def main() -> None:
    """The container unit's two steps (units/course/nbunits-@COURSE@@.service)."""
    import sys

    args = sys.argv[1:]
    try:
        if len(args) == 3 and args[0] == "folders":
            btrfs.make_subvolumes(Path(args[1]), check_course(args[2]))
        elif len(args) == 4 and args[0] == "limit":
            limit(args[1], args[2], args[3])
        else:
            sys.exit(USAGE)
    except (KeyError, OSError, NbunitsError) as exc:
        sys.exit(f"nbunits.helper.quota {args[0]}: {exc}")


if __name__ == "__main__":
    main()
