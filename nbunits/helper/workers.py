"""Students' actions run in workers of their own: a few processes beside the helper.

Launches run in the helper's event loop and its default thread pool (users.ensure,
copies.sync). Students' actions (actions.py) must not slow them, whatever a student
asks, so they never run there:
- not in the default thread pool: a few slow actions at once would hold all of its
  threads, and every launch would wait for one;
- not in a thread at all: JSON and HTML of a large notebook are C calls that hold the
  interpreter's lock from start to end. Measured on this kind of machine, while a
  thread parsed a 32 MB notebook the event loop waited 75 ms at each turn (median),
  up to 0.6 s.
So each action is done by a worker process (`python -m nbunits.helper.workers`, root
like the helper, in its unit), SIZE of them at most (one per two CPUs), started on
first use and kept. An action waits its turn for a worker, in order of arrival, at
most the wait it is given; one that runs longer than RUN_TIME is stopped: its worker
is killed (and a new one started for the next action), and the student is told.

Messages are length-prefixed pickles over the worker's stdin and stdout, between the
helper and its own child: nothing a client sent is unpickled (the student's request
was decoded from JSON and validated before).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import pickle
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from nbunits.core import i18n
from nbunits.core.config import Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.events import Event
from nbunits.core.events import log as log_event
from nbunits.core.protocol import StudentRequest, StudentState
from nbunits.core.run import end_child, start_child
from nbunits.core.service import setup_logging

logger = logging.getLogger(__name__)

RUN_TIME = 20.0  # seconds an action may run
SAY_EVERY = 60.0  # seconds between two journal lines about a full pool
TARGET = "nbunits.helper.actions:act"
_LENGTH = struct.Struct(">I")
MAX_MESSAGE = 1 << 20


def size(cpus: int) -> int:
    """Workers for students' actions: one per two CPUs, so that the others stay
    with launches however many students ask at once."""
    return max(1, cpus // 2)


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, settings: Settings, target: str) -> _Worker:
        process = await start_child([sys.executable, "-m", "nbunits.helper.workers"])
        worker = cls(process)
        await worker._send((settings, target))
        return worker

    async def _send(self, message: object) -> None:
        assert self.process.stdin is not None
        data = pickle.dumps(message)
        self.process.stdin.write(_LENGTH.pack(len(data)) + data)
        await self.process.stdin.drain()

    async def ask(self, request: StudentRequest) -> tuple[str, Any]:
        await self._send(request)
        assert self.process.stdout is not None
        (length,) = _LENGTH.unpack(await self.process.stdout.readexactly(_LENGTH.size))
        if length > MAX_MESSAGE:
            raise ValueError(f"a worker's reply of {length} bytes")
        reply: tuple[str, Any] = pickle.loads(await self.process.stdout.readexactly(length))
        return reply

    async def end(self) -> None:
        await end_child(self.process)


class Workers:
    """The pool: at most `size` workers, each doing one action at a time."""

    def __init__(self, settings: Settings, size: int, run_time: float = RUN_TIME,
                 target: str = TARGET) -> None:
        self.settings, self.size, self.run_time, self.target = settings, size, run_time, target
        self.said, self.turned_away = -SAY_EVERY, 0  # the admin's last line about a full pool
        self.idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(None)  # a worker not started yet

    async def run(self, request: StudentRequest, wait: float,
                  run_time: float | None = None) -> StudentState:
        """Do `request` in a worker, after waiting at most `wait` seconds for one, in
        at most `run_time` seconds (the pool's own by default)."""
        run_time = run_time or self.run_time
        try:
            # (asyncio.timeout: a worker handed over as the time runs out stays queued)
            async with asyncio.timeout(max(wait, 0.001)):
                worker = await self.idle.get()
        except TimeoutError:
            self._busy(request, wait)
            raise i18n.error(Code.BUSY, request.language or i18n.DEFAULT, "action.busy",
                             "action.busy.hint", retry_after=30) from None
        try:
            if worker is None:
                worker = await _Worker.start(self.settings, self.target)
            kind, value = await asyncio.wait_for(worker.ask(request), run_time)
        except BaseException as exc:  # over its time, dead, or the request cancelled
            if worker is not None:
                await worker.end()
            worker = None
            if isinstance(exc, TimeoutError):
                raise self._overdue(request, run_time) from None
            if isinstance(exc, (OSError, EOFError, ValueError, pickle.UnpicklingError)):
                raise NbunitsError(Code.HELPER_FAILED, f"a worker of students' actions "
                                   f"ended: {exc!r}") from exc
            raise
        finally:
            self.idle.put_nowait(worker)
        if kind == "error":
            raise NbunitsError(**value)
        assert isinstance(value, StudentState)
        return value

    def _busy(self, request: StudentRequest, wait: float) -> None:
        self.turned_away += 1
        now = time.monotonic()
        if now - self.said < SAY_EVERY:
            return
        self.said = now
        log_event(logger, Event.CAPPED, f"student actions: every one of the {self.size} "
                  f"worker(s) busy for {wait:.0f} s: turned away {self.turned_away} action(s) "
                  "since the last such line", course=request.course, student=request.user,
                  STUDENT_BOUND="workers")
        self.turned_away = 0

    def _overdue(self, request: StudentRequest, run_time: float) -> NbunitsError:
        logger.warning("student actions: %s of %s stopped after %g s (its worker was "
                       "killed)", request.what, request.notebook or "-", run_time,
                       extra={"COURSE": request.course, "STUDENT": request.user,
                              "ERROR_CODE": Code.ACTION_TIMEOUT})
        return i18n.error(Code.ACTION_TIMEOUT, request.language or i18n.DEFAULT,
                          "action.timeout", "action.timeout.hint", retry_after=60)

    async def close(self) -> None:
        while not self.idle.empty():
            worker = self.idle.get_nowait()
            if worker is not None:
                await worker.end()


# --- the worker's side ---------------------------------------------------------------

def _read(stream: BinaryIO) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None  # the helper closed our stdin: time to go
    (length,) = _LENGTH.unpack(head)
    return pickle.loads(stream.read(length))


def _write(stream: BinaryIO, message: object) -> None:
    data = pickle.dumps(message)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _resolve(target: str) -> Callable[[Settings, StudentRequest], StudentState]:
    module, _, name = target.partition(":")
    function: Callable[[Settings, StudentRequest], StudentState] = getattr(
        importlib.import_module(module), name)
    return function


def _do(act: Callable[[Settings, StudentRequest], StudentState], settings: Settings,
        request: StudentRequest) -> tuple[str, Any]:
    try:
        return "ok", act(settings, request)
    except NbunitsError as exc:
        return "error", {"code": exc.code, "message": exc.message, "hint": exc.hint,
                         "student_hint": exc.student_hint, "retry_after": exc.retry_after,
                         "language": exc.language}
    except Exception as exc:
        logger.exception("student action %s failed", request.what,
                         extra={"COURSE": request.course, "STUDENT": request.user})
        return "error", {"code": Code.HELPER_FAILED,
                         "message": f"student action {request.what} failed in its worker: {exc!r}"}


def main() -> None:
    """A worker: one action at a time, from the helper, until it closes our stdin."""
    setup_logging()
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever prints goes to the journal, never into a reply
    requests = sys.stdin.buffer
    first = _read(requests)
    if first is None:
        return
    settings, target = first
    act = _resolve(target)
    while (request := _read(requests)) is not None:
        _write(replies, _do(act, settings, request))


if __name__ == "__main__":
    main()
