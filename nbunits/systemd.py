"""systemd: the unit files shipped in units/, rendered per course; systemctl; the journal.

Per-course units are templates in units/course/ with @PLACEHOLDERS@ filled from
the course's settings. nbunits-generator renders them at every daemon-reload (as
podman's quadlet does), so /etc/nbunits/courses/*.toml stays the one source of
truth: edit a course's settings, `systemctl daemon-reload`, and the next start of
each student's unit uses them. `systemctl cat nbunits-COURSE@STUDENT` shows the
result. It enables the sockets of recently active students only (activity.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from systemd import journal

from . import rootfs
from .activity import recent_students
from .config import CourseConfig, Settings, list_courses, load_course
from .errors import NbunitsError
from .files import fill
from .names import (
    USER_RE,
    StudentUnits,
    container_pattern,
    course_slice,
    course_unit_patterns,
    lock_template,
    parse_unit,
    socket_template,
)
from .run import run
from .seccomp import NO_USERNS_PROFILE, USERNS_PROFILE

QUOTA = "/opt/nbunits/venv/bin/python3 -m nbunits.quota"


def unit_files() -> Traversable:
    return resources.files("nbunits") / "data" / "units"


def static_units() -> Iterator[Traversable]:
    return (f for f in unit_files().iterdir() if f.is_file() and f.name.startswith("nbunits")
            and f.name.rsplit(".", 1)[-1] in ("service", "socket", "timer", "slice"))


def catalog_file() -> Traversable:
    """The journal catalog of nbunits' events (events.py)."""
    return unit_files() / "catalog" / "nbunits.catalog"


