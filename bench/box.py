"""A booted box with nbunits and the demo course, as the integration tests set it up.

Reuses testbed/harness.py (the throwaway systemd) and the integration conftest's
`use_checkout` (the checkout's code runs in the box, the shared venv is untouched).
Adds what the benchmark needs on top: a host cpuacct cgroup holding every process
of the box (CPU seconds of a start, whatever runs elsewhere on the machine), and
helpers to read the box's sockets, journal and /proc from the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from testbed.deploy import (
    IMAGE_STORE,
    LIFTED_CAPS,
    SERVER,
    SHARED_IN_BOX,
    VENV,
    box_folders,
    use_checkout,
)
from testbed.harness import SystemdBox

COURSE = "demo"
NOTEBOOK = "welcome.ipynb"
PEER_VENV = Path("/opt/nbunits-bench/jupyterhub")
CPUACCT = Path("/sys/fs/cgroup/cpuacct")


@dataclass
class Bench:
    box: SystemdBox
    work: Path
    shared: Path
    cgroup: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def nginx_socket(self) -> Path:
        return self.shared / "nginx.sock"

    def nbunits(self, *args: str) -> str:
        return self.box.run(str(VENV / "bin" / "nbunits"), *args).stdout

    def host_path(self, path: str) -> Path:
        """A path inside the box as the host reaches it (sockets included)."""
        return Path(f"/proc/{self.box.leader_pid}/root{path}")

    def session(self, timeout: float = 300, limit: int = 100,
                trace_configs: list[aiohttp.TraceConfig] | None = None) -> aiohttp.ClientSession:
        """A client of the box's nginx, as a browser on the server's own site (by its
        name; over nginx's unix socket, so the figures carry no forwarder's cost)."""
        return aiohttp.ClientSession(
            f"http://{SERVER}",
            connector=aiohttp.UnixConnector(path=str(self.nginx_socket), limit=limit),
            timeout=aiohttp.ClientTimeout(total=timeout), trace_configs=trace_configs)

    def jupyter_session(self, user: str) -> aiohttp.ClientSession:
        sock = self.host_path(f"/run/nbunits/jupyter/{COURSE}/{user}.sock")
        return aiohttp.ClientSession(f"http://{SERVER}",
                                     connector=aiohttp.UnixConnector(path=str(sock)),
                                     timeout=aiohttp.ClientTimeout(total=60))

    # ---------------------------------------------------------------- CPU accounting

    def adopt_box_processes(self) -> None:
        """Move every process of the box into our cpuacct cgroup (children inherit it)."""
        if self.cgroup is None:
            return
        box_ns = os.readlink(f"/proc/{self.box.leader_pid}/ns/pid")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns/pid") != box_ns and not _descends(int(entry.name),
                                                                            self.box.leader_pid):
                    continue
                (self.cgroup / "cgroup.procs").write_text(entry.name)
            except OSError:
                pass

    def cpu_seconds(self) -> float:
        """CPU time used by the box so far (user + system), or NaN without cpuacct."""
        if self.cgroup is None:
            return float("nan")
        return int((self.cgroup / "cpuacct.usage").read_text()) / 1e9

    def program_times(self) -> dict[int, tuple[str, float, int]]:
        """{pid: (program, CPU seconds so far, wake-ups so far)} of every live process of
        the box (wake-ups: its threads' context switches, /proc/PID/task/*/status)."""
        if self.cgroup is None:
            return {}
        tick, out = os.sysconf("SC_CLK_TCK"), {}
        for pid in (self.cgroup / "cgroup.procs").read_text().split():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                switches = sum(_switches(task) for task in Path(f"/proc/{pid}/task").iterdir())
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out[int(pid)] = (comm, (int(fields[11]) + int(fields[12])) / tick, switches)
        return out

    # ---------------------------------------------------------------- journal

    def journal_since(self, since: float, *matches: str) -> list[dict]:
        # Every namespace: students' servers log to their own (LogNamespace=nbunits).
        out = self.box.nsenter("journalctl", "--no-pager", "-o", "json", "--namespace=*",
                               f"--since=@{since:.6f}", *matches, check=False, timeout=120).stdout
        entries = []
        for line in out.splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries


def _switches(task: Path) -> int:
    status = (task / "status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines()
               if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")))


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            return False
    return False


@contextlib.contextmanager
def booted(name: str) -> Iterator[Bench]:
    """Boot a box, install nbunits (this checkout) and the demo course in it."""
    missing = [str(p) for p in (VENV / "bin" / "nbunits", IMAGE_STORE) if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run scripts/setup first")
    work = Path(f"/var/tmp/{name}")
    home, shared, binds = box_folders(work)
    cgroup = CPUACCT / name if CPUACCT.is_dir() else None
    try:
        with SystemdBox(name, binds=binds, private_network=True) as box:
            use_checkout(box)
            bench = Bench(box, work, shared)
            # One client makes every launch here, and the density part runs more
            # servers than the default memory budget allows: caps lifted.
            box.write_file("/etc/nbunits/nbunits.toml", LIFTED_CAPS + 'memory_budget = "64G"\n')
            bench.nbunits("install", "--server-name", SERVER,
                          "--listen", f"unix:{SHARED_IN_BOX}/nginx.sock")
            bench.nbunits("course", "add", COURSE, "--dir", "/opt/nbunits/src/examples/demo",
                          "--legacy", "open")
            if cgroup is not None:
                cgroup.mkdir(exist_ok=True)
                bench.cgroup = cgroup
                bench.adopt_box_processes()
            yield bench
    finally:
        if cgroup is not None and cgroup.is_dir():
            with contextlib.suppress(OSError):
                for pid in (cgroup / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (CPUACCT / "cgroup.procs").write_text(pid)
                cgroup.rmdir()
        shutil.rmtree(work, ignore_errors=True)
