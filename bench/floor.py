"""The floor: `podman run` of the student's image until /api/status answers 200,
on a listening socket made here and passed in, as systemd does for the unit.

Run inside the box *as the student* (by bench/nbunits_parts.py), with the unit's
environment (XDG_RUNTIME_DIR, CONTAINERS_STORAGE_CONF). No systemd unit per start,
no nginx, no dispatcher, no socket proxy: podman started by hand, then a tight poll.
Standard library only. Prints one JSON object.

    python3 floor.py N SOCKET_DIR TOKEN URL_PREFIX -- PODMAN ARGV...
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time

POLL = 0.005
# The server's name: Jupyter accepts no other Host (local_hostnames).
HOST = os.environ.get("NBUNITS_HOST", "localhost")


def status(path: str, url: str, token: str) -> int:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(f"GET {url} HTTP/1.0\r\nHost: {HOST}\r\n"
                         f"Authorization: token {token}\r\n\r\n".encode())
            head = sock.recv(64).split(b" ", 2)
            return int(head[1]) if len(head) > 1 else 0
    except (OSError, ValueError):
        return 0


def listening(path: str) -> socket.socket:
    """What the unit's Jupyter socket unit does: a listening socket, for Jupyter."""
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1024)
    return sock


def main() -> None:
    n, sock_dir, token, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    argv = sys.argv[sys.argv.index("--") + 1:]
    name = argv[argv.index("--name") + 1]
    path = os.path.join(sock_dir, "floor-jupyter.sock")
    # As systemd passes sockets: file descriptor 3, LISTEN_PID the program's own pid.
    passing = ["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh"]
    runs = []
    for _ in range(n):
        sock = listening(path)
        fd = sock.fileno()
        t0 = time.monotonic()
        subprocess.run([*passing, *argv], check=True, stdout=subprocess.DEVNULL,
                       pass_fds=(3, fd), preexec_fn=functools.partial(os.dup2, fd, 3))  # noqa: PLW1509
        t_run = time.monotonic()
        sock.close()
        while status(path, prefix + "api/status", token) != 200:
            if time.monotonic() - t0 > 60:
                raise SystemExit("Jupyter did not answer within 60 s")
            time.sleep(POLL)
        t_ready = time.monotonic()
        runs.append({"podman_run_returned": t_run - t0, "ready": t_ready - t0})
        subprocess.run([*argv[:argv.index("run")], "rm", "-f", "-t", "2", name], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.unlink(path)
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
