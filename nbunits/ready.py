"""The readiness gate: wait until Jupyter answers on its unix socket.

Run as the container unit's ExecStartPost=, so the unit is "active" (and the proxy
starts forwarding) only once a request would be served. Standard library only: it
is on every cold start's path.
"""

from __future__ import annotations

import socket
import sys
import time

POLL_SECONDS = 0.02


def answers(path: str, url: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(path)
            sock.sendall(f"GET {url} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def wait(path: str, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(path, url):
            return True
        time.sleep(POLL_SECONDS)
    return False


def main() -> None:
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python3 -m nbunits.ready SOCKET URL [TIMEOUT]")
    timeout = float(sys.argv[3]) if len(sys.argv) == 4 else 110
    if not wait(sys.argv[1], sys.argv[2], timeout):
        sys.exit(f"Jupyter did not answer on {sys.argv[1]} within {timeout:.0f} s")


if __name__ == "__main__":
    main()
