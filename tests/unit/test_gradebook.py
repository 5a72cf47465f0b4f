"""A student's current score per notebook (helper/gradebook.py): the newer of their
last grading and the score queued for the LMS; and what `course stats` makes of them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nbunits.core.config import Settings
from nbunits.core.names import StudentUnits
from nbunits.core.outcomes import SCORE_SCOPE, Destination
from nbunits.helper import gradebook, outbox

ANN, BOB, EVE = "nb" + "a" * 16, "nb" + "b" * 16, "nb" + "e" * 16
HW = "week 1/hw.ipynb"  # a folder and a space: kept as quoted file names


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(outbox, "start_sender", lambda: None)
    return Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state")


def graded(settings: Settings, user: str, total: float, maximum: float, when: float,
           notebook: str = HW) -> None:
    """As helper/grading.py's store() writes a grading."""
    path = settings.grade_file(StudentUnits("py", user), notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"notebook": notebook, "total": total, "max": maximum,
                                "tests": [], "sent": False,
                                "when": datetime.fromtimestamp(when, UTC).isoformat()}))


def queued(settings: Settings, user: str, given: float, maximum: float,
           notebook: str = HW) -> outbox.Score:
    units = StudentUnits("py", user)
    outbox.record(settings, units, notebook, Destination(
        "1.3", "https://lms.test/li/1", "sub", issuer="https://lms.test", client_id="c",
        scopes=(SCORE_SCOPE,)))
    return outbox.enqueue(settings, "py", user, notebook, given, maximum)


def test_the_newer_of_a_grading_and_a_queued_score_is_the_students(settings: Settings) -> None:
    now = time.time()
    graded(settings, ANN, 2, 3, now - 60)
    queued(settings, ANN, 3, 3)  # an admin's override, after the grading
    queued(settings, BOB, 1, 3)
    graded(settings, BOB, 3, 3, now + 60)  # a resubmission graded after it
    graded(settings, EVE, 0, 3, now - 10)  # graded with nowhere to send it
    found = gradebook.results(settings, "py")
    assert {k: (r.given, r.state) for k, r in found.items()} == {
        (ANN, HW): (3, "pending"), (BOB, HW): (3, "graded"), (EVE, HW): (0, "graded")}
    assert gradebook.results(settings, "other") == {}


def test_stats_per_notebook_count_and_median(settings: Settings) -> None:
    now = time.time()
    for user, total in ((ANN, 1), (BOB, 2), (EVE, 3)):
        graded(settings, user, total, 3, now)
    graded(settings, ANN, 5, 10, now, notebook="other.ipynb")
    stats = gradebook.per_notebook(gradebook.results(settings, "py"))
    assert stats == {
        HW: gradebook.NotebookScores(3, 2, 3, 66.7),
        "other.ipynb": gradebook.NotebookScores(1, 5, 10, 50.0)}


def test_unreadable_or_foreign_records_are_skipped(settings: Settings) -> None:
    graded(settings, ANN, 1, 3, time.time())
    folder = settings.course_grades("py")
    (folder / ANN / "broken.ipynb.json").write_text("{")
    (folder / "not-a-user").mkdir()
    (folder / "not-a-user" / "x.json").write_text(json.dumps({"total": 1}))
    graded(settings, BOB, 1, 0, time.time())  # no maximum: not a score
    assert list(gradebook.results(settings, "py")) == [(ANN, HW)]
