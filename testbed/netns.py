"""A network namespace shared by several boxes: hosts and a front talking over TCP.

Each box of a multi-host test joins the same namespace (systemd-nspawn
--network-namespace-path) and listens on addresses of its own in 127.0.0.0/8
(nginx `listen 127.0.1.N:80`), so the front's nginx reaches each host's nginx over
real sockets, and a host that dies stops answering at its address (connection
refused), as a dead machine would. Only its loopback is up: nothing leaves it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


class NetworkNamespace:
    """`ip netns add NAME` (a file under /run/netns), removed on close."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = Path("/run/netns") / name

    def __enter__(self) -> NetworkNamespace:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self.path.exists():  # a crashed run's: its boxes are gone with it
            self.close()
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False, capture_output=True)
