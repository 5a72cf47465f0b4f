"""Courses: add, update, remove, usage; the steps, in order, for the `nbunits course` commands.

A course's masters come from a folder or a git checkout (git.py), are published
whole (publish.py; text notebooks as .ipynb: text_notebooks.py), and students'
copies follow (copies.py). Secrets and the
LMS's keys are written here and in lms_keys.py; what runs is systemd's (core/systemctl.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbunits.admin import course_image, git, images
from nbunits.admin.lms_keys import fetch_platform_keys, keys_path
from nbunits.admin.publish import check_masters, publish
from nbunits.admin.status import start_days
from nbunits.admin.students import admin, all_users, local_student
from nbunits.admin.text_notebooks import find_text_masters
from nbunits.core.config import (
    CourseConfig,
    CourseSecrets,
    Lti13Registration,
    Settings,
    list_courses,
    load_course,
    load_secrets,
    provisioned_students,
)
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.events import Event
from nbunits.core.events import send as send_event
from nbunits.core.files import write_atomic
from nbunits.core.names import StudentUnits, check_course
from nbunits.core.names import course_image as image_name
from nbunits.core.systemctl import active_users, daemon_reload, stop_course, systemctl
from nbunits.helper import btrfs, copies, gradebook, hostlock, merge, shares
from nbunits.helper.notebooks import NotebookError, find_masters

Say = Callable[[str], None]

# Settings an admin may give on `course add` / `course update` (the rest is nbunits').
ORIGIN_FIELDS = ("git_url", "git_branch", "origin_dir")
SETTABLE = tuple(f for f in dataclasses.fields(CourseConfig)
                 if f.name not in ("name", "source", *ORIGIN_FIELDS))


class CourseError(NbunitsError):
    pass


def fetch(settings: Settings, config: CourseConfig, say: Say) -> Path:
    """The folder to publish from: the course's folder, or its git checkout, refreshed."""
    if config.git_url:
        return git.fetch(settings.course_git(config.name), config.git_url, config.git_branch, say)
    if not config.origin_dir:
        raise CourseError(Code.NO_ORIGIN, f"course {config.name} has no recorded origin",
                          hint=f"nbunits course update {config.name} --dir FOLDER (or --git URL)")
    source = Path(config.origin_dir)
    if not source.is_dir():
        raise CourseError(Code.BAD_ORIGIN, f"{source} is not a folder")
    return source


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
    write_atomic(path, merged.to_toml(), 0o640, group=gid)
    say(f"secrets written to {path} ({', '.join(sorted(changes))})")
    return merged


def check_launch_secrets(config: CourseConfig, secrets: CourseSecrets) -> None:
    if config.legacy == "signed" and not secrets.legacy_secret:
        raise CourseError(Code.NO_SECRET, f"course {config.name}: legacy = signed needs a secret",
                          hint="add --legacy-secret-file FILE")


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
            raise CourseError(Code.BAD_REQUEST, f"course {course} has no LTI 1.3 client {client_id}")
        registrations = kept
    if not change:
        return tuple(registrations)
    client_id = str(change.get("client_id") or "")
    if client_id:
        found = [i for i, r in enumerate(registrations) if r.client_id == client_id
                 and r.issuer == change.get("issuer", r.issuer)]
    elif len(registrations) == 1:
        found = [0]
    else:
        raise CourseError(Code.BAD_REQUEST, f"course {course} has {len(registrations)} LTI 1.3 "
                          "registrations: say which with --lti13-client-id")
    if found:
        merged = dataclasses.replace(registrations[found[0]], **change)
    else:
        issuers = {r.issuer for r in registrations}
        issuer = change.get("issuer") or (issuers.pop() if len(issuers) == 1 else "")
        if not issuer:
            raise CourseError(Code.BAD_REQUEST, "a new LTI 1.3 registration needs --lti13-issuer")
        merged = Lti13Registration(**{**change, "issuer": issuer})
    if merged.keys_url and not merged.keys:
        merged = dataclasses.replace(merged, keys=str(
            keys_path(settings, course, merged.issuer, merged.client_id)))
    if found:
        registrations[found[0]] = merged
    else:
        registrations.append(merged)
    return tuple(registrations)


