"""Grading a student's submission of a graded notebook (issue 28, the LMS's half).

A student submits a notebook from the Course menu ("submit", actions.py). What runs:
1. The student's SAVED copy is read as root with the bounded, no-symlink reader
   (notebooks.read_copy), never their running kernel, which keeps its state.
2. It is assembled with the course's source version (Settings.course_sources, root's,
   solutions and hidden tests in it: admin/graded.py), so that editing or deleting a
   test cannot raise a score (assemble()): every locked or test cell the student's
   notebook holds (by nbgrader grade_id) becomes the source's cell, hidden tests
   included; a solution cell keeps the student's text under the source's metadata;
   nbgrader metadata the source does not have (a forged grade_id, forged points, a
   second cell with one grade_id) is dropped; every output is cleared. A test cell
   the student deleted scores 0 and still counts in the maximum.
3. It runs in a FRESH container of the course's image, through a templated unit the
   generator renders per course beside the student's own (units/course/
   nbunits-@COURSE@-grade@.service): the student's own user, rootless podman on the
   image's read-only layers, no network at all (--network=none, PrivateNetwork=, and
   IPAddressDeny=any), the student's memory, CPU and task limits, the sandbox flags of
   the student's unit, nothing of the student's home (the course's published folder
   read-only, as the notebook's folder). Why a unit and not `systemd-run`: its
   settings are a file that `systemd-analyze verify` and the generator's tests read, rendered from the
   same placeholders as the student's unit; and systemd itself (PID 1, as root) opens
   its stdin and stdout on files in a folder of root's (Settings.grading_dir): the
   notebook goes in and the executed notebook comes out without the student's user
   ever having a path to either. Jupyter's own `jupyter nbconvert --execute` (in every
   image: jupyter_server needs nbconvert) with allow_errors and a per-cell timeout
   executes it, under `timeout` (the course's grading_timeout: a run over it is killed,
   and the student told), with TimeoutStartSec= as the unit's backstop.
4. Only autograded tests score (nbgrader's "autograder tests": grade, not solution,
   code): their points when the executed cell shows no error, else 0 (score()). The
   result is stored root-only (Settings.grade_file, one per course, student and
   notebook, replaced by a resubmission), a journal event is written ("graded") and
   the student gets it.
Bounds: the student's own (bounds.py: a rate, one action at a time), a host-wide cap on
gradings at once (a pool of workers of its own, helper/service.py: full is refused at
once, "try again in a minute", Retry-After) and the run's time and memory (above).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from nbunits.core import i18n
from nbunits.core.config import CourseConfig, Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.events import Event
from nbunits.core.events import log as log_event
from nbunits.core.files import write_atomic
from nbunits.core.names import StudentUnits, check_notebook
from nbunits.core.systemctl import show, systemctl
from nbunits.helper import outbox
from nbunits.helper.notebooks import NotebookError, read_copy, read_plain, validate

logger = logging.getLogger(__name__)

MAX_MESSAGE = 200  # characters of a failed test's error message kept
# Seconds the unit may take beyond the notebook's own time: podman's start and stop.
UNIT_MARGIN = 60


@dataclass(frozen=True)
class TestResult:
    grade_id: str
    points: float
    max: float
    passed: bool
    error: str  # the exception's name ("" if passed)
    message: str  # its message, truncated


@dataclass(frozen=True)
class Grade:
    notebook: str
    total: float
    max: float
    tests: tuple[TestResult, ...]
    when: str  # ISO 8601, UTC
    # Put in the outbox to the LMS (helper/outbox.py); False: nowhere to send it (the
    # notebook was not opened by an LTI launch that takes scores).
    sent: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _meta(cell: Any) -> dict[str, Any]:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def is_test(meta: dict[str, Any], cell_type: str) -> bool:
    """An autograded test cell: the only cells that score."""
    return bool(meta.get("grade")) and not meta.get("solution") and cell_type == "code"


def source_cells(source: Any) -> dict[str, Any]:
    """The source's graded, solution and read-only cells, by grade_id."""
    return {m["grade_id"]: cell for cell in source.cells
            if (m := _meta(cell)).get("grade_id") and (m.get("grade") or m.get("solution")
                                                       or m.get("locked"))}


