"""Which students systemd keeps loaded: the recently active ones only.

Each (course, student) that a click or a wake reaches gets a mark,
/var/lib/nbunits/recent/<course>/<user>, touched at every launch. The generator
enables the sockets of the marked students only (so they listen again after a
reboot), and `nbunits unload` (nbunits-unload.timer) stops the units of those idle
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

from .config import Settings
from .names import USER_RE, StudentUnits, course_unit_patterns, parse_unit
from .run import run

logger = logging.getLogger(__name__)


def mark(settings: Settings, units: StudentUnits) -> None:
    """This student is active in this course now."""
    path = settings.recent_dir / units.course / units.user
    try:
        os.utime(path)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)


def recent_students(settings: Settings, course: str) -> list[str]:
    """The course's students with a mark: whose sockets the generator enables."""
    folder = settings.recent_dir / course
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
        folder = settings.recent_dir / course
        for entry in os.scandir(folder):
            if USER_RE.fullmatch(entry.name) and now - entry.stat().st_mtime > older_than:
                found.append(folder / entry.name)
    return found


def loaded_sockets() -> list[StudentUnits]:
    """Every student socket systemd has loaded, whatever its state."""
    out = run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--full",
               "--type=socket", *course_unit_patterns()]).stdout
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
    out = run(["systemctl", "is-active", *names], check=False).stdout.split()
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
        run(["systemctl", "stop", *[n for u in batch for n in (u.socket, u.proxy)]],
            check=False, timeout=300)
    if chosen:
        logger.info("unloaded %d idle student(s)' units", len(chosen))
    return chosen


def _key(units: StudentUnits) -> tuple[str, str]:
    return units.course, units.user


def _dirs(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder) if e.is_dir()]
    except FileNotFoundError:
        return []


def main() -> None:
    """nbunits-unload.service: python3 -m nbunits.activity."""
    from .config import load_settings
    from .service import setup_logging

    setup_logging()
    unload(load_settings())


if __name__ == "__main__":
    main()
