"""Students' copies of a course's masters: follow updates, never lose an edit.

For each (course, student), a root-owned manifest (/var/lib/nbunits/copies/<course>/
<user>.json) records, per notebook, the source hash (notebooks.source_hash: cell types
and sources, outputs ignored) of the master the copy was made from. A copy whose
sources still hash to that is *unmodified*: it follows the master. Any other copy is
the student's and is never touched; a marker file beside it tells the student that a
newer version exists. New masters are copied for everyone; removed masters leave
copies alone. A reset keeps the old copy beside the fresh one, under a timestamped name.

Every write goes through notebooks.py (dir fds, O_NOFOLLOW, temp file + rename), so a
copy is always seen whole and a student's symlink never redirects a root write.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import functools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from nbunits.core.config import CourseConfig, Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.names import StudentUnits, exercise_url
from nbunits.helper.notebooks import (
    NotebookError,
    exists,
    find_masters,
    install_copy,
    link_tree,
    master_path,
    read_copy,
    read_master,
    remove_file,
    replace_copy,
    source_hash,
    validate,
)
from nbunits.helper.users import Student

logger = logging.getLogger(__name__)

MARKER_SUFFIX = ".NEW-VERSION.md"
# Where a student's container mounts the published course, read-only (the course
# unit's --volume): inside the student's home there, so any image has room for it.
COURSE_IN_CONTAINER = PurePosixPath("/home/student/course")


class Action(enum.Enum):
    INSTALL = "install"        # no copy yet: copy the master
    UP_TO_DATE = "up_to_date"  # the copy's sources are the master's
    ADOPT = "adopt"            # a copy nbunits has no record of: the student's, from now on
    FOLLOW = "follow"          # unmodified copy, newer master: replace it
    DEFER = "defer"            # would follow, but the student's Jupyter runs: next launch
    NOTIFY = "notify"          # modified copy, newer master: tell the student, once
    KEEP = "keep"              # modified copy, nothing new to say


def decide(master: str, record: str | None, copy: str | None, notified: str | None,
           running: bool) -> Action:
    """What to do with one copy, from source hashes only (never from timestamps).

    master: the current master's hash; record: the hash of the master the copy was
    made from (None: no record); copy: the copy's hash (None: no copy); notified:
    the master hash the student was last told about.
    """
    if copy is None:
        return Action.INSTALL
    if copy == master:
        return Action.UP_TO_DATE
    if record is None:
        return Action.ADOPT
    if copy == record:
        return Action.DEFER if running else Action.FOLLOW
    if record != master and notified != master:
        return Action.NOTIFY
    return Action.KEEP


@dataclass
class Record:
    master: str  # source hash of the master this copy was made from
    notified: str | None = None  # master hash the marker file announced


@dataclass
class Report:
    """What a sync did, by action: notebook paths relative to the course."""

    done: dict[Action, list[str]] = field(default_factory=dict)
    linked: int = 0  # links made to the course's other files (notebooks.link_tree)

    def add(self, action: Action, notebook: str) -> None:
        self.done.setdefault(action, []).append(notebook)

    def of(self, action: Action) -> list[str]:
        return self.done.get(action, [])

    def summary(self) -> str:
        words = [f"{len(v)} {k.value}" for k, v in sorted(self.done.items(), key=lambda i: i[0].value)]
        words += [f"{self.linked} linked"] if self.linked else []
        return ", ".join(words) or "nothing to do"


def marker_path(notebook: str) -> PurePosixPath:
    path = PurePosixPath(notebook)
    return path.with_name(path.stem + MARKER_SUFFIX)


def load_manifest(path: Path) -> dict[str, Record]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {nb: Record(r["master"], r.get("notified")) for nb, r in data["notebooks"].items()}


def save_manifest(path: Path, records: dict[str, Record]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"version": 1, "notebooks": {nb: vars(r) for nb, r in sorted(records.items())}}
    write_atomic(path, json.dumps(data, indent=1) + "\n", 0o600)


@contextlib.contextmanager
def locked(manifest: Path) -> Iterator[None]:
    """One writer per (course, student): the helper's launch and the CLI's update."""
    manifest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(manifest.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Copies:
    """One student's copies of one course: where everything is."""

    course: str
    masters: Path  # the published masters
    home: Path  # the student's home; copies are in home/course/
    manifest: Path
    uid: int
    gid: int
    student: str = ""  # the student's LMS id, for the reset link in marker files

    def reset_link(self, notebook: str) -> str:
        """How the student resets a notebook: its exercise URL with ?reset=1."""
        return exercise_url(self.course, notebook, self.student, reset=True) if self.student else ""

    def rel(self, notebook: str | PurePosixPath) -> PurePosixPath:
        return PurePosixPath(self.course, notebook)


