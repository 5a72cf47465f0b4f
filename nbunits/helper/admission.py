"""Admission control in the helper: new students per minute, running servers.

nginx limits launches per client (limit_req, nginx/nbunits-locations.conf); here,
host-wide and per course, before anything is created or started:
- at most [server] new_students_per_minute users are created in any 60 s, and
  at most the course's own new_students_per_minute of its students (0: no cap of
  its own), so that a flood of made-up ids on one course leaves room for the
  others' new students;
- at most Server.max_running() servers run at once (a memory budget over a
  server's share), and at most the course's own max_running of its students (0:
  no cap of its own): a launch that would start one more is refused;
- at most Server.start_slots() servers start at once (start_slot): the others
  wait their turn, in order of arrival. A start is mostly CPU, so N at once on
  fewer cores each take N times longer and, sharing the caches, more CPU too; in
  turn, the first students of a burst are served at once and the whole burst
  sooner. A start that has waited QUEUE_WAIT seconds goes ahead anyway: this
  cap paces, it never refuses.
Past a cap the launch fails with code "busy" (the dispatcher answers 503 with
Retry-After and a page that retries by itself); what runs is never touched. The
admin gets one journal line when a cap starts refusing, and one a minute while
it does, with the count: a "capped" event (events.py) naming the cap.

The counts live in the helper's memory (one process serves every launch); a
helper restart forgets the last minute's creations, which a cap can afford. The
helper publishes what the metrics need (Settings.admission_file: starts waiting
for a slot, launches refused by each cap since it started, host-wide and by each
course's own caps) for `nbunits metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from nbunits.core.config import Server
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.events import Event
from nbunits.core.events import log as log_event
from nbunits.core.files import write_atomic

logger = logging.getLogger(__name__)

WINDOW = 60.0
# A server admitted but not running yet (its socket not made yet) still counts.
STARTING_GRACE = 60.0
RETRY_NEW = 20
RETRY_FULL = 30
# Longer than a burst of 100 takes on two cores (~55 s); with a start after it, within
# nginx's and the dispatcher's patience with the launch (120 s).
QUEUE_WAIT = 60.0


class Busy(NbunitsError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(Code.BUSY, message, retry_after=retry_after)


@dataclass
class Admission:
    server: Server
    jupyter_run_dir: Path  # /run/nbunits/jupyter/<course>/<user>.sock: exists while a server runs
    mem_total: int = 0
    created: deque[float] = field(default_factory=deque)
    created_in: dict[str, deque[float]] = field(default_factory=dict)  # per course
    starting: dict[tuple[str, str], float] = field(default_factory=dict)
    last_said: dict[str, float] = field(default_factory=dict)
    queue_wait: float = QUEUE_WAIT
    state_file: Path | None = None  # where publish() writes, if anywhere

    def __post_init__(self) -> None:
        if not self.mem_total:
            self.mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self.start_slots = self.server.start_slots(len(os.sched_getaffinity(0)))
        self.slots = asyncio.Semaphore(self.start_slots)
        self.waiting = 0  # starts waiting for a slot now
        # Since the helper started, for the metrics' counters; `told`: each one's value
        # at the admin's last journal line about it.
        self.totals = {"unpaced": 0, "refused_new_students": 0, "refused_servers": 0}
        # Launches refused by a course's own caps: {course: {"new_students"|"servers": n}}.
        self.course_totals: dict[str, dict[str, int]] = {}
        self.told: dict[str, int] = {}
        self.publish()

    def publish(self) -> None:
        """Write the figures the metrics read (nbunits/admin/metrics.py), if asked to."""
        if self.state_file is None:
            return
        try:
            write_atomic(self.state_file, json.dumps({
                "start_slots": self.start_slots, "waiting": self.waiting, **self.totals,
                "courses": self.course_totals}))
        except OSError as exc:  # the metrics lag; launches go on
            logger.warning("admission: cannot write %s: %s", self.state_file, exc)

    @contextlib.asynccontextmanager
    async def start_slot(self, course: str, user: str) -> AsyncIterator[None]:
        """Hold one of the host's start slots while a server starts (waiting for one
        first, at most queue_wait seconds; then the start goes ahead without)."""
        if not self.slots.locked():
            await self.slots.acquire()  # a free slot: taken at once, no turn of the loop
            held = True
        else:
            self.waiting += 1
            self.publish()
            try:
                await asyncio.wait_for(self.slots.acquire(), self.queue_wait)
                held = True
            except TimeoutError:
                held = False
                self._overdue(course, user)
            finally:
                self.waiting -= 1
                self.publish()
        try:
            yield
        finally:
            if held:
                self.slots.release()

    def _count(self, key: str, now: float, course: str | None = None) -> int | None:
        """Count one more of `key` (published for the metrics), host-wide or against
        `course`'s own caps; when the admin is due a line about it (one a minute at
        most), how many since the last line."""
        if course is None:
            self.totals[key] += 1
            total, said = self.totals[key], key
        else:
            counts = self.course_totals.setdefault(course, {})
            total = counts[key] = counts.get(key, 0) + 1
            said = f"{key} of {course}"
        self.publish()
        if now - self.last_said.get(said, -WINDOW) < WINDOW:
            return None
        self.last_said[said] = now
        since, self.told[said] = total - self.told.get(said, 0), total
        return since

    def _overdue(self, course: str, user: str) -> None:
        count = self._count("unpaced", time.monotonic())
        if count is not None:
            logger.warning("admission: %d start(s) waited %g s for one of the %d start "
                           "slots and went ahead anyway since the last such line (the "
                           "host starts more servers than its CPUs keep up with)",
                           count, self.queue_wait, self.start_slots,
                           extra={"COURSE": course, "STUDENT": user})

    def new_student(self, course: str | None = None, user: str | None = None,
                    now: float | None = None, course_cap: int = 0) -> None:
        """Count a user about to be created, or refuse it (`course_cap`: the course's
        own new_students_per_minute, 0 for none)."""
        now = time.monotonic() if now is None else now
        mine = self.created_in.setdefault(course or "", deque())
        for window in (self.created, mine):
            while window and now - window[0] > WINDOW:
                window.popleft()
        if course and course_cap and len(mine) >= course_cap:
            self._refuse("new_students", f"{course_cap} new students per minute", now,
                         course, user, own=True)
            raise Busy("Many students of this course are starting at once.", RETRY_NEW)
        if len(self.created) >= self.server.new_students_per_minute:
            self._refuse("new_students", f"{self.server.new_students_per_minute} new students "
                         "per minute", now, course, user)
            raise Busy("Many students are starting at once.", RETRY_NEW)
        self.created.append(now)
        mine.append(now)
        for name in [c for c, window in self.created_in.items() if not window]:
            del self.created_in[name]

    def start(self, course: str, user: str, now: float | None = None,
              course_cap: int = 0) -> None:
        """Count a server about to start, or refuse it: the host is full, or the
        course is (`course_cap`: its own max_running, 0 for none)."""
        now = time.monotonic() if now is None else now
        running = self.running()
        for key, since in list(self.starting.items()):
            if key in running or now - since > STARTING_GRACE:
                del self.starting[key]
        if (course, user) in running:
            return
        if course_cap and sum(c == course for c, _ in (*running, *self.starting)) >= course_cap:
            self._refuse("servers", f"{course_cap} running servers", now, course, user,
                         own=True)
            raise Busy("This course's notebook servers are full right now.", RETRY_FULL)
        cap = self.server.max_running(self.mem_total)
        if len(running) + len(self.starting) >= cap:
            self._refuse("servers", f"{cap} running servers (memory budget)", now, course, user)
            raise Busy("The notebook server is full right now.", RETRY_FULL)
        self.starting[(course, user)] = now

    def running(self) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        try:
            courses = list(os.scandir(self.jupyter_run_dir))
        except FileNotFoundError:
            return found
        for course in courses:
            try:
                found.update((course.name, e.name.removesuffix(".sock"))
                             for e in os.scandir(course.path) if e.name.endswith(".sock"))
            except NotADirectoryError:
                continue
        return found

    def _refuse(self, cap: str, what: str, now: float, course: str | None,
                user: str | None, own: bool = False) -> None:
        """`own`: the course's own cap, counted against it and named for it."""
        count = self._count(f"refused_{cap}" if not own else cap, now, course if own else None)
        if count is not None:
            # The launch that reached the cap names the course and student; the
            # count covers every refusal since the last line.
            where = f"course {course}'s cap" if own else "the cap"
            log_event(logger, Event.CAPPED,
                      f"admission: at {where} of {what}: refused {count} "
                      "launch(es) since the last such line; nothing running is touched",
                      course=course, student=user,
                      ADMISSION_CAP=f"course_{cap}" if own else cap)
