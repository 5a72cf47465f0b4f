"""`nbunits score set`, `nbunits scores list|send`: students' scores on their way to
the LMS (helper/outbox.py holds them, helper/scores.py sends them)."""

from __future__ import annotations

from datetime import UTC, datetime

from nbunits.admin.status import resolve_student
from nbunits.core.aliases import canonical
from nbunits.core.config import Settings, load_course
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import USER_RE, check_student_id, user_for
from nbunits.helper import outbox, scores


def user_of(settings: Settings, course: str, student: str) -> str:
    """A student given as a Linux user (nb...) or as their LMS id (linked ids
    followed, as a launch follows them)."""
    if USER_RE.fullmatch(student):
        return resolve_student(student)
    return user_for(canonical(settings, course, check_student_id(student)))


def set_score(settings: Settings, course: str, student: str, notebook: str,
              given: float, maximum: float, comment: str = "") -> outbox.Score:
    """An admin's or teacher's score (or override): queued, then sent."""
    load_course(settings, course)  # an unknown course is said as such
    return outbox.enqueue(settings, course, user_of(settings, course, student), notebook,
                          given, maximum, comment)


def rows(settings: Settings, course: str = "") -> list[dict[str, object]]:
    if course:
        load_course(settings, course)
    return [{"course": s.course, "user": s.user, "notebook": s.notebook, "state": s.state,
             "given": s.given, "maximum": s.maximum, "enqueued": iso(s.enqueued),
             "sent": iso(s.sent) if s.sent else None, "attempts": s.attempts,
             "next_try": iso(s.next_try) if s.attempts and not s.sent else None,
             "last_error": s.last_error}
            for s in outbox.scores(settings, course)]


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


def send(settings: Settings, waiting_too: bool = False) -> scores.Run:
    return scores.send_pending(settings, waiting_too=waiting_too)


def parse_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise NbunitsError(Code.BAD_SCORE, f"{text!r} is not a number") from None
