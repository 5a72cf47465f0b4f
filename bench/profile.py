"""Where a start's CPU goes, by program: `perf record` on every process of the box.

perf attaches to every process in the box (systemd, nginx, the dispatcher, the
helper...) and follows the children they fork from then on (podman, conmon, crun,
Jupyter and its kernel, the readiness gate...), sampling CPU time at 999 Hz while
N new students open a notebook one after the other (edX URL -> page 200, and two
seconds after), or all at once (a burst). Samples / 999 / N = CPU seconds per start
and program.
Processes elsewhere on the machine are not sampled.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .box import Bench
from .parts import _in_box, one_cold, stop_student

FREQ = 999


def box_pids(bench: Bench) -> list[int]:
    box_ns = os.readlink(f"/proc/{bench.box.leader_pid}/ns/pid")
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns/pid") == box_ns or _in_box(entry, bench.box.leader_pid):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def profile(bench: Bench, n: int, burst: bool = False) -> dict:
    # One start first: the page cache, Python's bytecode, podman's first use.
    stop_student(bench, asyncio.run(one_cold(bench, secrets.token_hex(16))).user)
    data = Path(tempfile.mkdtemp(prefix="nbunits-perf-")) / "perf.data"
    pids = ",".join(str(p) for p in box_pids(bench))
    perf = subprocess.Popen(["perf", "record", "-q", "-F", str(FREQ), "-p", pids, "-o", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(2)  # perf attached
    cpu0 = bench.cpu_seconds()
    users = []
    if burst:
        async def everyone() -> list[str]:
            return [c.user for c in await asyncio.gather(
                *(one_cold(bench, secrets.token_hex(16), kernel=False) for _ in range(n)))]
        users = asyncio.run(everyone())
    else:
        for _ in range(n):
            users.append(asyncio.run(one_cold(bench, secrets.token_hex(16), kernel=False)).user)
    time.sleep(2)  # what runs right after the page (kernel start) settles
    cpu = bench.cpu_seconds() - cpu0
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=120)
    for user in users:
        stop_student(bench, user)
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "comm",
                             "-F", "sample,comm", "--percent-limit", "0.5"],
                            check=False, capture_output=True, text=True).stdout
    per_comm: dict[str, float] = {}
    for line in report.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].isdigit():
            per_comm[parts[1].strip()] = int(parts[0]) / FREQ / n
    data.unlink(missing_ok=True)
    data.parent.rmdir()
    return {"n": n, "cpu_per_start_cpuacct": cpu / n,
            "cpu_per_start_sampled": sum(per_comm.values()),
            "per_comm": dict(sorted(per_comm.items(), key=lambda kv: -kv[1]))}
