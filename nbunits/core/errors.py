"""Errors that a person reads: a registered code, a one-line message and two hints.

Every error code is a member of `Code`, and `MEANINGS` says, once, what each means
and what a student's page answers for it (the dispatcher's status, the helper's
choice of what to pass on, the CLI's exit code all read it here; a test checks that
no code is written as a bare string anywhere else). `hint` is for the admin (a
command to run, a file to look at); `student_hint` is for whoever clicked a link,
and is all a student's page ever shows beside the message. Errors are chained
(`raise ... from exc`), so `--debug` and the journal keep the cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    ACTION_TIMEOUT = "action_timeout"
    BAD_CAPABILITY = "bad_capability"
    BAD_CONFIG = "bad_config"
    BAD_CONTAINERFILE = "bad_containerfile"
    BAD_COURSE = "bad_course"
    BAD_COURSE_CONFIG = "bad_course_config"
    BAD_EXPORT_DIR = "bad_export_dir"
    BAD_HOME = "bad_home"
    BAD_IMAGE = "bad_image"
    BAD_IMAGE_STORE = "bad_image_store"
    BAD_KEYS = "bad_keys"
    BAD_LAUNCH = "bad_launch"
    BAD_NETWORK = "bad_network"
    BAD_NOTEBOOK = "bad_notebook"
    BAD_ORIGIN = "bad_origin"
    BAD_REQUIREMENTS = "bad_requirements"
    BAD_REQUEST = "bad_request"
    BAD_SCORE = "bad_score"
    BAD_STATE = "bad_state"
    BAD_STUDENT = "bad_student"
    BAD_TEMPLATE = "bad_template"
    BROKEN_NOTEBOOK = "broken_notebook"
    BUSY = "busy"
    COMMAND_FAILED = "command_failed"
    COMMAND_MISSING = "command_missing"
    COMMAND_TIMEOUT = "command_timeout"
    COURSE_ENDED = "course_ended"
    COURSE_EXISTS = "course_exists"
    EXPORT_FAILED = "export_failed"
    FORBIDDEN = "forbidden"
    GRADING_FAILED = "grading_failed"
    GRADING_STOPPED = "grading_stopped"
    GRADING_TIMEOUT = "grading_timeout"
    HAS_WORK = "has_work"
    HELPER_FAILED = "helper_failed"
    IMAGE_BUILD_FAILED = "image_build_failed"
    INSTALL_FAILED = "install_failed"
    INTERNAL = "internal"
    LMS_FAILED = "lms_failed"
    MERGE_FAILED = "merge_failed"
    MISDIRECTED = "misdirected"
    NO_COPY = "no_copy"
    NO_ORIGIN = "no_origin"
    NO_SCORE_DESTINATION = "no_score_destination"
    NO_SECRET = "no_secret"
    NOT_GRADED = "not_graded"
    QUOTA_FAILED = "quota_failed"
    QUOTA_UNAVAILABLE = "quota_unavailable"
    REFUSED_IMAGE = "refused_image"
    RUNS_ELSEWHERE = "runs_elsewhere"
    SERVER_FAILED = "server_failed"
    STUDENT_COLLISION = "student_collision"
    STUDENT_LIMIT = "student_limit"
    TOO_LARGE = "too_large"
    TOO_MANY = "too_many"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_COURSE = "unknown_course"
    UNKNOWN_IMAGE = "unknown_image"
    UNKNOWN_NOTEBOOK = "unknown_notebook"
    UNKNOWN_SHARE = "unknown_share"
    UNKNOWN_STUDENT = "unknown_student"


@dataclass(frozen=True)
class Meaning:
    # The HTTP status a student's request gets for it, and so whether the helper
    # passes it on to the dispatcher as it is; None: an admin's error or a failure
    # of ours, which a student only ever sees as "internal" (500, logged).
    status: int | None
    what: str  # for people (docs/admin.md's table of codes)

    @property
    def for_students(self) -> bool:
        return self.status is not None


MEANINGS: dict[Code, Meaning] = {
    Code.ACTION_TIMEOUT: Meaning(503, "a student's action ran past its time limit and was stopped"),
    Code.BAD_CAPABILITY: Meaning(403, "a student link's capability is malformed or not theirs"),
    Code.BAD_CONFIG: Meaning(None, "nbunits.toml or another setting file is not valid"),
    Code.BAD_CONTAINERFILE: Meaning(None, "a course repository's Containerfile cannot be used"),
    Code.BAD_COURSE: Meaning(400, "a course name nbunits cannot use"),
    Code.BAD_COURSE_CONFIG: Meaning(500, "a course's settings (or its aliases, secrets) are not valid"),
    Code.BAD_EXPORT_DIR: Meaning(None, "a folder students' work cannot be exported to (in a "
                                 "student's home or a published course, not a folder, "
                                 "not writable)"),
    Code.BAD_HOME: Meaning(409, "a home that cannot be proven to be this student's"),
    Code.BAD_IMAGE: Meaning(None, "an image in the store is damaged (a layer missing)"),
    Code.BAD_IMAGE_STORE: Meaning(None, "the image store or its record cannot be read"),
    Code.BAD_KEYS: Meaning(None, "an LMS's LTI 1.3 keys cannot be fetched or read"),
    Code.BAD_LAUNCH: Meaning(400, "an LTI launch that is malformed"),
    Code.BAD_NETWORK: Meaning(None, "a network setting this host cannot honour"),
    Code.BAD_NOTEBOOK: Meaning(400, "a notebook path nbunits cannot use"),
    Code.BAD_ORIGIN: Meaning(None, "an origin (LMS) that is not an http(s) origin"),
    Code.BAD_REQUIREMENTS: Meaning(None, "a course repository's requirements.txt has a line "
                                   "that is not a plain requirement"),
    Code.BAD_REQUEST: Meaning(400, "a request that is malformed"),
    Code.BAD_SCORE: Meaning(None, "a score that is not a number from 0 to a positive maximum"),
    Code.BAD_STATE: Meaning(None, "a record of nbunits' own that cannot be read"),
    Code.BAD_STUDENT: Meaning(400, "a student id or user name nbunits cannot use"),
    Code.BAD_TEMPLATE: Meaning(None, "a unit or nginx template with a placeholder left"),
    Code.BROKEN_NOTEBOOK: Meaning(500, "a master notebook that is not valid"),
    Code.BUSY: Meaning(503, "an admission cap (new students, running servers), or every worker of "
                       "students' actions busy: try again later"),
    Code.COMMAND_FAILED: Meaning(None, "a program nbunits ran failed"),
    Code.COMMAND_MISSING: Meaning(None, "a program nbunits runs is not installed"),
    Code.COMMAND_TIMEOUT: Meaning(None, "a program nbunits ran did not finish in time"),
    Code.COURSE_ENDED: Meaning(410, "the course ended and its retention period is over: "
                               "its students' work was saved and deleted"),
    Code.COURSE_EXISTS: Meaning(None, "a course of that name exists already"),
    Code.EXPORT_FAILED: Meaning(None, "an archive of students' work could not be written "
                                "(the folder full or read-only): nothing was deleted"),
    Code.FORBIDDEN: Meaning(403, "a link or launch that does not open this (the same answer whoever asks)"),
    Code.GRADING_FAILED: Meaning(None, "a submitted notebook's grading did not run (podman or "
                                 "its unit failed: `nbunits logs`)"),
    Code.GRADING_STOPPED: Meaning(422, "a submitted notebook stopped before its end (its "
                                  "kernel died, or it used all the memory it may)"),
    Code.GRADING_TIMEOUT: Meaning(422, "a submitted notebook ran past the course's "
                                  "grading_timeout and was stopped"),
    Code.HAS_WORK: Meaning(None, "linking an id would hide the work it has"),
    Code.HELPER_FAILED: Meaning(None, "nbunits-helper answered something it should not"),
    Code.IMAGE_BUILD_FAILED: Meaning(None, "a course's image did not build"),
    Code.INSTALL_FAILED: Meaning(None, "`nbunits install` cannot go on (its message says why)"),
    Code.INTERNAL: Meaning(500, "a failure on nbunits' side (the journal has the detail)"),
    Code.LMS_FAILED: Meaning(None, "the LMS could not be reached or refused a score (it is "
                             "kept and sent again later)"),
    Code.MERGE_FAILED: Meaning(None, "a course's update could not be merged into a "
                               "student's copy (it is announced instead)"),
    Code.MISDIRECTED: Meaning(421, "a request for a host name this server does not serve"),
    Code.NO_COPY: Meaning(None, "a student has no copy of that notebook"),
    Code.NO_ORIGIN: Meaning(None, "a course with neither a git repository nor a folder"),
    Code.NO_SCORE_DESTINATION: Meaning(None, "a score for a student who has not opened that "
                                       "notebook from the LMS by LTI: nowhere to send it"),
    Code.NOT_GRADED: Meaning(409, "a notebook submitted for grading that the course does not "
                             "grade (no nbgrader metadata)"),
    Code.NO_SECRET: Meaning(None, "a secret nbunits needs is missing"),
    Code.QUOTA_FAILED: Meaning(None, "a disk quota could not be set"),
    Code.QUOTA_UNAVAILABLE: Meaning(None, "a course has disk_quota, the homes' file system has no quotas"),
    Code.REFUSED_IMAGE: Meaning(None, "a course's built image holds what the shared store "
                                "refuses (setuid, devices, capabilities, other owners, too large)"),
    Code.RUNS_ELSEWHERE: Meaning(None, "the student's server runs on another host"),
    Code.SERVER_FAILED: Meaning(500, "a student's server cannot start"),
    Code.STUDENT_COLLISION: Meaning(409, "a student id whose user or uid is taken by someone else"),
    Code.STUDENT_LIMIT: Meaning(409, "a student's request over one of their bounds (shares, a "
                                "share's size): the message says which"),
    Code.TOO_LARGE: Meaning(500, "a request or file over nbunits' size limits"),
    Code.TOO_MANY: Meaning(429, "a student's requests over their own rate, or too many waiting "
                           "for their turn: try again after Retry-After"),
    Code.UNAUTHORIZED: Meaning(401, "a launch whose signature does not verify"),
    Code.UNKNOWN_COURSE: Meaning(404, "no such course"),
    Code.UNKNOWN_IMAGE: Meaning(None, "no such image in the store"),
    Code.UNKNOWN_NOTEBOOK: Meaning(404, "no such notebook in the course"),
    Code.UNKNOWN_SHARE: Meaning(404, "no such shared version (any more)"),
    Code.UNKNOWN_STUDENT: Meaning(404, "no such student"),
}


# Something named does not exist: a course, a student, a notebook, an image, a share.
UNKNOWN = frozenset({Code.UNKNOWN_COURSE, Code.UNKNOWN_IMAGE, Code.UNKNOWN_NOTEBOOK,
                     Code.UNKNOWN_SHARE, Code.UNKNOWN_STUDENT})


def code_of(text: str) -> Code:
    """A code read from outside (the helper's reply): unknown ones are INTERNAL."""
    try:
        return Code(text)
    except ValueError:
        return Code.INTERNAL


class NbunitsError(Exception):
    """An error with a registered `code`, a one-line message and optional hints."""

    def __init__(self, code: Code, message: str, *, hint: str | None = None,
                 student_hint: str | None = None, retry_after: int | None = None,
                 language: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.student_hint = student_hint
        # Seconds after which trying again may work (admission control's caps).
        self.retry_after = retry_after
        # The language the message and student hint are written in for a student
        # (core/i18n.py), "" for English words not from a catalog.
        self.language = language

    @property
    def meaning(self) -> Meaning:
        return MEANINGS[self.code]

    @property
    def is_unknown(self) -> bool:
        """Something named does not exist (the CLI's exit code 3)."""
        return self.code in UNKNOWN

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
