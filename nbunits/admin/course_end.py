"""A course's end: its students' work saved, then deleted after its retention period.

`nbunits course end COURSE` records when the course ended (its end_date setting;
`course update --end-date` sets one ahead). Its retention_days setting says how long
the work stays after that (none, the default: forever); students may still open their
notebooks meanwhile, and not after it (the helper refuses, provision.py).
nbunits-course-end.timer runs `nbunits course expire --yes` daily: for each course past
its end plus its retention, it stops the course's units, exports every student's work
(export.py, one archive each) into /var/lib/nbunits/backups/courses/<course>-<time>/,
and then deletes, for each student whose archive was written (never one whose export
failed, and nothing at all when the folder cannot be written):
- a student of no other course: all of them, exactly as `nbunits student delete`
  (students.py), without its tarball of the home (the archive is the backup);
- a student with another course: this course's part only (its folders in the home, its
  records, units, shares and id links); the other course's work stays.
Each export is an EXPORTED event in the journal, each deletion a DELETED one, each
failed export a FAILED one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nbunits.admin import export, students
from nbunits.admin.identity import save_aliases
from nbunits.core.aliases import load_aliases
from nbunits.core.config import CourseConfig, Settings, list_courses, load_course
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.events import Event
from nbunits.core.events import send as send_event
from nbunits.core.files import write_atomic
from nbunits.core.names import COURSE_RE, StudentUnits
from nbunits.core.systemctl import active_users, daemon_reload, stop_course, systemctl
from nbunits.helper import btrfs, shares
from nbunits.helper.users import recorded_id

Say = Callable[[str], None]
INDEX = "index.json"  # in a course's backup folder: which archive is whose


def end(settings: Settings, course: str, when: datetime) -> CourseConfig:
    """Record the course's end: its end_date, in its course file (the units do not
    change: no reload)."""
    config = load_course(settings, course)
    config = dataclasses.replace(config, end_date=when.astimezone(UTC).isoformat(
        timespec="seconds"))
    write_atomic(settings.course_file(course), config.to_toml())
    return config


# --- exporting ----------------------------------------------------------------

@dataclass(frozen=True)
class Export:
    """What `course export` writes: shown first."""

    course: str
    target: Path
    works: tuple[export.Work, ...]
    running: tuple[str, ...]  # whose Jupyter runs now: their saved files are exported

    def describe(self) -> list[str]:
        have = [w for w in self.works if w.has_folder]
        lines = [f"course {self.course}: {len(have)} archive(s) into {self.target}"]
        if self.running:
            lines.append(f"  {len(self.running)} student(s) have their Jupyter running now: "
                         "their files are exported as they are saved on disk")
        return lines


def plan_export(settings: Settings, course: str, target: Path) -> Export:
    """Every check, before anything is written."""
    load_course(settings, course)
    resolved = export.check_destination(settings, target)
    return Export(course, resolved, tuple(export.works(settings, course)),
                  tuple(sorted(active_users(course))))


def run_export(settings: Settings, plan: Export) -> list[export.Exported]:
    with export.destination(plan.target) as fd:
        done = export.export_all(settings, plan.course, fd, list(plan.works))
    journal_export(plan.course, plan.target, done)
    return done


def journal_export(course: str, target: Path, done: list[export.Exported]) -> None:
    ok = [d for d in done if not d.error]
    files = sum(d.counts.files for d in ok)
    size = sum(d.counts.bytes for d in ok)
    archived = sum(d.size for d in ok)
    links = sum(d.counts.links for d in ok)
    send_event(Event.EXPORTED, f"exported the work of {len(ok)} student(s) of course "
               f"{course} to {target}: {files} file(s), {size} bytes ({archived} bytes of "
               f"archives), {links} link(s) left out"
               + (f"; {len(done) - len(ok)} failed" if len(ok) < len(done) else ""),
               course=course, student=None, ADMIN=students.admin(), DIR=target,
               STUDENTS=len(ok), FILES=files, BYTES=size, ARCHIVE_BYTES=archived,
               LINKS_LEFT_OUT=links, FAILED=len(done) - len(ok))
    for failed in done:
        if failed.error:
            send_event(Event.FAILED, f"the work of {failed.work.user} in course {course} "
                       f"was not exported: {failed.error}", course=course,
                       student=failed.work.user, DIR=target)


# --- deleting after the retention period ------------------------------------

@dataclass(frozen=True)
class Due:
    """An ended course whose retention period is over, and what goes."""

    course: str
    due: datetime
    works: tuple[export.Work, ...]
    whole: frozenset[str]  # users deleted whole: they have no other course

    def describe(self) -> list[str]:
        lines = [f"course {self.course}: ended, its retention period over since "
                 f"{self.due.isoformat(timespec='seconds')}; {len(self.works)} student(s):"]
        # Users only, never LMS ids: the timer's output goes to the journal (the
        # backup's index.json says which archive is whose).
        for work in self.works:
            what = ("the student, all of them (their only course)" if work.user in self.whole
                    else "this course's folders and records (they have another course)")
            saved = "after saving their work" if work.has_folder else "(no course folder)"
            lines.append(f"  {work.user}: {what}, {saved}")
        return lines


def other_work(settings: Settings, user: str, course: str) -> list[str]:
    """The student's other courses: where they opened a notebook, or a course folder
    (kept after a `course remove`) in their home. Hidden entries are nbunits' own."""
    found = set(students.courses_of(settings, user)) - {course}
    try:
        names = os.listdir(settings.home(user))
    except (FileNotFoundError, NotADirectoryError):
        names = []
    found |= {n for n in names if not n.startswith(".") and n != course}
    return sorted(found)


