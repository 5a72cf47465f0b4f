"""Bounds on what each student asks of root through their own actions (actions.py).

A student's actions (the Course menu, the banner: info, reset, share, unshare) are
file work that root does for them. Besides the bounds of each action's work (a share's
size and number, shares.py; the folders a reset reads, notebooks.py), each student
gets, in the helper, before a worker (workers.py) takes their request:
- a rate: a bucket of BURST actions, refilled at PER_MINUTE a minute; past it, the
  student is told to wait (Code.TOO_MANY, 429 with Retry-After);
- one action at a time: the others wait their turn, at most WAITING of them (more
  are refused the same way). So one student holds at most one of the workers,
  whatever they send, and the workers serve the students who ask in turn.
The time each action may take is the workers' (workers.py).

The admin gets one journal line a minute per student who meets a bound (a "capped"
event, STUDENT_BOUND=rate or waiting, with the count since the last line). The
counts live in the helper's memory: a restart forgets them, which a bound of a
minute can afford.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from nbunits.core import i18n
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.events import Event
from nbunits.core.events import log as log_event

logger = logging.getLogger(__name__)

PER_MINUTE = 30
BURST = 30
WAITING = 8
SAY_EVERY = 60.0  # seconds between two journal lines about one student's bound
# Buckets kept at most; full ones (students who did nothing for a while) go first.
KEPT = 10_000


class TooMany(NbunitsError):
    """A refusal the student reads, in their `language`: the message `key`."""

    def __init__(self, language: str, key: str, retry_after: int) -> None:
        super().__init__(Code.TOO_MANY, i18n.text(language, key), retry_after=retry_after,
                         student_hint=i18n.text(language, "action.nothing_changed"),
                         language=language)


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class StudentBounds:
    per_minute: int = PER_MINUTE
    burst: int = BURST
    waiting: int = WAITING
    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    turns: dict[str, asyncio.Lock] = field(default_factory=dict)
    queued: dict[str, int] = field(default_factory=dict)  # running or waiting, per student
    refused: dict[tuple[str, str], int] = field(default_factory=dict)  # (user, bound) -> count
    said: dict[tuple[str, str], float] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def turn(self, course: str, user: str, wait: float,
                   language: str = i18n.DEFAULT) -> AsyncIterator[None]:
        """The student's turn for one action: counted against their rate, then held
        while it runs (the student's next action waits for it, at most `wait` s).
        Refusals are in `language`, the student's."""
        self.take(course, user, language)
        if self.queued.get(user, 0) > self.waiting:
            self._refuse(course, user, "waiting", f"{self.waiting} actions waiting for "
                         "the one that runs")
            raise TooMany(language, "action.still_running", 10)
        self.queued[user] = self.queued.get(user, 0) + 1
        lock = self.turns.setdefault(user, asyncio.Lock())
        try:
            try:
                async with asyncio.timeout(wait):  # never the lock taken and then a timeout
                    await lock.acquire()
            except TimeoutError:
                raise TooMany(language, "action.still_running", 10) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            self.queued[user] -= 1
            if not self.queued[user]:
                del self.queued[user], self.turns[user]

    def take(self, course: str, user: str, language: str = i18n.DEFAULT) -> None:
        """One action of `user` from their bucket, or TooMany."""
        now = self.clock()
        rate = self.per_minute / 60
        bucket = self.buckets.get(user)
        if bucket is None:
            self._forget_full(now)
            bucket = self.buckets[user] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < 1:
            self._refuse(course, user, "rate", f"{self.burst} actions at once, then "
                         f"{self.per_minute} a minute")
            raise TooMany(language, "action.too_many", math.ceil((1 - bucket.tokens) / rate))
        bucket.tokens -= 1

    def _forget_full(self, now: float) -> None:
        if len(self.buckets) < KEPT:
            return
        rate = self.per_minute / 60
        for user, bucket in list(self.buckets.items()):
            if bucket.tokens + (now - bucket.at) * rate >= self.burst:
                del self.buckets[user]

    def _refuse(self, course: str, user: str, bound: str, what: str) -> None:
        now = self.clock()
        if len(self.said) >= KEPT:  # forget the students who met a bound long ago
            self.said = {k: t for k, t in self.said.items() if now - t < SAY_EVERY}
            self.refused = {k: n for k, n in self.refused.items() if k in self.said}
        key = (user, bound)
        self.refused[key] = self.refused.get(key, 0) + 1
        if now - self.said.get(key, -SAY_EVERY) < SAY_EVERY:
            return
        self.said[key] = now
        count, self.refused[key] = self.refused[key], 0
        log_event(logger, Event.CAPPED, f"student actions: {user} is at their bound of {what}: "
                  f"refused {count} action(s) since the last such line",
                  course=course, student=user, STUDENT_BOUND=bound)
