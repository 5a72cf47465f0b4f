"""Scores on their way to the LMS, and where each one goes; root's files only.

Two records per (course, student user, notebook), under Settings.scores_dir (0700):
- its destination (Settings.score_destination): what the student's last verified
  LTI launch of that notebook said (core/outcomes.py), written by the helper at
  that launch (`record`), never from anything a student sends afterwards;
- its latest score (Settings.score_file): `enqueue` writes it atomically, pending;
  a newer score replaces it, pending or sent. helper/scores.py sends pending ones
  (nbunits-scores.service) and marks each sent, or failed and retried later.

Each score carries an id of its own: the sender marks sent only the score it
sent, so one enqueued while it was on its way stays pending, and is sent next.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from nbunits.core.config import Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.names import SCORES_SERVICE, StudentUnits, check_notebook
from nbunits.core.outcomes import BadDestination, Destination
from nbunits.core.systemctl import systemctl

logger = logging.getLogger(__name__)

MAX_COMMENT = 4096
FIRST_RETRY, MAX_RETRY = 60.0, 600.0  # seconds: doubled at each failure, capped
MAX_ERROR = 300  # characters of the last error kept


@dataclass(frozen=True)
class Score:
    course: str
    user: str
    notebook: str
    given: float
    maximum: float
    comment: str
    id: str  # new at each enqueue
    enqueued: float
    attempts: int = 0  # failed attempts since it was enqueued
    next_try: float = 0.0
    last_error: str = ""
    sent: float = 0.0  # when the LMS took it (0: not yet)

    @property
    def state(self) -> str:
        return "sent" if self.sent else "failed" if self.attempts else "pending"

    @property
    def units(self) -> StudentUnits:
        return StudentUnits(self.course, self.user)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Score:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def check_score(given: float, maximum: float, comment: str) -> None:
    for value in (given, maximum):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise NbunitsError(Code.BAD_SCORE, f"a score must be a number, not {value!r}")
    if not (maximum > 0 and 0 <= given <= maximum):
        raise NbunitsError(Code.BAD_SCORE, f"a score of {given} out of {maximum}: it must be "
                           "from 0 to a maximum above 0")
    if len(comment) > MAX_COMMENT:
        raise NbunitsError(Code.BAD_SCORE, f"a comment of at most {MAX_COMMENT} characters")


def backoff(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failure in a row: 60, 120, ... 600."""
    return min(MAX_RETRY, FIRST_RETRY * float(2 ** max(0, min(attempts - 1, 16))))


@contextlib.contextmanager
def locked(settings: Settings) -> Iterator[None]:
    """Between writers of the outbox (enqueue, the sender's marks)."""
    scores_dir(settings)
    fd = os.open(settings.scores_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def scores_dir(settings: Settings) -> Path:
    folder = settings.scores_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # root's only, whatever made it
    return folder


# --- where scores go ------------------------------------------------------------------

def record(settings: Settings, units: StudentUnits, notebook: str,
           destination: Destination) -> None:
    """At a verified launch of `notebook` by the student: where their score goes."""
    scores_dir(settings)
    data = {"notebook": check_notebook(notebook).as_posix(), **destination.to_json()}
    if write_atomic(settings.score_destination(units, notebook), json.dumps(data, indent=1),
                    0o600, unless_same=True):
        logger.info("scores for %s go to %s (LTI %s)", notebook, destination.url,
                    destination.version)


def destination(settings: Settings, units: StudentUnits, notebook: str) -> Destination:
    """Where (course, user, notebook)'s score goes; NO_SCORE_DESTINATION if nowhere."""
    path = settings.score_destination(units, notebook)
    try:
        return Destination.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise NbunitsError(
            Code.NO_SCORE_DESTINATION,
            f"{units.user} has not opened {notebook} of {units.course} from the LMS by LTI "
            "(with grades enabled): nowhere to send a score",
            hint="the student opens the notebook from its LMS component once; then "
                 "scores can be sent") from None
    except (OSError, ValueError, BadDestination) as exc:
        raise NbunitsError(Code.BAD_STATE, f"cannot read {path}: {exc}") from exc


# --- the outbox -----------------------------------------------------------------------

def enqueue(settings: Settings, course: str, user: str, notebook: str, given: float,
            maximum: float, comment: str = "") -> Score:
    """A score to send: replaces the one before for (course, user, notebook), pending
    or sent. Refused (nothing written) if the score does not fit or the student has no
    verified LTI launch of that notebook to send it to. Then the sender is started."""
    units = StudentUnits(course, user)
    notebook = check_notebook(notebook).as_posix()
    check_score(given, maximum, comment)
    destination(settings, units, notebook)
    score = Score(course, user, notebook, float(given), float(maximum), comment,
                  secrets.token_hex(8), time.time())
    with locked(settings):
        write(settings, score)
    logger.info("score %s/%s for %s queued", given, maximum, notebook,
                extra={"COURSE": course, "STUDENT": user})
    start_sender()
    return score


def start_sender() -> None:
    """Send now rather than at the timer's next minute; the timer is the backstop."""
    try:
        systemctl("start", "--no-block", SCORES_SERVICE, check=False)
    except (NbunitsError, OSError) as exc:
        logger.warning("cannot start %s (the timer sends the score): %s", SCORES_SERVICE, exc)


def write(settings: Settings, score: Score) -> None:
    write_atomic(settings.score_file(score.units, score.notebook),
                 json.dumps(asdict(score), indent=1), 0o600)


def read(path: Path) -> Score:
    try:
        return Score.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NbunitsError(Code.BAD_STATE, f"cannot read the score {path}: {exc}") from exc


def scores(settings: Settings, course: str = "") -> list[Score]:
    found = []
    for path in settings.score_files(course):  # a course's own folder only
        try:
            score = read(path)
        except NbunitsError as exc:
            logger.error("%s", exc.message)
            continue
        if not course or score.course == course:
            found.append(score)
    return found


def mark(settings: Settings, score: Score, *, error: str = "",
         now: float | None = None) -> Score | None:
    """After an attempt: sent, or failed and due again later. Only if the file still
    holds this very score (a newer one replaced it meanwhile: it stays pending).
    Returns what was written, None if it was replaced."""
    now = time.time() if now is None else now
    with locked(settings):
        path = settings.score_file(score.units, score.notebook)
        try:
            current = read(path)
        except NbunitsError:
            return None
        if current.id != score.id:
            return None
        if error:
            attempts = current.attempts + 1
            done = replace(current, attempts=attempts, next_try=now + backoff(attempts),
                           last_error=error[:MAX_ERROR])
        else:
            done = replace(current, sent=now, last_error="")
        write(settings, done)
        return done


def count(settings: Settings, course: str, what: str) -> None:
    """One more score sent or failed attempt for `course` (`nbunits metrics`' counters)."""
    with locked(settings):
        counts = counts_of(settings)
        per = counts.setdefault(course, {})
        per[what] = per.get(what, 0) + 1
        write_atomic(settings.score_counts, json.dumps(counts), 0o600)


def counts_of(settings: Settings) -> dict[str, dict[str, int]]:
    try:
        data = json.loads(settings.score_counts.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(c): {str(k): v for k, v in per.items() if isinstance(v, int)}
            for c, per in data.items() if isinstance(per, dict)}