def course_placeholders(course: CourseConfig, settings: Settings) -> dict[str, str]:
    image = rootfs.resolve(settings.image_store, course.image)
    return {
        "COURSE": course.name,
        "SLICE": course_slice(course.name),
        "IMAGE": course.image,
        "ROOTFS": rootfs.unit_words((str(image.path),)),
        "IMAGE_ENV": rootfs.unit_words(tuple(f"--env={e}" for e in image.env)),
        "IMAGE_WORKDIR": rootfs.unit_words((image.workdir,)),
        "ENTRYPOINT": rootfs.unit_words(image.entrypoint),
        # An image without an entrypoint (an init such as tini) gets podman's.
        "INIT": "" if image.entrypoint else "--init",
        "ROOTFS_MOUNT": f"RequiresMountsFor={image.path}" if image.layers
                        else "# the image is one layer: its own directory, no mount",
        # Several hosts share the homes: the student's server runs on one at a time.
        "HOST_LOCK": (f"BindsTo={lock_template(course.name)}\n"
                      f"After={lock_template(course.name)}" if settings.server.multi_host
                      else "# one host: no lock on shared storage"),
        "NETWORK": course.network,
        "PROXY_IDLE_TIMEOUT": str(course.proxy_idle_timeout),
        "JUPYTER_IDLE_TIMEOUT": str(course.jupyter_idle_timeout),
        "KERNEL_IDLE_TIMEOUT": str(course.kernel_idle_timeout),
        "MAX_LIFETIME": str(course.max_lifetime),
        "MAX_LIFETIME_BACKSTOP": str(course.max_lifetime + 120),
        # Jupyter checks for idle kernels this often; a tenth of the timeout is close enough.
        "CULL_INTERVAL": str(max(1, min(60, course.kernel_idle_timeout // 10))),
        "MEMORY_MAX": course.memory_max,
        "CPU_QUOTA": course.cpu_quota,
        "TASKS_MAX": str(course.tasks_max),
        "COURSE_MEMORY_MAX": course.course_memory_max,
        # Mounted into the container: a real path, readable by every student.
        "JUPYTER_LOG_CONFIG": os.path.realpath(
            str(unit_files() / "jupyter" / "jupyter_server_config.py")),
        # The "started" event, sent by a shell script (units/bin/started-event.sh).
        "STARTED_EVENT": os.path.realpath(str(unit_files() / "bin" / "started-event.sh")),
        # quota.py: on btrfs the course's folders become subvolumes (as the student),
        # then root limits their qgroup (or, on ext4/xfs, the student's user quota).
        "DISK_QUOTA": (f"ExecStartPre={QUOTA} folders ${{HOME}} {course.name}\n"
                       f"ExecStartPre=+{QUOTA} limit %i {course.name} {course.disk_quota}"
                       if course.disk_quota
                       else "# no disk_quota: the home's file system is the limit"),
        # podman's default seccomp profile without btrfs subvolumes, and without
        # nested user namespaces unless the course allows them (seccomp.py).
        "SECCOMP_PROFILE": str(settings.etc_dir / (USERNS_PROFILE if course.user_namespaces
                                                   else NO_USERNS_PROFILE)),
    }


def render_course(course: CourseConfig, settings: Settings) -> dict[str, str]:
    """{unit file name: text} for one course (and the mount of its image's layers)."""
    values = course_placeholders(course, settings)
    units = {fill(t.name, values): fill(t.read_text(), values)
             for t in (unit_files() / "course").iterdir() if t.is_file()}
    image = rootfs.resolve(settings.image_store, course.image)
    if image.layers:
        template = (unit_files() / "image" / "rootfs.mount").read_text()
        units[image.mount_unit] = fill(template, {
            "IMAGE": course.image, "WHERE": str(image.path),
            "LOWERDIRS": ":".join(str(layer) for layer in image.layers)})
    return units


def provisioned_students(settings: Settings, course: str) -> list[str]:
    """Users with a token for this course: whoever opened one of its notebooks."""
    folder = settings.tokens_dir / course
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.env") if USER_RE.fullmatch(p.stem))


def count_provisioned(settings: Settings, course: str) -> int:
    """How many users have a token for this course (one directory listing, no path
    object per student: the metrics count it every 30 s)."""
    try:
        with os.scandir(settings.tokens_dir / course) as entries:
            return sum(1 for e in entries if e.name.endswith(".env")
                       and USER_RE.fullmatch(e.name[:-4]) is not None)
    except (FileNotFoundError, NotADirectoryError):
        return 0


def generate(settings: Settings, out: Path) -> list[str]:
    """Write every course's units into `out`; returns the problems, one per course."""
    problems = []
    for name in list_courses(settings):
        try:
            course = load_course(settings, name)
            rendered = render_course(course, settings)
        except NbunitsError as exc:
            problems.append(str(exc))
            continue
        for filename, text in rendered.items():
            (out / filename).write_text(text)
        # Only recently active students' sockets listen from boot on (activity.py):
        # systemd's memory and reload time follow them, not every provisioned student.
        wants = out / "sockets.target.wants"
        for user in recent_students(settings, name):
            wants.mkdir(exist_ok=True)
            link = wants / StudentUnits(name, user).socket
            link.unlink(missing_ok=True)
            link.symlink_to(out / socket_template(name))
    return problems


def generator_main() -> None:
    """systemd generator entry point: nbunits-generator NORMAL_DIR [EARLY_DIR LATE_DIR]."""
    from .config import load_settings

    if len(sys.argv) < 2:
        sys.exit("usage: nbunits-generator NORMAL_DIR [EARLY_DIR LATE_DIR]")
    try:
        problems = generate(load_settings(), Path(sys.argv[1]))
    except NbunitsError as exc:
        problems = [str(exc)]
    for problem in problems:
        # Generators' stderr goes to the kernel log / journal.
        print(f"nbunits-generator: skipped: {problem}", file=sys.stderr)


def systemctl(*args: str) -> str:
    return run(["systemctl", *args]).stdout


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
    """Stop every student unit of a course (what is not loaded is not there to stop)."""
    run(["systemctl", "stop", *course_unit_patterns(course)], check=False)


# systemd's "Started UNIT." message: one per start of a unit.
STARTED_MESSAGE_ID = "39f53479d3a045ac8e11786248231fbf"


def start_days(course: str, days: int) -> Iterator[str]:
    """The day (YYYY-MM-DD) of each start of a student's Jupyter in the last `days`."""
    reader = journal.Reader()
    try:
        reader.add_match(MESSAGE_ID=STARTED_MESSAGE_ID, _PID="1")
        reader.seek_realtime(datetime.now() - timedelta(days=days))
        for entry in reader:
            parsed = parse_unit(str(entry.get("UNIT", "")))
            if parsed and parsed.kind == "container" and parsed.units.course == course:
                yield entry["__REALTIME_TIMESTAMP"].strftime("%Y-%m-%d")
    finally:
        reader.close()
