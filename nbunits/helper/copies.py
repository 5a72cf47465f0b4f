"""Students' copies of a course's masters: follow updates, never lose an edit.

For each (course, student), a root-owned manifest (/var/lib/nbunits/copies/<course>/
<user>.json) records, per notebook, the source hash (notebooks.source_hash: cell types
and sources, outputs ignored) of the master the copy was made from. A copy whose
sources still hash to that is *unmodified*: it follows the master. Any other copy is
the student's: a marker file beside it tells the student that a newer version exists,
or, where the course says so (merge_updates), the new version is merged into it at the
student's next launch (merge.py: nbdime's three-way merge, against the master the copy
was made from, kept by hash in /var/lib/nbunits/versions/<course>/). A merge without
conflicts becomes the copy; one with conflicts is put beside it, the copy untouched.
New masters are copied for everyone; removed masters leave copies alone. A reset keeps
the old copy beside the fresh one, under a timestamped name.

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
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from nbunits.core import i18n
from nbunits.core.config import CourseConfig, Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.names import StudentUnits, exercise_url
from nbunits.helper import merge
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
# A kept master version's name: its source hash.
_VERSION_RE = re.compile(r"[0-9a-f]{64}")

# merge.sandboxed, or merge.merge where no systemd runs (unit tests).
Merger = Callable[[bytes, bytes, bytes], merge.Merged]


class Action(enum.Enum):
    INSTALL = "install"        # no copy yet: copy the master
    UP_TO_DATE = "up_to_date"  # the copy's sources are the master's
    ADOPT = "adopt"            # a copy nbunits has no record of: the student's, from now on
    FOLLOW = "follow"          # unmodified copy, newer master: replace it
    DEFER = "defer"            # would follow, but the student's Jupyter runs: next launch
    NOTIFY = "notify"          # modified copy, newer master: tell the student, once
    MERGE = "merge"            # modified copy, newer master, merging on: merge, once
    KEEP = "keep"              # modified copy, nothing new to say
    # What a merge came to (reported, not decided): the copy is the merge, or the
    # merge with its conflicts marked is beside the untouched copy.
    MERGED = "merged"
    CONFLICT = "merge_conflict"


def decide(master: str, record: str | None, copy: str | None, notified: str | None,
           running: bool, merging: bool = False, tried: str | None = None) -> Action:
    """What to do with one copy, from source hashes only (never from timestamps).

    master: the current master's hash; record: the hash of the master the copy was
    made from (None: no record); copy: the copy's hash (None: no copy); notified:
    the master hash the student was last told about; merging: whether updates are
    merged into edited copies here (the course says so, and this is a launch);
    tried: the master hash a merge was last tried with.
    """
    if copy is None:
        return Action.INSTALL
    if copy == master:
        return Action.UP_TO_DATE
    if record is None:
        return Action.ADOPT
    if copy == record:
        return Action.DEFER if running else Action.FOLLOW
    if record != master and merging and not running and tried != master:
        return Action.MERGE
    if record != master and notified != master:
        return Action.NOTIFY
    return Action.KEEP


@dataclass
class Record:
    master: str  # source hash of the master this copy was made from
    notified: str | None = None  # master hash the marker file announced
    tried: str | None = None  # master hash a merge was tried with (once per version)
    merged: str | None = None  # the merge with conflicts beside the copy (course-relative)


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
    return {nb: Record(r["master"], r.get("notified"), r.get("tried"), r.get("merged"))
            for nb, r in data["notebooks"].items()}


def save_manifest(path: Path, records: dict[str, Record]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"version": 1, "notebooks": {
        nb: {k: v for k, v in vars(r).items() if v is not None} for nb, r in sorted(records.items())}}
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
    versions: Path | None = None  # the course's masters kept by hash (None: none kept)
    merger: Merger | None = None  # merges updates into edited copies (None: announces them)

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
                    record.notified if record else None, running,
                    merging=copies.merger is not None, tried=record.tried if record else None)
    if action is Action.MERGE:
        assert record is not None and copy is not None  # decide() merges recorded copies only
        action = _merge(copies, notebook, data, master, record, copy, records)
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
    elif action in (Action.NOTIFY, Action.CONFLICT):
        merged = records[notebook].merged if action is Action.CONFLICT else None
        text = marker_text(notebook, copies.reset_link(notebook), merged)
        replace_copy(copies.home, copies.rel(marker_path(notebook)), text.encode(),
                     copies.uid, copies.gid)
        assert record is not None  # decide() adopts unrecorded copies first
        if action is Action.NOTIFY:
            records[notebook] = Record(record.master, notified=master,
                                       tried=records[notebook].tried)
    if action in (Action.INSTALL, Action.FOLLOW, Action.UP_TO_DATE, Action.ADOPT):
        _keep_version(copies, master, data)
    if action in (Action.INSTALL, Action.FOLLOW, Action.UP_TO_DATE, Action.MERGED):
        remove_file(copies.home, copies.rel(marker_path(notebook)))
    if action is not Action.UP_TO_DATE and action is not Action.KEEP:
        report.add(action, notebook)


def _merge(copies: Copies, notebook: str, data: bytes, master: str, record: Record,
           copy: bytes, records: dict[str, Record]) -> Action:
    """Merge the new master into the student's copy (once per master version): the
    copy becomes the merge (MERGED), or the merge with its conflicts marked is put
    beside it (CONFLICT). Without the copy's base, or if the merge fails: NOTIFY."""
    assert copies.merger is not None
    fields = {"COURSE": copies.course, "STUDENT": copies.home.name, "NOTEBOOK": notebook}
    base = _version(copies, record.master)
    if base is None:
        logger.info("not merging the update of %s for %s: the version the copy was made "
                    "from was not kept; announced instead", notebook, copies.home.name,
                    extra=fields)
        records[notebook] = Record(record.master, record.notified, tried=master)
        return Action.NOTIFY
    try:
        merged = copies.merger(base, copy, data)
    except NbunitsError as exc:
        logger.warning("not merging the update of %s for %s: %s; announced instead", notebook,
                       copies.home.name, exc.message, extra={**fields, "ERROR_CODE": exc.code})
        records[notebook] = Record(record.master, record.notified, tried=master)
        return Action.NOTIFY
    if not merged.conflicts:
        replace_copy(copies.home, copies.rel(notebook), merged.data, copies.uid, copies.gid)
        records[notebook] = Record(master)
        return Action.MERGED
    aside = merged_name(copies, PurePosixPath(notebook))
    install_copy(copies.home, copies.rel(aside), merged.data, copies.uid, copies.gid)
    records[notebook] = Record(record.master, notified=master, tried=master, merged=aside.as_posix())
    return Action.CONFLICT


