"""The measurements of nbunits itself: cold start, floor, warm, burst, cost, scale."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import tomli_w

from nbunits.core.names import user_for
from testbed.browser import Opened, execute, open_exercise, open_notebook_kernel

from .box import COURSE, NOTEBOOK, SERVER, SHARED_IN_BOX, Bench, _descends
from .stats import summary

GENERATED = f"/run/systemd/generator/nbunits-{COURSE}@.service"


@dataclass
class Cold:
    user: str
    t0: float          # wall clock, to match the journal
    redirect: float    # seconds from t0
    page: float
    executed: float
    cpu_to_page: float
    first_status: int = 200
    opened: Opened | None = field(default=None, repr=False)


async def one_cold(bench: Bench, student: str, kernel: bool = True, course: str = COURSE) -> Cold:
    redirected: list[float] = []

    async def on_request_end(_session, _ctx, params: aiohttp.TraceRequestEndParams) -> None:
        if params.url.path.startswith("/ipythonExercice/"):
            redirected.append(time.monotonic())

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    async with bench.session(trace_configs=[trace]) as session:
        cpu0 = bench.cpu_seconds()
        t0 = time.time()
        m0 = time.monotonic()
        opened = await open_exercise(session, course, NOTEBOOK, student)
        first_status = opened.page_status
        if first_status != 200:
            await _reload_until_ok(session, opened)  # what the waking page does
        page = time.monotonic() - m0
        cpu = bench.cpu_seconds() - cpu0
        executed = float("nan")
        if kernel:  # as the notebook asks: its path's session (kernel_ahead), else a new one
            kernel_id = await open_notebook_kernel(session, opened)
            assert await execute(session, opened, kernel_id, "1+1") == "2"
            executed = time.monotonic() - m0
        return Cold(opened.user, t0, redirected[0] - m0, page, executed, cpu, first_status,
                    opened)


async def _reload_until_ok(session, opened: Opened, tries: int = 60) -> None:
    page = f"{opened.prefix}notebooks/{opened.notebook}?token={opened.token}"
    for _ in range(tries):
        await asyncio.sleep(1)
        async with session.get(page) as resp:
            await resp.read()
            if resp.status == 200:
                return
    raise RuntimeError(f"{opened.prefix}: no 200 after {tries} reloads")


async def _open_timed(session, student: str) -> tuple[Opened, float]:
    """open_exercise, plus when the 302 arrived (monotonic)."""
    redirected = 0.0
    original = session.get

    def get(url, *args, **kwargs):
        nonlocal redirected
        ctx = original(url, *args, **kwargs)
        if url.startswith("/nb/") and not redirected:
            redirected = time.monotonic()
        return ctx

    session.get = get  # the second GET (the page) starts right after the 302
    try:
        opened = await open_exercise(session, COURSE, NOTEBOOK, student)
    finally:
        session.get = original
    return opened, redirected


def stop_student(bench: Bench, user: str, course: str = COURSE) -> None:
    bench.box.systemctl("stop", f"nbunits-{course}-proxy@{user}.service",
                        f"nbunits-{course}@{user}.service")


def stop_all(bench: Bench) -> None:
    bench.box.systemctl("stop", f"nbunits-{COURSE}@*.service", f"nbunits-{COURSE}-proxy@*.service",
                        timeout=300)


def journal_mark(bench: Bench) -> str:
    """Now, on the box's clock, for restarts_since()."""
    return bench.box.run("date", "+@%s").stdout.strip()


def restarts_since(bench: Bench, mark: str) -> dict[str, int]:
    """Starts systemd restarted since `mark` (Restart=on-failure: invisible to the
    student, but each one's work, podman and Jupyter's imports, is lost) and the
    notify messages it could not attribute (podman's MAINPID=, read too late)."""
    text = bench.box.run("journalctl", "--since", mark, "--no-pager", "-o", "cat",
                         check=False).stdout
    return {"restarted": text.count("Scheduled restart job"),
            "lost_notify": text.count("Cannot find unit for notify message")}


def set_server(bench: Bench, **settings: object) -> None:
    """Change [server] settings of nbunits.toml and restart the helper to apply them."""
    data = tomllib.loads(bench.box.read_file("/etc/nbunits/nbunits.toml"))
    data["server"].update(settings)
    bench.box.write_file("/etc/nbunits/nbunits.toml", tomli_w.dumps(data))
    bench.box.systemctl("restart", "nbunits-helper.service")


def settle(bench: Bench, busy: float = 0.05, longest: float = 180) -> float:
    """Every student stopped, then wait until the box uses less than `busy` of a core
    over 5 s (at most `longest` s): a part's baseline must not pay for the last part's
    shutdown (150 servers stopping). Returns the seconds waited."""
    stop_all(bench)
    return quiet(bench, busy, longest)


