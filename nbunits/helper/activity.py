"""Which students systemd keeps loaded: the recently active ones only.

Each (course, student) that a click or a wake reaches gets a mark,
/var/lib/nbunits/recent/<course>/<user>, touched at every launch. At boot, once /var
is mounted, nbunits-listen.service starts the sockets of the marked students only (so
their bookmarks work at once after a reboot), and nbunits-unload.timer stops the units of those idle
for longer than [server] unload_after and removes their marks: systemd then forgets
them (an inactive unit nothing references is not kept in memory). A student whose
units are not loaded still gets in: the course link starts their socket, and a
bookmarked /nb/ link finds no socket, so nginx falls back to the dispatcher's wake
path, which starts it. systemd's cost thus follows the active students, not the
provisioned ones.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from nbunits.core.config import Settings, list_courses
from nbunits.core.names import USER_RE, StudentUnits, course_unit_patterns, parse_unit
from nbunits.core.systemctl import systemctl

logger = logging.getLogger(__name__)


def mark(settings: Settings, units: StudentUnits) -> None:
    """This student is active in this course now."""
    path = settings.recent_mark(units)
    try:
        os.utime(path)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)


def recent_students(settings: Settings, course: str) -> list[str]:
    """The course's students with a mark: whose sockets listen from boot on."""
    folder = settings.course_recent(course)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if USER_RE.fullmatch(n))


def idle_marks(settings: Settings, older_than: float, now: float | None = None) -> list[Path]:
    """Marks not touched for `older_than` seconds."""
    now = time.time() if now is None else now
    found = []
    try:
        courses = os.listdir(settings.recent_dir)
    except FileNotFoundError:
        return []
    for course in courses:
        folder = settings.course_recent(course)
        for entry in os.scandir(folder):
            if USER_RE.fullmatch(entry.name) and now - entry.stat().st_mtime > older_than:
                found.append(folder / entry.name)
    return found


def loaded_sockets() -> list[StudentUnits]:
    """Every student socket systemd has loaded, whatever its state."""
    out = systemctl("list-units", "--all", "--plain", "--no-legend", "--full",
                    "--type=socket", *course_unit_patterns())
    found = []
    for line in out.splitlines():
        parsed = parse_unit(line.split()[0]) if line.split() else None
        if parsed and parsed.kind == "socket":
            found.append(parsed.units)
    return found


def running(units: list[StudentUnits]) -> set[StudentUnits]:
    """Those whose container or proxy is not inactive (running, starting, stopping)."""
    if not units:
        return set()
    names = [n for u in units for n in (u.container, u.proxy)]
    out = systemctl("is-active", *names, check=False).split()
    busy = {name for name, state in zip(names, out, strict=False)
            if state not in ("inactive", "failed")}
    return {u for u in units if u.container in busy or u.proxy in busy}


def unload(settings: Settings, now: float | None = None) -> list[StudentUnits]:
    """Stop the units of students idle for longer than [server] unload_after (and of
    loaded students without a mark, from before marks existed); never of a student
    whose Jupyter runs. Returns whom it unloaded."""
    idle = {StudentUnits(path.parent.name, path.name): path
            for path in idle_marks(settings, settings.server.unload_after, now)}
    marked = {StudentUnits(c, u) for c in _dirs(settings.recent_dir)
              for u in recent_students(settings, c)}
    candidates = set(idle) | {u for u in loaded_sockets() if u not in marked}
    chosen = sorted(set(candidates) - running(sorted(candidates, key=_key)), key=_key)
    for units in chosen:
        if units in idle:
            idle[units].unlink(missing_ok=True)
    # One systemctl call for them all: stopping a socket removes its file, so the next
    # /nb/ request takes the wake path. Stopped units nothing references are unloaded.
    for start in range(0, len(chosen), 500):
        batch = chosen[start:start + 500]
        systemctl("stop", *[n for u in batch for n in (u.socket, u.proxy)], check=False)
    if chosen:
        logger.info("unloaded %d idle student(s)' units", len(chosen))
    return chosen


def listen(settings: Settings) -> int:
    """Start the sockets of the recently active students (nbunits-listen.service, at
    boot once /var is mounted); returns how many. The others' first request wakes them."""
    sockets = [StudentUnits(course, user).socket for course in list_courses(settings)
               for user in recent_students(settings, course)]
    for start in range(0, len(sockets), 500):
        # --no-block: queued, not waited for one by one (each only makes a socket).
        systemctl("start", "--no-block", *sockets[start:start + 500], check=False)
    logger.info("%d recently active student(s)' sockets listen", len(sockets))
    return len(sockets)


def _key(units: StudentUnits) -> tuple[str, str]:
    return units.course, units.user


def _dirs(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder) if e.is_dir()]
    except FileNotFoundError:
        return []


def main() -> None:
    """python3 -m nbunits.helper.activity unload|listen (nbunits-unload.service,
    nbunits-listen.service)."""
    import sys

    from nbunits.core.config import load_settings
    from nbunits.core.service import setup_logging

    setup_logging()
    action = sys.argv[1] if len(sys.argv) > 1 else "unload"
    if action == "listen":
        listen(load_settings())
    elif action == "unload":
        unload(load_settings())
    else:
        sys.exit("usage: python3 -m nbunits.helper.activity unload|listen")


if __name__ == "__main__":
    main()
