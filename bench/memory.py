"""Where an active student's memory goes (issue 31, item 3): N students active at once,
each with the notebook's kernel (started ahead) idle after `1+1`, and for each of
their processes the PSS and the private memory, from smaps_rollup.

PSS divides a shared page among its users: with many students active, a student's
PSS tends to their private memory (the pages no other process maps: their Python
heaps, mostly). So the private figure of one process says what it costs at scale,
and the PSS at N says what it costs now. Reported per process kind (its comm), as
medians over the N students, with the total per student.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections import defaultdict
from pathlib import Path

from .box import Bench
from .parts import box_pids_of, one_cold, stop_student

FIELDS = ("Pss", "Private_Clean", "Private_Dirty", "Rss")


def rollup(pid: int) -> dict[str, int]:
    """kB of smaps_rollup's fields (0 for a process gone meanwhile)."""
    found = dict.fromkeys(FIELDS, 0)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in found:
                found[name] = int(rest.split()[0])
    except OSError:
        pass
    return found


def kind(pid: int) -> str:
    """What a process is: its comm, and for Python the module or script it runs."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if "ipykernel_launcher" in " ".join(words):
        return "kernel (ipykernel)"
    if any(w.endswith("jupyter-notebook") or w.endswith("jupyter-lab") for w in words):
        return "jupyter server"
    return comm


def memory_runs(bench: Bench, n: int) -> dict:
    users = []
    for _ in range(n):  # one after the other, each with its kernel run once
        users.append(asyncio.run(one_cold(bench, secrets.token_hex(16))).user)
    time.sleep(5)  # the kernels' and servers' first-minute work done
    per_kind: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    totals: dict[str, list[int]] = defaultdict(list)
    for user in users:
        uid = int(bench.box.run("id", "-u", user).stdout)
        mine: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
        for pid in box_pids_of(bench, uid):
            got = rollup(pid)
            for name in FIELDS:
                mine[kind(pid)][name] += got[name]
        for what, got in mine.items():
            for name in FIELDS:
                per_kind[what][name].append(got[name])
        for name in FIELDS:
            totals[name].append(sum(got[name] for got in mine.values()))
    for user in users:
        stop_student(bench, user)
    median = statistics.median
    return {"n": n,
            "per_student_kb": {name: median(values) for name, values in totals.items()},
            "per_kind_kb": {what: {name: median(values) for name, values in got.items()}
                            for what, got in sorted(per_kind.items())}}


def table(result: dict) -> list[str]:
    mb = 1024
    lines = [f"Memory of an active student with an idle kernel, N={result['n']} active at once "
             "(medians; private = Private_Clean + Private_Dirty):", "",
             "| process | PSS | private | RSS |", "| --- | --- | --- | --- |"]
    for what, got in result["per_kind_kb"].items():
        private = got["Private_Clean"] + got["Private_Dirty"]
        lines.append(f"| {what} | {got['Pss'] / mb:.1f} MB | {private / mb:.1f} MB | "
                     f"{got['Rss'] / mb:.1f} MB |")
    t = result["per_student_kb"]
    lines.append(f"| **all the student's processes** | **{t['Pss'] / mb:.1f} MB** | "
                 f"**{(t['Private_Clean'] + t['Private_Dirty']) / mb:.1f} MB** | "
                 f"{t['Rss'] / mb:.1f} MB |")
    return lines
