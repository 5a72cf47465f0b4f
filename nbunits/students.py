"""Students as an admin sees them: who they are, which courses, and deleting one.

A student is a Linux user named nb... (names.user_for; a JSON user record in
/etc/userdb, users.py) with a record of their LMS id in
/var/lib/nbunits/students/<user>. What belongs to them: the user and its home,
that record, their marks of recent activity (activity.py), in each course a
capability (tokens/<course>/<user>.*) and a manifest of copies
(copies/<course>/<user>.json), the units of each course, and id links
(aliases/<course>.json) that name their id. Deleting takes all of it, after a
tarball of the home unless asked not to (`nbunits student delete`).
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import btrfs
from .config import Settings
from .errors import NbunitsError
from .identity import load_aliases, save_aliases
from .names import COURSE_RE, USER_RE, parse_unit
from .run import run
from .systemd import list_units
from .users import recorded_id, remove_user_record

BACKUPS = "backups"


@dataclass(frozen=True)
class StudentInfo:
    user: str
    id: str  # the LMS id ("" if no record says)
    home: str
    courses: tuple[str, ...]  # where they have a capability (opened a notebook)
    since: str  # ISO 8601: when their record was written (first launch)


def all_users(settings: Settings) -> list[str]:
    """Every student user: recorded ones, and nb... users that nbunits made (GECOS)."""
    found = {p.name for p in _listdir(settings.students_dir) if USER_RE.fullmatch(p.name)}
    found |= {e.pw_name for e in pwd.getpwall() if USER_RE.fullmatch(e.pw_name)
              and e.pw_gecos.startswith("nbunits student")}
    return sorted(found)


def courses_of(settings: Settings, user: str) -> list[str]:
    return sorted(d.name for d in _listdir(settings.tokens_dir)
                  if COURSE_RE.fullmatch(d.name) and (d / f"{user}.env").exists())


def info(settings: Settings, user: str) -> StudentInfo:
    record = settings.students_dir / user
    try:
        since = datetime.fromtimestamp(record.stat().st_mtime, UTC).isoformat()
    except FileNotFoundError:
        since = ""
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        home = ""
    return StudentInfo(user, recorded_id(settings, user) or "", home,
                       tuple(courses_of(settings, user)), since)


def listing(settings: Settings, course: str | None = None) -> list[StudentInfo]:
    found = [info(settings, user) for user in all_users(settings)]
    return [s for s in found if course is None or course in s.courses]


def remove_user(settings: Settings, user: str) -> None:
    """The user's JSON records (users.py); a user from before them, with userdel."""
    if (settings.userdb_dir / f"{user}.user").exists():
        remove_user_record(settings, user, pwd.getpwnam(user).pw_uid)
    else:
        run(["userdel", user])


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


# --- deleting ---------------------------------------------------------------

@dataclass
class Deletion:
    """Exactly what `student delete` removes: shown first, then done, nothing else."""

    user: str
    id: str
    home: Path | None  # None: no such user (left-overs only)
    units: list[str] = field(default_factory=list)  # loaded units, stopped first
    running: list[str] = field(default_factory=list)  # courses where Jupyter runs now
    files: list[Path] = field(default_factory=list)  # records, tokens, manifests
    aliases: dict[str, list[str]] = field(default_factory=dict)  # course -> ids unlinked
    backup: Path | None = None

    def describe(self) -> list[str]:
        lines = [f"student {self.user}" + (f" (id {self.id})" if self.id else "") + ":"]
        if self.home:
            lines.append(f"  the Linux user {self.user} and its home {self.home}, all of it "
                         "(with its courses' subvolumes and qgroups on btrfs)")
        for unit in self.units:
            lines.append(f"  the unit {unit} (stopped"
                         + (", Jupyter running now)" if unit.endswith(".service")
                            and any(f"nbunits-{c}@" in unit for c in self.running) else ")"))
        lines += [f"  {path}" for path in self.files]
        for course, ids in self.aliases.items():
            lines.append(f"  the id links of {', '.join(ids)} in {aliases_file_name(course)}")
        lines.append(f"  (first, the home is saved to {self.backup})" if self.backup
                     else "  (no backup)")
        return lines


def aliases_file_name(course: str) -> str:
    return f"aliases/{course}.json"


def plan_deletion(settings: Settings, user: str, *, backup: bool) -> Deletion:
    try:
        home: Path | None = Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        home = None
    student_id = recorded_id(settings, user) or ""
    units = list_units([f"nbunits-*@{user}.socket", f"nbunits-*@{user}.service"])
    running = [parsed.units.course for u in
               list_units([f"nbunits-*@{user}.service"], "active,activating,deactivating")
               if (parsed := parse_unit(u)) and parsed.kind == "container"]
    files = [p for p in (settings.students_dir / user,) if p.exists()]
    for folder in (*_listdir(settings.tokens_dir), *_listdir(settings.copies_dir)):
        files += sorted(p for p in folder.glob(f"{user}.*") if p.is_file())
    files += [mark for folder in _listdir(settings.recent_dir)
              if (mark := folder / user).is_file()]
    aliases = {}
    for path in _listdir(settings.state_dir / "aliases"):
        course = path.stem
        if student_id and COURSE_RE.fullmatch(course):
            ids = sorted({k for k, v in load_aliases(settings, course).items()
                          if student_id in (k, v)})
            if ids:
                aliases[course] = ids
    if home is None and not files and not units:
        raise NbunitsError("unknown_student", f"no student {user}",
                           hint="nbunits student list shows them; nbunits student find ID "
                                "gives the user of an LMS id")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = settings.state_dir / BACKUPS / f"{user}-{stamp}.tar.gz" \
        if backup and home is not None and home.is_dir() else None
    return Deletion(user, student_id, home, units, running, files, aliases, target)


def delete(settings: Settings, plan: Deletion) -> None:
    """Do exactly what `plan` lists, in an order that loses nothing if interrupted:
    stop, save, then delete."""
    if plan.units:
        run(["systemctl", "stop", *plan.units], check=False)
        run(["systemctl", "reset-failed", *plan.units], check=False)
    if plan.backup and plan.home is not None:
        plan.backup.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Numeric owners, no symlink followed: a faithful copy of the home.
        run(["tar", "--create", "--gzip", "--numeric-owner", "--file", str(plan.backup),
             "--directory", str(plan.home.parent), plan.home.name], timeout=3600)
        os.chmod(plan.backup, 0o600)
    if plan.home is not None:
        remove_user(settings, plan.user)
        if plan.home.is_dir() and not plan.home.is_symlink():
            # On btrfs: each course's qgroup first (btrfs.py), then its subvolumes go
            # with the rest (rmdir removes an empty subvolume, and its own qgroup).
            btrfs.forget(plan.home)
            shutil.rmtree(plan.home)  # fd-based: never follows a symlink in it
    for path in plan.files:
        path.unlink(missing_ok=True)
    for course, ids in plan.aliases.items():
        save_aliases(settings, course, {k: v for k, v in load_aliases(settings, course).items()
                                        if k not in ids})
    # The generator enables the sockets of students with a token: now not theirs.
    run(["systemctl", "daemon-reload"])
