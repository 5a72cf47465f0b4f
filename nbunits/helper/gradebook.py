"""Each student's current score per notebook, as staff and admins read it.

Two root-only records hold scores, and a student's current one is the newer:
- the last grading of their submission (helper/grading.py, Settings.grade_file);
- the score queued for the LMS (helper/outbox.py): a grading's, or one an admin set
  or overrode with `nbunits score set` (a grading that had nowhere to send its
  score is only in the first).
Read by the staff page (helper/provision.py staff_students) and `nbunits course
stats` (admin/courses.py), whose numbers the Cockpit page shows. No database: the
files are the record, as everywhere else.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from nbunits.core.config import Settings
from nbunits.core.names import USER_RE
from nbunits.helper import outbox

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    given: float
    maximum: float
    when: float  # Unix time it was given
    state: str  # "graded" (kept here only), or the outbox's: pending, failed, sent

    @property
    def fraction(self) -> float:
        return self.given / self.maximum


def results(settings: Settings, course: str) -> dict[tuple[str, str], Result]:
    """(user, notebook) -> the current score of the course's students."""
    found: dict[tuple[str, str], Result] = {}
    for user, notebook, result in _graded(settings.course_grades(course)):
        found[(user, notebook)] = result
    for score in outbox.scores(settings, course):
        queued = Result(score.given, score.maximum, score.enqueued, score.state)
        current = found.get((score.user, score.notebook))
        if current is None or queued.when >= current.when:
            found[(score.user, score.notebook)] = queued
    return found


def _graded(folder: Path) -> Iterable[tuple[str, str, Result]]:
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*/*.json")):
        user = path.parent.name
        if not USER_RE.fullmatch(user):
            continue
        try:
            data = json.loads(path.read_text())
            result = Result(float(data["total"]), float(data["max"]),
                            datetime.fromisoformat(data["when"]).timestamp(), "graded")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.error("cannot read the grading %s: %s", path, exc)
            continue
        if result.maximum > 0:
            yield user, unquote(path.name[:-len(".json")]), result


@dataclass(frozen=True)
class NotebookScores:
    """What `course stats` says of one notebook's scores."""

    count: int
    median: float  # of the scores given
    maximum: float  # the most common maximum (a notebook's is usually one)
    median_percent: float  # of each score as a share of its own maximum


def per_notebook(found: dict[tuple[str, str], Result]) -> dict[str, NotebookScores]:
    by_notebook: dict[str, list[Result]] = defaultdict(list)
    for (_, notebook), result in found.items():
        by_notebook[notebook].append(result)
    return {notebook: NotebookScores(
        len(scores), statistics.median(s.given for s in scores),
        statistics.mode(s.maximum for s in scores),
        round(100 * statistics.median(s.fraction for s in scores), 1))
        for notebook, scores in sorted(by_notebook.items())}