def sync(copies: Copies, *, running: bool) -> Report:
    """Bring every copy in line with the masters, as `decide` says."""
    report = Report()
    with locked(copies.manifest):
        report.linked = _link_course_files(copies)
        records = load_manifest(copies.manifest)
        before = {nb: vars(r).copy() for nb, r in records.items()}
        for notebook in find_masters(copies.masters):
            try:
                data, master = _master(copies.masters, notebook)
                _sync_one(copies, notebook, data, master, records, running, report)
            except (NbunitsError, OSError) as exc:  # a broken master, a student's odd file
                # Skipped, not fatal: the student's launch must go on.
                logger.warning("not syncing %s for %s: %s", notebook, copies.home.name,
                               getattr(exc, "message", exc), extra={"COURSE": copies.course})
        if {nb: vars(r) for nb, r in records.items()} != before:
            save_manifest(copies.manifest, records)
    return report


def _link_course_files(copies: Copies) -> int:
    """link_tree for this student; a folder of theirs it cannot use is logged, not fatal."""
    try:
        return link_tree(copies.home, copies.course, copies.masters, COURSE_IN_CONTAINER,
                         copies.uid, copies.gid)
    except (NbunitsError, OSError) as exc:  # the student's folder is odd: the notebooks still go on
        logger.warning("not linking the course's files for %s: %s", copies.home.name,
                       getattr(exc, "message", exc), extra={"COURSE": copies.course})
        return 0


def _master(masters: Path, notebook: str) -> tuple[bytes, str]:
    """A master's bytes and source hash, validated once per version of the file.

    `course update` syncs every student in turn: without this, each would validate
    every master again.
    """
    path = master_path(masters, notebook)
    st = path.stat()
    return _validated_master(str(path), st.st_ino, st.st_mtime_ns, st.st_size, notebook)


@functools.lru_cache(maxsize=256)
def _validated_master(path: str, inode: int, mtime_ns: int, size: int,
                      notebook: str) -> tuple[bytes, str]:
    data = Path(path).read_bytes()
    validate(data, notebook)
    return data, source_hash(data)


def _sync_one(copies: Copies, notebook: str, data: bytes, master: str,
              records: dict[str, Record], running: bool, report: Report) -> None:
    copy = read_copy(copies.home, copies.rel(notebook))
    record = records.get(notebook)
    action = decide(master, record.master if record else None,
                    None if copy is None else source_hash(copy),
                    record.notified if record else None, running)
    if action is Action.INSTALL:
        install_copy(copies.home, copies.rel(notebook), data, copies.uid, copies.gid)
        records[notebook] = Record(master)
    elif action is Action.FOLLOW:
        replace_copy(copies.home, copies.rel(notebook), data, copies.uid, copies.gid)
        records[notebook] = Record(master)
    elif action is Action.UP_TO_DATE:
        records[notebook] = Record(master)
    elif action is Action.ADOPT:
        # Assume it was made from the current master: newer ones will be announced.
        records[notebook] = Record(master)
    elif action is Action.NOTIFY:
        text = marker_text(notebook, copies.reset_link(notebook))
        replace_copy(copies.home, copies.rel(marker_path(notebook)), text.encode(),
                     copies.uid, copies.gid)
        assert record is not None  # decide() adopts unrecorded copies first
        records[notebook] = Record(record.master, notified=master)
    if action in (Action.INSTALL, Action.FOLLOW, Action.UP_TO_DATE):
        remove_file(copies.home, copies.rel(marker_path(notebook)))
    if action is not Action.UP_TO_DATE and action is not Action.KEEP:
        report.add(action, notebook)


def reset(copies: Copies, notebook: str, now: datetime) -> str | None:
    """A fresh copy of the current master; the old copy is kept beside it, renamed.

    Returns the kept copy's path relative to the course, or None if there was
    nothing to keep (no copy, or the copy was the master byte for byte).
    """
    data = read_master(copies.masters, notebook)
    rel = copies.rel(notebook)
    with locked(copies.manifest):
        # A folder that held no notebook at the last sync is a link into the course:
        # now that it holds one, it must be the student's own folder again.
        _link_course_files(copies)
        records = load_manifest(copies.manifest)
        copy = read_copy(copies.home, rel)
        kept = None
        if copy is None:
            install_copy(copies.home, rel, data, copies.uid, copies.gid)
        elif copy != data:
            kept = aside_name(copies, PurePosixPath(notebook), now)
            replace_copy(copies.home, rel, data, copies.uid, copies.gid, keep_as=kept.name)
        records[notebook] = Record(source_hash(data))
        remove_file(copies.home, copies.rel(marker_path(notebook)))
        save_manifest(copies.manifest, records)
    return None if kept is None else kept.as_posix()


