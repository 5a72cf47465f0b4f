"""The readiness gate: wait until Jupyter listens on its unix socket.

Run as the container unit's ExecStartPost=, so the unit is "active" (and the proxy
starts forwarding) only once a connection would be accepted: systemd-socket-proxyd
does not retry a refused one. Accepted is enough: Jupyter binds and listens at the
end of its initialisation (extensions loaded), and a connection queued then is
served as soon as its loop runs, a few ms later. So the gate sends no request (no
403 or 404 in Jupyter's log, no credential to read: systemd 252 does not give
credentials to a unit's first ExecStartPost= when the unit has a mount namespace,
systemd issue #31194).

It does not poll while Jupyter starts: it sleeps on inotify until the socket's
folder changes (a burst of starts on a busy host takes tens of seconds, and a
5 ms poll then cost as much CPU as the gate's own start-up). Standard library only,
and little of it: it runs at every cold start.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import sys
import time
from pathlib import Path

from .events import Event, send

POLL_SECONDS = 0.005  # between bind() and listen(), and where inotify is missing
IN_CREATE, IN_MOVED_TO, IN_ATTRIB = 0x100, 0x80, 0x4
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000


def listens(path: str) -> bool | None:
    """True if a connection is accepted, False if the socket exists but refuses (not
    listening yet), None if there is no socket yet."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            return True
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return False


class Watch:
    """Wake-ups when a file appears in (or changes in) a folder: inotify, by ctypes."""

    def __init__(self, folder: str) -> None:
        self.fd = -1
        try:
            libc = ctypes.CDLL(None)  # the libc Python runs on
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, folder.encode(),
                                                  IN_CREATE | IN_MOVED_TO | IN_ATTRIB) >= 0:
                self.fd = fd
            elif fd >= 0:
                os.close(fd)
        except (OSError, AttributeError):
            pass  # then: poll

    def sleep(self, seconds: float) -> None:
        if self.fd < 0:
            time.sleep(min(seconds, POLL_SECONDS))
            return
        if select.select([self.fd], [], [], seconds)[0]:
            try:
                os.read(self.fd, 65536)
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def wait(path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    # Watched before the first try, so a socket made in between is not missed.
    watch = Watch(os.path.dirname(path))
    try:
        while (left := deadline - time.monotonic()) > 0:
            state = listens(path)
            if state:
                return True
            # Bound, not yet listening: a matter of ms, with no event to wait for.
            if state is None:
                watch.sleep(min(left, 1.0))
            else:
                time.sleep(POLL_SECONDS)
        return False
    finally:
        watch.close()


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python3 -m nbunits.ready SOCKET [TIMEOUT]")
    timeout = float(sys.argv[2]) if len(sys.argv) == 3 else 110
    started = time.monotonic()
    # The socket is /run/nbunits/jupyter/<course>/<user>/jupyter.sock.
    course, user = Path(sys.argv[1]).parts[-3:-1]
    if not wait(sys.argv[1], timeout):
        send(Event.FAILED, f"{user}'s Jupyter did not answer within {timeout:.0f} s",
             course=course, student=user, identifier="nbunits-ready")
        sys.exit(f"Jupyter did not answer on {sys.argv[1]} within {timeout:.0f} s")
    send(Event.STARTED, f"{user}'s Jupyter for course {course} answers", course=course,
         student=user, identifier="nbunits-ready",
         READY_SECONDS=f"{time.monotonic() - started:.3f}")


if __name__ == "__main__":
    main()