def _keep_version(copies: Copies, master: str, data: bytes) -> None:
    """Keep the master a copy is made from: the base of a later merge into it."""
    if copies.versions is None or not _VERSION_RE.fullmatch(master):
        return
    path = copies.versions / f"{master}.ipynb"
    if not path.exists():
        copies.versions.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, data, 0o600)


def _version(copies: Copies, master: str) -> bytes | None:
    if copies.versions is None or not _VERSION_RE.fullmatch(master):
        return None
    try:
        return (copies.versions / f"{master}.ipynb").read_bytes()
    except FileNotFoundError:
        return None


def merged_name(copies: Copies, notebook: PurePosixPath) -> PurePosixPath:
    """week1/loops.ipynb -> week1/loops-merged.ipynb (or -merged-2, -3... if taken)."""
    for n in range(1, 100):
        candidate = notebook.with_name(f"{notebook.stem}-merged{'' if n == 1 else f'-{n}'}"
                                       f"{notebook.suffix}")
        if not exists(copies.home, copies.rel(candidate)):
            return candidate
    raise NotebookError(Code.BAD_HOME, f"too many merged versions of {notebook}")


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
                if record.merged and record.tried == master:
                    state += f", merged with conflicts into {record.merged}"
            result[notebook] = state
    return result


@dataclass(frozen=True)
class Newer:
    """Whether the course has a newer version of a student's copy, and what changed."""

    newer: bool
    changes: tuple[str, ...] = ()


def newer(copies: Copies, notebook: str, language: str = i18n.DEFAULT) -> Newer:
    """For the student's banner: a newer master than the one their copy was made
    from (a modified copy, or an unmodified one waiting for the next launch); what
    changed in the student's `language`."""
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
    published = i18n.text(language, "changes.published",
                          date=f"{datetime.fromtimestamp(path.stat().st_mtime):%Y-%m-%d}")
    merged = ((i18n.text(language, "changes.merged", name=PurePosixPath(record.merged).name),)
              if record.merged and record.tried == master else ())
    return Newer(True, (published, *merged, *describe_changes(copy, data, language)))


def describe_changes(copy: bytes, master: bytes, language: str = i18n.DEFAULT) -> list[str]:
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
        more = i18n.text(language, "changes.more", count=len(new) - 3) if len(new) > 3 else ""
        changes.append(i18n.text(language, "changes.new_cells", count=len(new), firsts=firsts,
                                 more=more) if len(new) > 1 else
                       i18n.text(language, "changes.new_cell", firsts=firsts))
    if differ:
        changes.append(i18n.text(language, "changes.differ", count=differ) if differ > 1 else
                       i18n.text(language, "changes.differs"))
    return changes


def _first_line(text: str, limit: int = 60) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "(empty)")
    return line if len(line) <= limit else line[:limit - 1] + "\u2026"


def marker_text(notebook: str, reset_link: str, merged: str | None = None) -> str:
    name = PurePosixPath(notebook).name
    how = ("choose Course > Reset to original in the notebook's menu"
           + (f", or open the exercise at `{reset_link}`" if reset_link else ""))
    text = (
        f"# A newer version of {name} is available\n\n"
        f"Your copy of `{name}` has your own changes, so it was left exactly as it is.\n"
        f"Since then, the course team has published a new version.\n\n")
    if merged:
        text += (
            f"The new version, merged with your changes, is in `{PurePosixPath(merged).name}`:\n"
            f"where you and the course team changed the same cell, it shows both versions\n"
            f"between `<<<<<<< local`, `=======` and `>>>>>>> remote` lines. Keep what you\n"
            f"want of it; your copy stays as it is until you choose.\n\n")
    return text + (
        f"To get the new version, {how}. Your current copy is then kept beside it,\n"
        f"renamed with the date (for example `{PurePosixPath(name).stem}-YYYYMMDD-HHMMSS.ipynb`):\n"
        f"nothing you wrote is deleted.\n"
    )


def for_student(settings: Settings, config: CourseConfig, student: Student, *,
                merging: bool = False) -> Copies:
    """merging: merge updates into edited copies now, if the course says so (at a
    launch: `course update` announces them, and the student's next launch merges)."""
    units = StudentUnits(config.name, student.user)
    return Copies(course=config.name, masters=config.source, home=student.home,
                  manifest=settings.copies_file(units), uid=student.uid, gid=student.gid,
                  student=student.id, versions=settings.course_versions(config.name),
                  merger=merge.sandboxed if merging and config.merge_updates else None)
