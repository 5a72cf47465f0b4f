"""Prometheus metrics, from systemd's own data: `nbunits metrics`.

Gauges come from the units now (running, starting, failed, memory) and the records
(provisioned). Admission control's figures (starts waiting for a slot,
launches refused at a cap, host-wide and per course) come from the helper
(nbunits/helper/admission.py). Counters and the start-time histogram come from the
journal:
systemd logs "Starting" and "Started" (or "Failed to start") for every start of a
student's Jupyter unit, with fixed MESSAGE_IDs; the time between the two is the
start time a student waits (podman, Jupyter, until Jupyter says it is ready). The journal is
read from where the previous run stopped (its cursor and the counts are kept in
/var/lib/nbunits/metrics.json), so counters only grow and each run reads little.

nbunits-metrics.timer writes them every 30 s for node_exporter's textfile
collector (/var/lib/prometheus/node-exporter/nbunits.prom).
"""

from __future__ import annotations

import bisect
import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from systemd import journal

from nbunits.core.config import Settings, count_provisioned, list_courses
from nbunits.core.events import Event
from nbunits.core.files import write_atomic
from nbunits.core.names import course_slice, course_unit_patterns, parse_unit
from nbunits.core.systemctl import show, unit_states
from nbunits.helper import outbox

# systemd's own catalog ids (systemd's src/systemd/sd-messages.h).
UNIT_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"
UNIT_FAILED = "be02cf6855d2428ba40df7e9d022f03d"
# Start-time buckets, seconds: a warm machine starts a student in about a second.
BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


@dataclass
class CourseStarts:
    starts: int = 0
    failed: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    seconds: float = 0.0
    graded: int = 0  # submissions graded (helper/grading.py's "graded" events)

    def observe(self, seconds: float) -> None:
        self.starts += 1
        self.seconds += seconds
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1


@dataclass
class State:
    cursor: str = ""
    starting: dict[str, int] = field(default_factory=dict)  # unit -> usec of "Starting"
    courses: dict[str, CourseStarts] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return cls(data["cursor"], data["starting"],
                       {c: CourseStarts(**v) for c, v in data["courses"].items()})
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return cls()  # none yet, or unreadable: count again from the journal

    def dump(self) -> str:
        return json.dumps({"cursor": self.cursor, "starting": self.starting,
                           "courses": {c: vars(v) for c, v in self.courses.items()}})


def read_journal(state: State) -> None:
    """Count the starts logged since the state's cursor."""
    reader = journal.Reader()
    try:
        for message_id in (UNIT_STARTING, UNIT_STARTED, UNIT_FAILED):
            reader.add_match(MESSAGE_ID=message_id)
        reader.add_match(_PID="1")
        reader.add_disjunction()  # or: a submission graded (nbunits' own event)
        reader.add_match(MESSAGE_ID=Event.GRADED.value)
        if state.cursor:
            reader.seek_cursor(state.cursor)
            reader.get_next()  # the entry at the cursor was counted last time
        for entry in reader:
            state.cursor = entry["__CURSOR"]
            if entry["MESSAGE_ID"].hex == Event.GRADED.value:
                graded = str(entry.get("COURSE", ""))
                if graded:
                    state.courses.setdefault(graded, CourseStarts()).graded += 1
                continue
            unit = str(entry.get("UNIT", ""))
            parsed = parse_unit(unit)
            if not parsed or parsed.kind != "container":
                continue
            usec = int(entry["__REALTIME_TIMESTAMP"].timestamp() * 1e6)
            course = state.courses.setdefault(parsed.units.course, CourseStarts())
            message_id = entry["MESSAGE_ID"].hex
            if message_id == UNIT_STARTING:
                state.starting[unit] = usec
            elif message_id == UNIT_STARTED and unit in state.starting:
                course.observe((usec - state.starting.pop(unit)) / 1e6)
            elif message_id == UNIT_FAILED:
                state.starting.pop(unit, None)
                course.failed += 1
    finally:
        reader.close()


