"""The dispatcher <-> nbunits-helper protocol: typed messages, JSON on the wire.

Both sides import this module and nothing else of each other: the dispatcher
(unprivileged, internet-facing) never loads the helper's code. One request and
one reply per connection, each a JSON object on one line:

    -> {"action": "open", "course": "demo", "student": "<LMS id>", "notebook": "w1/a.ipynb",
        "reset": false[, "destination": {"version": "1.3", "url": "<line item>", ...}]}
    <- {"ok": true, "user": "nb...", "url": "/nb/demo/nb.../CAP/notebooks/w1/a.ipynb",
        "prefix": "/nb/demo/nb.../CAP/", "copied": false, "running": true}
    -> {"action": "wake", "course": "demo", "user": "nb...", "capability": "..."}
    <- {"ok": true, "retry_after": 0}
    -> {"action": "staff_view", "course", "user", "notebook", "expires", "sig", "language"}
    <- {"ok": true, "html": "..."}
    -> {"action": "staff_link", "course", "student", "notebook"}
    <- {"ok": true, "url": "/staff/<course>/<user>/<notebook>?expires=...&sig=..."}
    <- {"ok": false, "code": "unknown_course", "message": "...", "student_hint": "..."}
    <- {"ok": false, "code": "student_limit", "message": "...", "language": "fr"}  (words
        from a catalog, core/i18n.py: the language they are in)
    <- {"ok": false, "code": "busy", "message": "...", "retry_after": 30}   (admission.py)

    -> {"action": "student", "course", "user", "capability", "what": "info"|"reset"|
        "share"|"unshare", "notebook", "language"}  (the student's page's)
    <- {"ok": true, "student_id", "course", "notebook", "newer", "changes", "kept", "url"}
    -> {"action": "shared_view", "token"}                     <- {"ok": true, "html": "..."}
    -> {"action": "course_notebooks", "course"}
    <- {"ok": true, "notebooks": [{"path": "w1/a.ipynb", "title": "Loops"}, ...]}

Requests are small (a few names); replies can carry a staff view's HTML (a
notebook with its plots), hence one limit per direction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from nbunits.core import i18n
from nbunits.core.errors import Code, NbunitsError, code_of
from nbunits.core.names import (
    Target,
    check_capability,
    check_course,
    check_notebook,
    check_share_token,
    check_user,
)
from nbunits.core.outcomes import BadDestination, Destination
from nbunits.core.roster import Roster

MAX_REQUEST_BYTES = 64 * 1024
MAX_REPLY_BYTES = 16 * 1024 * 1024


class ProtocolError(NbunitsError):
    def __init__(self, message: str) -> None:
        super().__init__(Code.BAD_REQUEST, f"malformed request: {message}")


# --- typed accessors ----------------------------------------------------------------

def get_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be a string")
    return value


def get_bool(data: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{key} must be true or false")
    return value


def get_opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{key} must be a string")
    return value


def get_destination(data: Mapping[str, Any], key: str) -> Destination | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError(f"{key} must be an object")
    try:
        return Destination.from_json(value)
    except BadDestination as exc:
        raise ProtocolError(f"{key}: {exc}") from exc


# --- requests -----------------------------------------------------------------------

@dataclass(frozen=True)
class OpenRequest:
    """Provision (course, student, notebook) and start the student's socket."""

    action: ClassVar[str] = "open"
    target: Target
    reset: bool = False  # a fresh copy of the notebook; the old one is kept
    # The launch's locale as the LMS sent it ("": none): remembered for the student
    # (the helper checks it names a language nbunits has: core/i18n.py).
    locale: str = ""
    # The language the dispatcher would use without one (the browser's, the course's).
    language: str = ""
    # Where this student's score for the notebook goes, from the verified LTI launch
    # that asks to open it (None: no launch said, or not an LTI launch).
    destination: Destination | None = None

    def to_json(self) -> dict[str, Any]:
        return {"course": self.target.course, "student": self.target.student,
                "notebook": self.target.notebook, "reset": self.reset, "locale": self.locale,
                "language": self.language,
                **({"destination": self.destination.to_json()} if self.destination else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpenRequest:
        return cls(Target(get_str(data, "course"), get_str(data, "student"),
                          get_str(data, "notebook")), get_bool(data, "reset"),
                   get_opt_str(data, "locale") or "", get_opt_str(data, "language") or "",
                   get_destination(data, "destination"))


@dataclass(frozen=True)
class WakeRequest:
    """Make a provisioned student's server answer again (nginx's 502 fallback), for
    the holder of their capability (the helper checks it again)."""

    action: ClassVar[str] = "wake"
    course: str
    user: str
    capability: str

    def to_json(self) -> dict[str, Any]:
        return {"course": self.course, "user": self.user, "capability": self.capability}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WakeRequest:
        return cls(get_str(data, "course"), get_str(data, "user"), get_str(data, "capability"))


@dataclass(frozen=True)
class StartRequest(WakeRequest):
    """Start a just-launched student's server, in turn with the host's other starts
    (admission.py), and answer once it is up: the second half of a cold launch."""

    action: ClassVar[str] = "start"


@dataclass(frozen=True)
class StaffViewRequest:
    """A student's copy as static HTML, for a signed staff link."""

    action: ClassVar[str] = "staff_view"
    course: str
    user: str
    notebook: str
    expires: str
    sig: str
    language: str = ""  # of the page ("": the default); the dispatcher's choice

    def __post_init__(self) -> None:
        object.__setattr__(self, "language", known_language(self.language))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StaffViewRequest:
        return cls(**{k: get_str(data, k) for k in ("course", "user", "notebook", "expires",
                                                     "sig")},
                   language=get_opt_str(data, "language") or "")


@dataclass(frozen=True)
class StaffLinkRequest:
    """A signed staff link, after a verified staff LTI launch (root holds the key)."""

    action: ClassVar[str] = "staff_link"
    target: Target  # the student whose copy staff asked to see

    def to_json(self) -> dict[str, Any]:
        return {"course": self.target.course, "student": self.target.student,
                "notebook": self.target.notebook}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StaffLinkRequest:
        return cls(Target(get_str(data, "course"), get_str(data, "student"),
                          get_str(data, "notebook")))


@dataclass(frozen=True)
class StaffStudentsRequest:
    """The course's students with read-only links to their copies of a notebook, after
    a verified staff LTI launch that names no student (root holds the key)."""

    action: ClassVar[str] = "staff_students"
    course: str
    notebook: str
    # Where the LMS lists the course's learners (the launch's NRPS claim), if it does.
    roster: Roster | None = None

    def __post_init__(self) -> None:
        check_course(self.course)
        check_notebook(self.notebook)

    def to_json(self) -> dict[str, Any]:
        return {"course": self.course, "notebook": self.notebook,
                **({"roster": self.roster.to_json()} if self.roster else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StaffStudentsRequest:
        roster = data.get("roster")
        if roster is not None and not isinstance(roster, dict):
            raise ProtocolError("roster must be an object")
        try:
            where = Roster.from_json(roster) if roster is not None else None
        except BadDestination as exc:
            raise ProtocolError(f"roster: {exc}") from exc
        return cls(get_str(data, "course"), get_str(data, "notebook"), where)


def known_language(language: str) -> str:
    """`language` if nbunits has a catalog for it, else "" (a display choice: an
    unknown one is dropped, never an error)."""
    return language if language in i18n.available() else ""


# What a student may do from inside their Jupyter (the Course menu, the banner).
STUDENT_ACTIONS = frozenset({"info", "reset", "share", "unshare", "submit"})


@dataclass(frozen=True)
class StudentRequest:
    """A student's own action, with the capability of their /nb/ URL: nginx checked
    it already, the helper (which holds the secret) checks it again."""

    action: ClassVar[str] = "student"
    course: str
    user: str
    capability: str
    what: str
    notebook: str  # relative to the course; "" only for "info" outside a notebook
    # The language of the student's page, which the answers are in ("": the one
    # remembered for the student, else the course's).
    language: str = ""

    def __post_init__(self) -> None:
        check_course(self.course)
        check_user(self.user)
        check_capability(self.capability)
        if self.what not in STUDENT_ACTIONS:
            raise ProtocolError("unknown student action")
        if self.notebook or self.what != "info":
            object.__setattr__(self, "notebook", check_notebook(self.notebook).as_posix())
        object.__setattr__(self, "language", known_language(self.language))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudentRequest:
        return cls(**{k: get_str(data, k) for k in ("course", "user", "capability", "what",
                                                     "notebook")},
                   language=get_opt_str(data, "language") or "")


@dataclass(frozen=True)
class SharedViewRequest:
    """A static version a student shares, for whoever has its link."""

    action: ClassVar[str] = "shared_view"
    token: str

    def __post_init__(self) -> None:
        check_share_token(self.token)

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SharedViewRequest:
        return cls(get_str(data, "token"))


@dataclass(frozen=True)
class CourseNotebooksRequest:
    """The course's published notebooks with their titles, for a verified LTI 1.3
    deep-linking launch (an author picking the notebook of a component)."""

    action: ClassVar[str] = "course_notebooks"
    course: str

    def __post_init__(self) -> None:
        check_course(self.course)

    def to_json(self) -> dict[str, Any]:
        return {"course": self.course}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CourseNotebooksRequest:
        return cls(get_str(data, "course"))


Request = (OpenRequest | WakeRequest | StartRequest | StaffViewRequest | StaffLinkRequest
           | StaffStudentsRequest | CourseNotebooksRequest | StudentRequest | SharedViewRequest)
REQUESTS: dict[str, type[Request]] = {
    c.action: c for c in (OpenRequest, WakeRequest, StartRequest, StaffViewRequest,
                          StaffLinkRequest, StaffStudentsRequest, CourseNotebooksRequest,
                          StudentRequest, SharedViewRequest)}


def encode_request(request: Request) -> bytes:
    return _line({"action": request.action, **request.to_json()}, MAX_REQUEST_BYTES)


def decode_request(data: Any) -> Request:
    """A request from its JSON object; names are validated on the way (InvalidName)."""
    if not isinstance(data, dict):
        raise ProtocolError("not a JSON object")
    kind = REQUESTS.get(get_str(data, "action"))
    if kind is None:
        raise ProtocolError("unknown action")
    return kind.from_json(data)


# --- replies ------------------------------------------------------------------------

@dataclass(frozen=True)
class Opened:
    user: str
    url: str  # the notebook in the student's Jupyter (not quoted)
    prefix: str  # the student's Jupyter: /nb/<course>/<user>/<capability>/
    copied: bool  # the notebook was copied now
    running: bool  # the student's Jupyter was up already (a warm open)
    removed: bool = False  # no longer in the course: what opens is the student's copy
    language: str = ""  # the language remembered for the student ("": none yet)

    @property
    def capability(self) -> str:
        return self.prefix.rstrip("/").rsplit("/", 1)[-1]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Opened:
        return cls(get_str(data, "user"), get_str(data, "url"), get_str(data, "prefix"),
                   get_bool(data, "copied"), get_bool(data, "running"),
                   get_bool(data, "removed"), get_opt_str(data, "language") or "")


@dataclass(frozen=True)
class Done:
    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Done:
        return cls()


@dataclass(frozen=True)
class Woke:
    retry_after: int  # 0: woken; else seconds before the units may be reset

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Woke:
        value = data.get("retry_after")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProtocolError("retry_after must be a whole number of seconds")
        return cls(value)


@dataclass(frozen=True)
class Html:
    html: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Html:
        return cls(get_str(data, "html"))


@dataclass(frozen=True)
class Link:
    url: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Link:
        return cls(get_str(data, "url"))


@dataclass(frozen=True)
class StudentEntry:
    user: str  # "" for a learner the LMS lists who never opened a notebook here
    id: str  # the LMS's id, as recorded (or as the LMS lists it)
    url: str  # a signed staff link to their copy, "" if they have none
    name: str = ""  # as the LMS lists it (its Names and Roles service), if it does
    active: float = 0.0  # when last active (Unix time; 0: never, or not known)
    score: tuple[float, float] | None = None  # their current (given, maximum), if any

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudentEntry:
        active, score = data.get("active", 0.0), data.get("score")
        if isinstance(active, bool) or not isinstance(active, (int, float)):
            raise ProtocolError("'active' must be a number")
        if score is not None and not (
                isinstance(score, list) and len(score) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in score)):
            raise ProtocolError("'score' must be [given, maximum] or null")
        return cls(get_str(data, "user"), get_str(data, "id"), get_str(data, "url"),
                   get_opt_str(data, "name") or "", float(active),
                   (float(score[0]), float(score[1])) if score else None)


ROSTER_STATES = ("", "read", "partial", "failed")


@dataclass(frozen=True)
class Students:
    students: tuple[StudentEntry, ...]
    # The LMS's list of learners (NRPS): "" not asked, "read", "partial" (cut), "failed";
    # how many learners it listed (they come first in `students`).
    roster: str = ""
    learners: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Students:
        entries = data.get("students")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ProtocolError("'students' must be a list of objects")
        roster = get_opt_str(data, "roster") or ""
        if roster not in ROSTER_STATES:
            raise ProtocolError(f"unknown roster state {roster!r}")
        learners = data.get("learners", 0)
        if isinstance(learners, bool) or not isinstance(learners, int) or learners < 0:
            raise ProtocolError("'learners' must be a count")
        return cls(tuple(StudentEntry.from_json(e) for e in entries), roster, learners)


@dataclass(frozen=True)
class NotebookEntry:
    path: str  # relative to the course, checked (check_notebook)
    title: str  # its first markdown heading, "" if it has none


@dataclass(frozen=True)
class Notebooks:
    notebooks: tuple[NotebookEntry, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notebooks:
        entries = data.get("notebooks")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ProtocolError("'notebooks' must be a list of objects")
        found = tuple(NotebookEntry(get_str(e, "path"), get_str(e, "title")) for e in entries)
        for entry in found:
            check_notebook(entry.path)
        return cls(found)


@dataclass(frozen=True)
class StudentState:
    """What a student's action did, and what the Course menu shows."""

    student_id: str  # the student's own LMS id, as recorded
    course: str
    notebook: str
    newer: bool  # the course has a newer version of this notebook
    changes: tuple[str, ...]  # what changed, in a student's words
    kept: str  # reset: where the old copy is kept ("" if nothing was kept)
    url: str  # share: the static version's link ("" if not shared)
    # submit: the grading's result (helper/grading.py's Grade as JSON), else None
    grade: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudentState:
        changes = data.get("changes")
        if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
            raise ProtocolError("'changes' must be a list of strings")
        grade = data.get("grade")
        if grade is not None and not isinstance(grade, dict):
            raise ProtocolError("'grade' must be an object")
        return cls(get_str(data, "student_id"), get_str(data, "course"),
                   get_str(data, "notebook"), get_bool(data, "newer"), tuple(changes),
                   get_str(data, "kept"), get_str(data, "url"), grade)


Reply = Opened | Done | Woke | Html | Link | Students | Notebooks | StudentState
R = TypeVar("R", Opened, Done, Woke, Html, Link, Students, Notebooks, StudentState)


def ok_reply(reply: Reply) -> dict[str, Any]:
    return {"ok": True, **asdict(reply)}


def error_reply(exc: NbunitsError) -> dict[str, Any]:
    """What the dispatcher may show: the code, the message, the student's hint.
    The admin's hint stays in the helper's journal."""
    reply = {"ok": False, "code": exc.code, "message": exc.message,
             "student_hint": exc.student_hint}
    if exc.retry_after is not None:
        reply["retry_after"] = exc.retry_after
    if exc.language:
        reply["language"] = exc.language
    return reply


def encode_reply(reply: dict[str, Any]) -> bytes:
    return _line(reply, MAX_REPLY_BYTES)


def _line(data: dict[str, Any], limit: int) -> bytes:
    line = json.dumps(data).encode() + b"\n"
    if len(line) > limit:
        raise NbunitsError(Code.TOO_LARGE, f"a message of {len(line)} bytes is over {limit}")
    return line


# --- the dispatcher's side ----------------------------------------------------------

async def ask(path: Path, request: Request, kind: type[R], timeout: float = 120) -> R:
    """One request, one reply; an error reply raises NbunitsError with its code."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_REPLY_BYTES)
    try:
        writer.write(encode_request(request))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise NbunitsError(Code.HELPER_FAILED, "nbunits-helper gave no answer") from exc
    if not isinstance(reply, dict):
        raise NbunitsError(Code.HELPER_FAILED, "nbunits-helper gave a malformed answer")
    if reply.get("ok") is not True:
        retry = reply.get("retry_after")
        raise NbunitsError(code_of(str(reply.get("code", "internal"))), str(reply.get("message", "error")),
                           student_hint=get_opt_str(reply, "student_hint"),
                           retry_after=retry if isinstance(retry, int) and 0 < retry < 3600
                           else None, language=known_language(get_opt_str(reply, "language") or ""))
    try:
        return kind.from_json(reply)
    except ProtocolError as exc:
        raise NbunitsError(Code.HELPER_FAILED, f"nbunits-helper's answer: {exc.message}") from exc
