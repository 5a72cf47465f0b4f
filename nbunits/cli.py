"""The `nbunits` command, for admins: install, courses, students, images."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import NoReturn

import tomli_w

from . import copies, courses, identity, lms_keys, nginx, staff, users
from .capability import ensure_secret, read_secret
from .config import (
    DEFAULT_CONFIG,
    Lti13Registration,
    Server,
    Settings,
    list_courses,
    load_course,
    load_settings,
    server_to_toml,
)
from .errors import NbunitsError
from .files import fill, write_atomic
from .names import check_notebook, user_for
from .notebooks import as_text, find_masters, read_copy
from .run import is_root, run
from .status import (
    as_dicts,
    format_table,
    journalctl_args,
    resolve_student,
    student_states,
)
from .systemd import active_users, daemon_reload, static_units, systemctl
from .users import lookup

logger = logging.getLogger("nbunits")

VENV = Path(sys.prefix)
SYSTEMD_DIR = Path("/etc/systemd/system")
GENERATOR_LINK = Path("/etc/systemd/system-generators/nbunits-generator")
NGINX_DIR = Path("/etc/nginx")


def die(message: str, hint: str | None = None) -> NoReturn:
    print(f"nbunits: error: {message}", file=sys.stderr)
    if hint:
        print(f"nbunits: hint: {hint}", file=sys.stderr)
    sys.exit(1)


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def data_file(*parts: str) -> str:
    return (resources.files("nbunits") / "data").joinpath(*parts).read_text()


# --- install ---------------------------------------------------------------

def cmd_install(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    server = server_settings(settings, args)  # checked before anything changes
    problem = users.nss_problem()
    if problem:
        die(problem, hint="apt-get install libnss-systemd (it adds 'systemd' to passwd: "
                          "and group: in /etc/nsswitch.conf)")
    step("system user nbunits (runs the dispatcher)")
    if run(["getent", "passwd", "nbunits"], check=False).returncode != 0:
        run(["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "nbunits"])
    step(f"folders under {settings.etc_dir} and {settings.state_dir}")
    for path, mode in ((settings.etc_dir, 0o755), (settings.courses_conf_dir, 0o755),
                       (settings.state_dir, 0o755), (settings.masters_dir, 0o755),
                       (settings.tokens_dir, 0o700), (settings.students_dir, 0o700),
                       (settings.recent_dir, 0o700)):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    write_atomic(settings.etc_dir / "storage.conf",
               fill(data_file("images", "storage.conf"), {"IMAGE_STORE": str(settings.image_store)}))
    # Created once; nginx's copy goes into its snippets (needed with --no-nginx too).
    ensure_secret(settings, NGINX_DIR / "snippets" / "nbunits-secret.conf")

    step(f"units in {SYSTEMD_DIR}, generator {GENERATOR_LINK}")
    for unit in static_units():
        write_atomic(SYSTEMD_DIR / unit.name, unit.read_text())
    GENERATOR_LINK.parent.mkdir(parents=True, exist_ok=True)
    GENERATOR_LINK.unlink(missing_ok=True)
    GENERATOR_LINK.symlink_to(VENV / "bin" / "nbunits-generator")

    write_server_settings(settings, server)
    if not args.no_nginx:
        install_nginx(server, args.listen, args.tls_listen)
    step("systemctl daemon-reload; enable the dispatcher and helper sockets")
    daemon_reload()
    systemctl("enable", "--now", "nbunits-dispatcher.socket", "nbunits-helper.socket",
              "nbunits-refresh-keys.timer", "nbunits-unload.timer")
    # A running dispatcher or helper keeps old code until restarted.
    systemctl("try-restart", "nbunits-dispatcher.service", "nbunits-helper.service")
    print("nbunits is installed. Next: nbunits course add NAME --dir FOLDER")


def server_settings(settings: Settings, args: argparse.Namespace) -> Server:
    """The [server] settings: what was installed before, with this command's options."""
    old = settings.server
    # Settings with no option here (admission control, unloading) are kept as written.
    server = dataclasses.replace(
        old,
        names=tuple(args.server_names) or old.names,
        tls_cert=str(Path(args.tls_cert).resolve()) if args.tls_cert else old.tls_cert,
        tls_key=str(Path(args.tls_key).resolve()) if args.tls_key else old.tls_key,
        trusted_proxies=tuple(args.trusted_proxies) or old.trusted_proxies,
        proxy_header=args.proxy_header or old.proxy_header)
    if not server.names:
        die("nbunits install needs --server-name: the name browsers use for this server",
            hint="e.g. --server-name notebooks.example.org (repeat for more names)")
    if server.tls_cert:
        check_certificate(server)
    if args.tls_listen and not server.tls_cert:
        die("--tls-listen needs --tls-cert and --tls-key")
    return server