@contextmanager
def locked_state(settings: Settings) -> Iterator[State]:
    """The saved state, saved again after the block; one run at a time."""
    path = settings.metrics_state
    with open(settings.metrics_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = State.load(path)
        yield state
        write_atomic(path, state.dump(), 0o600)


class Collector:
    def __init__(self, settings: Settings, state: State) -> None:
        self.settings, self.state = settings, state

    def collect(self) -> Iterator[Any]:
        courses = sorted(set(list_courses(self.settings)) | set(self.state.courses))
        # Every 30 s, so at a cost that grows with the active students only: their
        # units' states in one call, the memory of each course's slice (its servers,
        # kernels and proxies), the provisioned ones by one directory listing.
        states = unit_states(course_unit_patterns(None))
        slices = show([course_slice(c) for c in courses], ("MemoryCurrent",))
        gauges = {name: GaugeMetricFamily(f"nbunits_students_{name}", text, labels=["course"])
                  for name, text in (
                      ("provisioned", "Students who opened a notebook of the course"),
                      ("running", "Students whose Jupyter is running"),
                      ("starting", "Students whose Jupyter is starting"),
                      ("failed", "Students whose units are in the failed state"))}
        memory = GaugeMetricFamily("nbunits_memory_bytes",
                                   "Memory used by the course's students (its slice: "
                                   "Jupyter servers, kernels, proxies)",
                                   labels=["course"])
        starts = CounterMetricFamily("nbunits_starts", "Starts of students' Jupyter servers",
                                     labels=["course"])
        failed = CounterMetricFamily("nbunits_start_failures",
                                     "Starts of students' Jupyter servers that failed",
                                     labels=["course"])
        graded = CounterMetricFamily("nbunits_gradings", "Students' submissions graded "
                                     "(docs/admin.md, \"Grading\")", labels=["course"])
        seconds = HistogramMetricFamily(
            "nbunits_start_seconds", "Time from a start request to Jupyter answering",
            labels=["course"])
        # {course: {student: {"container"/"socket": ActiveState}}}
        by_course: dict[str, dict[str, dict[str, str]]] = {}
        for name, active in states.items():
            parsed = parse_unit(name)
            if parsed and parsed.kind in ("container", "socket"):
                by_course.setdefault(parsed.units.course, {}).setdefault(
                    parsed.units.user, {})[parsed.kind] = active
        for course in courses:
            mine = list(by_course.get(course, {}).values())
            counts = {
                "provisioned": count_provisioned(self.settings, course),
                "running": sum(u.get("container") == "active" for u in mine),
                "starting": sum(u.get("container") == "activating" for u in mine),
                "failed": sum("failed" in u.values() for u in mine)}
            for name, gauge in gauges.items():
                gauge.add_metric([course], counts[name])
            used = slices.get(course_slice(course), {}).get("MemoryCurrent", "")
            memory.add_metric([course], int(used) if used.isdigit() else 0)
            done = self.state.courses.get(course, CourseStarts())
            starts.add_metric([course], done.starts)
            failed.add_metric([course], done.failed)
            graded.add_metric([course], done.graded)
            cumulative, total = [], 0
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), done.buckets):
                total += count
                cumulative.append((bound, total))
            seconds.add_metric([course], cumulative, done.seconds)
        yield from (*gauges.values(), memory, starts, failed, graded, seconds)
        yield from self.admission()
        yield from self.scores()

    def admission(self) -> Iterator[Any]:
        """The helper's admission control, host-wide (its counters count from the
        helper's start; none before it first ran)."""
        try:
            figures: dict[str, Any] = json.loads(self.settings.admission_file.read_text())
        except (OSError, ValueError):
            return
        yield GaugeMetricFamily("nbunits_start_slots",
                                "Servers the host starts at once ([server] concurrent_starts)",
                                value=figures.get("start_slots", 0))
        yield GaugeMetricFamily("nbunits_starts_waiting",
                                "Starts waiting for a start slot, in order of arrival",
                                value=figures.get("waiting", 0))
        yield CounterMetricFamily("nbunits_starts_unpaced",
                                  "Starts that waited the longest a start waits for a slot "
                                  "and went ahead without one",
                                  value=figures.get("unpaced", 0))
        refused = CounterMetricFamily("nbunits_launches_refused",
                                      "Launches refused at an admission cap (503 with "
                                      "Retry-After): new students per minute, running servers",
                                      labels=["cap"])
        for cap in ("new_students", "servers"):
            refused.add_metric([cap], figures.get(f"refused_{cap}", 0))
        yield refused
        by_course = CounterMetricFamily(
            "nbunits_course_launches_refused", "Launches refused at a course's own cap "
            "(its new_students_per_minute, its max_running)", labels=["course", "cap"])
        courses = figures.get("courses")
        for course, counts in sorted((courses if isinstance(courses, dict) else {}).items()):
            for cap in ("new_students", "servers"):
                count = counts.get(cap, 0) if isinstance(counts, dict) else 0
                by_course.add_metric([course, cap], count if isinstance(count, int) else 0)
        yield by_course


    def scores(self) -> Iterator[Any]:
        """Scores on their way to the LMS (helper/outbox.py): sent, failed attempts,
        pending now (failing ones included)."""
        counts = outbox.counts_of(self.settings)
        pending: dict[str, int] = {}
        for score in outbox.scores(self.settings):
            if not score.sent:
                pending[score.course] = pending.get(score.course, 0) + 1
        sent = CounterMetricFamily("nbunits_scores_sent", "Scores the LMS accepted",
                                   labels=["course"])
        failed = CounterMetricFamily("nbunits_score_failures", "Attempts to send a score "
                                     "that failed (each is tried again)", labels=["course"])
        waiting = GaugeMetricFamily("nbunits_scores_pending", "Scores not sent yet",
                                    labels=["course"])
        for course in sorted(set(counts) | set(pending)):
            sent.add_metric([course], counts.get(course, {}).get("sent", 0))
            failed.add_metric([course], counts.get(course, {}).get("failed", 0))
            waiting.add_metric([course], pending.get(course, 0))
        yield from (sent, failed, waiting)


def collect_text(settings: Settings) -> str:
    """The metrics in Prometheus' text format (the journal read up to now)."""
    with locked_state(settings) as state:
        read_journal(state)
    registry = CollectorRegistry()
    registry.register(Collector(settings, state))
    return generate_latest(registry).decode()


def main(argv: list[str] | None = None) -> None:
    """nbunits-metrics.service, every 30 s: `python3 -m nbunits.admin.metrics --textfile F`.

    The same as `nbunits metrics --textfile F` without the command line's imports
    (nbformat, jsonschema, PyJWT...): ~0.3 s of CPU at each run, 1% of a core on its
    own with the timer's 30 s."""
    import argparse
    import sys

    from nbunits.core.config import load_settings
    from nbunits.core.errors import NbunitsError

    parser = argparse.ArgumentParser(prog="python3 -m nbunits.admin.metrics")
    parser.add_argument("--textfile", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        write_atomic(args.textfile, collect_text(load_settings()), 0o644)
    except (NbunitsError, OSError) as exc:
        sys.exit(f"nbunits metrics: {getattr(exc, 'message', exc)}")


if __name__ == "__main__":
    main()
