"""Serve the demo course from a throwaway systemd, and print where to open it.

This machine's PID 1 is not systemd, so the demo boots one with systemd-nspawn over
an overlay of this machine's root (testbed/harness.py), with a network of its own.
nbunits is installed there as on a server named `notebooks.localhost` (browsers
resolve *.localhost to this machine by themselves), nginx on its port 80, and
127.0.0.1:PORT is forwarded to it. Students' homes and their records persist in
/var/lib/nbunits-demo between runs. Run it again while it runs: it prints the same
link. After a crash, the next run cleans up and starts afresh.
On a server whose PID 1 is systemd, run `nbunits install` and `nbunits course add`
instead (docs/admin.md, "Install").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.browser import execute, open_exercise, start_kernel  # noqa: E402
from testbed.deploy import IMAGE_STORE, IMAGE_STORE_IN_BOX, VENV, use_checkout  # noqa: E402
from testbed.forward import Forwarder, Names  # noqa: E402
from testbed.harness import DEFAULT_BASE, Bind, BoxError, SystemdBox  # noqa: E402

STATE = Path("/var/lib/nbunits-demo")
SERVER = "notebooks.localhost"
NBUNITS = str(VENV / "bin" / "nbunits")
STUDENT = "demo-student-1"


def link(port: int) -> str:
    return f"http://{SERVER}:{port}/ipythonExercice/demo/welcome.ipynb/{STUDENT}"


def check(port: int) -> int:
    """Open the demo link as a browser would, and run a cell."""
    async def go() -> str:
        connector = aiohttp.TCPConnector(resolver=Names({SERVER: "127.0.0.1"}))
        async with aiohttp.ClientSession(f"http://{SERVER}:{port}",
                                                       connector=connector) as session:
            opened = await open_exercise(session, "demo", "welcome.ipynb", STUDENT)
            assert opened.page_status == 200, opened.page[:300]
            kernel = await start_kernel(session, opened)
            assert await execute(session, opened, kernel, "6 * 7") == "42"
            return opened.prefix
    prefix = asyncio.run(go())
    print(f"demo check: 200 http://{SERVER}:{port}{prefix} and a cell gave 42")
    return 0


def running_demo(pidfile: Path) -> int | None:
    """The PID of a demo already serving this port, if one is."""
    try:
        pid = int(pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"demo.py" in cmdline else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--state", type=Path, default=STATE,
                        help=f"where students' homes and records persist (default {STATE})")
    parser.add_argument("--check", action="store_true",
                        help="open the demo link once, run a cell and exit (what CI runs)")
    args = parser.parse_args()

    args.state.mkdir(parents=True, exist_ok=True)
    pidfile = args.state / f"demo-{args.port}.pid"
    other = running_demo(pidfile)
    if other is not None:
        print(f"nbunits demo is already running (PID {other}). Open:\n\n    {link(args.port)}\n")
        return check(args.port) if args.check else 0

    name = f"nbunits-demo-{args.port}"
    if (DEFAULT_BASE / name / "state.json").exists():
        print("==> cleaning up after a demo that did not stop cleanly", flush=True)
        SystemdBox.reap(DEFAULT_BASE / name)
    binds = [Bind(IMAGE_STORE, IMAGE_STORE_IN_BOX), Bind(REPO, "/opt/nbunits/src", readonly=True)]
    # What a server keeps across reinstalls: homes, and the records of whose they are.
    for folder, inside in (("home", "/home"), ("students", "/var/lib/nbunits/students"),
                           ("copies", "/var/lib/nbunits/copies")):
        (args.state / folder).mkdir(exist_ok=True)
        binds.append(Bind(args.state / folder, inside))
    with SystemdBox(name, binds=binds, private_network=True) as box:
        print("==> booting a throwaway systemd", flush=True)
        box.boot()
        use_checkout(box)
        box.write_file("/etc/hosts", box.read_file("/etc/hosts") + f"127.0.0.1 {SERVER}\n")
        box.run(NBUNITS, "install", "--server-name", SERVER, "--listen", "80")
        # Open legacy links: the demo's link carries a made-up student id (a server
        # for real students takes LTI or signed links: docs/openedx.md).
        box.run(NBUNITS, "course", "add", "demo", "--dir", "/opt/nbunits/src/examples/demo",
                "--legacy", "open")
        try:
            Forwarder(box.leader_pid, 80, listen_host="127.0.0.1", listen_port=args.port).start()
        except RuntimeError as exc:
            raise SystemExit(f"demo: {exc} (another program uses port {args.port}? "
                             "try --port)") from None
        pidfile.write_text(f"{os.getpid()}\n")
        try:
            if args.check:
                return check(args.port)
            print(f"""
nbunits demo is running. Open, in a browser on this machine:

    {link(args.port)}

Another student: change the last part of the link (any id of letters and digits).
Admin view (systemctl and journalctl inside the throwaway systemd):
    nsenter -t {box.leader_pid} -a systemctl list-units 'nbunits-*'
    nsenter -t {box.leader_pid} -a journalctl -u 'nbunits-demo@*'
Press Ctrl-C to stop (students' files stay in {args.state / 'home'}).
""", flush=True)
            try:
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
            except KeyboardInterrupt:
                pass
            print("==> stopping")
        finally:
            pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        sys.exit(main())
    except BoxError as exc:
        sys.exit(f"demo: {exc}")