def check_host(config: CourseConfig) -> None:
    """Settings this host cannot honour are refused now, not at a student's start."""
    if config.network == "slirp4netns" and not (
            shutil.which("slirp4netns") and Path("/dev/net/tun").exists()):
        raise CourseError(Code.BAD_NETWORK, "network = slirp4netns, but this host has no "
                          "slirp4netns (or no /dev/net/tun): students could not start",
                          hint="apt-get install slirp4netns, or keep --network none")
    if config.merge_updates and not merge.available():
        raise CourseError(Code.BAD_COURSE_CONFIG, "merge_updates = true, but nbdime is not "
                          "installed: students' copies could not be merged",
                          hint=f"{sys.executable} -m pip install --no-deps {merge.NBDIME_PIN} "
                               "(docs/admin.md, \"Installing\")")


def reload_units(settings: Settings) -> None:
    """The images the courses run recorded for the generator, then daemon-reload."""
    images.record(settings)
    daemon_reload()


def publish_from(settings: Settings, config: CourseConfig, source: Path, say: Say) -> list[str]:
    """Check, build the course's image, publish; all checks and the build come first,
    so a failure leaves the course as it was."""
    fetch_platform_keys(config, say)
    say(f"checking the notebooks in {source}")
    broken = check_masters(source)
    for reason in broken.values():
        say(f"  skipped: {reason}")
    texts = {t: n for t, n in find_text_masters(source).items() if t not in broken}
    for text, notebook in texts.items():
        say(f"  {text}: a text notebook (Jupytext), published as {notebook}")
    config = dataclasses.replace(config, image=course_image.build(settings, config, source, say))
    course_image.check_image(settings, config.image)
    say(f"publishing into {config.source}")
    keep = settings.course_sources(config.name)
    published = publish(source, config.source, skip=set(broken), keep=keep)
    graded = len(list(find_masters(keep))) if keep.is_dir() else 0
    if graded:
        say(f"  {graded} graded notebook(s) published as release versions; their sources in "
            f"{keep} (root's only)")
        if config.origin_dir and open_to_others(Path(config.origin_dir)):
            say(f"  warning: every user of this host, students included, can read {config.origin_dir}, "
                f"which holds the sources (solutions, hidden tests): chmod o-rwx it (students' "
                f"containers do not mount it, but their users are this host's)")
    write_atomic(settings.course_file(config.name), config.to_toml())
    say("systemctl daemon-reload (renders the course's units)")
    reload_units(settings)
    others = sum(len(files) for _, _, files in os.walk(config.source)) - len(published)
    say(f"course {config.name}: {len(published)} notebook(s)"
        + (f" ({len(texts)} from text notebooks)" if texts else "")
        + f" and {others} other file(s) published"
        + (f", {len(broken)} skipped" if broken else ""))
    return published


def open_to_others(folder: Path) -> bool:
    """Whether a user who is neither its owner nor in its group lists `folder`: it and
    every folder above it let others in (o+x), and it lets them list it (o+r)."""
    try:
        modes = [os.stat(p).st_mode for p in (folder, *folder.parents)]
    except OSError:
        return False
    return bool(modes[0] & 0o004) and all(mode & 0o001 for mode in modes)


def add(settings: Settings, name: str, *, git_url: str = "", git_branch: str = "",
        directory: str = "", options: dict[str, Any], say: Say,
        secrets: dict[str, str] | None = None) -> list[str]:
    check_course(name)
    if settings.course_file(name).exists():
        raise CourseError(Code.COURSE_EXISTS, f"course {name} exists already",
                          hint=f"nbunits course update {name}, or course show {name}")
    origin = str(Path(directory).resolve()) if directory else ""
    # Checks every setting before anything is fetched or written.
    config = CourseConfig(name=name, source=settings.course_masters(name), git_url=git_url,
                          git_branch=git_branch, origin_dir=origin, **options)
    check_launch_secrets(config, dataclasses.replace(CourseSecrets(), **(secrets or {})))
    check_host(config)
    write_secrets(settings, name, secrets or {}, say)
    published = publish_from(settings, config, fetch(settings, config, say), say)
    say_launch(config, say)
    return published


