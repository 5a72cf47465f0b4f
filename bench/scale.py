"""Scale: a whole MOOC (100,000 students) provisioned on one host.

Measured on the empty host first, then again once N students are provisioned, in
the same box and run: `daemon-reload` time and systemd's (PID 1) memory, the cost
of creating one more student (users.ensure, as the helper runs it), user lookups,
and the first click of new students through the real path (edX URL -> page 200).
After, also: the bookmarked link of a provisioned student whose units are not
loaded (nginx's 502 fallback wakes them).

Provisioning the N is batched (bench/provision_bulk.py, in the box): the files the
helper leaves for a student who clicked once a while ago (JSON user records, 0700
home with its root-owned record, the id record, the token files), written by
nbunits' own functions, without a mark of recent activity (their units are not
loaded, as after `nbunits-unload.timer`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path

from nbunits.core.names import user_for

from .box import COURSE, NOTEBOOK, SHARED_IN_BOX, VENV, Bench
from .parts import one_cold, settle, stop_student
from .stats import summary

HERE = Path(__file__).parent


def pid1_kb(bench: Bench) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{bench.box.leader_pid}/smaps_rollup").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("Rss", "Pss"):
            values[key.lower() + "_kb"] = int(line.split()[1])
    return values


def reload_times(bench: Bench, n: int = 5) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        bench.box.systemctl("daemon-reload", timeout=900)
        times.append(time.monotonic() - t0)
    return times


def loaded_units(bench: Bench) -> int:
    out = bench.box.systemctl("list-units", "--all", "--plain", "--no-legend",
                              f"nbunits-{COURSE}@*", f"nbunits-{COURSE}-proxy@*", timeout=300).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def in_box(bench: Bench, script: str, *args: str, timeout: float = 3600) -> dict:
    """Run one of bench/'s scripts in the box with the product's Python, as root."""
    (bench.shared / script).write_text((HERE / script).read_text())
    out = bench.box.run(str(VENV / "bin" / "python3"), f"{SHARED_IN_BOX}/{script}", *args,
                        timeout=timeout).stdout
    return json.loads(out.strip().splitlines()[-1])


def account_costs(bench: Bench, n: int) -> dict:
    """Seconds per users.ensure() of a new student, and per lookup of known ones."""
    return in_box(bench, "provision_bulk.py", "ensure", str(n))


def first_clicks(bench: Bench, n: int) -> dict:
    """New students' first clicks through the real path: edX URL -> page 200; the
    302 alone (dispatcher + helper: what the number of students could slow); the
    box's CPU seconds until page 200 (less sensitive to the machine's load)."""
    runs = []
    for _ in range(n):
        c = asyncio.run(one_cold(bench, secrets.token_hex(16), kernel=False))
        runs.append(c)
        stop_student(bench, c.user)
    return {"first_click": summary([c.page for c in runs]),
            "first_click_302": summary([c.redirect for c in runs]),
            "first_click_cpu": summary([c.cpu_to_page for c in runs])}


def measure(bench: Bench, clicks: int) -> dict:
    return {"pid1": pid1_kb(bench), "reload": summary(reload_times(bench)),
            "loaded_units": loaded_units(bench), "accounts": account_costs(bench, 20),
            **first_clicks(bench, clicks), "loadavg": os.getloadavg()}


async def wake_by_bookmark(bench: Bench, student: str) -> float:
    """A provisioned student not loaded in systemd opens their bookmarked /nb/ link
    (what nginx's error_page 502 does: the dispatcher's wake path), page 200."""
    async with bench.session() as session:
        # The link the course page would have handed out (and the browser kept).
        async with session.get(f"/ipythonExercice/{COURSE}/{NOTEBOOK}/{student}",
                               allow_redirects=False) as resp:
            location = resp.headers["Location"]
        user = user_for(student)
        bench.box.systemctl("stop", f"nbunits-{COURSE}@{user}.socket",
                            f"nbunits-{COURSE}-proxy@{user}.service",
                            f"nbunits-{COURSE}@{user}.service")
        bench.box.run("rm", "-f", f"/var/lib/nbunits/recent/{COURSE}/{user}")
        t0 = time.monotonic()
        async with session.get(location, headers={"Accept": "text/html"}) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        elapsed = time.monotonic() - t0
    stop_student(bench, user)
    return elapsed


def without_initgroups_line(bench: Bench, clicks: int) -> dict:
    """The first clicks again with /etc/nsswitch.conf as before `nbunits install`
    added its initgroups: line (nbunits/admin/nsswitch.py): what that line saves, same run."""
    path = "/etc/nsswitch.conf"
    kept = bench.box.read_file(path)
    plain = "".join(line for line in kept.splitlines(keepends=True)
                    if not line.startswith(("initgroups", "# nbunits: initgroups")))
    bench.box.write_file(path, plain)
    try:
        return first_clicks(bench, clicks)
    finally:
        bench.box.write_file(path, kept)


# The container unit's group lookups as before the students' nsswitch.conf: podman's
# libsubid lookup through nss-systemd, and a `chown USER:` of a runtime folder (as of
# the socket folder then; one command more than before, ~10 ms). An empty
# BindReadOnlyPaths= empties BindPaths= too (one list in systemd).
GROUP_LOOKUPS_BEFORE = (
    "[Service]\nBindReadOnlyPaths=\nBindPaths=/home/%i\n"
    f"ExecStartPre=+/bin/chown %i: /run/nbunits/settings/{COURSE}/%i\n")


def with_group_lookups_of_before(bench: Bench, clicks: int) -> dict:
    """The first clicks again with the group lookups nbunits made before (what the
    students' nsswitch.conf and `chown USER` save, same run)."""
    dropin = f"/run/systemd/system/nbunits-{COURSE}@.service.d/zz-bench-groups.conf"
    bench.box.write_file(dropin, GROUP_LOOKUPS_BEFORE)
    bench.box.systemctl("daemon-reload")
    try:
        return first_clicks(bench, clicks)
    finally:
        bench.box.run("rm", "-f", dropin)
        bench.box.systemctl("daemon-reload")


def scale(bench: Bench, n: int, clicks: int = 20) -> dict:
    result: dict = {"n": n}
    result["nsswitch"] = bench.box.read_file("/etc/nsswitch.conf")
    result["before"] = measure(bench, clicks)
    t0 = time.monotonic()
    result["provision"] = in_box(bench, "provision_bulk.py", "bulk", str(n), COURSE)
    result["provision_seconds"] = time.monotonic() - t0
    # The batch wrote ~400,000 files in a few minutes (a real host makes its students
    # over weeks): the clicks wait until they are on disk and the box is idle, so they
    # measure the number of students, not the batch's aftermath. (Measured once: the
    # sync took 0 s and the settle 10 s; the batch's end had left little behind.)
    t0 = time.monotonic()
    bench.box.run("sync", timeout=1800)
    result["sync_seconds"] = time.monotonic() - t0
    result["settle_seconds"] = settle(bench)
    result["after"] = measure(bench, clicks)
    result["after_without_initgroups_line"] = without_initgroups_line(bench, max(3, clicks // 2))
    result["after_with_group_lookups_of_before"] = with_group_lookups_of_before(
        bench, max(3, clicks // 2))
    sample = result["provision"]["sample"][:clicks]
    result["wake_by_bookmark"] = summary([asyncio.run(wake_by_bookmark(bench, s))
                                          for s in sample])
    return result