def check_certificate(server: Server) -> None:
    """The certificate and key can be read, belong together and cover every name."""
    for path in (server.tls_cert, server.tls_key):
        if not os.access(path, os.R_OK):
            die(f"cannot read {path}")
    key = run(["openssl", "pkey", "-in", server.tls_key, "-pubout"], check=False)
    cert = run(["openssl", "x509", "-in", server.tls_cert, "-noout", "-pubkey"], check=False)
    if key.returncode or cert.returncode:
        said = (cert.stderr or key.stderr).strip().splitlines()
        die(f"{server.tls_cert} / {server.tls_key}: not a PEM certificate and key",
            hint=said[-1] if said else None)
    if key.stdout != cert.stdout:
        die(f"{server.tls_key} is not the key of {server.tls_cert}")
    for name in server.names:
        checked = run(["openssl", "x509", "-in", server.tls_cert, "-noout", "-checkhost", name],
                      check=False)
        if "does match" not in checked.stdout:
            die(f"{server.tls_cert} is not valid for {name}",
                hint="a certificate whose subjectAltName lists every --server-name")


def write_server_settings(settings: Settings, server: Server) -> None:
    path = DEFAULT_CONFIG
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    data.update(server_to_toml(server))
    write_atomic(path, "# nbunits settings; written by `nbunits install`\n" + tomli_w.dumps(data))


def install_nginx(server: Server, listen: Sequence[str], tls_listen: Sequence[str]) -> None:
    step(f"nginx configuration in {NGINX_DIR} for {', '.join(server.names)}")
    files = {nginx.CONF_D: nginx.http_conf(server), nginx.LOCATIONS: nginx.locations_conf(server),
             nginx.PROXY: nginx.template("nbunits-proxy.conf")}
    if listen or tls_listen:
        files[nginx.SITE] = nginx.site_conf(server, listen, tls_listen)
    before = {name: (NGINX_DIR / name).read_text() if (NGINX_DIR / name).exists() else None
              for name in files}
    default_site = disable_debian_default_site() if nginx.SITE in files else None
    for name, text in files.items():
        write_atomic(NGINX_DIR / name, text)
    checked = run(["nginx", "-t", "-q"], check=False)
    if checked.returncode != 0:
        for name, old in before.items():  # nginx keeps serving what it had
            if old is None:
                (NGINX_DIR / name).unlink(missing_ok=True)
            else:
                write_atomic(NGINX_DIR / name, old)
        if default_site:
            default_site[0].symlink_to(default_site[1])
        die("nginx refuses the new configuration (the previous one is back in place): "
            + (checked.stderr.strip().splitlines() or ["?"])[-1])
    systemctl("enable", "nginx.service")
    systemctl("reload-or-restart", "nginx.service")


def disable_debian_default_site() -> tuple[Path, str] | None:
    """Debian's "Welcome to nginx" site also claims default_server: our site answers
    unknown names with a 421 instead. Only Debian's own link is removed; returns it."""
    link = NGINX_DIR / "sites-enabled" / "default"
    if link.is_symlink() and os.readlink(link) in ("/etc/nginx/sites-available/default",
                                                    "../sites-available/default"):
        step(f"disable Debian's default site ({link})")
        target = os.readlink(link)
        link.unlink()
        return link, target
    return None


# --- courses ---------------------------------------------------------------

