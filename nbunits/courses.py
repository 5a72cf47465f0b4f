"""Courses: publish masters from a folder or a git repository, update, remove, usage.

A course's masters are published into a root-owned folder (/var/lib/nbunits/courses/
<course>), swapped in whole, after nbformat validated and normalized each notebook;
invalid ones are reported and skipped, the others still publish. A git course is
cloned (then fetched) into a root-owned checkout under /var/lib/nbunits/git/ and
published from there. Students' copies follow in copies.py.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import grp
import hashlib
import json
import os
import pwd
import shutil
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt

from . import copies
from .config import (
    CourseConfig,
    CourseSecrets,
    Lti13Registration,
    Settings,
    load_course,
    load_secrets,
)
from .lti import platform_keys
from .errors import NbunitsError
from .names import USER_RE, check_course
from .notebooks import NotebookError, find_masters, normalize
from .run import run, run_shown
from .systemd import daemon_reload, provisioned_students
from .users import Student, recorded_id

Say = Callable[[str], None]

# Settings an admin may give on `course add` / `course update` (the rest is nbunits').
ORIGIN_FIELDS = ("git_url", "git_branch", "origin_dir")
SETTABLE = tuple(f for f in dataclasses.fields(CourseConfig)
                 if f.name not in ("name", "source", *ORIGIN_FIELDS))

AT_FDCWD, RENAME_EXCHANGE = -100, 2

# systemd's "Started UNIT." message: one per start of a student's container.
STARTED_MESSAGE_ID = "39f53479d3a045ac8e11786248231fbf"


class CourseError(NbunitsError):
    pass


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace a file atomically (readers never see half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# --- where the masters come from -------------------------------------------

def fetch(settings: Settings, config: CourseConfig, say: Say) -> Path:
    """The folder to publish from: the course's folder, or its git checkout, refreshed."""
    if config.git_url:
        return fetch_git(settings, config.name, config.git_url, config.git_branch, say)
    if not config.origin_dir:
        raise CourseError("no_origin", f"course {config.name} has no recorded origin",
                          hint=f"nbunits course update {config.name} --dir FOLDER (or --git URL)")
    source = Path(config.origin_dir)
    if not source.is_dir():
        raise CourseError("bad_origin", f"{source} is not a folder")
    return source


def fetch_git(settings: Settings, name: str, url: str, branch: str, say: Say) -> Path:
    checkout = settings.git_dir / name
    if (checkout / ".git").is_dir() and _git_remote(checkout) == url:
        say(f"fetching {url} {branch or '(default branch)'}")
        run_shown(["git", "-C", str(checkout), "fetch", "--progress", "--depth=1", "origin",
                   branch or "HEAD"])
        run(["git", "-C", str(checkout), "reset", "--quiet", "--hard", "FETCH_HEAD"])
        run(["git", "-C", str(checkout), "clean", "--quiet", "-ffdx"])
    else:
        say(f"cloning {url} {branch or '(default branch)'} into {checkout}")
        settings.git_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.rmtree(checkout, ignore_errors=True)
        run_shown(["git", "clone", "--progress", "--depth=1", *(["--branch", branch] if branch else []),
                   "--", url, str(checkout)])
    head = run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"]).stdout.strip()
    say(f"at {head}")
    return checkout


def _git_remote(checkout: Path) -> str:
    return run(["git", "-C", str(checkout), "remote", "get-url", "origin"], check=False).stdout.strip()


# --- publishing -------------------------------------------------------------

def check_masters(source: Path) -> dict[str, str]:
    """{notebook: why it is not published} for the invalid masters under source."""
    broken = {}
    for notebook in find_masters(source):
        try:
            normalize((source / notebook).read_bytes(), notebook)
        except NotebookError as exc:
            broken[notebook] = exc.message
        except OSError as exc:
            broken[notebook] = f"{notebook}: {exc.strerror}"
    return broken


