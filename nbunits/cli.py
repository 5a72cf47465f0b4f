"""The `nbunits` command, for admins: install, courses, students, images."""

from __future__ import annotations

import argparse
import dataclasses
import grp
import json
import logging
import os
import secrets
import stat
import sys
import tomllib
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import NoReturn

import tomli_w

from . import (
    copies,
    course_image,
    courses,
    identity,
    lms_keys,
    nginx,
    nsswitch,
    quota,
    seccomp,
    staff,
    students,
    users,
)
from .capability import ensure_secret, read_secret, revoked_map
from .config import (
    DEFAULT_CONFIG,
    LEGACY_MODES,
    NETWORKS,
    Lti13Registration,
    Server,
    Settings,
    list_courses,
    load_course,
    load_settings,
    server_to_toml,
)
from .errors import NbunitsError
from .events import Event
from .events import send as send_event
from .files import fill, write_atomic
from .names import StudentUnits, check_notebook, quote_path, user_for
from .notebooks import as_text, find_masters, read_copy
from .run import is_root, run
from .status import (
    as_dicts,
    format_table,
    journalctl_args,
    resolve_student,
    student_states,
)
from .systemd import active_users, catalog_file, daemon_reload, static_units, systemctl
from .users import lookup

logger = logging.getLogger("nbunits")

VENV = Path(sys.prefix)
SYSTEMD_DIR = Path("/etc/systemd/system")
GENERATOR_LINK = Path("/etc/systemd/system-generators/nbunits-generator")
NGINX_DIR = Path("/etc/nginx")
CATALOG_DIR = Path("/usr/local/lib/systemd/catalog")  # journalctl reads no /etc dir
BIN_LINK = Path("/usr/local/sbin/nbunits")
JOURNALD_DROPIN = Path("/etc/systemd/journald.conf.d/60-nbunits.conf")
COCKPIT_DIR = Path("/usr/share/cockpit/nbunits")


# Exit codes (README, "Exit codes"); argparse's usage errors exit with 2.
EXIT_ERROR, EXIT_UNKNOWN, EXIT_NOT_ROOT, EXIT_DECLINED = 1, 3, 4, 5


def die(message: str, hint: str | None = None, code: int = EXIT_ERROR) -> NoReturn:
    print(f"nbunits: error: {message}", file=sys.stderr)
    if hint:
        print(f"nbunits: hint: {hint}", file=sys.stderr)
    sys.exit(code)