def course_options(args: argparse.Namespace) -> dict[str, object]:
    """The course settings given on the command line (--image, --memory-max...)."""
    options: dict[str, object] = {f.name: getattr(args, f.name) for f in courses.SETTABLE
                                  if getattr(args, f.name, None) is not None}
    if "legacy_referrers" in options:
        options["legacy_referrers"] = tuple(options["legacy_referrers"])  # type: ignore[arg-type]
    if "lti_staff_roles" in options:
        options["lti_staff_roles"] = tuple(options["lti_staff_roles"])  # type: ignore[arg-type]
    if "lti_notebooks" in options:
        pairs = [item.partition("=") for item in options["lti_notebooks"]]  # type: ignore[attr-defined]
        if not all(sep for _, sep, _ in pairs):
            die("--lti-notebook takes RESOURCE_LINK_ID=NOTEBOOK")
        options["lti_notebooks"] = {link: notebook for link, _, notebook in pairs}
    return options


def course_secrets(args: argparse.Namespace) -> dict[str, str]:
    """Secrets are read from files (never from the command line, which ps shows)."""
    found = {}
    for name in ("lti11_secret", "legacy_secret"):
        path = getattr(args, f"{name}_file", None)
        if path:
            try:
                found[name] = Path(path).read_text().strip()
            except OSError as exc:
                die(f"cannot read {path}: {exc.strerror}")
            if not found[name]:
                die(f"{path} is empty")
    return found


LTI13_OPTIONS = ("issuer", "client_id", "deployment_ids", "auth_url", "keys", "keys_url")


def lti13_options(settings: Settings, args: argparse.Namespace,
                  current: tuple[Lti13Registration, ...]) -> dict[str, object]:
    """--lti13-* options -> {"lti13": the course's registrations after them}, or {}."""
    change: dict[str, object] = {name: getattr(args, f"lti13_{name}") for name in LTI13_OPTIONS
                                 if getattr(args, f"lti13_{name}", None) is not None}
    if "deployment_ids" in change:
        change["deployment_ids"] = tuple(change["deployment_ids"])  # type: ignore[arg-type]
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
        print(f"  /ipythonExercice/{args.name}/{notebook}/<student id>")


