"""The `nbunits` command, for admins: install, courses, students, images.

Runs as: the admin (root for anything that changes the system; `require_root` says
so). This module parses the command line and dispatches: each command is a call
into the admin's modules (install.py, courses.py, students.py, status.py...) and a
print of what it returns. Course settings' options come from their declarations
(core/settings.py, core/config.py), not from a list of their own here. Text that
others wrote (students, LMSs, course repositories) is printed through terminal.escape.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from nbunits.admin import (
    course_end,
    course_image,
    courses,
    identity,
    images,
    install,
    lms_keys,
    scores,
    students,
)
from nbunits.admin.publish import check_folder
from nbunits.admin.status import (
    as_dicts,
    course_lines,
    format_table,
    journalctl_args,
    resolve_student,
    student_states,
)
from nbunits.admin.terminal import escape
from nbunits.core import settings as S
from nbunits.core.config import (
    CourseConfig,
    CourseSecrets,
    Lti13Registration,
    Settings,
    list_courses,
    load_course,
    load_settings,
)
from nbunits.core.data import data_dir
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.names import exercise_link_template, user_for
from nbunits.core.run import is_root, run_shown
from nbunits.core.systemctl import active_users, daemon_reload
from nbunits.helper import copies
from nbunits.helper.notebooks import find_masters
from nbunits.helper.users import lookup

logger = logging.getLogger("nbunits")

# Exit codes (docs/admin.md, "Exit codes"); argparse's usage errors exit with 2.
EXIT_ERROR, EXIT_UNKNOWN, EXIT_NOT_ROOT, EXIT_DECLINED = 1, 3, 4, 5


def die(message: str, hint: str | None = None, code: int = EXIT_ERROR) -> NoReturn:
    print(f"nbunits: error: {escape(message, lines=True)}", file=sys.stderr)
    if hint:
        print(f"nbunits: hint: {escape(hint, lines=True)}", file=sys.stderr)
    sys.exit(code)


def exit_code(error: NbunitsError) -> int:
    return EXIT_UNKNOWN if error.is_unknown else EXIT_ERROR


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def confirm(lines: list[str], yes: bool, action: str = "Delete") -> None:
    """Show exactly what is about to happen; go on with --yes or a "y" on stdin."""
    print("\n".join(escape(line) for line in lines), flush=True)
    if yes:
        return
    print(f"{action} all of the above? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        die("nothing was done", hint="answer y, or give --yes", code=EXIT_DECLINED)


def step(message: str) -> None:
    print(f"==> {escape(message)}", flush=True)


def require_root(why: str = "this command changes the system") -> None:
    if not is_root():
        die(f"{why}: it must run as root", hint="use sudo", code=EXIT_NOT_ROOT)


# --- install ---------------------------------------------------------------

def cmd_install(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    fields = {f.name for f in dataclasses.fields(install.Options)}
    install.install(settings, install.Options(**{k: v for k, v in vars(args).items()
                                                 if k in fields}))


# --- courses ---------------------------------------------------------------

def course_options(args: argparse.Namespace) -> dict[str, object]:
    """The course settings given on the command line (--image, --memory-max...)."""
    options: dict[str, object] = {}
    for field, decl in S.declared(CourseConfig):
        # Not given: absent (nullable settings, whose "none" is None) or None.
        if not decl.option or field.name not in vars(args):
            continue
        value = vars(args)[field.name]
        if value is None and not decl.kind.nullable:
            continue
        if field.name == "lti_notebooks":
            pairs = [item.partition("=") for item in value]
            if not all(sep for _, sep, _ in pairs):
                die("--lti-notebook takes RESOURCE_LINK_ID=NOTEBOOK")
            value = {link: notebook for link, _, notebook in pairs}
        elif decl.kind.repeat:
            value = tuple(value)
        options[field.name] = value
    return options


def course_secrets(args: argparse.Namespace) -> dict[str, str]:
    """Secrets are read from files (never from the command line, which ps shows)."""
    found = {}
    for field, _ in S.declared(CourseSecrets):
        path = getattr(args, f"{field.name}_file", None)
        if path:
            try:
                found[field.name] = Path(path).read_text().strip()
            except OSError as exc:
                die(f"cannot read {path}: {exc.strerror}")
            if not found[field.name]:
                die(f"{path} is empty")
    return found


def lti13_options(settings: Settings, args: argparse.Namespace,
                  current: tuple[Lti13Registration, ...]) -> dict[str, object]:
    """--lti13-* options -> {"lti13": the course's registrations after them}, or {}."""
    change: dict[str, object] = {}
    for field, decl in S.declared(Lti13Registration):
        value = getattr(args, f"lti13_{field.name}", None)
        if value is not None:
            change[field.name] = tuple(value) if decl.kind.repeat else value
    remove = args.lti13_remove or []
    if not change and not remove:
        return {}
    return {"lti13": courses.edit_registrations(settings, args.name, current, change, remove)}


def cmd_course_add(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    published = courses.add(settings, args.name, git_url=args.git or "",
                            git_branch=args.branch or "", directory=args.dir or "",
                            options={**course_options(args), **lti13_options(settings, args, ())},
                            say=step, secrets=course_secrets(args))
    for notebook in published:
        print("  " + escape(exercise_link_template(args.name, notebook)))


def cmd_course_update(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    current = load_course(settings, args.name).lti13
    courses.update(settings, args.name, git_url=args.git or "", git_branch=args.branch,
                   directory=args.dir or "",
                   options={**course_options(args), **lti13_options(settings, args, current)},
                   say=step, secrets=course_secrets(args))


def cmd_course_check(settings: Settings, args: argparse.Namespace) -> None:
    """What `course add --dir FOLDER` would publish, publishing nothing: for a teacher's
    checkout or CI. Exits 1 when a file would be skipped."""
    source = Path(args.folder)
    if not source.is_dir():
        raise courses.CourseError(Code.BAD_ORIGIN, f"{source} is not a folder")
    broken, published = check_folder(source)
    for notebook, released in published.items():
        print(f"  {escape(notebook)}" + (": graded (nbgrader), published as its release version"
                                         if released else ""))
    for reason in broken.values():
        print(f"  skipped: {escape(reason)}")
    print(f"{escape(str(source))}: {len(published)} notebook(s) would be published"
          + (f" ({sum(published.values())} graded)" if any(published.values()) else "")
          + (f", {len(broken)} skipped" if broken else ""))
    if broken:
        sys.exit(1)


def cmd_course_refresh_keys(settings: Settings, args: argparse.Namespace) -> None:
    """Fetch the platforms' LTI 1.3 keys again (run daily by nbunits-refresh-keys.timer)."""
    require_root()
    problems = lms_keys.refresh_keys(settings, [args.name] if args.name else list_courses(settings),
                                    say=step)
    for problem in problems:
        print(f"nbunits: error: {escape(problem)}", file=sys.stderr)
    if problems:
        sys.exit(1)


def cmd_course_remove(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    plan = courses.plan_removal(settings, args.name, purge=args.purge)
    confirm(plan.describe(), args.yes, "Remove" if not args.purge else "Delete")
    courses.remove(settings, plan, say=step)


def cmd_course_export(settings: Settings, args: argparse.Namespace) -> None:
    require_root("course export reads the students' homes")
    plan = course_end.plan_export(settings, args.name, Path(args.to))
    for line in plan.describe():
        step(line)
    done = course_end.run_export(settings, plan)
    if args.json:
        print_json([{"user": d.work.user, "id": d.work.id,
                     "archive": str(plan.target / d.work.archive) if not d.error else "",
                     **dataclasses.asdict(d.counts), "archive_bytes": d.size, "error": d.error}
                    for d in done])
    else:
        for d in done:
            print(escape(f"  {d.work.archive}\t" + (f"FAILED: {d.error}" if d.error else
                         f"{d.counts.files} file(s), {d.counts.bytes} bytes, "
                         f"{d.counts.links} link(s) left out")))
    if any(d.error for d in done):
        die(f"{sum(1 for d in done if d.error)} student(s) not exported (the journal says why)")


def cmd_course_end(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    when = S.parse_when(args.at) if args.at else datetime.now(UTC)
    if when is None:
        die(f"--at {args.at}: not an ISO 8601 date or time", hint="e.g. 2027-01-31")
    config = course_end.end(settings, args.name, when)
    due = config.deletion_due()
    print(f"course {config.name} ended {config.end_date}; " + (
        f"its students' work is saved and deleted after {due.isoformat(timespec='seconds')} "
        "(by the daily course-end timer; nbunits course expire --dry-run lists it)" if due else
        "retention_days is not set: its students' work is kept (nbunits course update "
        f"{config.name} --retention-days DAYS)"))


def cmd_course_expire(settings: Settings, args: argparse.Namespace) -> None:
    """Run daily by nbunits-course-end.timer (with --yes)."""
    require_root()
    now = datetime.now(UTC)
    plans = course_end.due_courses(settings, now, say=step)
    if not plans:
        print("no course is past its retention period: nothing to delete")
        return
    lines = [line for plan in plans for line in plan.describe()]
    if args.dry_run:
        print("\n".join(escape(line) for line in lines))
        print("(dry run: nothing was saved or deleted)")
        return
    confirm(lines, args.yes, "Save, then delete")
    problems = [p for plan in plans
                for p in course_end.expire(settings, plan, course_end.stamp(now), say=step)]
    for problem in problems:
        print(f"nbunits: error: {escape(problem)}", file=sys.stderr)
    if problems:
        sys.exit(EXIT_ERROR)


def cmd_course_stats(settings: Settings, args: argparse.Namespace) -> None:
    require_root("course stats reads the students' records and the journal")
    usage = courses.usage(settings, args.name, days=args.days)
    if args.json:
        print_json(dataclasses.asdict(usage))
        return
    print(f"course {usage.course}")
    print(f"  students provisioned: {usage.provisioned}")
    print(f"  running now:          {usage.running}")
    print(f"  notebook copies:      {usage.copies}")
    print(f"  starts per day (last {args.days} days):")
    for day, count in usage.starts_per_day.items():
        print(f"    {day}  {count}")
    if not usage.starts_per_day:
        print("    none")
    print("  scores (each student's current one):")
    for notebook, scored in usage.scores.items():
        print(f"    {escape(notebook)}  {scored.count} student(s), median "
              f"{scored.median:g}/{scored.maximum:g} ({scored.median_percent:g}%)")
    if not usage.scores:
        print("    none")


def cmd_course_list(settings: Settings, args: argparse.Namespace) -> None:
    listed = courses.listing(settings)
    if args.json:
        print_json(listed)
        return
    for course in listed:
        if "error" in course:
            print(f"{course['name']}\tBROKEN: {escape(str(course['error']))}")
        else:
            print(f"{course['name']}\t{len(course['notebooks'])} notebook(s)\t"
                  f"{escape(str(course['image']))}\t{escape(str(course['origin']))}")


def cmd_course_show(settings: Settings, args: argparse.Namespace) -> None:
    course = load_course(settings, args.name)
    if args.json:
        print_json({"file": str(settings.course_file(course.name)),
                    "launch": {"methods": course.launch_methods(),
                               "open": course.legacy == "open"},
                    "settings": tomllib.loads(course.to_toml()),
                    "notebooks": [str(n) for n in find_masters(course.source)]})
        return
    print(f"# {settings.course_file(course.name)}")
    print(f"# {escape(course.how_students_get_in())}")
    print(escape(course.to_toml(), lines=True), end="")
    print("# notebooks (a text notebook, Jupytext's .md or percent .py, is published as "
          "the .ipynb of its name):")
    for notebook in find_masters(course.source):
        print(f"#   {escape(str(notebook))}")


# --- students --------------------------------------------------------------

def cmd_student_find(settings: Settings, args: argparse.Namespace) -> None:
    user = user_for(args.id)
    student = lookup(settings, args.id)
    state = f"home {student.home}" if student else "not provisioned yet"
    print(f"{user}\t{escape(state)}")


def cmd_student_list(settings: Settings, args: argparse.Namespace) -> None:
    require_root("student list reads the students' records")
    if args.course:
        load_course(settings, args.course)
    found = students.listing(settings, args.course)
    if args.json:
        print_json([dataclasses.asdict(s) for s in found])
        return
    print(format_rows([["USER", "ID", "COURSES", "SINCE", "HOME"],
                       *([s.user, s.id or "-", ",".join(s.courses) or "-", s.since or "-",
                          s.home or "-"] for s in found)]))
    print(f"\n{len(found)} student(s)")


def format_rows(rows: list[list[str]]) -> str:
    rows = [[escape(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_student_delete(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    user = resolve_student(args.student)
    plan = students.plan_deletion(settings, user, backup=not args.no_backup)
    confirm(plan.describe(), args.yes)
    students.delete(settings, plan)
    print(f"student {user} deleted" + (f"; their home is saved in {plan.backup}"
                                       if plan.backup else ""))


def cmd_student_stop(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    units = students.stop(settings, args.course, args.student)
    print(f"stopped {units.container}; the student's next click starts it again")


def cmd_student_reset(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    where, kept = students.reset(settings, args.course, args.student, args.notebook)
    print(escape(f"{where / args.notebook}: a fresh copy of the current master"))
    print(escape(f"  the old copy is kept as {where / kept}") if kept
          else "  (there was nothing to keep)")
    if resolve_student(args.student) in active_users(args.course):
        print("  the student's Jupyter is running: they should reload the notebook's tab")


def cmd_student_show(settings: Settings, args: argparse.Namespace) -> None:
    require_root("student show reads the student's home and records")
    if args.notebook:
        text = students.copy_text(settings, args.course, args.student, args.notebook)
        print(escape(text, lines=True), end="")
        return
    theirs = students.student_copies(settings, args.course, args.student)
    if args.json:
        print_json([{"notebook": n, "state": s} for n, s in copies.status(theirs).items()])
        return
    for notebook, state in copies.status(theirs).items():
        print(f"{escape(notebook)}\t{escape(state)}")


def cmd_student_link(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    print(students.staff_link(settings, args.course, args.student, args.notebook, args.hours))


def cmd_student_revoke(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    from nbunits.admin.revocation import revoke

    user = resolve_student(args.student)
    grant = revoke(settings, args.course, user)
    print(f"{user}: every earlier link to {args.course} now gets 403 (generation "
          f"{grant.generation}); their server was stopped; the course link hands out "
          "the new one")


def cmd_student_link_ids(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    print(escape(identity.link(settings, args.course, args.keep, args.other,
                               identity.HasWork(settings)), lines=True))


def cmd_student_unlink_id(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    print(escape(identity.unlink(settings, args.course, args.other), lines=True))


# --- status and logs -----------------------------------------------------

def cmd_status(settings: Settings, args: argparse.Namespace) -> None:
    if args.course:
        load_course(settings, args.course)
    states = student_states(settings, args.course)
    if args.json:
        print(json.dumps(as_dicts(states), indent=2))
        return
    print(format_table(states))
    # How students get in, per course (after the students: the table's header is
    # the first line, for whoever reads it by program).
    print("\n".join(["", "courses:", *(f"  {line}" for line in course_lines(settings,
                                                                          args.course))]))


def cmd_logs(settings: Settings, args: argparse.Namespace) -> None:
    require_root("logs reads the students' records and the journal")
    argv = journalctl_args(args.course,
                           students.known_student(settings, args.course, args.student),
                           (["--follow"] if args.follow else [])
                           + (["--lines", str(args.lines)] if args.lines else [])
                           + (["--since", args.since] if args.since else [])
                           + (["--grep", args.grep] if args.grep else [])
                           + (["--output=json"] if args.json else []))
    os.execvp(argv[0], argv)


def cmd_score_set(settings: Settings, args: argparse.Namespace) -> None:
    require_root("scores are root's")
    given, maximum = scores.parse_number(args.given), scores.parse_number(args.maximum)
    score = scores.set_score(settings, args.course, args.student, args.notebook, given,
                             maximum, args.comment)
    print(escape(f"score {given:g}/{maximum:g} for {score.user}'s {score.notebook} queued; "
                 "nbunits scores list shows when the LMS has it"))


def cmd_scores_list(settings: Settings, args: argparse.Namespace) -> None:
    require_root("scores are root's")
    found = scores.rows(settings, args.course or "")
    if args.json:
        print_json(found)
        return
    for row in found:
        when = row["sent"] or row["next_try"] or row["enqueued"]
        print("\t".join(escape(str(v)) for v in (
            row["course"], row["user"], row["notebook"], row["state"],
            f"{row['given']:g}/{row['maximum']:g}", when, row["last_error"])))


def cmd_scores_send(settings: Settings, args: argparse.Namespace) -> None:
    require_root("scores are root's")
    run = scores.send(settings, args.all)
    if run.busy:
        print("another nbunits scores send is sending; nothing done")
        return
    print(f"sent {run.sent}, failed {run.failed}, pending {run.pending}")


def cmd_metrics(settings: Settings, args: argparse.Namespace) -> None:
    from nbunits.admin import metrics  # prometheus_client: only for this command

    require_root("metrics reads the journal and nbunits' records")
    text = metrics.collect_text(settings)
    if args.textfile:
        write_atomic(Path(args.textfile), text, 0o644)
    else:
        print(text, end="")


# --- images ----------------------------------------------------------------

def cmd_image_build(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    if args.course:  # from the course's published repository (course_image.py)
        config = load_course(settings, args.course)
        image = course_image.build(settings, config, config.source, print, force=args.force)
        if image != config.image:
            die(f"course {config.name} runs {config.image}, its repository makes {image}",
                hint=f"nbunits course update {config.name}")
    else:
        script = data_dir() / "images" / "build"
        os.environ["NBUNITS_IMAGE_STORE"] = str(settings.image_store)
        run_shown(["bash", str(script), *(["--force"] if args.force else []),
                   *(["--image", args.image] if args.image else [])])
    # The generator reads the images' layers from /etc, not from the store.
    for problem in images.record(settings):
        print(f"nbunits: warning: {escape(problem)}", file=sys.stderr)
    daemon_reload()


# --- the command line --------------------------------------------------------

def add_declared(group: Any, cls: type, *, update: bool, dest_prefix: str = "") -> None:
    """An option for each declared setting of `cls` that has one (core/settings.py)."""
    for field, decl in S.declared(cls):
        if not decl.option:
            continue
        dest = dest_prefix + field.name
        now = "unchanged unless given" if update else f"default: {S.default_text(field)}"
        if decl.kind is S.BOOL:
            group.add_argument(decl.option, dest=dest, action=argparse.BooleanOptionalAction,
                               default=None, help=f"{decl.help} ({now})".replace("%", "%%"))
            continue
        if decl.kind.repeat:
            group.add_argument(decl.option, dest=dest, action="append",
                               metavar=decl.kind.metavar, help=f"{decl.help} (repeat; {now})"
                               .replace("%", "%%"))
            continue
        group.add_argument(decl.option, dest=dest, metavar=decl.kind.metavar,
                           type=decl.kind.parse, choices=decl.kind.choices or None,
                           default=argparse.SUPPRESS if decl.kind.nullable else None,
                           help=f"{decl.help} ({now})".replace("%", "%%"))


def add_course_settings(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    group = parser.add_argument_group(
        "course settings", "changed settings apply at each student's next start"
        if update else None)
    add_declared(group, CourseConfig, update=update)
    lti13 = parser.add_argument_group(
        "LTI 1.3 registration", "add or change the registration of --lti13-client-id (or the "
        "course's only one); Open edX: one per LTI 1.3 component")
    add_declared(lti13, Lti13Registration, update=True, dest_prefix="lti13_")
    lti13.add_argument("--lti13-remove", action="append", metavar="CLIENT_ID",
                       help="drop the registration of this client id (repeat)")
    secrets = parser.add_argument_group("secrets", "read from files, never from the "
                                        "command line (ps shows it)")
    for field, decl in S.declared(CourseSecrets):
        secrets.add_argument(decl.option, dest=f"{field.name}_file", metavar="FILE",
                             help=decl.help)


def build_parser() -> argparse.ArgumentParser:
    # --debug anywhere on the command line: every parser knows it. SUPPRESS keeps a
    # subcommand's parser from resetting what the main parser read.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and the commands nbunits runs")
    parser = argparse.ArgumentParser(prog="nbunits", description=__doc__, parents=[debug],
                                     epilog="exit codes: 0 done, 1 error, 2 bad usage, "
                                     "3 unknown course/student/notebook, 4 needs root, "
                                     "5 not confirmed")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
            func: Callable[[Settings, argparse.Namespace], None], help: str
            ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(
            name, help=help, description=help, parents=[debug])
        p.set_defaults(func=func)
        return p

    def group(name: str, help: str, dest: str
              ) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        return sub.add_parser(name, help=help, description=help, parents=[debug]
                              ).add_subparsers(dest=dest, required=True)

    def json_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", default=False,
                       help="machine-readable output (times in ISO 8601)")

    def yes_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("-y", "--yes", action="store_true", default=False,
                       help="do not ask before deleting (it still lists what it deletes)")

    p = add(sub, "install", cmd_install, "install units, configuration and nginx snippets")
    p.add_argument("--server-name", dest="server_names", action="append", default=[],
                   metavar="NAME", help="a name browsers use for this server, e.g. "
                   "notebooks.example.org (repeat for more; required at the first install)")
    p.add_argument("--student-domain", metavar="DOMAIN",
                   help="give each student their own origin, <user>.DOMAIN (e.g. "
                   "nb.example.org: a wildcard DNS record and certificate), the recommended "
                   "deployment (docs/admin.md, Students' own origins); '' for one origin")
    p.add_argument("--listen", action="append", default=[], metavar="ADDR",
                   help="write an nginx site listening for HTTP on ADDR (e.g. 80)")
    p.add_argument("--tls-listen", action="append", default=[], metavar="ADDR",
                   help="... and for HTTPS on ADDR (e.g. 443; needs --tls-cert)")
    p.add_argument("--tls-cert", metavar="FILE", help="the server's certificate chain (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    p.add_argument("--trusted-proxy", dest="trusted_proxies", action="append", default=[],
                   metavar="ADDR", help="a TLS-terminating load balancer's address or "
                   "network: only its X-Forwarded-Proto and client address are believed (repeat)")
    p.add_argument("--proxy-header", metavar="HEADER",
                   help="the header those proxies put the client's address in "
                   "(default X-Forwarded-For)")
    p.add_argument("--no-nginx", action="store_true", help="leave nginx alone")
    p.add_argument("--no-initgroups-line", action="store_true",
                   help="do not add the initgroups: line to /etc/nsswitch.conf (and remove "
                   "the one an earlier install added): see docs/admin.md, \"Students' users\"")
    p.add_argument("--multi-host", action="store_true", default=False,
                   help="this host is one of several behind an nbunits front: launches are "
                   "handed to the student's host, homes and students' state are on shared "
                   "storage (docs/admin.md, Beyond one host)")
    p.add_argument("--front", action="append", default=[], metavar="HOST[:PORT]",
                   help="on the front machine: install only nginx, spreading students over "
                   "these nbunits hosts by consistent hashing (repeat; the full list each time)")

    course = group("course", "publish, update and inspect courses", "course_command")
    p = add(course, "add", cmd_course_add, "publish a course from a git repository or a folder")
    p.add_argument("name")
    origin = p.add_mutually_exclusive_group(required=True)
    origin.add_argument("--git", metavar="URL", help="git repository with the master notebooks")
    origin.add_argument("--dir", help="folder with the master notebooks")
    p.add_argument("--branch", help="git branch or tag (default: the remote's default)")
    add_course_settings(p)
    p = add(course, "update", cmd_course_update,
            "pull the course's new version, republish it and update students' unmodified copies")
    p.add_argument("name")
    origin = p.add_mutually_exclusive_group()
    origin.add_argument("--git", metavar="URL", help="switch to this git repository")
    origin.add_argument("--dir", help="switch to this folder")
    p.add_argument("--branch", help="switch to this git branch or tag")
    add_course_settings(p, update=True)
    p = add(course, "remove", cmd_course_remove,
            "remove a course (students' copies are kept unless --purge); lists what it "
            "removes and asks first")
    p.add_argument("name")
    p.add_argument("--purge", action="store_true",
                   help="also delete every student's copies of this course (also after "
                   "the course was removed)")
    yes_option(p)
    p = add(course, "check", cmd_course_check,
            "check a course's folder (a checkout) as add and update would, publishing "
            "nothing: which notebooks publish, which graded ones as their release "
            "version, what is skipped and why (exit status 1 if anything is)")
    p.add_argument("folder")
    p = add(course, "refresh-keys", cmd_course_refresh_keys,
            "fetch the LTI 1.3 platforms' keys again (nbunits-refresh-keys.timer runs it)")
    p.add_argument("name", nargs="?", help="only this course")
    json_option(add(course, "list", cmd_course_list, "list the courses"))
    p = add(course, "show", cmd_course_show, "show a course's settings and notebooks")
    p.add_argument("name")
    json_option(p)
    p = add(course, "export", cmd_course_export,
            "write one zip archive of each student's course folder into DIR, named by "
            "their LMS id (symlinks left out; running students' saved files as on disk)")
    p.add_argument("name")
    p.add_argument("--to", required=True, metavar="DIR",
                   help="where (made 0700 if missing; not in a student's home)")
    json_option(p)
    p = add(course, "end", cmd_course_end,
            "record that the course ended (its end_date): its students' work is deleted "
            "retention_days after it, if set")
    p.add_argument("name")
    p.add_argument("--at", metavar="WHEN", help="when, ISO 8601 (default: now)")
    p = add(course, "expire", cmd_course_expire,
            "save, then delete, the students' work of ended courses past their retention "
            "period (nbunits-course-end.timer runs it daily); lists it all and asks first")
    p.add_argument("--dry-run", action="store_true",
                   help="only show what would be saved and deleted")
    yes_option(p)
    p = add(course, "stats", cmd_course_stats,
            "usage: students provisioned, running now, starts per day (root)")
    p.add_argument("name")
    p.add_argument("--days", type=int, default=14, metavar="DAYS",
                   help="how many days back to count starts (default: 14)")
    json_option(p)

    student = group("student", "list, find, show, reset, stop and delete students",
                    "student_command")
    p = add(student, "list", cmd_student_list,
            "every student: Linux user, LMS id, courses, first launch (root)")
    p.add_argument("--course", help="only the students of this course")
    json_option(p)
    p = add(student, "delete", cmd_student_delete,
            "delete a student: their user, home, records and units (a tarball of the home "
            "is kept in /var/lib/nbunits/backups unless --no-backup); lists it all and asks first")
    p.add_argument("student", help="the Linux user (nb...) or the edX id")
    p.add_argument("--no-backup", action="store_true", help="keep no copy of the home")
    yes_option(p)
    p = add(student, "stop", cmd_student_stop,
            "stop a student's Jupyter now (their next click starts it again)")
    p.add_argument("course")
    p.add_argument("student", help="the Linux user (nb...) or the edX id")
    p = add(student, "find", cmd_student_find, "the Linux user of an edX student id")
    p.add_argument("id")
    p = add(student, "reset", cmd_student_reset,
            "give a student a fresh copy of a notebook (the old copy is kept, renamed)")
    p.add_argument("course")
    p.add_argument("student", help="the Linux user (nb...) or the edX id")
    p.add_argument("notebook", help="path in the course, e.g. week1/loops.ipynb")
    p = add(student, "show", cmd_student_show,
            "a student's copies and their state, or one copy as text (read-only)")
    p.add_argument("course")
    p.add_argument("student", help="the Linux user (nb...) or the edX id")
    p.add_argument("notebook", nargs="?", help="print this copy's cells and outputs")
    json_option(p)

    p = add(student, "link", cmd_student_link,
            "a link for course staff to a read-only view of a student's copy (expires)")
    p.add_argument("course")
    p.add_argument("student", help="the Linux user (nb...) or the edX id")
    p.add_argument("notebook")
    p.add_argument("--hours", type=float, default=24, metavar="HOURS",
                   help="how long the link works (default: 24)")

    p = add(student, "revoke", cmd_student_revoke,
            "take back a student's links to a course (old links 403; the course link "
            "hands out a new one)")
    p.add_argument("course")
    p.add_argument("student", help="the Linux user (nb...) or the edX id")

    p = add(student, "link-ids", cmd_student_link_ids,
            "make launches as OTHER open the work of KEEP (the same learner under two LMS "
            "ids, e.g. LTI 1.1 and 1.3); refused if OTHER has work in the course")
    p.add_argument("course")
    p.add_argument("keep", help="the id whose work is kept (e.g. the LTI 1.1 user_id)")
    p.add_argument("other", help="the other id (e.g. the LTI 1.3 sub)")
    p = add(student, "unlink-id", cmd_student_unlink_id, "undo link-ids for OTHER")
    p.add_argument("course")
    p.add_argument("other")

    p = add(sub, "status", cmd_status,
            "students' notebook servers: state, since when, memory (from systemd)")
    p.add_argument("--course", help="only this course")
    json_option(p)
    p = add(sub, "logs", cmd_logs,
            "one student's logs: their units, Jupyter, and the dispatcher's lines (journalctl)")
    p.add_argument("course")
    p.add_argument("student", help="the Linux user (nb...) or the edX id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")
    p.add_argument("--since", metavar="TIME", help="e.g. '1 hour ago', 'today'")
    p.add_argument("-g", "--grep", metavar="PATTERN",
                   help="only lines that match (journalctl --grep), e.g. '^\\[[WEC] ' for "
                   "Jupyter's warnings and errors")
    p.add_argument("--json", action="store_true", default=False,
                   help="journal entries as JSON, one per line (journalctl --output=json)")
    score = group("score", "set a student's score (sent to the LMS)", "score_command")
    p = add(score, "set", cmd_score_set,
            "an admin's or teacher's score for a student's notebook, or an override: queued "
            "and sent to the LMS the student's LTI launch of that notebook came from "
            "(refused if there was none)")
    p.add_argument("course")
    p.add_argument("student", help="the edX id (or the Linux user nb...)")
    p.add_argument("notebook", help="path in the course, e.g. week1/loops.ipynb")
    p.add_argument("given", help="the score, from 0 to MAXIMUM")
    p.add_argument("maximum", help="the most it could be (above 0)")
    p.add_argument("--comment", default="", help="a comment the LMS shows (LTI 1.3 only)")
    scores_group = group("scores", "students' scores on their way to the LMS", "scores_command")
    p = add(scores_group, "list", cmd_scores_list,
            "each student's latest score per notebook: pending, failed (retried, with the "
            "last error) or sent")
    p.add_argument("course", nargs="?", help="only this course")
    json_option(p)
    p = add(scores_group, "send", cmd_scores_send,
            "send the pending scores that are due (nbunits-scores.timer runs it every minute)")
    p.add_argument("--all", action="store_true",
                   help="also those waiting to be tried again after a failure (the LMS is back)")
    p = add(sub, "metrics", cmd_metrics,
            "Prometheus metrics: running, starting, failed, starts, start times, per course")
    p.add_argument("--textfile", metavar="FILE",
                   help="write them atomically to FILE (node_exporter's textfile collector) "
                   "instead of printing them")

    image = group("image", "build images", "image_command")
    p = add(image, "build", cmd_image_build, "build the Jupyter image into the shared store")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--image", help="image name (default localhost/nbunits/jupyter:latest)")
    which.add_argument("--course", help="build the course's own image from the requirements.txt "
                       "or Containerfile of its repository")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(load_settings(), args)
    except NbunitsError as exc:
        if debug:
            raise
        die(exc.message, exc.hint, exit_code(exc))
    except PermissionError as exc:
        if debug:
            raise
        die(f"{exc.filename or 'nbunits'}: permission denied",
            "this needs root: use sudo" if not is_root() else None,
            EXIT_NOT_ROOT if not is_root() else EXIT_ERROR)
    except OSError as exc:
        if debug:
            raise
        die(f"{exc.filename or 'nbunits'}: {exc.strerror or exc}",
            "run again with --debug for the details")


if __name__ == "__main__":
    main()