def due_courses(settings: Settings, now: datetime, say: Say) -> list[Due]:
    """The courses whose work is due for deletion at `now`, with their students."""
    found = []
    for name in list_courses(settings):
        try:
            due = load_course(settings, name).deletion_due()
        except NbunitsError as exc:
            say(f"course {name} skipped: {exc.message}")
            continue
        if due is None or due > now:
            continue
        works = tuple(export.works(settings, name))
        if works:
            whole = frozenset(w.user for w in works if not other_work(settings, w.user, name))
            found.append(Due(name, due, works, whole))
    return found


def expire(settings: Settings, plan: Due, stamp: str, say: Say) -> list[str]:
    """Stop, save, then delete what was saved; the problems (failed exports)."""
    stop_course(plan.course)  # nothing is written while the work is saved
    target = settings.course_backup(plan.course, stamp)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(target.parent, 0o700)
    try:
        with export.destination(target) as fd:
            done = export.export_all(settings, plan.course, fd, list(plan.works))
            # Which archive is whose, for after the records are gone (ids never go
            # to the journal); no index, no deletion.
            write_index(target, done)
    except (NbunitsError, OSError) as exc:  # the folder cannot be written: nothing is deleted
        message = getattr(exc, "message", None) or str(exc)
        send_event(Event.FAILED, f"course {plan.course}: nothing deleted, its students' work "
                   f"could not be saved in {target}: {message}", course=plan.course,
                   student=None, DIR=target, ERROR_CODE=getattr(exc, "code", Code.EXPORT_FAILED))
        return [f"course {plan.course}: nothing deleted: {message}"]
    journal_export(plan.course, target, done)
    failed = {d.work.user: d.error for d in done if d.error}
    say(f"course {plan.course}: {len(done) - len(failed)} archive(s) in {target}")
    why = f" (course {plan.course} ended; its retention period is over)"
    problems = [f"course {plan.course}: {user}'s work was not exported ({error}): kept"
                for user, error in failed.items()]
    for work in plan.works:
        if work.user in failed:
            say(f"  {work.user}: kept, their export failed: {failed[work.user]}")
            continue
        saved = target if work.has_folder else None
        try:
            if work.user in plan.whole:
                deletion = students.plan_deletion(settings, work.user, backup=False)
                students.delete(settings, deletion, course=plan.course, why=why, saved=saved)
            else:
                delete_course_part(settings, plan.course, work.user, why, saved)
        except (NbunitsError, OSError) as exc:
            problems.append(f"course {plan.course}: {work.user} not deleted: "
                            f"{getattr(exc, 'message', exc)}")
            continue
        say(f"  {work.user}: deleted")
    daemon_reload()  # systemd forgets the stopped units
    return problems


def write_index(target: Path, done: list[export.Exported]) -> None:
    """index.json in the backup folder: each archive's user, id and counts (root's, 0600)."""
    index = [{"user": d.work.user, "id": d.work.id, "archive": d.work.archive if not d.error
              else "", "files": d.counts.files, "bytes": d.counts.bytes, "error": d.error}
             for d in done]
    write_atomic(target / INDEX, json.dumps(index, indent=1) + "\n", 0o600)


def course_part(settings: Settings, course: str, user: str) -> tuple[list[Path], list[Path]]:
    """(folders, files) of one student in one course."""
    units = StudentUnits(course, user)
    folders = [p for p in settings.course_folders(user, course)
               if p.is_dir() and not p.is_symlink()]
    files = [p for folder in (settings.course_tokens(course), settings.course_copies(course))
             for p in sorted(folder.glob(f"{user}.*")) if p.is_file()]
    files += [p for p in (settings.recent_mark(units),) if p.is_file()]
    files += shares.files_of(settings, units)
    return folders, files


def delete_course_part(settings: Settings, course: str, user: str, why: str,
                       saved: Path | None) -> None:
    """One course's part of a student who has another: units, folders, records, links."""
    units = StudentUnits(course, user)
    names = [*units.started, units.lock]
    systemctl("stop", *names, check=False)
    systemctl("reset-failed", *names, check=False)
    folders, files = course_part(settings, course, user)
    btrfs.forget_course(settings.home(user), course)  # its qgroup, before its subvolumes
    for folder in folders:
        shutil.rmtree(folder)  # fd-based: never follows a symlink in it
    for path in files:
        path.unlink(missing_ok=True)
    student_id = recorded_id(settings, user) or ""
    aliases = load_aliases(settings, course) if COURSE_RE.fullmatch(course) else {}
    kept = {k: v for k, v in aliases.items() if not student_id or student_id not in (k, v)}
    if kept != aliases:
        save_aliases(settings, course, kept)
    send_event(Event.DELETED, f"deleted the work of {user} in course {course}{why}: "
               + "; ".join(str(p) for p in [*folders, *files]), course=course, student=user,
               ADMIN=students.admin(), BACKUP=saved or "")


def stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

