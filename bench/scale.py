"""Scale: thousands of provisioned students on one machine.

Provisioning is what the helper leaves behind for a student who clicked once
(user, 0700 home, recorded id, token file; the generator then enables the
student's socket), done in bulk: `newusers` for the users, files written
directly. Then: daemon-reload time, systemd's memory, the dispatcher's answer.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

from nbunits.names import user_for

from .box import COURSE, NOTEBOOK, Bench
from .stats import summary


def pid1_kb(bench: Bench) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{bench.box.leader_pid}/smaps_rollup").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("Rss", "Pss"):
            values[key.lower() + "_kb"] = int(line.split()[1])
    return values


def reload_times(bench: Bench, n: int = 3) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        bench.box.systemctl("daemon-reload", timeout=600)
        times.append(time.monotonic() - t0)
    return times


async def dispatcher_times(bench: Bench, students: list[str], rounds: int = 2) -> list[float]:
    """The 302's time for known students; the first round (copies made) is not counted."""
    times: list[float] = []
    async with bench.session() as session:
        for r in range(rounds):
            for student in students:
                t0 = time.perf_counter()
                async with session.get(f"/ipythonExercice/{COURSE}/{NOTEBOOK}/{student}",
                                       allow_redirects=False) as resp:
                    await resp.read()
                    assert resp.status in (200, 302), resp.status
                if r:
                    times.append(time.perf_counter() - t0)
    return times


def listening_sockets(bench: Bench) -> int:
    out = bench.box.systemctl("list-units", "--type=socket", "--state=listening", "--plain",
                              "--no-legend", f"nbunits-{COURSE}@*", timeout=300).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def provision_bulk(bench: Bench, n: int) -> list[str]:
    ids = [secrets.token_hex(16) for _ in range(n)]
    users = [user_for(i) for i in ids]
    lines = "".join(f"{u}:*:::nbunits student {i}:/home/{u}:/usr/sbin/nologin\n"
                    for u, i in zip(users, ids))
    bench.box.run("newusers", input=lines, timeout=1200)
    root = bench.host_path("/")
    students = root / "var/lib/nbunits/students"
    tokens = root / f"var/lib/nbunits/tokens/{COURSE}"
    students.mkdir(mode=0o700, parents=True, exist_ok=True)
    tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
    home = bench.work / "home"
    for u, i in zip(users, ids):
        (students / u).write_text(i + "\n")
        fd = os.open(tokens / f"{u}.env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"JUPYTER_TOKEN={secrets.token_urlsafe(32)}\n")
        os.chmod(home / u, 0o700)
    return ids


def scale(bench: Bench, n: int, known: list[str]) -> dict:
    result: dict = {"n": n}
    result["sockets_before"] = listening_sockets(bench)
    result["pid1_before"] = pid1_kb(bench)
    result["reload_before"] = summary(reload_times(bench))
    result["dispatcher_before"] = summary(asyncio.run(dispatcher_times(bench, known)))
    t0 = time.monotonic()
    ids = provision_bulk(bench, n)
    result["provision_seconds"] = time.monotonic() - t0
    t0 = time.monotonic()
    bench.box.systemctl("daemon-reload", timeout=600)
    bench.box.systemctl("start", "sockets.target", timeout=600)
    result["reload_and_listen_seconds"] = time.monotonic() - t0
    result["sockets_after"] = listening_sockets(bench)
    result["pid1_after"] = pid1_kb(bench)
    result["reload_after"] = summary(reload_times(bench))
    sample = ids[:: max(1, n // 30)][:30]
    result["dispatcher_after"] = summary(asyncio.run(dispatcher_times(bench, sample)))
    return result