def cmd_course_update(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    current = load_course(settings, args.name).lti13
    courses.update(settings, args.name, git_url=args.git or "", git_branch=args.branch,
                   directory=args.dir or "",
                   options={**course_options(args), **lti13_options(settings, args, current)},
                   say=step, secrets=course_secrets(args))


def cmd_course_refresh_keys(settings: Settings, args: argparse.Namespace) -> None:
    """Fetch the platforms' LTI 1.3 keys again (run daily by nbunits-refresh-keys.timer)."""
    require_root()
    problems = lms_keys.refresh_keys(settings, [args.name] if args.name else list_courses(settings),
                                    say=step)
    for problem in problems:
        print(f"nbunits: error: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)


def cmd_course_remove(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    courses.remove(settings, args.name, purge=args.purge, say=step)


def cmd_course_stats(settings: Settings, args: argparse.Namespace) -> None:
    usage = courses.usage(settings, args.name, days=args.days)
    print(f"course {usage.course}")
    print(f"  students provisioned: {usage.provisioned}")
    print(f"  running now:          {usage.running}")
    print(f"  notebook copies:      {usage.copies}")
    print(f"  starts per day (last {args.days} days):")
    for day, count in usage.starts_per_day.items():
        print(f"    {day}  {count}")
    if not usage.starts_per_day:
        print("    none")


def cmd_course_list(settings: Settings, args: argparse.Namespace) -> None:
    for name in list_courses(settings):
        try:
            course = load_course(settings, name)
            count = sum(1 for _ in find_masters(course.source))
            origin = course.git_url or course.origin_dir or "-"
            print(f"{name}\t{count} notebook(s)\t{course.image}\t{origin}")
        except NbunitsError as exc:
            print(f"{name}\tBROKEN: {exc}")


def cmd_course_show(settings: Settings, args: argparse.Namespace) -> None:
    course = load_course(settings, args.name)
    print(f"# {settings.course_file(course.name)}")
    print(course.to_toml(), end="")
    print("# notebooks:")
    for notebook in find_masters(course.source):
        print(f"#   {notebook}")


# --- students --------------------------------------------------------------

def cmd_student_find(settings: Settings, args: argparse.Namespace) -> None:
    user = user_for(args.id)
    student = lookup(settings, args.id)
    state = f"home {student.home}" if student else "not provisioned yet"
    print(f"{user}\t{state}")


def student_copies(settings: Settings, course: str, student: str) -> copies.Copies:
    config = load_course(settings, course)
    user = resolve_student(student)
    found = courses.local_student(settings, user)
    if found is None:
        raise NbunitsError("unknown_student", f"no student user {user}",
                           hint="nbunits student find ID gives the user of an edX id")
    return copies.for_student(settings, config, found)


def cmd_student_reset(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    theirs = student_copies(settings, args.course, args.student)
    kept = copies.reset(theirs, str(check_notebook(args.notebook)), datetime.now())
    where = theirs.home / args.course
    print(f"{where / args.notebook}: a fresh copy of the current master")
    print(f"  the old copy is kept as {where / kept}" if kept else "  (there was nothing to keep)")
    if resolve_student(args.student) in active_users(args.course):
        print("  the student's Jupyter is running: they should reload the notebook's tab")


def cmd_student_show(settings: Settings, args: argparse.Namespace) -> None:
    theirs = student_copies(settings, args.course, args.student)
    if not args.notebook:
        for notebook, state in copies.status(theirs).items():
            print(f"{notebook}\t{state}")
        return
    data = read_copy(theirs.home, theirs.rel(check_notebook(args.notebook)))
    if data is None:
        die(f"{resolve_student(args.student)} has no copy of {args.notebook}")
    print(as_text(data), end="")


def cmd_student_link(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    course = load_course(settings, args.course).name
    notebook = str(check_notebook(args.notebook))
    print(staff.link(read_secret(settings), course, resolve_student(args.student), notebook,
                     args.hours))


def cmd_student_link_ids(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    print(identity.link(settings, args.course, args.keep, args.other,
                        identity.HasWork(settings)))


def cmd_student_unlink_id(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    print(identity.unlink(settings, args.course, args.other))


# --- status and logs -----------------------------------------------------

def cmd_status(settings: Settings, args: argparse.Namespace) -> None:
    states = student_states(settings, args.course)
    if args.json:
        print(json.dumps(as_dicts(states), indent=2))
    else:
        print(format_table(states))


def cmd_logs(settings: Settings, args: argparse.Namespace) -> None:
    argv = journalctl_args(args.course, resolve_student(args.student),
                           (["--follow"] if args.follow else [])
                           + (["--lines", str(args.lines)] if args.lines else [])
                           + (["--since", args.since] if args.since else []))
    os.execvp(argv[0], argv)


# --- images ----------------------------------------------------------------

def cmd_image_build(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    script = resources.files("nbunits") / "data" / "images" / "build"
    env = {**os.environ, "NBUNITS_IMAGE_STORE": str(settings.image_store)}
    image = load_course(settings, args.course).image if args.course else args.image
    argv = ["bash", str(script), *(["--force"] if args.force else []),
            *(["--image", image] if image else [])]
    os.execvpe("bash", argv, env)


# --- plumbing --------------------------------------------------------------

def require_root() -> None:
    if not is_root():
        die("this command changes the system and must run as root", hint="use sudo")


def add_course_settings(parser: argparse.ArgumentParser) -> None:
    for field in courses.SETTABLE:
        if field.type not in (int, "int", str, "str"):
            continue  # lists and tables: below
        kind = int if field.type in (int, "int") else str
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, type=kind,
                            metavar=field.name.split("_")[-1].upper(),
                            help=f"course setting {field.name} (default {field.default})".replace("%", "%%"))
    parser.add_argument("--legacy-referrer", dest="legacy_referrers", action="append",
                        metavar="DOMAIN", help="a domain allowed for legacy = referrer (repeat)")
    parser.add_argument("--lti-notebook", dest="lti_notebooks", action="append",
                        metavar="LINK=NOTEBOOK", help="the notebook of an LTI resource link id (repeat)")
    parser.add_argument("--lti-staff-role", dest="lti_staff_roles", action="append",
                        metavar="ROLE", help="a context role that opens the staff views "
                        "(repeat; default Instructor and Administrator)")
    lti13 = parser.add_argument_group(
        "LTI 1.3 registration", "add or change the registration of --lti13-client-id (or the "
        "course's only one); Open edX: one per LTI 1.3 component")
    lti13.add_argument("--lti13-issuer", metavar="URL", help="the platform's issuer "
                       "(Open edX: the LMS root URL)")
    lti13.add_argument("--lti13-client-id", metavar="ID")
    lti13.add_argument("--lti13-deployment-id", dest="lti13_deployment_ids", action="append",
                       metavar="ID", help="an accepted deployment id (repeat; none: any)")
    lti13.add_argument("--lti13-auth-url", metavar="URL", help="the platform's OIDC "
                       "authorization URL (Open edX: Login URL ... /api/lti_consumer/v1/launch/)")
    lti13.add_argument("--lti13-keys-url", metavar="URL", help="the platform's JWKS "
                       "(Open edX: Keyset URL), fetched now and by nbunits-refresh-keys.timer")
    lti13.add_argument("--lti13-keys", metavar="FILE", help="where the keys are kept, or a "
                       "JWKS/PEM file you maintain")
    lti13.add_argument("--lti13-remove", action="append", metavar="CLIENT_ID",
                       help="drop the registration of this client id (repeat)")
    parser.add_argument("--lti11-secret-file", metavar="FILE", help="the LTI 1.1 consumer secret")
    parser.add_argument("--legacy-secret-file", metavar="FILE",
                        help="the HMAC secret of signed legacy links")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbunits", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
            func: Callable[[Settings, argparse.Namespace], None], help: str
            ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add(sub, "install", cmd_install, "install units, configuration and nginx snippets")
    p.add_argument("--server-name", dest="server_names", action="append", default=[],
                   metavar="NAME", help="a name browsers use for this server, e.g. "
                   "notebooks.example.org (repeat for more; required at the first install)")
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

    course = sub.add_parser("course", help="publish, update and inspect courses").add_subparsers(
        dest="course_command", required=True)
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
    add_course_settings(p)
    p = add(course, "remove", cmd_course_remove,
            "remove a course (students' copies are kept unless --purge)")
    p.add_argument("name")
    p.add_argument("--purge", action="store_true",
                   help="also delete every student's copies of this course")
    p = add(course, "refresh-keys", cmd_course_refresh_keys,
            "fetch the LTI 1.3 platforms' keys again (nbunits-refresh-keys.timer runs it)")
    p.add_argument("name", nargs="?", help="only this course")
    add(course, "list", cmd_course_list, "list the courses")
    p = add(course, "show", cmd_course_show, "show a course's settings and notebooks")
    p.add_argument("name")
    p = add(course, "stats", cmd_course_stats,
            "usage: students provisioned, running now, starts per day")
    p.add_argument("name")
    p.add_argument("--days", type=int, default=14, help="how far back to count starts")

    student = sub.add_parser("student", help="find students, show and reset their copies").add_subparsers(
        dest="student_command", required=True)
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

    p = add(student, "link", cmd_student_link,
            "a link for course staff to a read-only view of a student's copy (expires)")
    p.add_argument("course")
    p.add_argument("student", help="the Linux user (nb...) or the edX id")
    p.add_argument("notebook")
    p.add_argument("--hours", type=float, default=24, help="how long the link works (24)")

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
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add(sub, "logs", cmd_logs,
            "one student's logs: their units, Jupyter, and the dispatcher's lines (journalctl)")
    p.add_argument("course")
    p.add_argument("student", help="the Linux user (nb...) or the edX id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--lines", type=int, help="only the last N lines")
    p.add_argument("--since", help="e.g. '1 hour ago', 'today'")

    image = sub.add_parser("image", help="build images").add_subparsers(
        dest="image_command", required=True)
    p = add(image, "build", cmd_image_build, "build the Jupyter image into the shared store")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--image", help="image name (default localhost/nbunits/jupyter:latest)")
    which.add_argument("--course", help="build the image this course names")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(load_settings(), args)
    except NbunitsError as exc:
        if args.debug:
            raise
        die(exc.message, exc.hint)
    except OSError as exc:
        if args.debug:
            raise
        die(f"{exc.filename or 'nbunits'}: {exc.strerror or exc}",
            "run again with --debug for the details")


if __name__ == "__main__":
    main()