def quiet(bench: Bench, busy: float = 0.05, longest: float = 180) -> float:
    """Wait until the box uses less than `busy` of a core over 5 s (at most `longest`
    s), whatever runs. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < longest:
        cpu0 = bench.cpu_seconds()
        time.sleep(5)
        if not (bench.cpu_seconds() - cpu0) / 5 >= busy:  # or NaN: no cpuacct to ask
            break
    return time.monotonic() - t0


# ------------------------------------------------------------------ cold + breakdown


def cold_runs(bench: Bench, n: int, floor_user: str | None = None) -> tuple[dict, dict]:
    """N new students (first click: useradd, copy), then the same N again once stopped,
    each returning start followed by one floor start (interleaved: same machine load)."""
    new, returning = [], []
    floor: dict = {"ready": [], "podman_run_returned": [], "cpu": []}
    for _ in range(n):
        new.append(asyncio.run(one_cold(bench, secrets.token_hex(16))))
        stop_student(bench, new[-1].user)
    for c in new:
        returning.append(asyncio.run(one_cold(bench, _student_of(bench, c.user))))
        stop_student(bench, c.user)
        if floor_user:
            one = floor_runs(bench, floor_user, 1)
            floor["ready"] += one["ready"]
            floor["podman_run_returned"] += one["podman_run_returned"]
            floor["cpu"].append(one["cpu_per_start"])
            floor["argv"] = one["argv"]
    return {"new": new, "returning": returning}, floor


def _student_of(bench: Bench, user: str) -> str:
    return bench.box.read_file(f"/var/lib/nbunits/students/{user}").strip()


def breakdown(bench: Bench, runs: list[Cold]) -> dict[str, dict]:
    """Where a cold start's time goes, from the journal's timestamps (seconds)."""
    since = min(c.t0 for c in runs) - 1
    entries = bench.journal_since(since)
    phases: dict[str, list[float]] = {}
    for c in runs:
        marks = _marks(entries, c.user, c.t0)
        if not all(k in marks for k in ("starting", "first_log", "running", "started")):
            continue
        # The helper starts the server before it answers (provision.start): the 302
        # comes once Jupyter is ready, and the page follows it.
        steps = {
            "edX URL -> container unit Starting (dispatcher, helper: user, copy, start slot)":
                marks["starting"] - c.t0,
            "unit Starting -> podman up + Python imports -> Jupyter's first log line":
                marks["first_log"] - marks["starting"],
            "Jupyter first log line -> 'is running' (extensions, listen)":
                marks["running"] - marks["first_log"],
            "'is running' -> Jupyter's READY=1 (unit Started)":
                marks["started"] - marks["running"],
            "unit Started -> proxy started, the helper's answer, the 302":
                c.t0 + c.redirect - marks["started"],
            "302 -> nginx -> proxy -> Jupyter: page 200": c.page - c.redirect,
        }
        if "container_init" in marks:
            steps["  of which: unit Starting -> podman 'container init'"] = \
                marks["container_init"] - marks["starting"]
        for key, value in steps.items():
            phases.setdefault(key, []).append(value)
    return {k: summary(v) for k, v in phases.items()}


def _marks(entries: list[dict], user: str, t0: float) -> dict[str, float]:
    unit = f"nbunits-{COURSE}@{user}.service"
    marks: dict[str, float] = {}
    for e in entries:
        ts = int(e["__REALTIME_TIMESTAMP"]) / 1e6
        if ts < t0:
            continue
        msg = e.get("MESSAGE")
        if not isinstance(msg, str):
            continue
        if e.get("UNIT") == unit and e.get("_PID") == "1":
            if msg.startswith("Starting ") and "starting" not in marks:
                marks["starting"] = ts
            elif msg.startswith("Started ") and "started" not in marks:
                marks["started"] = ts
        elif e.get("_SYSTEMD_UNIT") == unit and "container init" in msg:
            marks.setdefault("container_init", ts)
        elif e.get("_SYSTEMD_UNIT") == unit and msg.startswith("[") and "]" in msg:
            # Jupyter's own lines ("[ServerApp] ..."): the container's output is the
            # unit's (--log-driver=passthrough).
            marks.setdefault("first_log", ts)
            if "is running at" in msg:
                marks.setdefault("running", ts)
    return marks


# ------------------------------------------------------------------ floor


def unit_settings(bench: Bench, user: str) -> tuple[list[str], dict[str, str], list[str]]:
    """The unit's own `podman run` argv, Environment= and RuntimeDirectory= for this user.

    Read from the generator's output, so the floor follows whatever the units say.
    """
    text = re.sub(r"\\\n\s*", " ", bench.box.read_file(GENERATED))
    home = f"/home/{user}"

    def fill(arg: str) -> str:
        return arg.replace("${HOME}", home).replace("%i", user)

    argv: list[str] = []
    env: dict[str, str] = {}
    dirs: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            words = shlex.split(value)
            # The unit's shell step (mkdir of the container home) before podman.
            words = words[words.index("/usr/bin/podman"):]
            argv = [fill(a) for a in words if not a.startswith("--sdnotify")]
        elif key == "Environment":
            for item in shlex.split(value):
                k, _, v = item.partition("=")
                env[k] = fill(v)
        elif key == "RuntimeDirectory":
            dirs += ["/run/" + fill(d) for d in value.split()]
    return argv, env, dirs


def _find_key(data: object, key: str) -> str | None:
    if isinstance(data, dict):
        for k, v in data.items():
            found = v if k == key and isinstance(v, str) else _find_key(v, key)
            if found:
                return found
    return None


def floor_runs(bench: Bench, user: str, n: int, change=None) -> dict:
    """`podman run` by hand as `user`, n times, with the unit's own flags, paths and
    token files (the unit is stopped); `change` edits the argv (variants.py)."""
    box = bench.box
    argv, env, dirs = unit_settings(bench, user)
    if change is not None:
        argv = change(argv)
    for d in dirs:
        box.run("install", "-d", "-o", user, "-g", user, "-m", "0700", d)
    # What the unit's first command copies: the token and the settings that carry it.
    settings_dir = next(d for d in dirs if "/settings/" in d)
    token, prefix = "", f"/nb/{COURSE}/{user}/"
    for suffix in ("env", "json"):
        text = box.read_file(f"/var/lib/nbunits/tokens/{COURSE}/{user}.{suffix}")
        # A bare Jupyter: no kernel started ahead (the product's, measured against it).
        text = "".join(line for line in text.splitlines(keepends=True)
                       if not line.startswith("NBUNITS_OPEN_NOTEBOOK="))
        box.write_file(f"{settings_dir}/jupyter.{suffix}", text, mode=0o400)
        box.run("chown", user, f"{settings_dir}/jupyter.{suffix}")
        for line in text.splitlines():
            if line.startswith("JUPYTER_TOKEN="):
                token = line.split("=", 1)[1].strip()
        if suffix == "json":
            data = json.loads(text)
            token = token or _find_key(data, "token") or ""
            prefix = _find_key(data, "base_url") or prefix
    sock_dir = next(d for d in dirs if "/podman/" in d)  # the user's: the floor's socket
    bench.shared.joinpath("floor.py").write_text(Path(__file__).with_name("floor.py").read_text())
    cpu0 = bench.cpu_seconds()
    out = box.run("/usr/bin/python3", f"{SHARED_IN_BOX}/floor.py", str(n), sock_dir, token,
                  prefix, "--", *argv, user=user, timeout=600,
                  env={**env, "HOME": f"/home/{user}", "NBUNITS_HOST": SERVER}).stdout
    cpu = (bench.cpu_seconds() - cpu0) / n
    runs = json.loads(out)
    return {"ready": [r["ready"] for r in runs],
            "podman_run_returned": [r["podman_run_returned"] for r in runs],
            "cpu_per_start": cpu, "argv": argv}


# ------------------------------------------------------------------ warm


async def warm(bench: Bench, n: int) -> dict:
    c = await one_cold(bench, secrets.token_hex(16), kernel=False)
    opened = c.opened
    assert opened is not None
    page = f"{opened.prefix}notebooks/{NOTEBOOK}"
    rest = f"{opened.prefix}api/contents/{NOTEBOOK}?content=0"
    results: dict[str, list[float]] = {k: [] for k in
                                       ("page_nginx", "page_direct", "rest_nginx", "rest_direct")}
    async with bench.session() as via_nginx, bench.jupyter_session(c.user) as direct:
        for _ in range(20):  # warm both paths (tornado's template cache, nginx workers)
            for s in (via_nginx, direct):
                for url in (page, rest):
                    await _timed_get(s, url, opened.headers)
        for _ in range(n):
            for key, s, url in (("page_nginx", via_nginx, page), ("page_direct", direct, page),
                                ("rest_nginx", via_nginx, rest), ("rest_direct", direct, rest)):
                results[key].append(await _timed_get(s, url, opened.headers))
    stop_student(bench, c.user)
    return results


async def _timed_get(session, url: str, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    async with session.get(url, headers=headers) as resp:
        await resp.read()
        assert resp.status == 200, (url, resp.status)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ burst


async def burst(bench: Bench, n: int) -> dict:
    students = [secrets.token_hex(16) for _ in range(n)]
    async with bench.session(timeout=600, limit=0) as session:
        cpu0 = bench.cpu_seconds()
        m0 = time.monotonic()

        async def one(student: str) -> float:
            opened = await open_exercise(session, COURSE, NOTEBOOK, student)
            if opened.page_status != 200:
                first_failures.append((user_for(student), opened.page_status, time.monotonic() - m0))
                # What the waking page does in a browser: reload after Retry-After.
                page = f"{opened.prefix}notebooks/{opened.notebook}?token={opened.token}"
                for _ in range(60):
                    await asyncio.sleep(1)
                    async with session.get(page) as resp:
                        await resp.read()
                        if resp.status == 200:
                            break
                else:
                    raise RuntimeError(f"page {opened.page_status}, still failing after 60 s")
            return time.monotonic() - m0

        first_failures: list[tuple[str, int, float]] = []

        since = journal_mark(bench)
        host0 = host_busy_seconds()
        results = await asyncio.gather(*(one(s) for s in students), return_exceptions=True)
        makespan = time.monotonic() - m0
        cpu = bench.cpu_seconds() - cpu0
        host = host_busy_seconds() - host0
    times = [r for r in results if isinstance(r, float)]
    errors = [repr(r)[:200] for r in results if not isinstance(r, float)]
    restarts = restarts_since(bench, since)
    journal = ""
    for user, _status, _when in first_failures[:2]:
        journal += bench.box.journal(f"nbunits-{COURSE}@{user}.service",
                                     f"nbunits-{COURSE}-proxy@{user}.service",
                                     f"nbunits-{COURSE}@{user}.socket", lines=25)
    return {"n": n, "ok": len(times), "first_try_ok": n - len(first_failures),
            "first_failures": first_failures, "errors": errors[:5], "makespan": makespan,
            **restarts, "times": times, "cpu": cpu, "host_busy": host, "failure_journal": journal[-6000:]}


def host_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every process, ours or not)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ cost of a student


def box_pids_of(bench: Bench, uid: int) -> list[int]:
    box_ns = os.readlink(f"/proc/{bench.box.leader_pid}/ns/pid")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            found = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
            if found is None or int(found.group(1)) != uid:
                continue
            # the box's own PID namespace, or a container's below it
            if os.readlink(entry / "ns/pid") == box_ns or _in_box(entry, bench.box.leader_pid):
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def _in_box(entry: Path, leader: int) -> bool:
    return _descends(int(entry.name), leader)


def pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cost(bench: Bench) -> dict:
    student = secrets.token_hex(16)
    c = asyncio.run(one_cold(bench, student, kernel=False))
    uid = int(bench.box.run("id", "-u", c.user).stdout)
    time.sleep(2)
    server_pids = box_pids_of(bench, uid)
    server = pss_kb(server_pids)
    procs = {p: Path(f"/proc/{p}/comm").read_text().strip() for p in server_pids}

    opened = c.opened
    assert opened is not None

    async def with_kernel() -> None:
        async with bench.session() as session:
            kernel_id = await open_notebook_kernel(session, opened)
            assert await execute(session, opened, kernel_id, "1+1") == "2"
    asyncio.run(with_kernel())
    time.sleep(3)
    with_kernel_kb = pss_kb(box_pids_of(bench, uid))
    _argv, _env, dirs = unit_settings(bench, c.user)
    runtime = sum(_du_kb(bench.host_path(d)) for d in dirs if bench.host_path(d).is_dir())
    stop_student(bench, c.user)
    time.sleep(2)
    idle_pids = box_pids_of(bench, uid)
    idle = {p: Path(f"/proc/{p}/comm").read_text().strip() for p in idle_pids}
    idle_pss = pss_kb(idle_pids)
    home = bench.work / "home" / c.user
    disk_home = _du_kb(home, exclude=COURSE)
    disk_course = _du_kb(home / COURSE)
    return {"user": c.user, "server_pss_kb": server, "server_procs": sorted(procs.values()),
            "server_kernel_pss_kb": with_kernel_kb,
            "idle_procs": sorted(idle.values()), "idle_pss_kb": idle_pss,
            "disk_beyond_files_kb": disk_home, "disk_own_files_kb": disk_course,
            "runtime_tmpfs_kb": runtime}


def _du_kb(path: Path, exclude: str | None = None) -> int:
    cmd = ["du", "-sk", "-x"]
    if exclude:
        cmd.append(f"--exclude=./{exclude}")
    out = subprocess.run([*cmd, "."], check=False, cwd=path, capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.stdout else -1
