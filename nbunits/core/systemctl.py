"""The one way nbunits talks to systemd's manager: `systemctl`, checked.

Every start, stop, reset and query of a unit goes through here (a test greps for
any other `systemctl` call), so each call is checked the same way and, when it
fails, names the command as one can paste it into a shell (run.py).
Used by root's sides (the helper, the units' steps, the admin's tools); the
dispatcher and the generator never call systemctl.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nbunits.core.names import (
    container_pattern,
    course_unit_patterns,
    grading_pattern,
    parse_unit,
)
from nbunits.core.run import run, run_async


def systemctl(*args: str, check: bool = True, timeout: float = 300) -> str:
    """`systemctl ARGS`; its output. A failure raises CommandError unless check=False."""
    return run(["systemctl", *args], check=check, timeout=timeout).stdout


async def systemctl_async(*args: str, check: bool = True, timeout: float = 120
                          ) -> tuple[int, str, str]:
    """`systemctl ARGS` from the event loop: (exit code, stdout, stderr)."""
    return await run_async(["systemctl", *args], check=check, timeout=timeout)


def daemon_reload() -> None:
    systemctl("daemon-reload")


def list_units(patterns: list[str], states: str = "") -> list[str]:
    """Names of the loaded units matching `patterns` (in any state, or in `states`)."""
    out = systemctl("list-units", "--all", "--plain", "--no-legend", "--full",
                    *([f"--state={states}"] if states else []), *patterns)
    return [line.split()[0] for line in out.splitlines() if line.split()]


def unit_states(patterns: list[str]) -> dict[str, str]:
    """{unit: ActiveState} of the loaded units matching `patterns`: one list-units
    call, no property read per unit (PID 1 builds every property of a unit for
    `systemctl show`, which costs it ~ms per unit)."""
    out = systemctl("list-units", "--all", "--plain", "--no-legend", "--full", *patterns)
    return {words[0]: words[2] for words in map(str.split, out.splitlines()) if len(words) >= 3}


def show(names: list[str], props: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """{unit: {property: value}} from `systemctl show`; timestamps in ISO 8601 (UTC)."""
    if not names:
        return {}
    out = systemctl("show", "--timestamp=unix", "--property=" + ",".join(("Id", *props)),
                    *names)
    units = {}
    for block in out.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        units[fields.get("Id", "")] = {k: iso_time(v) if k.endswith("Timestamp") else v
                                       for k, v in fields.items()}
    return units


def iso_time(unix: str) -> str:
    """systemctl's --timestamp=unix ("@1764510715") as ISO 8601; "" for never."""
    if not unix.startswith("@"):
        return unix
    return datetime.fromtimestamp(int(unix[1:]), UTC).isoformat()


def active_users(course: str) -> list[str]:
    """Students whose Jupyter for this course is running (or starting, or stopping)."""
    users = []
    for name in list_units([container_pattern(course)],
                           "active,activating,deactivating,reloading"):
        parsed = parse_unit(name)
        if parsed and parsed.kind == "container" and parsed.units.course == course:
            users.append(parsed.units.user)
    return users


def stop_course(course: str) -> None:
    """Stop every student unit of a course, gradings included (what is not loaded is
    not there to stop): a course removed or expired runs nothing of its students."""
    systemctl("stop", *course_unit_patterns(course), grading_pattern(course), check=False)