def say_launch(config: CourseConfig, say: Say) -> None:
    """How students get in, and what to do when nobody can, or anybody can."""
    say(f"course {config.name}: {config.how_students_get_in()}")
    if config.legacy == "open":
        say(f"  warning: legacy = open: whoever knows or guesses a student's id opens and "
            f"changes that student's notebooks, and any made-up id makes a new student; "
            f"give the course caps of its own (nbunits course update {config.name} "
            f"--new-students-per-minute N --max-running N), or prefer LTI or --legacy signed")
    elif not config.launch_methods():
        say(f"  to let them in: nbunits course update {config.name} with LTI (--lti11-key "
            f"KEY --lti11-secret-file FILE, or --lti13-issuer ... --lti13-client-id ...), "
            f"or signed legacy links (--legacy signed --legacy-secret-file FILE), or, "
            f"knowingly, --legacy open (docs/openedx.md)")


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
    check_host(config)
    write_secrets(settings, name, secrets or {}, say)
    published = publish_from(settings, config, fetch(settings, config, say), say)
    update_students(settings, config, say)
    say_launch(config, say)
    return published


def update_students(settings: Settings, config: CourseConfig, say: Say) -> None:
    """Sync now the copies of students whose Jupyter is stopped.

    Running students are left alone (a notebook open in a tab is never replaced
    under them): the helper syncs their copies at their next launch.
    """
    users = provisioned_students(settings, config.name)
    running = set(active_users(config.name))
    if settings.server.multi_host:  # running on another host counts too (hostlock.py)
        running |= {u for u in users if hostlock.held(config.name, u, str(settings.locks_dir))}
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
        totals["linked"] += report.linked
    if +totals:
        say("  " + ", ".join(f"{count} {action}" for action, count in sorted((+totals).items())))


# --- removing ---------------------------------------------------------------

@dataclass(frozen=True)
class Removal:
    """Exactly what `course remove` does: shown first, then done, nothing else."""

    course: str
    exists: bool  # False: removed before; only --purge of left-over copies remains
    running: tuple[str, ...]  # students whose Jupyter runs now (stopped first)
    own: tuple[Path, ...]  # nbunits' files of the course (settings, masters, records)
    folders: tuple[Path, ...]  # students' copies: deleted with --purge, else kept
    purge: bool
    image: str = ""  # the course's own image (built from its repository), removed too
    # The static versions its students share (pages, indexes, locks): root's, public
    # at their links; deleted with the course, --purge or not.
    shares: tuple[Path, ...] = ()

    def describe(self) -> list[str]:
        lines = [f"course {self.course}:"]
        if self.exists:
            lines.append("  stop and remove its units, and delete:")
            if self.running:
                lines.append(f"    (the Jupyter of {len(self.running)} student(s) runs now "
                             f"and is stopped: {', '.join(self.running)})")
        else:
            lines.append("  removed already; what is left:")
        lines += [f"    {path}" for path in self.own]
        if self.image:
            lines.append(f"    the image {self.image}")
        pages = [path for path in self.shares if path.suffix == ".html"]
        if self.shares:
            lines.append(f"    the {len(pages)} static version(s) its students share (their "
                         "links stop working):")
            lines += [f"      {path}" for path in self.shares]
        if self.purge:
            lines.append(f"  delete the copies of {len(self.folders)} student(s):")
            lines += [f"    {folder}" for folder in self.folders]
        elif self.folders:
            lines.append(f"  keep the copies of {len(self.folders)} student(s) in "
                         f"<home>/{self.course}/ (--purge deletes them)")
        return lines