def aside_name(copies: Copies, notebook: PurePosixPath, now: datetime) -> PurePosixPath:
    """week1/loops.ipynb -> week1/loops-20261125-231502.ipynb (or -2, -3... if taken)."""
    stem = f"{notebook.stem}-{now:%Y%m%d-%H%M%S}"
    for n in range(1, 100):
        candidate = notebook.with_name(stem + ("" if n == 1 else f"-{n}") + notebook.suffix)
        if not exists(copies.home, copies.rel(candidate)):
            return candidate
    raise NotebookError(Code.BAD_HOME, f"too many kept copies of {notebook}")


def status(copies: Copies) -> dict[str, str]:
    """{notebook: 'unmodified' | 'modified' | 'modified, newer master' | ...}, for admins."""
    records = load_manifest(copies.manifest)
    masters = set(find_masters(copies.masters))
    result = {}
    for notebook in sorted(masters | set(records)):
        copy = read_copy(copies.home, copies.rel(notebook))
        record = records.get(notebook)
        if copy is None:
            result[notebook] = "no copy"
        elif notebook not in masters:
            result[notebook] = "master removed (copy kept)"
        elif record is None:
            result[notebook] = "not recorded"
        else:
            master = source_hash(read_master(copies.masters, notebook))
            mine = source_hash(copy)
            if mine == master:
                state = "up to date"
            elif mine == record.master:
                state = "unmodified, follows the new master at the next launch"
            else:
                state = "modified" + (", newer master available" if record.master != master else "")
            result[notebook] = state
    return result


@dataclass(frozen=True)
class Newer:
    """Whether the course has a newer version of a student's copy, and what changed."""

    newer: bool
    changes: tuple[str, ...] = ()


def newer(copies: Copies, notebook: str) -> Newer:
    """For the student's banner: a newer master than the one their copy was made
    from (a modified copy, or an unmodified one waiting for the next launch)."""
    record = load_manifest(copies.manifest).get(notebook)
    copy = read_copy(copies.home, copies.rel(notebook))
    if record is None or copy is None:
        return Newer(False)
    try:
        path = master_path(copies.masters, notebook)
        data = path.read_bytes()
    except (NbunitsError, OSError):  # removed from the course: nothing newer
        return Newer(False)
    master = source_hash(data)
    if master == record.master or source_hash(copy) == master:
        return Newer(False)
    published = f"Published on {datetime.fromtimestamp(path.stat().st_mtime):%Y-%m-%d}."
    return Newer(True, (published, *describe_changes(copy, data)))


def describe_changes(copy: bytes, master: bytes) -> list[str]:
    """What the new version has that the copy lacks, in a student's words.

    Cells keep their ids in copies, so a master cell whose id the copy lacks is new;
    one whose text differs may be the course's change or the student's own edit.
    """
    def cells(data: bytes) -> dict[str, tuple[str, str]]:
        found = {}
        try:
            for cell in json.loads(data)["cells"]:
                source = cell.get("source", "")
                text = "".join(source) if isinstance(source, list) else str(source)
                found[str(cell.get("id", ""))] = (str(cell.get("cell_type", "")), text)
        except (ValueError, KeyError, TypeError, AttributeError):  # not a notebook
            return {}
        return found

    mine, theirs = cells(copy), cells(master)
    new = [text for cid, (_, text) in theirs.items() if cid not in mine]
    differ = sum(1 for cid, cell in theirs.items() if cid in mine and mine[cid] != cell)
    changes = []
    if new:
        firsts = ", ".join(f"\u201c{_first_line(t)}\u201d" for t in new[:3])
        more = f" and {len(new) - 3} more" if len(new) > 3 else ""
        changes.append(f"{len(new)} new cell{'s' if len(new) > 1 else ''}: {firsts}{more}.")
    if differ:
        changes.append(f"{differ} cell{'s' if differ > 1 else ''} of the new version "
                       f"{'differ' if differ > 1 else 'differs'} from yours "
                       "(your own changes included).")
    return changes


def _first_line(text: str, limit: int = 60) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "(empty)")
    return line if len(line) <= limit else line[:limit - 1] + "\u2026"


def marker_text(notebook: str, reset_link: str) -> str:
    name = PurePosixPath(notebook).name
    how = ("choose Course > Reset to original in the notebook's menu"
           + (f", or open the exercise at `{reset_link}`" if reset_link else ""))
    return (
        f"# A newer version of {name} is available\n\n"
        f"Your copy of `{name}` has your own changes, so it was left exactly as it is.\n"
        f"Since then, the course team has published a new version.\n\n"
        f"To get the new version, {how}. Your current copy is then kept beside it,\n"
        f"renamed with the date (for example `{PurePosixPath(name).stem}-YYYYMMDD-HHMMSS.ipynb`):\n"
        f"nothing you wrote is deleted.\n"
    )


def for_student(settings: Settings, config: CourseConfig, student: Student) -> Copies:
    units = StudentUnits(config.name, student.user)
    return Copies(course=config.name, masters=config.source, home=student.home,
                  manifest=settings.copies_file(units), uid=student.uid, gid=student.gid,
                  student=student.id)
