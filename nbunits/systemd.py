"""systemd: the unit files shipped in units/, rendered per course, and systemctl.

Per-course units are templates in units/course/ with @PLACEHOLDERS@ filled from
the course's settings. nbunits-generator renders them at every daemon-reload (as
podman's quadlet does), so /etc/nbunits/courses/*.toml stays the one source of
truth: edit a course's settings, `systemctl daemon-reload`, and the next start of
each student's unit uses them. `systemctl cat nbunits-COURSE@STUDENT` shows the
result.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from .config import CourseConfig, Settings, list_courses, load_course
from .errors import NbunitsError
from .names import USER_RE, course_slice
from .run import run


def unit_files() -> Traversable:
    return resources.files("nbunits") / "data" / "units"


def static_units() -> Iterator[Traversable]:
    return (f for f in unit_files().iterdir() if f.is_file())


def course_placeholders(course: CourseConfig, settings: Settings) -> dict[str, str]:
    return {
        "IMAGE_STORE": str(settings.image_store),
        "COURSE": course.name,
        "SLICE": course_slice(course.name),
        "IMAGE": course.image,
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
    }


def fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def render_course(course: CourseConfig, settings: Settings) -> dict[str, str]:
    """{unit file name: text} for one course."""
    values = course_placeholders(course, settings)
    return {fill(t.name, values): fill(t.read_text(), values)
            for t in (unit_files() / "course").iterdir() if t.is_file()}


def provisioned_students(settings: Settings, course: str) -> list[str]:
    """Users with a token for this course: their sockets listen from boot on."""
    folder = settings.tokens_dir / course
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.env") if USER_RE.fullmatch(p.stem))


def generate(settings: Settings, out: Path) -> list[str]:
    """Write every course's units into `out`; returns the problems, one per course."""
    problems = []
    for name in list_courses(settings):
        try:
            course = load_course(settings, name)
        except NbunitsError as exc:
            problems.append(str(exc))
            continue
        for filename, text in render_course(course, settings).items():
            (out / filename).write_text(text)
        wants = out / "sockets.target.wants"
        for user in provisioned_students(settings, name):
            wants.mkdir(exist_ok=True)
            link = wants / f"nbunits-{name}@{user}.socket"
            link.unlink(missing_ok=True)
            link.symlink_to(out / f"nbunits-{name}@.socket")
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