def plan_removal(settings: Settings, name: str, *, purge: bool) -> Removal:
    check_course(name)
    exists = settings.course_file(name).exists()
    image = ""
    if exists:
        config = load_course(settings, name)  # a broken course file is an error, not a guess
        image = config.image if config.image == image_name(name) else ""
    folders = tuple(folder for user in all_users(settings)
                    if (student := local_student(settings, user))
                    and (folder := student.home / name).is_dir() and not folder.is_symlink())
    own = tuple(p for p in (settings.course_file(name), settings.secrets_file(name),
                            settings.course_masters(name), settings.course_git(name),
                            settings.course_tokens(name), settings.course_recent(name),
                            *((settings.course_copies(name), settings.course_versions(name),
                               settings.course_sources(name), settings.course_grades(name))
                             if purge else ()))
                if p.exists())
    # Left by an older nbunits's removal: deleted by any `course remove` of the course.
    shared = tuple(path for user in shares.students_sharing(settings, name)
                   for path in shares.files_of(settings, StudentUnits(name, user)))
    if not exists and not shared and not (purge and (own or folders)):
        raise CourseError(Code.UNKNOWN_COURSE, f"unknown course {name}",
                          hint="nbunits course list shows the courses"
                               + ("" if purge else f"; after a removal, nbunits course remove "
                                  f"{name} --purge deletes students' left-over copies"))
    running = tuple(sorted(active_users(name))) if exists else ()
    return Removal(name, exists, running, own, folders, purge, image, shared)


def remove(settings: Settings, plan: Removal, say: Say) -> None:
    name = plan.course
    if plan.exists:
        say(f"stopping the units of course {name}")
        stop_course(name)
        settings.course_file(name).unlink()
        say("systemctl daemon-reload (removes the course's units)")
        reload_units(settings)
    if plan.image:
        # Students' containers ran on its layers stacked by a mount (rootfs.py): that
        # mount goes first, or it would outlive the layers under it.
        try:
            layers = images.resolve(settings.image_store, plan.image)
        except NbunitsError:
            layers = None
        if layers is not None and layers.layers:
            systemctl("stop", layers.mount_unit, check=False)
        course_image.store_podman(settings, "rmi", plan.image, check=False)
        say(f"image {plan.image} removed")
    for path in plan.own:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in plan.shares:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # gone, or not empty: a share made since the plan
        settings.course_shares(name).rmdir()
    if plan.shares:
        say(f"{sum(p.suffix == '.html' for p in plan.shares)} static version(s) its students "
            "shared deleted")
    if plan.purge:
        for folder in plan.folders:
            if folder.is_dir() and not folder.is_symlink():
                # On btrfs (disk_quota): the course's qgroup, then its subvolumes.
                btrfs.forget_course(folder.parent, name)
                shutil.rmtree(folder)  # fd-based on Linux: never follows a student's symlink
            send_event(Event.DELETED, f"deleted {folder} (nbunits course remove {name} --purge)",
                       course=name, student=folder.parent.name, ADMIN=admin())
        say(f"course {name} removed; the copies of {len(plan.folders)} student(s) were deleted")
    else:
        say(f"course {name} removed; the copies of {len(plan.folders)} student(s) are kept in "
            f"<home>/{name}/ (nbunits course remove {name} --purge would delete them)")


# --- listing ------------------------------------------------------------------

def listing(settings: Settings) -> list[dict[str, Any]]:
    """Every course: name, title, notebooks, image, origin; or why it cannot be read."""
    listed: list[dict[str, Any]] = []
    for name in list_courses(settings):
        try:
            course = load_course(settings, name)
            listed.append({"name": name, "title": course.title,
                           "notebooks": [str(n) for n in find_masters(course.source)],
                           "image": course.image,
                           "origin": course.git_url or course.origin_dir or "-"})
        except NbunitsError as exc:
            listed.append({"name": name, "error": str(exc)})
    return listed


# --- usage ------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    course: str
    provisioned: int
    running: int
    copies: int
    starts_per_day: dict[str, int]
    # Per notebook, each student's current score (helper/gradebook.py): count, median.
    scores: dict[str, gradebook.NotebookScores]


def usage(settings: Settings, name: str, days: int = 14) -> Usage:
    """From systemd (units, the journal) and the filesystem; no database."""
    load_course(settings, name)
    manifests = settings.course_copies(name)
    count = sum(len(copies.load_manifest(p)) for p in manifests.glob("nb*.json")) \
        if manifests.is_dir() else 0
    return Usage(name, len(provisioned_students(settings, name)), len(active_users(name)),
                 count, dict(sorted(Counter(start_days(name, days)).items())),
                 gradebook.per_notebook(gradebook.results(settings, name)))