def assemble(student: Any, source: Any) -> Any:
    """The notebook to run: the student's, with the course's own test and read-only
    cells in place of theirs, and no nbgrader metadata but the source's."""
    theirs = source_cells(source)
    seen: set[str] = set()
    nb = copy.deepcopy(student)
    cells = []
    for cell in nb.cells:
        grade_id = str(_meta(cell).get("grade_id", ""))
        src = theirs.get(grade_id) if grade_id not in seen else None
        if src is not None and src.cell_type == cell.cell_type:
            seen.add(grade_id)
            if _meta(src).get("solution"):  # the student's answer, the course's metadata
                cell.metadata["nbgrader"] = copy.deepcopy(_meta(src))
            else:  # a test or read-only cell: the course's own, hidden tests included
                cell = copy.deepcopy(src)
        else:
            cell.metadata.pop("nbgrader", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    nb.cells = cells
    return nb


def score(assembled: Any, executed: Any, source: Any, notebook: str) -> Grade:
    """Points per autograded test of the source: its points when the executed cell
    (the assembled notebook's, at the same place and with the same code) ran without
    an error, else 0; a test missing from the assembled notebook scores 0."""
    ran = executed.cells if len(executed.cells) == len(assembled.cells) else []
    outputs: dict[str, Any] = {}
    for index, cell in enumerate(assembled.cells):
        meta = _meta(cell)
        if is_test(meta, cell.cell_type) and index < len(ran) \
                and ran[index].get("source") == cell.source:
            outputs[meta["grade_id"]] = ran[index]
    results = []
    for cell in source.cells:
        meta = _meta(cell)
        if not is_test(meta, cell.cell_type):
            continue
        most = float(meta.get("points", 0))
        error, message = _failure(outputs.get(meta["grade_id"]))
        passed = not error
        results.append(TestResult(meta["grade_id"], most if passed else 0.0, most, passed,
                                  error, message))
    return Grade(notebook, sum(r.points for r in results), sum(r.max for r in results),
                 tuple(results), datetime.now(UTC).isoformat(timespec="seconds"))


def _failure(cell: Any) -> tuple[str, str]:
    """("", "") if the cell ran without an error, else its error's name and message."""
    if cell is None:
        return "Missing", "this test is not in the submitted notebook"
    if cell.get("execution_count") is None:
        return "NotRun", "this test did not run"
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            message = str(output.get("evalue", ""))
            if len(message) > MAX_MESSAGE:
                message = message[:MAX_MESSAGE - 1] + "…"
            return str(output.get("ename", "Error"))[:MAX_MESSAGE] or "Error", message
    return "", ""


# --- the worker's side: one submission -----------------------------------------------

def to_lms(settings: Settings, units: StudentUnits, grade: Grade) -> bool:
    """Put the score in the outbox to the LMS (nbunits-scores.service sends it, and
    keeps it until the LMS takes it); False if there is nowhere to send it."""
    try:
        outbox.enqueue(settings, units.course, units.user, grade.notebook, grade.total,
                       grade.max)
    except NbunitsError as exc:
        if exc.code not in (Code.NO_SCORE_DESTINATION, Code.BAD_SCORE):
            raise
        logger.info("the score of %s is not sent to the LMS: %s", grade.notebook, exc.message,
                    extra={"COURSE": units.course, "STUDENT": units.user})
        return False
    return True



def submit(settings: Settings, config: CourseConfig, units: StudentUnits, home: Path,
           rel: PurePosixPath, notebook: str, language: str) -> Grade:
    """Grade the student's saved copy of `notebook` (at `rel` in their `home`)."""
    source = _source(settings, config.name, notebook, language)
    data = read_copy(home, rel)
    if data is None:
        raise i18n.error(Code.UNKNOWN_NOTEBOOK, language, "action.no_copy", "action.no_copy.hint")
    try:
        student = validate(data, notebook)
    except NotebookError:
        raise i18n.error(Code.BAD_NOTEBOOK, language, "grade.broken",
                         "action.nothing_changed") from None
    assembled = assemble(student, source)
    executed = run(settings, config, units, json.dumps(assembled).encode(), notebook,
                   language)
    grade = score(assembled, executed, source, notebook)
    grade = replace(grade, sent=to_lms(settings, units, grade))
    store(settings, units, grade)
    log_event(logger, Event.GRADED, f"graded {notebook}: {grade.total:g}/{grade.max:g}",
              course=units.course, student=units.user, NOTEBOOK=notebook,
              SCORE=f"{grade.total:g}", MAX_SCORE=f"{grade.max:g}")
    return grade


def _source(settings: Settings, course: str, notebook: str, language: str) -> Any:
    """The source version of a graded notebook, or the student is told it is not one."""
    check_notebook(notebook)
    try:
        data = read_plain(settings.course_sources(course), notebook)
    except (NotebookError, OSError):
        raise i18n.error(Code.NOT_GRADED, language, "grade.not_graded",
                         "action.nothing_changed") from None
    return validate(data, notebook)  # only graded notebooks have a source kept


def run(settings: Settings, config: CourseConfig, units: StudentUnits, data: bytes,
        notebook: str, language: str) -> Any:
    """Execute the assembled notebook in the course's grading unit; the executed one."""
    folder = settings.grading_dir(units)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    os.chmod(folder.parent, 0o700)
    os.chmod(folder.parent.parent, 0o700)
    try:
        write_atomic(folder / "in.ipynb", data, 0o600)
        workdir = PurePosixPath("/home/student/course") / PurePosixPath(notebook).parent
        write_atomic(folder / "env", f"NBUNITS_GRADE_WORKDIR={workdir}\n", 0o600)
        unit = units.grading
        systemctl("reset-failed", unit, check=False)
        # A oneshot: `start` returns when the run has ended (or the unit's backstop hit).
        systemctl("start", unit, check=False, timeout=config.grading_timeout + UNIT_MARGIN + 15)
        state = show([unit], ("Result", "ExecMainStatus")).get(unit, {})
        return _executed(folder, unit, state, config, notebook, language)
    finally:
        systemctl("reset-failed", units.grading, check=False)
        shutil.rmtree(folder, ignore_errors=True)


# podman's own failures (a missing image, a bad option): ours, never the student's.
PODMAN_FAILED = ("125", "126", "127")


def _executed(folder: Path, unit: str, state: dict[str, str], config: CourseConfig,
              notebook: str, language: str) -> Any:
    """The executed notebook the unit wrote, or why there is none, said to whom it concerns:
    over its time or stopped by the student's code (the student), or a failure of ours."""
    result, status = state.get("Result", ""), state.get("ExecMainStatus", "")
    if result == "timeout" or status == "124":
        raise i18n.error(Code.GRADING_TIMEOUT, language, "grade.timeout",
                         "grade.timeout.hint", seconds=config.grading_timeout)
    if status in PODMAN_FAILED or result not in ("success", "exit-code", "oom-kill"):
        raise NbunitsError(Code.GRADING_FAILED, f"{unit} failed ({result}, status {status}): "
                           f"`journalctl --namespace=nbunits -u {unit}` says why")
    try:
        return validate(read_plain(folder, "out.ipynb"), notebook)
    except NotebookError:
        # nbconvert failed (the kernel died, or used all its memory), or what the student's
        # code wrote is not a notebook: the student's to look into.
        raise i18n.error(Code.GRADING_STOPPED, language, "grade.stopped",
                         "grade.stopped.hint") from None


def store(settings: Settings, units: StudentUnits, grade: Grade) -> None:
    """The result, root's only (0600 in 0700), replacing the last one."""
    path = settings.grade_file(units, grade.notebook)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder in (path.parent.parent.parent, path.parent.parent, path.parent):
        os.chmod(folder, 0o700)
    write_atomic(path, json.dumps(grade.to_json(), indent=1) + "\n", 0o600)


def forget(settings: Settings, course: str | None = None, user: str | None = None) -> int:
    """Delete stored results: a course's (`course remove --purge`) or a student's
    (`student delete`); how many files went."""
    top = settings.grades_dir
    if not top.is_dir():
        return 0
    courses = [top / course] if course else [p for p in top.iterdir() if p.is_dir()]
    count = 0
    for folder in courses:
        students = [folder / user] if user else ([p for p in folder.iterdir() if p.is_dir()]
                                                 if folder.is_dir() else [])
        for student in students:
            if student.is_dir():
                count += sum(1 for _ in student.iterdir())
                shutil.rmtree(student)
        if course and folder.is_dir():
            shutil.rmtree(folder)
    return count


__all__ = ["Grade", "TestResult", "assemble", "forget", "score", "submit"]