def exit_code(error: NbunitsError) -> int:
    return EXIT_UNKNOWN if error.code.startswith("unknown_") else EXIT_ERROR


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def confirm(lines: list[str], yes: bool, action: str = "Delete") -> None:
    """Show exactly what is about to happen; go on with --yes or a "y" on stdin."""
    print("\n".join(lines), flush=True)
    if yes:
        return
    print(f"{action} all of the above? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        die("nothing was done", hint="answer y, or give --yes", code=EXIT_DECLINED)


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def data_file(*parts: str) -> str:
    return (resources.files("nbunits") / "data").joinpath(*parts).read_text()


# --- install ---------------------------------------------------------------

def cmd_install(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    server = server_settings(settings, args)  # checked before anything changes
    if server.hosts:
        install_front(server, args)
        return
    problem = users.nss_problem()
    if problem:
        die(problem, hint="apt-get install libnss-systemd (it adds 'systemd' to passwd: "
                          "and group: in /etc/nsswitch.conf)")
    install_initgroups_line(enable=not args.no_initgroups_line)
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
    # Students' containers: seccomp profiles without btrfs subvolumes, one also
    # without nested user namespaces.
    seccomp.write_profiles(settings.etc_dir)
    install_students_nsswitch(settings)
    # Created once; nginx's copy goes into its snippets (needed with --no-nginx too).
    ensure_secret(settings, NGINX_DIR / "snippets" / "nbunits-secret.conf")
    if server.multi_host:
        install_multi_host(settings)

    step(f"units in {SYSTEMD_DIR}, generator {GENERATOR_LINK}")
    for unit in static_units():
        write_atomic(SYSTEMD_DIR / unit.name, unit.read_text())
    GENERATOR_LINK.parent.mkdir(parents=True, exist_ok=True)
    GENERATOR_LINK.unlink(missing_ok=True)
    GENERATOR_LINK.symlink_to(VENV / "bin" / "nbunits-generator")
    step(f"journal catalog {CATALOG_DIR / 'nbunits.catalog'}, `nbunits` in {BIN_LINK.parent}")
    CATALOG_DIR.mkdir(parents=True, exist_ok=True)
    write_atomic(CATALOG_DIR / "nbunits.catalog", catalog_file().read_text(), 0o644)
    run(["journalctl", "--update-catalog"])
    install_journald_dropin()
    # Cockpit's page and admins' shells find the command by name.
    if not BIN_LINK.is_symlink() or os.readlink(BIN_LINK) != str(VENV / "bin" / "nbunits"):
        BIN_LINK.unlink(missing_ok=True)
        BIN_LINK.symlink_to(VENV / "bin" / "nbunits")
    install_cockpit_page()

    # Not a requirement: only courses that set disk_quota need quotas (README, "Disk quotas").
    step(f"disk quotas: {quota.describe(settings.home_base)}")
    write_server_settings(settings, server)
    if not args.no_nginx:
        install_nginx(server, args.listen, args.tls_listen, revoked_map(settings))
    step("systemctl daemon-reload; enable the dispatcher and helper sockets")
    daemon_reload()
    systemctl("enable", "--now", "nbunits-dispatcher.socket", "nbunits-helper.socket",
              "nbunits-refresh-keys.timer", "nbunits-metrics.timer", "nbunits-unload.timer")
    # A running dispatcher or helper keeps old code until restarted.
    systemctl("try-restart", "nbunits-dispatcher.service", "nbunits-helper.service")
    print("nbunits is installed. Next: nbunits course add NAME --dir FOLDER")


def install_initgroups_line(enable: bool, path: Path = Path("/etc/nsswitch.conf")) -> None:
    """Students' starts without an O(students) initgroups() (nbunits/nsswitch.py)."""
    decided = nsswitch.plan(path.read_text(), nsswitch.memberships_in_use(), enable=enable)
    if decided.text is not None:
        write_atomic(path, decided.text, stat.S_IMODE(path.stat().st_mode))
    step(f"{path}: {decided.note}")


def install_students_nsswitch(settings: Settings,
                              path: Path = Path("/etc/nsswitch.conf")) -> None:
    """What students' units see as /etc/nsswitch.conf: no O(students) group lookup
    at each start (nbunits/nsswitch.py). Made anew at each install, from the host's."""
    target = settings.students_nsswitch
    write_atomic(target, nsswitch.students_file(path.read_text()), 0o644)
    step(f"{target}: group lookups without systemd, for students' units")


def install_journald_dropin(path: Path = JOURNALD_DROPIN) -> None:
    """Students' lines in the system journal, not one journal file per student.

    journald's default (SplitMode=uid) gives every uid from 1000 up a file of its
    own, user-UID.journal, allocated 8 MB at a time: one more file per student who
    ever started a server (800 GB of allocation for 100,000 students, capped and
    vacuumed by SystemMaxUse= over and over), and a `journalctl` that opens every
    file. Students never read their own journal (they have no login), and admins
    read it whole anyway. journald reads its settings at start: restarted (its
    services' log streams are kept across, in its file descriptor store) when the
    file changes."""
    text = data_file("units", "journald", "nbunits.conf")
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, 0o644)
    step(f"{path}: students' lines in the system journal; restart systemd-journald")
    systemctl("restart", "systemd-journald.service")


def install_multi_host(settings: Settings) -> None:
    """One of several hosts (README, "Beyond one host"): the hand-off key, made
    once (the admin copies this host's file to the others before their install)
    and readable by the dispatcher; the locks' folder on the shared storage."""
    step(f"several hosts: {settings.hosts_secret}, {settings.locks_dir}")
    path, group = settings.hosts_secret, grp.getgrnam("nbunits").gr_gid
    if not path.exists():
        write_atomic(path, secrets.token_hex(32) + "\n", 0o640, group=group)
    os.chown(path, 0, group)  # a copy from the first host: the dispatcher reads it
    os.chmod(path, 0o640)
    settings.locks_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def install_front(server: Server, args: argparse.Namespace) -> None:
    """`nbunits install --front HOST...`: only nginx, spreading students over the
    hosts by consistent hashing (README, "Beyond one host"); no units, no users."""
    if server.multi_host:
        die("--front and --multi-host go on different machines",
            hint="the front runs only nginx; each host runs nbunits with --multi-host")
    files = {nginx.FRONT_CONF_D: nginx.front_conf(server, args.tls_listen),
             nginx.PROXY: nginx.template("nbunits-proxy.conf")}
    if args.listen or args.tls_listen:
        files[nginx.SITE] = nginx.front_site_conf(server, args.listen, args.tls_listen)
    elif not (NGINX_DIR / nginx.SITE).exists():  # later runs may change the hosts only
        die("the first nbunits install --front needs --listen and/or --tls-listen")
    write_server_settings(Settings(), server)
    install_nginx_files(files)
    print(f"nbunits front installed for {len(server.hosts)} host(s): "
          + ", ".join(server.hosts))


def install_cockpit_page() -> None:
    """The admins' dashboard: a Cockpit page (static files, no build step) that runs
    `nbunits ... --json` through the admin's own Cockpit session."""
    step(f"Cockpit page in {COCKPIT_DIR}")
    COCKPIT_DIR.mkdir(parents=True, exist_ok=True)
    page = resources.files("nbunits") / "data" / "cockpit"
    for item in page.iterdir():
        if item.is_file():
            write_atomic(COCKPIT_DIR / item.name, item.read_text(), 0o644)


def server_settings(settings: Settings, args: argparse.Namespace) -> Server:
    """The [server] settings: what was installed before, with this command's options."""
    old = settings.server
    # Settings with no option here (admission control, unloading) are kept as written.
    server = dataclasses.replace(
        old,
        # DNS names are case-insensitive; browsers send them in lower case.
        names=tuple(n.lower() for n in args.server_names) or old.names,
        tls_cert=str(Path(args.tls_cert).resolve()) if args.tls_cert else old.tls_cert,
        tls_key=str(Path(args.tls_key).resolve()) if args.tls_key else old.tls_key,
        trusted_proxies=tuple(args.trusted_proxies) or old.trusted_proxies,
        proxy_header=args.proxy_header or old.proxy_header,
        multi_host=args.multi_host or old.multi_host,
        hosts=tuple(args.front) or old.hosts)
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


def install_nginx(server: Server, listen: Sequence[str], tls_listen: Sequence[str],
                  revoked: str) -> None:
    step(f"nginx configuration in {NGINX_DIR} for {', '.join(server.names)}")
    files = {nginx.CONF_D: nginx.http_conf(server, tls_listen), nginx.LOCATIONS: nginx.locations_conf(server),
             nginx.PROXY: nginx.template("nbunits-proxy.conf"), nginx.REVOKED: revoked}
    if listen or tls_listen:
        files[nginx.SITE] = nginx.site_conf(server, listen, tls_listen)
    install_nginx_files(files)


def install_nginx_files(files: dict[str, str]) -> None:
    """Write nginx's files, check them with nginx -t (else put the old ones back), reload."""
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
        print(f"  /ipythonExercice/{args.name}/{quote_path(notebook)}/<student id>")


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
    plan = courses.plan_removal(settings, args.name, purge=args.purge)
    confirm(plan.describe(), args.yes, "Remove" if not args.purge else "Delete")
    courses.remove(settings, plan, say=step)


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


def cmd_course_list(settings: Settings, args: argparse.Namespace) -> None:
    listed: list[dict[str, object]] = []
    for name in list_courses(settings):
        try:
            course = load_course(settings, name)
            notebooks = [str(n) for n in find_masters(course.source)]
            origin = course.git_url or course.origin_dir or "-"
            listed.append({"name": name, "title": course.title, "notebooks": notebooks,
                           "image": course.image, "origin": origin})
            if not args.json:
                print(f"{name}\t{len(notebooks)} notebook(s)\t{course.image}\t{origin}")
        except NbunitsError as exc:
            listed.append({"name": name, "error": str(exc)})
            if not args.json:
                print(f"{name}\tBROKEN: {exc}")
    if args.json:
        print_json(listed)


def cmd_course_show(settings: Settings, args: argparse.Namespace) -> None:
    course = load_course(settings, args.name)
    if args.json:
        print_json({"file": str(settings.course_file(course.name)),
                    "settings": tomllib.loads(course.to_toml()),
                    "notebooks": [str(n) for n in find_masters(course.source)]})
        return
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
                           hint="nbunits student list shows them; nbunits student find ID "
                                "gives the user of an edX id")
    return copies.for_student(settings, config, found)


