"""nbunits-helper: the privileged side of the dispatcher.

A socket-activated root service listening on /run/nbunits/helper.sock (group
nbunits, 0660: only the dispatcher's user reaches it). It speaks the protocol of
protocol.py (one JSON request, one JSON reply), validates every request again and
acts only on a whole valid one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from nbunits.core import i18n
from nbunits.core.config import Settings, load_settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.events import Event
from nbunits.core.events import log as log_event
from nbunits.core.names import user_for
from nbunits.core.protocol import (
    MAX_REQUEST_BYTES,
    CourseNotebooksRequest,
    Html,
    Link,
    NotebookEntry,
    Notebooks,
    Opened,
    OpenRequest,
    Reply,
    Request,
    SharedViewRequest,
    StaffLinkRequest,
    StaffStudentsRequest,
    StaffViewRequest,
    StartRequest,
    StudentRequest,
    StudentState,
    WakeRequest,
    Woke,
    decode_request,
    encode_reply,
    error_reply,
    ok_reply,
)
from nbunits.core.service import listen_socket, log_context, notify_ready, setup_logging
from nbunits.helper import actions, grading, outbox, shares, workers
from nbunits.helper.admission import Admission
from nbunits.helper.bounds import StudentBounds
from nbunits.helper.provision import (
    course_notebooks,
    provision,
    staff_link,
    staff_students,
    staff_view,
    start,
    wake,
)
from nbunits.helper.workers import Workers

logger = logging.getLogger(__name__)

# How long a student's action may wait for its turn (the student's earlier ones, then
# a worker): with workers.RUN_TIME, within nginx's patience with it (60 s).
ACTION_WAIT = 20.0
# Seconds a grading's worker may take beyond the course's grading_timeout (the unit's
# own margin, grading.UNIT_MARGIN, and the file work before and after).
GRADING_MARGIN = grading.UNIT_MARGIN + 30


def gradings_at_once(cpus: int) -> int:
    """The host-wide cap on gradings running at once (each is a container running a
    student's code): one per two CPUs. Past it, a submission is refused at once
    ("try again in a minute", Retry-After), never queued behind long runs."""
    return max(1, cpus // 2)


@dataclass
class StudentActions:
    """What students ask from inside their notebooks: bounded per student (bounds.py),
    done by workers of its own (workers.py), never in the launches' thread pool."""

    bounds: StudentBounds
    workers: Workers
    gradings: Workers  # submissions: a pool of their own, its size the host-wide cap

    @classmethod
    def make(cls, settings: Settings) -> StudentActions:
        cpus = len(os.sched_getaffinity(0))
        return cls(StudentBounds(), Workers(settings, workers.size(cpus)),
                   Workers(settings, gradings_at_once(cpus)))

    async def act(self, settings: Settings, request: StudentRequest) -> StudentState:
        start = time.monotonic()
        async with self.bounds.turn(request.course, request.user, ACTION_WAIT,
                                    request.language or i18n.DEFAULT):
            who = actions.asker(settings, request)  # a few small files: who asks, checked first
            if request.what == "submit":  # no wait: a full pool refuses at once
                return await self.gradings.run(
                    request, 0, run_time=who.config.grading_timeout + GRADING_MARGIN)
            return await self.workers.run(request, ACTION_WAIT - (time.monotonic() - start))


def remember_destination(settings: Settings, request: OpenRequest) -> None:
    """Where this student's score for the notebook goes, from the dispatcher's verified
    launch (core/outcomes.py). Its failure costs the score's way, not the notebook."""
    assert request.destination is not None
    try:
        outbox.record(settings, request.target.units, request.target.notebook,
                      request.destination)
    except OSError as exc:
        logger.error("cannot record where %s's scores go: %s", request.target.user, exc)


async def act(settings: Settings, request: Request, admission: Admission,
              students: StudentActions) -> Reply:
    if isinstance(request, OpenRequest):
        done = await provision(settings, request.target, admission, reset=request.reset,
                               locale=request.locale, fallback=request.language)
        if request.destination is not None:
            remember_destination(settings, request)
        return Opened(done.user, done.url, done.prefix, done.copied, done.running,
                      done.removed, done.remembered)
    if isinstance(request, StartRequest):
        return Woke(await start(settings, request.course, request.user, request.capability,
                                admission))
    if isinstance(request, WakeRequest):
        return Woke(await wake(settings, request.course, request.user, request.capability,
                               admission))
    if isinstance(request, StaffViewRequest):
        return Html(await staff_view(settings, request.course, request.user, request.notebook,
                                     request.expires, request.sig, request.language))
    if isinstance(request, StaffStudentsRequest):
        # After a verified staff LTI launch naming no student.
        # With the launch's NRPS claim, the LMS's own list of learners is read too.
        return await asyncio.to_thread(staff_students, settings, request.course,
                                       request.notebook, request.roster)
    if isinstance(request, CourseNotebooksRequest):
        # After a verified LTI 1.3 deep-linking launch (an author picks a notebook).
        found = await asyncio.to_thread(course_notebooks, settings, request.course)
        return Notebooks(tuple(NotebookEntry(**entry) for entry in found))
    if isinstance(request, StudentRequest):
        # From the student's own page; the capability is checked again in there.
        return await students.act(settings, request)
    if isinstance(request, SharedViewRequest):
        return Html(await asyncio.to_thread(shares.page, settings, request.token))
    # Asked by the dispatcher only after a verified staff LTI launch: the signing
    # secret is root's, so the link is made here.
    assert isinstance(request, StaffLinkRequest)
    return Link(staff_link(settings, request.target))


def _fields(request: Any) -> dict[str, str]:
    """COURSE= and STUDENT= for the journal, from whatever the request names."""
    if not isinstance(request, dict):
        return {}
    student = request.get("user")
    if not isinstance(student, str) and isinstance(request.get("student"), str):
        try:
            student = user_for(request["student"])
        except NbunitsError:
            student = None
    fields = {"COURSE": request.get("course"), "STUDENT": student}
    return {k: v for k, v in fields.items() if isinstance(v, str)}


# Refusals whose journal line is written where they are decided, once a minute.
SAID_THERE = frozenset({Code.BUSY, Code.TOO_MANY, Code.ACTION_TIMEOUT})


async def handle_request(settings: Settings, raw: Any, admission: Admission | None = None,
                         students: StudentActions | None = None) -> dict[str, Any]:
    """A decoded JSON request -> the JSON reply (errors included). Without `students`
    (tests), a student's action gets workers of its own, ended after it."""
    if students is None:
        own = StudentActions.make(settings)
        try:
            return await handle_request(settings, raw, admission, own)
        finally:
            await own.workers.close()
            await own.gradings.close()
    fields = _fields(raw)
    log_context(fields.get("COURSE"), fields.get("STUDENT"), new=True)
    try:
        reply = await act(settings, decode_request(raw),
                          admission or Admission(settings.server, settings.jupyter_sockets),
                          students)
    except NbunitsError as exc:
        if exc.code in SAID_THERE:  # admission.py, bounds.py or workers.py said it
            return error_reply(exc)
        # Written for whoever sent the request (a name that does not fit, a course that
        # does not exist...): passed on. Any other failure (a command that failed, a
        # bug) is logged here in full and reaches the dispatcher as "internal".
        if exc.meaning.for_students:
            log_event(logger, Event.REFUSED, f"refused: {exc}", course=fields.get("COURSE"),
                      student=fields.get("STUDENT"), ERROR_CODE=exc.code)
            return error_reply(exc)
        logger.error("request failed: %s", exc, exc_info=exc.__cause__ is not None,
                     extra={**fields, "MESSAGE_ID": Event.FAILED.value,
                            "NBUNITS_EVENT": "failed", "ERROR_CODE": exc.code})
        return error_reply(NbunitsError(
            Code.INTERNAL, "your notebook could not be prepared",
            student_hint="please try again in a minute; if it keeps failing, "
                         "tell the course team"))
    except Exception:
        logger.exception("helper request failed",
                         extra={**fields, "MESSAGE_ID": Event.FAILED.value,
                                "NBUNITS_EVENT": "failed"})
        return error_reply(NbunitsError(Code.INTERNAL, "internal error",
                                        student_hint="please try again in a minute"))
    return ok_reply(reply)


async def _serve_connection(settings: Settings, admission: Admission, students: StudentActions,
                            reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        try:
            request = json.loads(await reader.readline())
        except ValueError:  # not JSON, or over MAX_REQUEST_BYTES
            request = None
        reply = await handle_request(settings, request, admission, students)
        try:
            line = encode_reply(reply)
        except NbunitsError as exc:
            logger.error("reply not sent: %s", exc)
            line = encode_reply(error_reply(NbunitsError(
                Code.TOO_LARGE, "this notebook is too large to show here")))
        writer.write(line)
        await writer.drain()
    finally:
        writer.close()


async def serve(settings: Settings, sock: socket.socket) -> None:
    admission = Admission(settings.server, settings.jupyter_sockets,
                          state_file=settings.admission_file)
    students = StudentActions.make(settings)
    server = await asyncio.start_unix_server(
        lambda r, w: _serve_connection(settings, admission, students, r, w), sock=sock,
        limit=MAX_REQUEST_BYTES)
    notify_ready()
    try:
        async with server:
            await server.serve_forever()
    finally:
        await students.workers.close()
        await students.gradings.close()


def main() -> None:
    setup_logging()
    settings = load_settings()
    sock = listen_socket(fallback=settings.helper_socket)
    asyncio.run(serve(settings, sock))


if __name__ == "__main__":
    main()
