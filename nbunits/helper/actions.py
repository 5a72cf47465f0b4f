"""What a student does from inside their Jupyter: the Course menu and the banner.

The requests come from the student's own page through nginx (which checked the
capability in the path, as for /nb/) and the dispatcher; nbunits-helper (root)
checks the capability again and acts on that student's files only:
- info: their LMS id, and whether the course has a newer version of a notebook;
- reset: a fresh copy of the current master, the old copy kept (copies.reset);
- share / unshare: a static version at an unguessable link (shares.py);
- submit: their saved copy of a graded notebook, graded (grading.py), by workers of
  its own (a host-wide cap: helper/service.py).
They work whatever the course's launch settings (LTI only included): holding the
capability is what proves the student. Each is root's work for one student, so it
is bounded: per student (bounds.py: a rate, one at a time), in time and apart from
launches (workers.py: act() runs in a worker process), and in what it reads and
writes (shares.py's bounds; notebooks.py reads a bounded part of a folder).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from nbunits.core import i18n
from nbunits.core.config import CourseConfig, Settings, load_course
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import StudentUnits, shared_path
from nbunits.core.protocol import StudentRequest, StudentState
from nbunits.helper import capability as caps
from nbunits.helper import copies, grading, languages, shares, staff, users
from nbunits.helper.notebooks import MAX_NOTEBOOK_BYTES, master_path, read_copy

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Asker:
    """Who asks: the course and the student, once their capability is checked."""

    config: CourseConfig
    units: StudentUnits
    student: users.Student
    language: str  # what the student reads: their page's, else remembered, else the course's


def asker(settings: Settings, request: StudentRequest) -> Asker:
    """Check who asks (a few small files): the helper does it before the student's
    request takes a turn, the worker again before it acts."""
    config = load_course(settings, request.course)
    units = StudentUnits(request.course, request.user)
    language = (request.language or languages.remembered(settings, units.user)
                or config.language)
    if not caps.is_current(settings, units, request.capability):
        raise i18n.error(Code.FORBIDDEN, language, "action.bad_link", "action.bad_link.hint")
    student_id = users.recorded_id(settings, units.user)
    student = users.lookup(settings, student_id) if student_id else None
    if student is None or not settings.token_file(units).exists():
        raise i18n.error(Code.UNKNOWN_STUDENT, language, "action.no_notebooks",
                         "action.bad_link.hint")
    return Asker(config, units, student, language)


def act(settings: Settings, request: StudentRequest) -> StudentState:
    """Blocking (file work): run by a worker of the helper's own (workers.py)."""
    who = asker(settings, request)
    config, units, student = who.config, who.units, who.student
    theirs = copies.for_student(settings, config, student)
    notebook, fields = request.notebook, {"COURSE": units.course, "STUDENT": units.user}
    state = StudentState(student.id, units.course, notebook, False, (), "", "")
    if not notebook:
        return state
    if request.what == "reset":
        if not _in_course(config.source, notebook):
            raise i18n.error(Code.UNKNOWN_NOTEBOOK, who.language, "action.not_in_course",
                             "action.not_in_course.hint")
        kept = copies.reset(theirs, notebook, datetime.now()) or ""
        logger.info("student reset %s; old copy kept as %s", notebook, kept or "(nothing)",
                    extra=fields)
        return _with_share(settings, units, StudentState(
            student.id, units.course, notebook, False, (), kept, ""))
    if request.what == "submit":
        if not _in_course(config.source, notebook):
            raise i18n.error(Code.UNKNOWN_NOTEBOOK, who.language, "action.not_in_course",
                             "action.not_in_course.hint")
        grade = grading.submit(settings, config, units, theirs.home, theirs.rel(notebook),
                               notebook, who.language)
        return StudentState(student.id, units.course, notebook, False, (), "", "",
                            grade.to_json())
    if request.what == "share":
        token = _share(settings, who, theirs, notebook)
        logger.info("student shared %s", notebook, extra=fields)
        return StudentState(student.id, units.course, notebook, False, (), "",
                            shared_path(token))
    if request.what == "unshare":
        if shares.unshare(settings, units, notebook):
            logger.info("student stopped sharing %s", notebook, extra=fields)
        return state
    found = copies.newer(theirs, notebook, who.language)
    return _with_share(settings, units, StudentState(
        student.id, units.course, notebook, found.newer, found.changes, "", ""))


def _share(settings: Settings, who: Asker, theirs: copies.Copies, notebook: str) -> str:
    """Render the student's copy, within the bounds of shares.py, and publish it."""
    units = who.units
    shares.check_room(settings, units, notebook, who.language)
    data = read_copy(theirs.home, theirs.rel(notebook))
    if data is None:
        raise i18n.error(Code.UNKNOWN_NOTEBOOK, who.language, "action.no_copy",
                         "action.no_copy.hint")
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise shares.too_large(who.language)
    try:
        html = staff.render(data, PurePosixPath(notebook).name, who.language,
                            note=i18n.text(who.language, "share.note", course=units.course),
                            limit=shares.MAX_PAGE_BYTES)
    except staff.PageTooLarge:
        raise shares.too_large(who.language) from None
    return shares.share(settings, units, notebook, html, who.language)


def _in_course(source: Path, notebook: str) -> bool:
    try:
        master_path(source, notebook)
    except NbunitsError:
        return False
    return True


def _with_share(settings: Settings, units: StudentUnits, state: StudentState) -> StudentState:
    token = shares.load(settings, units).get(state.notebook)
    if token is None:
        return state
    return StudentState(state.student_id, state.course, state.notebook, state.newer,
                        state.changes, state.kept, shared_path(token))