def publish(source: Path, target: Path, skip: set[str]) -> list[str]:
    """Copy the course folder (root-owned, world-readable), swapping it in whole.

    Notebooks are written as nbformat normalizes them. Returns the published ones.
    """
    staging = target.with_name(f".{target.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, symlinks=False, ignore=shutil.ignore_patterns(".*"))
    for notebook in skip:
        (staging / notebook).unlink()
    published = list(find_masters(staging))
    for notebook in published:
        path = staging / notebook
        path.write_bytes(normalize(path.read_bytes(), notebook))
    for path in [staging, *staging.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    if target.exists():
        exchange(staging, target)  # launches never see the course folder missing
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    return published


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); two renames where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS):
        raise OSError(err, os.strerror(err), str(b))
    aside = b.with_name(f".{b.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    b.rename(aside)
    a.rename(b)
    aside.rename(a)


def write_secrets(settings: Settings, name: str, changes: dict[str, str], say: Say) -> CourseSecrets:
    """Merge `changes` into the course's secrets file: root:nbunits 0640, as only the
    dispatcher (group nbunits) needs them."""
    current = load_secrets(settings, name)
    if not changes:
        return current
    merged = dataclasses.replace(current, **changes)
    gid = grp.getgrnam("nbunits").gr_gid
    settings.secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chown(settings.secrets_dir, 0, gid)
    os.chmod(settings.secrets_dir, 0o750)
    path = settings.secrets_file(name)
    write_file(path, merged.to_toml(), mode=0o640)
    os.chown(path, 0, gid)
    say(f"secrets written to {path} ({', '.join(sorted(changes))})")
    return merged


def check_launch_secrets(config: CourseConfig, secrets: CourseSecrets) -> None:
    if config.legacy == "signed" and not secrets.legacy_secret:
        raise CourseError("no_secret", f"course {config.name}: legacy = signed needs a secret",
                          hint="add --legacy-secret-file FILE")


def fetch_platform_keys(config: CourseConfig, say: Say) -> None:
    """Save the LMS's LTI 1.3 public keys (JWKS) where the dispatcher reads them,
    and check that the dispatcher can read every registration's keys."""
    for registration in config.lti13:
        if registration.keys_url:
            fetch_keys(registration, say)
        if registration.keys:
            check_keys(Path(registration.keys))


def fetch_keys(registration: Lti13Registration, say: Say) -> None:
    url = registration.keys_url
    say(f"fetching the platform's keys for client {registration.client_id} from {url}")
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            text = reply.read(1 << 20).decode()
        if not jwt.PyJWKSet.from_json(text).keys:
            raise ValueError("no usable key in it")
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise CourseError("bad_keys", f"cannot get the keys at {url}: {exc}",
                          hint="check --lti13-keys-url (the platform's JWKS URL)") from exc
    path = Path(registration.keys)
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    write_file(path, text)  # atomically: a launch never reads half a key set
    say(f"  new keys saved in {path}")


def check_keys(path: Path) -> None:
    """The key file parses, and the dispatcher's user (nbunits) can read it: a file
    it cannot read would turn every launch into an error."""
    try:
        platform_keys(path)
    except (OSError, ValueError, NbunitsError, jwt.PyJWTError) as exc:
        raise CourseError("bad_keys", f"{path} is not a JWKS or PEM public key: {exc}",
                          hint="--lti13-keys names the platform's key file (JWKS or PEM)") from exc
    if run(["getent", "passwd", "nbunits"], check=False).returncode != 0:
        return  # not installed yet: nobody to check for
    readable = run(["setpriv", "--reuid=nbunits", "--regid=nbunits", "--init-groups",
                    "--", "test", "-r", str(path)], check=False)
    if readable.returncode != 0:
        raise CourseError("bad_keys", f"the dispatcher (user nbunits) cannot read {path}",
                          hint=f"make it and its folders readable, e.g. chmod a+r {path}")


def keys_path(settings: Settings, course: str, issuer: str, client_id: str) -> Path:
    """Where a registration's keys are kept when the admin names no file."""
    digest = hashlib.sha256(f"{issuer} {client_id}".encode()).hexdigest()[:16]
    return settings.etc_dir / "lti13-keys" / f"{check_course(course)}-{digest}.json"


def edit_registrations(settings: Settings, course: str,
                       current: tuple[Lti13Registration, ...], change: dict[str, Any],
                       remove: list[str]) -> tuple[Lti13Registration, ...]:
    """The course's LTI 1.3 registrations after `course add/update` options.

    `change` holds the --lti13-* options given (issuer, client_id, deployment_ids,
    auth_url, keys, keys_url). With a client id, the registration of that client id
    is updated, or added (its issuer defaults to the course's other registrations'
    one); without, the course's only registration is updated. `remove` names
    client ids to drop."""
    registrations = list(current)
    for client_id in remove:
        kept = [r for r in registrations if r.client_id != client_id]
        if len(kept) == len(registrations):
            raise CourseError("bad_request", f"course {course} has no LTI 1.3 client {client_id}")
        registrations = kept
    if not change:
        return tuple(registrations)
    client_id = change.get("client_id")
    if client_id:
        found = [i for i, r in enumerate(registrations) if r.client_id == client_id
                 and r.issuer == change.get("issuer", r.issuer)]
    elif len(registrations) == 1:
        found = [0]
    else:
        raise CourseError("bad_request", f"course {course} has {len(registrations)} LTI 1.3 "
                          "registrations: say which with --lti13-client-id")
    if found:
        merged = dataclasses.replace(registrations[found[0]], **change)
    else:
        issuers = {r.issuer for r in registrations}
        issuer = change.get("issuer") or (issuers.pop() if len(issuers) == 1 else "")
        if not issuer:
            raise CourseError("bad_request", "a new LTI 1.3 registration needs --lti13-issuer")
        merged = Lti13Registration(**{**change, "issuer": issuer})
    if merged.keys_url and not merged.keys:
        merged = dataclasses.replace(merged, keys=str(
            keys_path(settings, course, merged.issuer, merged.client_id)))
    if found:
        registrations[found[0]] = merged
    else:
        registrations.append(merged)
    return tuple(registrations)


def refresh_keys(settings: Settings, names: list[str], say: Say) -> list[str]:
    """Fetch every LTI 1.3 registration's JWKS again (the nbunits-refresh-keys timer).
    Returns the problems; one course failing does not stop the others."""
    problems = []
    for name in names:
        try:
            config = load_course(settings, name)
            for registration in config.lti13:
                if registration.keys_url:
                    fetch_keys(registration, say)
        except NbunitsError as exc:
            problems.append(f"{name}: {exc.message}")
    return problems


def publish_from(settings: Settings, config: CourseConfig, source: Path, say: Say) -> list[str]:
    fetch_platform_keys(config, say)
    say(f"checking the notebooks in {source}")
    broken = check_masters(source)
    for reason in broken.values():
        say(f"  skipped: {reason}")
    say(f"publishing into {config.source}")
    published = publish(source, config.source, skip=set(broken))
    write_file(settings.course_file(config.name), config.to_toml())
    say("systemctl daemon-reload (renders the course's units)")
    daemon_reload()
    say(f"course {config.name}: {len(published)} notebook(s) published"
        + (f", {len(broken)} skipped" if broken else ""))
    return published


def add(settings: Settings, name: str, *, git_url: str = "", git_branch: str = "",
        directory: str = "", options: dict[str, Any], say: Say,
        secrets: dict[str, str] | None = None) -> list[str]:
    check_course(name)
    if settings.course_file(name).exists():
        raise CourseError("course_exists", f"course {name} exists already",
                          hint=f"nbunits course update {name}, or course show {name}")
    origin = str(Path(directory).resolve()) if directory else ""
    # Checks every setting before anything is fetched or written.
    config = CourseConfig(name=name, source=settings.masters_dir / name, git_url=git_url,
                          git_branch=git_branch, origin_dir=origin, **options)
    check_launch_secrets(config, dataclasses.replace(CourseSecrets(), **(secrets or {})))
    write_secrets(settings, name, secrets or {}, say)
    return publish_from(settings, config, fetch(settings, config, say), say)


def update(settings: Settings, name: str, *, git_url: str = "", git_branch: str | None = None,
           directory: str = "", options: dict[str, Any], say: Say,
           secrets: dict[str, str] | None = None) -> list[str]:
    """Pull the new version, republish, and bring stopped students' copies up to date."""
    config = load_course(settings, name)
    changes: dict[str, Any] = dict(options)
    if git_url:
        changes.update(git_url=git_url, origin_dir="")
    if directory:
        changes.update(origin_dir=str(Path(directory).resolve()), git_url="", git_branch="")
    if git_branch is not None:
        changes["git_branch"] = git_branch
    config = dataclasses.replace(config, **changes)
    check_launch_secrets(config, dataclasses.replace(load_secrets(settings, name),
                                                     **(secrets or {})))
    write_secrets(settings, name, secrets or {}, say)
    published = publish_from(settings, config, fetch(settings, config, say), say)
    update_students(settings, config, say)
    return published


def update_students(settings: Settings, config: CourseConfig, say: Say) -> None:
    """Sync now the copies of students whose Jupyter is stopped.

    Running students are left alone (a notebook open in a tab is never replaced
    under them): the helper syncs their copies at their next launch.
    """
    users = provisioned_students(settings, config.name)
    running = set(active_users(config.name))
    say(f"updating the copies of {len(users) - len(running & set(users))} stopped student(s); "
        f"{len(running)} running student(s) get the update at their next launch")
    totals: Counter[str] = Counter()
    for user in users:
        student = local_student(settings, user)
        if student is None:
            continue
        try:
            report = copies.sync(copies.for_student(settings, config, student),
                                 running=user in running)
        except NotebookError as exc:
            say(f"  {user}: skipped: {exc.message}")
            continue
        for action, notebooks in report.done.items():
            totals[action.value] += len(notebooks)
    if totals:
        say("  " + ", ".join(f"{count} {action}" for action, count in sorted(totals.items())))


def local_student(settings: Settings, user: str) -> Student | None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return Student(recorded_id(settings, user) or "", user, entry.pw_uid, entry.pw_gid,
                   Path(entry.pw_dir))


def active_users(course: str) -> list[str]:
    """Students whose Jupyter for this course is running (or starting, or stopping)."""
    out = run(["systemctl", "list-units", "--plain", "--no-legend", "--all",
               "--state=active,activating,deactivating,reloading",
               f"nbunits-{check_course(course)}@*.service"]).stdout
    users = []
    for line in out.splitlines():
        unit = line.split()[0] if line.strip() else ""
        user = unit.removeprefix(f"nbunits-{course}@").removesuffix(".service")
        if USER_RE.fullmatch(user):
            users.append(user)
    return users


# --- removing ---------------------------------------------------------------

def remove(settings: Settings, name: str, *, purge: bool, say: Say) -> None:
    config = load_course(settings, name)
    users = provisioned_students(settings, name)
    say(f"stopping the units of course {name}")
    run(["systemctl", "stop", f"nbunits-{name}@*.socket", f"nbunits-{name}@*.service",
         f"nbunits-{name}-proxy@*.service"], check=False)
    settings.course_file(name).unlink()
    say("systemctl daemon-reload (removes the course's units)")
    daemon_reload()
    settings.secrets_file(name).unlink(missing_ok=True)
    for path in (config.source, settings.git_dir / name, settings.tokens_dir / name):
        shutil.rmtree(path, ignore_errors=True)
    homes = [s.home / name for s in (local_student(settings, u) for u in users) if s]
    if purge:
        for folder in homes:
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)  # fd-based on Linux: never follows a student's symlink
        shutil.rmtree(settings.copies_dir / name, ignore_errors=True)
        say(f"course {name} removed; the copies of {len(homes)} student(s) were deleted")
    else:
        say(f"course {name} removed; the copies of {len(homes)} student(s) are kept in "
            f"{settings.home_base}/<user>/{name}/ "
            f"(nbunits course remove {name} --purge would delete them)")


# --- usage ------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    course: str
    provisioned: int
    running: int
    copies: int
    starts_per_day: dict[str, int]


def usage(settings: Settings, name: str, days: int = 14) -> Usage:
    """From systemd (units, the journal) and the filesystem; no database."""
    load_course(settings, name)
    manifests = settings.copies_dir / name
    count = sum(len(copies.load_manifest(p)) for p in manifests.glob("nb*.json")) \
        if manifests.is_dir() else 0
    return Usage(name, len(provisioned_students(settings, name)), len(active_users(name)),
                 count, dict(sorted(Counter(_start_days(name, days)).items())))


def _start_days(course: str, days: int) -> Iterator[str]:
    prefix = f"nbunits-{check_course(course)}@"
    out = run(["journalctl", "--no-pager", "--output=json", f"--since=-{days}d",
               "--output-fields=UNIT", f"MESSAGE_ID={STARTED_MESSAGE_ID}", "_PID=1"],
              check=False).stdout
    for line in out.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        unit = entry.get("UNIT", "")
        if isinstance(unit, str) and unit.startswith(prefix) and unit.endswith(".service"):
            stamp = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
            yield datetime.fromtimestamp(stamp).strftime("%Y-%m-%d")

