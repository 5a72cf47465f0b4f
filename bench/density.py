"""Density: N students active at once, each with an idle kernel and an open tab.

The first student's cold start and the Nth's, each the median of a few probes: a
new student opens their notebook (edX URL -> page 200, timed) on a quiet box, with
no one else active, then with N-1 active; each probe but the last is stopped again
and the box left to quiet down. Between the two, N-1 new students open their
notebook one after the other (back to back, or `pause` seconds apart; each timed
too: the series), start a kernel and keep its websocket open, as a browser tab does
(so the proxy's idle stop does not apply); the last probe does the same and makes N.
With all N active: the box's idle CPU over a quiet minute, the warm added latency
(nginx + socket + proxyd against straight to Jupyter), and the memory (PSS) of every
student's processes.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from pathlib import Path

import aiohttp

from testbed.browser import Opened, open_exercise, open_notebook_kernel

from .box import COURSE, NOTEBOOK, Bench
from .parts import (
    _in_box,
    _timed_get,
    journal_mark,
    pss_kb,
    quiet,
    restarts_since,
    stop_all,
    stop_student,
)
from .stats import ratio, summary

# A probe starts when the box uses less than this of a core (150 idle kernels: ~0.03).
QUIET = 0.1


async def _quiet(bench: Bench) -> None:
    await asyncio.to_thread(quiet, bench, QUIET, 60)


async def _probes(bench: Bench, session: aiohttp.ClientSession, n: int, keep_last: bool
                  ) -> tuple[list[float], tuple | None]:
    """N new students' cold starts (page 200), each on a quiet box and stopped again;
    the last one kept active (its tab, as _active) if `keep_last`."""
    pages, kept = [], None
    for i in range(n):
        await _quiet(bench)
        if keep_last and i == n - 1:
            opened, page, ws, reader = await _active(bench, session, secrets.token_hex(16))
            kept = (opened, ws, reader)
        else:
            t0 = time.monotonic()
            opened = await open_exercise(session, COURSE, NOTEBOOK, secrets.token_hex(16))
            assert opened.page_status == 200, opened.page_status
            page = time.monotonic() - t0
            await asyncio.to_thread(stop_student, bench, opened.user)
        pages.append(page)
    return pages, kept


async def _active(bench: Bench, session: aiohttp.ClientSession, student: str
                  ) -> tuple[Opened, float, aiohttp.ClientWebSocketResponse, asyncio.Task]:
    t0 = time.monotonic()
    opened = await open_exercise(session, COURSE, NOTEBOOK, student)
    assert opened.page_status == 200, opened.page_status
    page = time.monotonic() - t0
    kernel = await open_notebook_kernel(session, opened)
    ws = await session.ws_connect(f"{opened.prefix}api/kernels/{kernel}/channels",
                                  headers=opened.headers)
    return opened, page, ws, asyncio.create_task(_read(ws))


async def _read(ws: aiohttp.ClientWebSocketResponse) -> None:
    """What a browser's tab does with its kernel's websocket: read it, which also
    answers Jupyter's pings (unanswered, Jupyter closes the socket after 90 s, the
    proxy goes idle and the server stops)."""
    async for _message in ws:
        pass


def uids_pids(bench: Bench, uids: set[int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {u: [] for u in uids}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            m = re.search(r"^Uid:\s+(\d+)", (entry / "status").read_text(), re.MULTILINE)
            if m and int(m.group(1)) in found and _in_box(entry, bench.box.leader_pid):
                found[int(m.group(1))].append(int(entry.name))
        except OSError:
            pass
    return found


async def _density(bench: Bench, n: int, warm_n: int, idle_seconds: float,
                   pause: float, probes: int) -> dict:
    colds: list[float] = []
    tabs = []
    readers: list[asyncio.Task] = []
    since = journal_mark(bench)
    async with bench.session(timeout=600, limit=0) as session:
        first, _ = await _probes(bench, session, probes, keep_last=False)
        for _ in range(n - 1):
            opened, page, ws, reader = await _active(bench, session, secrets.token_hex(16))
            colds.append(page)
            tabs.append((opened, ws))
            readers.append(reader)
            await asyncio.sleep(pause)
        await asyncio.sleep(10)  # the last kernels settle
        last, kept = await _probes(bench, session, probes, keep_last=True)
        opened, ws, reader = kept
        tabs.append((opened, ws))
        readers.append(reader)
        restarts = restarts_since(bench, since)
        await asyncio.sleep(10)  # the last kernel settles
        cpu0, t0, programs0 = bench.cpu_seconds(), time.monotonic(), bench.program_times()
        await asyncio.sleep(idle_seconds)
        idle_cpu = (bench.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        by_program = idle_programs(programs0, bench.program_times(), bench.cpu_seconds() - cpu0)
        # Warm latency on the last student's server, all N active.
        opened = tabs[-1][0]
        page = f"{opened.prefix}notebooks/{NOTEBOOK}"
        rest = f"{opened.prefix}api/contents/{NOTEBOOK}?content=0"
        warm: dict[str, list[float]] = {k: [] for k in ("page_nginx", "page_direct",
                                                        "rest_nginx", "rest_direct")}
        async with bench.jupyter_session(opened.user) as direct:
            for _ in range(20):
                for s in (session, direct):
                    for url in (page, rest):
                        await _timed_get(s, url, opened.headers)
            for _ in range(warm_n):
                for key, s, url in (("page_nginx", session, page),
                                    ("page_direct", direct, page),
                                    ("rest_nginx", session, rest),
                                    ("rest_direct", direct, rest)):
                    warm[key].append(await _timed_get(s, url, opened.headers))
        running = int(bench.box.run("sh", "-c", f"ls /run/nbunits/jupyter/{COURSE} | wc -l")
                      .stdout)
        uids = {int(bench.box.run("id", "-u", o.user).stdout) for o, _ in tabs}
        pids = uids_pids(bench, uids)
        per_student = [pss_kb(p) for p in pids.values()]
        for _, ws in tabs:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    stop_all(bench)
    tenth = max(1, len(colds) // 10)
    return {"n": n, "pause": pause, "running_at_measure": running,
            "probes": {"first": summary(first), "last": summary(last),
                       "ratio": ratio(summary(last)["median"], summary(first)["median"]),
                       "first_all": first, "last_all": last},
            "series": {"cold": colds, "first": colds[0], "last": colds[-1],
                       "first_tenth": summary(colds[:tenth]),
                       "last_tenth": summary(colds[-tenth:])},
            **restarts,
            "idle_cpu_cores": idle_cpu, "idle_seconds": idle_seconds,
            "idle_cpu_by_program": by_program,
            "warm": {k: summary(v) for k, v in warm.items()},
            "pss_kb_per_student": summary(per_student), "pss_kb_total": sum(per_student)}


def density(bench: Bench, n: int, warm_n: int = 300, idle_seconds: float = 60,
            pause: float = 0, probes: int = 9) -> dict:
    return asyncio.run(_density(bench, n, warm_n, idle_seconds, pause, probes))


def idle_programs(before: dict[int, tuple[str, float, int]],
                  after: dict[int, tuple[str, float, int]], total: float) -> dict[str, dict]:
    """Where the idle minute's CPU went, by program: seconds and wake-ups (processes
    alive at its end; those born during it counted whole), the CPU of the others
    under "(exited meanwhile)"."""
    spent: dict[str, dict] = {}
    for pid, (comm, seconds, wakeups) in after.items():
        old = before.get(pid)
        if old and old[0] == comm:  # else born meanwhile (or a pid reused): counted whole
            seconds, wakeups = seconds - old[1], wakeups - old[2]
        entry = spent.setdefault(comm, {"cpu": 0.0, "wakeups": 0, "processes": 0})
        entry["cpu"] += seconds
        entry["wakeups"] += wakeups
        entry["processes"] += 1
    rest = max(0.0, total - sum(e["cpu"] for e in spent.values()))
    top = sorted(spent.items(), key=lambda kv: -kv[1]["cpu"])[:12]
    return {**{c: {**e, "cpu": round(e["cpu"], 2)} for c, e in top},
            "(exited meanwhile)": {"cpu": round(rest, 2)}}