def known_student(settings: Settings, course: str, student: str) -> str:
    """The user of a student who opened a notebook of `course` (else an error)."""
    load_course(settings, course)
    user = resolve_student(student)
    if not settings.token_file(StudentUnits(course, user)).exists():
        raise NbunitsError("unknown_student", f"no student {student} in course {course}",
                           hint=f"nbunits student list --course {course} shows them")
    return user


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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_student_delete(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    user = resolve_student(args.student)
    plan = students.plan_deletion(settings, user, backup=not args.no_backup)
    confirm(plan.describe(), args.yes)
    students.delete(settings, plan)
    send_event(Event.DELETED, f"deleted student {user}: " + "; ".join(
        line.strip() for line in plan.describe()[1:]), course=None, student=user,
        ADMIN=courses.admin(), BACKUP=plan.backup or "")
    print(f"student {user} deleted" + (f"; their home is saved in {plan.backup}"
                                       if plan.backup else ""))


def cmd_student_stop(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    user = known_student(settings, args.course, args.student)
    units = StudentUnits(args.course, user)
    run(["systemctl", "stop", units.proxy, units.container])
    send_event(Event.STOPPED, f"{user}'s Jupyter stopped by an admin", course=args.course,
               student=user, ADMIN=courses.admin(), BY="admin")
    print(f"stopped {units.container}; the student's next click starts it again")


def cmd_student_reset(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    theirs = student_copies(settings, args.course, args.student)
    kept = copies.reset(theirs, str(check_notebook(args.notebook)), datetime.now())
    user = resolve_student(args.student)
    kept_text = f"old copy kept as {kept}" if kept else "the copy was unmodified"
    send_event(Event.RESET, f"reset {args.notebook} for {user} (asked by an admin); {kept_text}",
               course=args.course, student=user, NOTEBOOK=args.notebook, KEPT=kept or "",
               BY="admin", ADMIN=courses.admin())
    where = theirs.home / args.course
    print(f"{where / args.notebook}: a fresh copy of the current master")
    print(f"  the old copy is kept as {where / kept}" if kept else "  (there was nothing to keep)")
    if resolve_student(args.student) in active_users(args.course):
        print("  the student's Jupyter is running: they should reload the notebook's tab")


def cmd_student_show(settings: Settings, args: argparse.Namespace) -> None:
    require_root("student show reads the student's home and records")
    theirs = student_copies(settings, args.course, args.student)
    if args.json and not args.notebook:
        print_json([{"notebook": n, "state": s} for n, s in copies.status(theirs).items()])
        return
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
    user = known_student(settings, args.course, args.student)
    config = load_course(settings, args.course)
    notebook = str(check_notebook(args.notebook))
    if read_copy(settings.home(user), PurePosixPath(args.course, notebook)) is None:
        raise NbunitsError("unknown_notebook", f"{user} has no copy of {notebook}",
                           hint=f"nbunits student show {args.course} {user} lists them")
    print(staff.link(read_secret(settings), config.name, user, notebook, args.hours))


def cmd_student_revoke(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    from .revocation import revoke

    user = resolve_student(args.student)
    grant = revoke(settings, args.course, user)
    print(f"{user}: every earlier link to {args.course} now gets 403 (generation "
          f"{grant.generation}); their server was stopped; the course link hands out "
          "the new one")


def cmd_student_link_ids(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    print(identity.link(settings, args.course, args.keep, args.other,
                        identity.HasWork(settings)))


def cmd_student_unlink_id(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    print(identity.unlink(settings, args.course, args.other))


# --- status and logs -----------------------------------------------------

def cmd_status(settings: Settings, args: argparse.Namespace) -> None:
    if args.course:
        load_course(settings, args.course)
    states = student_states(settings, args.course)
    if args.json:
        print(json.dumps(as_dicts(states), indent=2))
    else:
        print(format_table(states))


def cmd_logs(settings: Settings, args: argparse.Namespace) -> None:
    require_root("logs reads the students' records and the journal")
    argv = journalctl_args(args.course, known_student(settings, args.course, args.student),
                           (["--follow"] if args.follow else [])
                           + (["--lines", str(args.lines)] if args.lines else [])
                           + (["--since", args.since] if args.since else [])
                           + (["--output=json"] if args.json else []))
    os.execvp(argv[0], argv)


def cmd_metrics(settings: Settings, args: argparse.Namespace) -> None:
    from . import metrics  # prometheus_client: only for this command

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
        return
    script = resources.files("nbunits") / "data" / "images" / "build"
    env = {**os.environ, "NBUNITS_IMAGE_STORE": str(settings.image_store)}
    argv = ["bash", str(script), *(["--force"] if args.force else []),
            *(["--image", args.image] if args.image else [])]
    os.execvpe("bash", argv, env)


# --- plumbing --------------------------------------------------------------

def require_root(why: str = "this command changes the system") -> None:
    if not is_root():
        die(f"{why}: it must run as root", hint="use sudo", code=EXIT_NOT_ROOT)


# What each course setting means, in the units it takes: (metavar, help).
SETTING_HELP = {
    "image": ("NAME", "the Jupyter image students run"),
    "title": ("TEXT", "the course's title, for people"),
    "proxy_idle_timeout": ("SECONDS", "idle stop: seconds without a connection before the "
                           "student's server stops"),
    "jupyter_idle_timeout": ("SECONDS", "seconds without activity (open tabs included) "
                             "before Jupyter shuts itself down"),
    "kernel_idle_timeout": ("SECONDS", "seconds before an idle kernel is culled"),
    "max_lifetime": ("SECONDS", "hard cap on a student's server's lifetime"),
    "memory_max": ("BYTES", "memory per student (systemd MemoryMax=: K, M, G, T "
                   "suffixes, or infinity)"),
    "cpu_quota": ("PERCENT", "CPU per student (systemd CPUQuota=; 100%% is one core)"),
    "tasks_max": ("N", "processes and threads per student (systemd TasksMax=)"),
    "course_memory_max": ("BYTES", "memory for the whole course (its slice's MemoryMax=)"),
    "network": ("NETWORK", "the containers' network: none (loopback only) or slirp4netns "
                "(outbound only)"),
    "lms_origin": ("ORIGINS", "origins allowed to frame the notebooks, space separated, "
                   "e.g. https://lms.example.org"),
    "legacy": ("MODE", "who may open the legacy /ipythonExercice/ link: open, off, "
               "referrer or signed (README)"),
    "lti_context_id": ("ID", "the course's id in the LMS (Open edX: course-v1:Org+Num+Run)"),
    "lti11_key": ("KEY", "the LTI 1.1 consumer key (its secret: --lti11-secret-file)"),
}
SETTING_CHOICES = {"network": NETWORKS, "legacy": LEGACY_MODES}


def add_course_settings(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    settings = parser.add_argument_group(
        "course settings", "changed settings apply at each student's next start"
        if update else None)
    for field in courses.SETTABLE:
        if field.type in (bool, "bool"):
            parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name,
                                action=argparse.BooleanOptionalAction, default=None,
                                help=f"course setting {field.name} (default {field.default})")
            continue
        if field.type not in (int, "int", str, "str"):
            continue  # lists and tables: below
        kind = int if field.type in (int, "int") else str
        metavar, text = SETTING_HELP.get(field.name, (field.name.upper(),
                                                      f"course setting {field.name}"))
        default = field.default if field.default not in ("", None) else "none"
        now = "unchanged unless given" if update else f"default: {default}"
        settings.add_argument("--" + field.name.replace("_", "-"), dest=field.name, type=kind,
                              metavar=metavar, choices=SETTING_CHOICES.get(field.name),
                              help=f"{text} ({now})".replace("%%", "%").replace("%", "%%"))
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
                   "the one an earlier install added): see README, \"Students' users\"")
    p.add_argument("--multi-host", action="store_true", default=False,
                   help="this host is one of several behind an nbunits front: launches are "
                   "handed to the student's host, homes and students' state are on shared "
                   "storage (README, Beyond one host)")
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
    p = add(course, "refresh-keys", cmd_course_refresh_keys,
            "fetch the LTI 1.3 platforms' keys again (nbunits-refresh-keys.timer runs it)")
    p.add_argument("name", nargs="?", help="only this course")
    json_option(add(course, "list", cmd_course_list, "list the courses"))
    p = add(course, "show", cmd_course_show, "show a course's settings and notebooks")
    p.add_argument("name")
    json_option(p)
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
    p.add_argument("--json", action="store_true", default=False,
                   help="journal entries as JSON, one per line (journalctl --output=json)")
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
