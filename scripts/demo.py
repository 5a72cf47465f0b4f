"""Serve the demo course from a throwaway systemd, and print where to open it.

This machine's PID 1 is not systemd, so the demo boots one with systemd-nspawn over
an overlay of this machine's root (tests/harness.py), with a network of its own
(with the machine's network, nspawn keeps /proc/sys read-only and podman cannot
set up a container's network namespace). nginx inside listens on a unix socket
in a shared folder; this script forwards 127.0.0.1:PORT to it. Students' homes persist in
/var/lib/nbunits-demo/home between runs. On a server whose PID 1 is systemd, run
`nbunits install --listen 80` and `nbunits course add` instead.
"""

from __future__ import annotations

import argparse
import signal
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.forward import Forwarder  # noqa: E402
from tests.harness import Bind, SystemdBox  # noqa: E402

STATE = Path("/var/lib/nbunits-demo")
IMAGE_STORE = Path("/var/lib/nbunits/images")
NBUNITS = "/opt/nbunits/venv/bin/nbunits"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--state", type=Path, default=STATE,
                        help=f"where students' homes persist (default {STATE})")
    parser.add_argument("--check", action="store_true",
                        help="open the demo link once and exit (what CI runs)")
    args = parser.parse_args()

    home, shared = args.state / "home", args.state / "shared"
    home.mkdir(parents=True, exist_ok=True)
    shared.mkdir(parents=True, exist_ok=True)
    binds = [Bind(home, "/home"), Bind(shared, "/srv/nbunits-demo"),
             Bind(IMAGE_STORE, str(IMAGE_STORE)), Bind(REPO, "/opt/nbunits/src", readonly=True)]
    with SystemdBox(f"nbunits-demo-{args.port}", binds=binds, private_network=True) as box:
        print("==> booting a throwaway systemd", flush=True)
        box.boot()
        box.run(NBUNITS, "install", "--listen", "unix:/srv/nbunits-demo/nginx.sock")
        box.run(NBUNITS, "course", "add", "demo", "--dir", "/opt/nbunits/src/examples/demo")
        link = f"http://127.0.0.1:{args.port}/ipythonExercice/demo/welcome.ipynb/demo-student-1"
        forwarder = Forwarder(args.port, shared / "nginx.sock")
        forwarder.start()
        if args.check:
            with urllib.request.urlopen(link, timeout=120) as resp:
                print(f"demo check: {resp.status} {resp.url.split('?')[0]}")
                return 0 if resp.status == 200 else 1
        print(f"""
nbunits demo is running. Open, in a browser on this machine:

    {link}

Another student: change the last part of the link (any id of letters and digits).
Admin view (systemctl and journalctl inside the throwaway systemd):
    nsenter -t {box.leader_pid} -a systemctl list-units 'nbunits-*'
    nsenter -t {box.leader_pid} -a journalctl -u 'nbunits-demo@*'
Press Ctrl-C to stop (students' files stay in {home}).
""", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
        print("==> stopping")
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
