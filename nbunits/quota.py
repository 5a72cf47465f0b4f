"""Per-student disk quotas, enforced by the file system (the course setting
`disk_quota`): a user quota on the file system that holds the homes.

Set at each start of the student's server by the container unit
(`ExecStartPre=+python3 -m nbunits.quota USER SIZE`, with the privileges quotactl
needs, which the helper does not have), with quotactl_fd(2), which names the file
system by an open directory rather than by its block device: it works where the
device node is not visible (a container, a loop device) and needs no quota tools.
The file system must have user quotas on (ext4: `mkfs.ext4 -O quota` or `tune2fs -O quota`, mounted with
`usrquota`; xfs: mounted with `usrquota`); otherwise a launch of such a course is
refused with an error that says so.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from pathlib import Path

from .errors import NbunitsError

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
        raise NbunitsError("bad_course_config", f"invalid disk_quota {size!r}")
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
            "quota_unavailable" if missing else "quota_failed",
            f"cannot set a disk quota on {folder}: {exc.strerror}",
            hint="the course sets disk_quota: mount the homes' file system with user "
                 "quotas (README, 'Disk quotas'), or remove disk_quota") from exc


QUOTA_OPTIONS = {"usrquota", "quota", "uquota", "usrjquota", "uqnoenforce"}


def check(folder: Path, mountinfo: str | None = None) -> None:
    """Refuse early (before any user or file is made) where the homes' file system
    is not mounted with user quotas."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    best, options = "", set()
    for line in mountinfo.splitlines():
        fields = line.split()
        point = fields[4]
        inside = str(folder) == point or str(folder).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            after = fields[fields.index("-") + 1:] if "-" in fields else []
            best = point
            options = set(fields[5].split(",")) | set(",".join(after[2:3]).split(","))
            options = {o.split("=")[0] for o in options}
    if not options & QUOTA_OPTIONS:
        raise NbunitsError(
            "quota_unavailable", f"the course sets disk_quota, but {folder} has no user "
            "quotas (mounted without usrquota)",
            hint="mount the homes' file system with user quotas (README, 'Disk quotas'), "
                 "or remove disk_quota from the course")


def get_limit(folder: Path, uid: int) -> int:
    """`uid`'s block hard limit on the file system of `folder`, in KiB (0: none)."""
    buffer = ctypes.create_string_buffer(DQBLK.size)
    _quotactl(folder, Q_GETQUOTA, uid, buffer)
    return int(DQBLK.unpack(buffer.raw)[0])


def main() -> None:
    """python3 -m nbunits.quota USER SIZE: set USER's quota on /home (units)."""
    import pwd
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python3 -m nbunits.quota USER SIZE")
    try:
        set_limit(Path("/home"), pwd.getpwnam(sys.argv[1]).pw_uid, kib(sys.argv[2]))
    except (KeyError, NbunitsError) as exc:
        sys.exit(f"nbunits.quota: {exc}")


if __name__ == "__main__":
    main()
