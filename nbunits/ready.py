"""The readiness gate: wait until Jupyter answers on its unix socket.

Run as the container unit's ExecStartPost=, so the unit is "active" (and the proxy
starts forwarding) only once a request would be served. It asks Jupyter for
`<base_url>api` (its version, no login needed), the base URL coming from the
unit's credential (it holds the student's capability). Standard library only: it
is on every cold start's path, and polls often (a cold start is about a second).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .events import Event, send

POLL_SECONDS = 0.005


def answers(path: str, url: str, host: str = "localhost") -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(path)
            sock.sendall(f"GET {url} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def wait(path: str, url: str, timeout: float, host: str = "localhost") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(path, url, host):
            return True
        time.sleep(POLL_SECONDS)
    return False


def jupyter_settings() -> tuple[str, str]:
    """The student's Jupyter's base URL and a Host it accepts (the server's name: any
    other gets a 403 and a warning in the journal, at every poll)."""
    credentials = Path(os.environ.get("CREDENTIALS_DIRECTORY", "/nonexistent"))
    try:
        server = json.loads((credentials / "jupyter.json").read_text())["ServerApp"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"nbunits.ready: no Jupyter settings in {credentials} ({exc!r}): asking / "
              "as localhost", file=sys.stderr)
        return "/", "localhost"  # still proves that Jupyter listens (with a 403 or 404)
    names = server.get("local_hostnames") or ["localhost"]
    return str(server.get("base_url", "/")), str(names[0])


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python3 -m nbunits.ready SOCKET [TIMEOUT]")
    timeout = float(sys.argv[2]) if len(sys.argv) == 3 else 110
    started = time.monotonic()
    # The socket is /run/nbunits/jupyter/<course>/<user>/jupyter.sock.
    course, user = Path(sys.argv[1]).parts[-3:-1]
    url, host = jupyter_settings()
    if not wait(sys.argv[1], url + "api", timeout, host):
        send(Event.FAILED, f"{user}'s Jupyter did not answer within {timeout:.0f} s",
             course=course, student=user, identifier="nbunits-ready")
        sys.exit(f"Jupyter did not answer on {sys.argv[1]} within {timeout:.0f} s")
    send(Event.STARTED, f"{user}'s Jupyter for course {course} answers", course=course,
         student=user, identifier="nbunits-ready",
         READY_SECONDS=f"{time.monotonic() - started:.3f}")


if __name__ == "__main__":
    main()
