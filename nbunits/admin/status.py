"""What runs, from systemd's own data: `nbunits status` and `nbunits logs`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from systemd import journal

from nbunits.admin.terminal import escape
from nbunits.core.config import Settings, list_courses, load_course, provisioned_students
from nbunits.core.errors import NbunitsError
from nbunits.core.names import (
    COURSE_RE,
    STUDENTS_JOURNAL,
    USER_RE,
    StudentUnits,
    check_user,
    course_unit_patterns,
    parse_unit,
    user_for,
)
from nbunits.core.systemctl import list_units, show

_PROPS = ("ActiveState", "SubState", "Result", "StateChangeTimestamp", "MemoryCurrent",
          "ExecMainStatus")


@dataclass(frozen=True)
class StudentState:
    course: str
    student: str  # the Linux user
    id: str  # their LMS (edX) id; "" where unknown (the records are root's)
    state: str  # running, starting, stopping, idle, stopped, failed
    since: str  # ISO 8601
    memory: int | None  # bytes, while running and where cgroups report it

    def row(self) -> list[str]:
        return [self.course, self.student, self.id or "-", self.state, self.since or "-",
                _size(self.memory)]


def student_states(settings: Settings, course: str | None = None) -> list[StudentState]:
    """Every provisioned student, with their id: `nbunits status` (reads a file per
    student: seconds with 100,000 of them)."""
    pairs, units = _loaded(course)
    pairs |= _provisioned(settings, course)
    ids = {u: _recorded_id(settings, u) for _, u in pairs}
    return [_state_of(StudentUnits(c, u), ids[u], units) for c, u in sorted(pairs)]


def _loaded(course: str | None) -> tuple[set[tuple[str, str]], dict[str, dict[str, str]]]:
    parsed = [(name, p) for name in list_units(course_unit_patterns(course))
              if (p := parse_unit(name)) and (course is None or p.units.course == course)]
    units = show([name for name, p in parsed if p.kind not in ("proxy", "lock", "jupyter")], _PROPS)
    return {(p.units.course, p.units.user) for _, p in parsed}, units


def _recorded_id(settings: Settings, user: str) -> str:
    try:
        return settings.student_record(user).read_text().strip()
    except OSError:  # none, or not root
        return ""


def _provisioned(settings: Settings, course: str | None) -> set[tuple[str, str]]:
    """Students with a token but no loaded unit (stopped and collected by systemd)."""
    try:
        courses = [course] if course else [f.name for f in settings.tokens_dir.iterdir()
                                           if f.is_dir() and COURSE_RE.fullmatch(f.name)]
        return {(c, user) for c in courses for user in provisioned_students(settings, c)}
    except PermissionError:
        return set()


def _state_of(units: StudentUnits, student_id: str,
              shown: dict[str, dict[str, str]]) -> StudentState:
    container = shown.get(units.container, {})
    socket = shown.get(units.socket, {})
    active = container.get("ActiveState", "inactive")
    if active in ("active", "activating", "deactivating", "failed"):
        state = {"active": "running", "activating": "starting", "deactivating": "stopping",
                 "failed": f"failed ({_why(container)})"}[active]
        decided_by = container
    elif socket.get("ActiveState") == "active":
        state, decided_by = "idle", socket
    elif socket.get("ActiveState") == "failed":
        state, decided_by = f"failed ({socket.get('Result', '?')})", socket
    else:
        state, decided_by = "stopped", socket
    memory = container.get("MemoryCurrent", "")
    return StudentState(units.course, units.user, student_id, state,
                        decided_by.get("StateChangeTimestamp", ""),
                        int(memory) if active == "active" and memory.isdigit() else None)


def _why(unit: dict[str, str]) -> str:
    """systemd's result, with the exit status (125: podman could not run the image)."""
    status = unit.get("ExecMainStatus", "0")
    return unit.get("Result", "?") + (f", exit status {status}" if status not in ("", "0") else "")


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return "-"


def format_table(states: list[StudentState]) -> str:
    rows = [["COURSE", "STUDENT", "ID", "STATE", "SINCE", "MEMORY"],
            *([escape(cell) for cell in s.row()] for s in states)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    counts: dict[str, int] = {}
    for s in states:
        key = s.state.split(" ")[0]
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no students"
    return "\n".join(lines + [f"\n{len(states)} student(s): {summary}"])


def course_lines(settings: Settings, course: str | None = None) -> list[str]:
    """How students get in, per course (an `open` legacy link says so in capitals)."""
    lines = []
    for name in [course] if course else list_courses(settings):
        try:
            lines.append(f"{name}: {load_course(settings, name).how_students_get_in()}")
        except NbunitsError as exc:
            lines.append(f"{name}: BROKEN: {exc}")
    return lines


def as_dicts(states: list[StudentState]) -> list[dict[str, object]]:
    return [asdict(s) for s in states]


def resolve_student(student: str) -> str:
    """A student given as a Linux user (nb...) or as their edX id."""
    return check_user(student) if USER_RE.fullmatch(student) else user_for(student)


def journalctl_args(course: str, user: str, extra: list[str]) -> list[str]:
    """journalctl for everything about one student: their units, and the dispatcher's
    and helper's lines tagged COURSE=/STUDENT= (journal matches joined by '+' are ORed),
    from the system journal and the students' namespace (their container's output) at
    once. journalctl shows a line with control characters as "[N blob data]"."""
    units = StudentUnits(course, user)
    matches: list[str] = []
    for unit in units.started:
        matches += [f"_SYSTEMD_UNIT={unit}", "+", f"UNIT={unit}", "+"]
    matches += [f"COURSE={course}", f"STUDENT={user}"]
    return ["journalctl", f"--namespace=+{STUDENTS_JOURNAL}", "--output=short-iso", *extra,
            *matches]


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
