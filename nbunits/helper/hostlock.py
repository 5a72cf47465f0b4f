"""Several hosts: a student's server runs on one host at a time.

The lock unit (units/course/nbunits-@COURSE@-lock@.service; the container unit
BindsTo= it when [server] multi_host is set) runs this before the student's
container starts: it takes an exclusive lock on /var/lib/nbunits/locks/<course>/<user>,
on the storage the hosts share, writes which host holds it, tells systemd it is
ready, and becomes `sleep infinity` holding the lock (a few hundred KB, not a Python
process per running student). The lock lives as long as the unit: a stop, a crash
or the host's death releases it (the kernel closes the file; on NFS, the server
drops a dead client's locks when its lease ends, 90 s by default).

If another host holds it, this exits 75 at once, before the container is started:
the unit fails with a journal line naming the host that runs the student, so a
front whose view of the hosts differs from a host's (a host it believed dead still
runs) never gets the same student's server running twice; the student's retry
goes where the front now sends them, and starts there once the old run ends.

flock(2) works across all boxes of one kernel, and Linux's NFS client turns it
into an NFS (NLM/NFSv4) lock: the same code holds on real shared storage.
Standard library only: it is on every cold start's path.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time

from nbunits.core.names import check_course, check_user

LOCKS = "/var/lib/nbunits/locks"  # config.Settings.locks_dir
HELD_ELSEWHERE = 75  # EX_TEMPFAIL


def notify(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def lock(course: str, user: str, base: str = LOCKS) -> int:
    """The locked file's descriptor; raise BlockingIOError naming the holder."""
    folder = os.path.join(base, check_course(course))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(folder, check_user(user)),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another host"
        os.close(fd)
        raise BlockingIOError(exc.errno, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{socket.gethostname()} since {int(time.time())}\n".encode(), 0)
    return fd


def held(course: str, user: str, base: str = LOCKS) -> bool:
    """Whether the student's server runs on some host now (its lock is held)."""
    return holder(course, user, base) is not None


def holder(course: str, user: str, base: str = LOCKS) -> str | None:
    """The host running the student's server ("<host> since <time>"), None if none."""
    try:
        fd = os.open(os.path.join(base, check_course(course), check_user(user)),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another host"
    finally:
        os.close(fd)  # releases the shared lock, if it got it


def main(argv: list[str]) -> int:
    course, user = argv
    try:
        fd = lock(course, user)
    except BlockingIOError as exc:
        print(f"<3>{course}/{user} runs on {exc.strerror} (its lock in {LOCKS} is held): "
              "not starting it here too", file=sys.stderr, flush=True)
        return HELD_ELSEWHERE
    os.set_inheritable(fd, True)
    notify("READY=1")
    # Hold the lock for the unit's lifetime in a tiny process (same PID: MAINPID stays).
    os.execv("/bin/sleep", ["sleep", "infinity"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
