"""`nbunits install`: units, configuration, nginx, the journal catalog, Cockpit's page.

Runs as: root, by the admin. Writes into /etc, /usr/local and /var/lib/nbunits;
every check comes before the first change. Run it again to change the server's
settings or after an upgrade: it is idempotent.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import secrets
import stat
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nbunits.admin import images, nginx, nsswitch, seccomp
from nbunits.core.config import DEFAULT_CONFIG, Server, Settings, server_to_toml
from nbunits.core.data import catalog_file, data_dir, data_file, static_units
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import fill, write_atomic
from nbunits.core.names import BUILDER_USER, STUDENTS_JOURNAL, student_host
from nbunits.core.run import run
from nbunits.core.systemctl import daemon_reload, systemctl
from nbunits.helper import quota, users
from nbunits.helper.capability import ensure_secret, revoked_map

VENV = Path(sys.prefix)
SYSTEMD_DIR = Path("/etc/systemd/system")
GENERATOR_LINK = Path("/etc/systemd/system-generators/nbunits-generator")
NGINX_DIR = Path("/etc/nginx")
CATALOG_DIR = Path("/usr/local/lib/systemd/catalog")  # journalctl reads no /etc dir
BIN_LINK = Path("/usr/local/sbin/nbunits")
JOURNALD_DROPIN = Path("/etc/systemd/journald.conf.d/60-nbunits.conf")
# The students' journal namespace (LogNamespace= of their units): its own settings file.
STUDENTS_JOURNALD = Path(f"/etc/systemd/journald@{STUDENTS_JOURNAL}.conf")
COCKPIT_DIR = Path("/usr/share/cockpit/nbunits")


class InstallError(NbunitsError):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(Code.INSTALL_FAILED, message, hint=hint)


@dataclass(frozen=True)
class Options:
    """What the admin asked for (`nbunits install --help`)."""

    server_names: Sequence[str] = ()
    student_domain: str | None = None  # "": back to one origin
    listen: Sequence[str] = ()
    tls_listen: Sequence[str] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    trusted_proxies: Sequence[str] = ()
    proxy_header: str | None = None
    no_nginx: bool = False
    no_initgroups_line: bool = False
    multi_host: bool = False
    front: Sequence[str] = ()


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def install(settings: Settings, args: Options) -> None:
    """Everything `nbunits install` does, in order; checks come before any change."""
    server = server_settings(settings, args)  # checked before anything changes
    if server.hosts:
        install_front(server, args)
        return
    problem = users.nss_problem()
    if problem:
        raise InstallError(problem, hint="apt-get install libnss-systemd (it adds 'systemd' "
                           "to passwd: and group: in /etc/nsswitch.conf)")
    install_initgroups_line(enable=not args.no_initgroups_line)
    step("system user nbunits (runs the dispatcher)")
    if run(["getent", "passwd", "nbunits"], check=False).returncode != 0:
        run(["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "nbunits"])
    install_builder(settings)
    step(f"folders under {settings.etc_dir} and {settings.state_dir}")
    for path, mode in ((settings.etc_dir, 0o755), (settings.courses_conf_dir, 0o755),
                       (settings.state_dir, 0o755), (settings.masters_dir, 0o755),
                       (settings.tokens_dir, 0o700), (settings.students_dir, 0o700),
                       (settings.recent_dir, 0o700)):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    write_atomic(settings.storage_conf,
               fill(data_file("images", "storage.conf"), {"IMAGE_STORE": str(settings.image_store)}))
    # Students' containers: seccomp profiles without btrfs subvolumes, one also
    # without nested user namespaces.
    seccomp.write_profiles(settings)
    install_students_nsswitch(settings)
    # Created once; nginx's copy goes into its snippets (needed with --no-nginx too).
    ensure_secret(settings, NGINX_DIR / "snippets" / "nbunits-secret.conf")
    install_tool_key(settings)
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
    install_students_journald()
    # Cockpit's page and admins' shells find the command by name.
    if not BIN_LINK.is_symlink() or os.readlink(BIN_LINK) != str(VENV / "bin" / "nbunits"):
        BIN_LINK.unlink(missing_ok=True)
        BIN_LINK.symlink_to(VENV / "bin" / "nbunits")
    install_cockpit_page()

    # Not a requirement: only courses that set disk_quota need quotas (docs/admin.md, "Disk quotas").
    step(f"disk quotas: {quota.describe(settings.home_base)}")
    write_server_settings(settings, server)
    if not args.no_nginx:
        install_nginx(server, args.listen, args.tls_listen, revoked_map(settings))
    step(f"the images in {settings.image_store}, for the generator: {settings.images_file}")
    for problem in images.record(settings):
        step(f"  {problem}")
    step("systemctl daemon-reload; enable the dispatcher and helper sockets")
    daemon_reload()
    systemctl("enable", "--now", "nbunits-dispatcher.socket", "nbunits-helper.socket",
              "nbunits-refresh-keys.timer", "nbunits-metrics.timer", "nbunits-unload.timer",
              "nbunits-scores.timer", "nbunits-course-end.timer")
    # At boot, once /var is mounted: the recently active students' sockets listen again.
    systemctl("enable", "nbunits-listen.service")
    # A running dispatcher or helper keeps old code until restarted.
    systemctl("try-restart", "nbunits-dispatcher.service", "nbunits-helper.service")
    print("nbunits is installed. Next: nbunits course add NAME --dir FOLDER")


def install_builder(settings: Settings) -> None:
    """The user that builds course images (admin/builder.py), never root: a system user
    whose rootless podman runs in a user namespace of its own (a subordinate id range),
    and its folders: its own (0700), root's input for it, root's imports from it."""
    step(f"system user {BUILDER_USER} (builds course images, rootless) and {settings.build_dir}")
    if run(["getent", "passwd", BUILDER_USER], check=False).returncode != 0:
        run(["useradd", "--system", "--user-group", "--add-subids-for-system",
             "--no-create-home", "--home-dir", str(settings.builder_home),
             "--shell", "/usr/sbin/nologin", BUILDER_USER])
    for kind in ("uid", "gid"):
        ranges = Path(f"/etc/sub{kind}")
        lines = ranges.read_text().splitlines() if ranges.exists() else []
        if not any(line.split(":")[0] == BUILDER_USER for line in lines):
            first = free_subordinate_range(lines)
            run(["usermod", f"--add-sub{kind}s", f"{first}-{first + SUBORDINATE_COUNT - 1}",
                 BUILDER_USER])
    entry = run(["getent", "passwd", BUILDER_USER]).stdout.split(":")
    for path, mode, owner in ((settings.build_dir, 0o755, (0, 0)),
                              (settings.builder_home, 0o700, (int(entry[2]), int(entry[3]))),
                              (settings.build_input, 0o755, (0, 0)),
                              (settings.build_import, 0o700, (0, 0))):
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        os.chown(path, *owner, follow_symlinks=False)
        os.chmod(path, mode, follow_symlinks=False)


SUBORDINATE_COUNT = 65536


def free_subordinate_range(lines: list[str]) -> int:
    """The first id of a free range of SUBORDINATE_COUNT ids after those of /etc/subuid."""
    ends = [int(start) + int(count) for _, start, count in
            (line.split(":") for line in lines if line.count(":") == 2)]
    return max([100000, *ends])


def install_initgroups_line(enable: bool, path: Path = Path("/etc/nsswitch.conf")) -> None:
    """Students' starts without an O(students) initgroups() (nbunits/admin/nsswitch.py)."""
    decided = nsswitch.plan(path.read_text(), nsswitch.memberships_in_use(), enable=enable)
    if decided.text is not None:
        write_atomic(path, decided.text, stat.S_IMODE(path.stat().st_mode))
    step(f"{path}: {decided.note}")


def install_students_nsswitch(settings: Settings,
                              path: Path = Path("/etc/nsswitch.conf")) -> None:
    """What students' units see as /etc/nsswitch.conf: no O(students) group lookup
    at each start (nbunits/admin/nsswitch.py). Made anew at each install, from the host's."""
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
    step(f"{path}: one journal file for all students; restart systemd-journald")
    systemctl("restart", "systemd-journald.service")


def install_students_journald(path: Path = STUDENTS_JOURNALD) -> None:
    """The settings of the students' journal namespace (units/journald/): its own size
    limits, no forwarding to terminals. Its journald starts with the first student's
    unit (socket-activated); restarted when the file changes, if it runs."""
    text = data_file("units", "journald", path.name)
    if path.exists() and path.read_text() == text:
        return
    write_atomic(path, text, 0o644)
    step(f"{path}: the students' journal namespace")
    systemctl("try-restart", f"systemd-journald@{STUDENTS_JOURNAL}.service")


def install_tool_key(settings: Settings) -> None:
    """nbunits' own LTI 1.3 key, made once: it signs deep-linking answers (the
    dispatcher reads it; the LMS checks them with /lti/1.3/jwks). Several hosts
    share one: the admin copies the first host's file, as hosts.secret."""
    path, group = settings.lti_tool_key, grp.getgrnam("nbunits").gr_gid
    step(f"the tool's LTI 1.3 key {path}")
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_atomic(path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
                     0o640, group=group)
    os.chown(path, 0, group)
    os.chmod(path, 0o640)


def install_multi_host(settings: Settings) -> None:
    """One of several hosts (docs/admin.md, "Beyond one host"): the hand-off key, made
    once (the admin copies this host's file to the others before their install)
    and readable by the dispatcher; the locks' folder on the shared storage."""
    step(f"several hosts: {settings.hosts_secret}, {settings.locks_dir}")
    path, group = settings.hosts_secret, grp.getgrnam("nbunits").gr_gid
    if not path.exists():
        write_atomic(path, secrets.token_hex(32) + "\n", 0o640, group=group)
    os.chown(path, 0, group)  # a copy from the first host: the dispatcher reads it
    os.chmod(path, 0o640)
    settings.locks_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def install_front(server: Server, args: Options) -> None:
    """`nbunits install --front HOST...`: only nginx, spreading students over the
    hosts by consistent hashing (docs/admin.md, "Beyond one host"); no units, no users."""
    if server.multi_host:
        raise InstallError("--front and --multi-host go on different machines",
            hint="the front runs only nginx; each host runs nbunits with --multi-host")
    files: dict[str, str | None] = {
        nginx.FRONT_CONF_D: nginx.front_conf(server, args.tls_listen),
        nginx.PROXY: nginx.template("nbunits-proxy.conf")}
    if args.listen or args.tls_listen:
        files[nginx.SITE] = nginx.front_site_conf(server, args.listen, args.tls_listen)
    elif not (NGINX_DIR / nginx.SITE).exists():  # later runs may change the hosts only
        raise InstallError("the first nbunits install --front needs --listen and/or --tls-listen")
    write_server_settings(Settings(), server)
    install_nginx_files(files)
    print(f"nbunits front installed for {len(server.hosts)} host(s): "
          + ", ".join(server.hosts))


def install_cockpit_page() -> None:
    """The admins' dashboard: a Cockpit page (static files, no build step) that runs
    `nbunits ... --json` through the admin's own Cockpit session."""
    step(f"Cockpit page in {COCKPIT_DIR}")
    COCKPIT_DIR.mkdir(parents=True, exist_ok=True)
    page = data_dir() / "cockpit"
    for item in page.iterdir():
        if item.is_file():
            write_atomic(COCKPIT_DIR / item.name, item.read_text(), 0o644)


def server_settings(settings: Settings, args: Options) -> Server:
    """The [server] settings: what was installed before, with this command's options."""
    old = settings.server
    # Settings with no option here (admission control, unloading) are kept as written.
    server = dataclasses.replace(
        old,
        # DNS names are case-insensitive; browsers send them in lower case.
        names=tuple(n.lower() for n in args.server_names) or old.names,
        student_domain=old.student_domain if args.student_domain is None
        else args.student_domain.lower(),
        tls_cert=str(Path(args.tls_cert).resolve()) if args.tls_cert else old.tls_cert,
        tls_key=str(Path(args.tls_key).resolve()) if args.tls_key else old.tls_key,
        trusted_proxies=tuple(args.trusted_proxies) or old.trusted_proxies,
        proxy_header=args.proxy_header or old.proxy_header,
        multi_host=args.multi_host or old.multi_host,
        hosts=tuple(args.front) or old.hosts)
    if not server.names:
        raise InstallError("nbunits install needs --server-name: the name browsers use for this server",
            hint="e.g. --server-name notebooks.example.org (repeat for more names)")
    if server.tls_cert:
        check_certificate(server)
    if args.tls_listen and not server.tls_cert:
        raise InstallError("--tls-listen needs --tls-cert and --tls-key")
    return server


def check_certificate(server: Server) -> None:
    """The certificate and key can be read, belong together and cover every name."""
    for path in (server.tls_cert, server.tls_key):
        if not os.access(path, os.R_OK):
            raise InstallError(f"cannot read {path}")
    key = run(["openssl", "pkey", "-in", server.tls_key, "-pubout"], check=False)
    cert = run(["openssl", "x509", "-in", server.tls_cert, "-noout", "-pubkey"], check=False)
    if key.returncode or cert.returncode:
        said = (cert.stderr or key.stderr).strip().splitlines()
        raise InstallError(f"{server.tls_cert} / {server.tls_key}: not a PEM certificate and key",
            hint=said[-1] if said else None)
    if key.stdout != cert.stdout:
        raise InstallError(f"{server.tls_key} is not the key of {server.tls_cert}")
    # Any student's host stands for all: its first label is a user name, which a
    # wildcard covers (per-student origins).
    wanted = {name: "every --server-name" for name in server.names}
    if server.student_domain:
        wanted[student_host("nb" + "a" * 16, server.student_domain)] = \
            f"*.{server.student_domain} (students' own origins)"
    for name, what in wanted.items():
        checked = run(["openssl", "x509", "-in", server.tls_cert, "-noout", "-checkhost", name],
                      check=False)
        if "does match" not in checked.stdout:
            raise InstallError(f"{server.tls_cert} is not valid for {name}",
                hint=f"a certificate whose subjectAltName lists {what}")


def write_server_settings(settings: Settings, server: Server) -> None:
    path = DEFAULT_CONFIG
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    data.update(server_to_toml(server))
    write_atomic(path, "# nbunits settings; written by `nbunits install`\n" + tomli_w.dumps(data))


def install_nginx(server: Server, listen: Sequence[str], tls_listen: Sequence[str],
                  revoked: str) -> None:
    step(f"nginx configuration in {NGINX_DIR} for {', '.join(server.names)}"
         + (f" and students' own origins *.{server.student_domain}"
            if server.student_domain else ""))
    files: dict[str, str | None] = {nginx.CONF_D: nginx.http_conf(server, tls_listen),
                                    **nginx.snippets(server), nginx.REVOKED: revoked}
    if listen or tls_listen:
        files[nginx.SITE] = nginx.site_conf(server, listen, tls_listen)
        files[nginx.STUDENT_SITE] = nginx.student_site_conf(server, listen, tls_listen) \
            if server.student_domain else None
    elif not server.student_domain:
        files[nginx.STUDENT_SITE] = None
    elif not (NGINX_DIR / nginx.STUDENT_SITE).exists():
        step(f"  no --listen: serve *.{server.student_domain} from a server block of your own "
             f"that includes {nginx.STUDENT_LOCATIONS} (docs/admin.md, Students' own origins)")
    install_nginx_files(files)


def install_nginx_files(files: dict[str, str | None]) -> None:
    """Write nginx's files (None: remove that one), check them with nginx -t (else put
    the old ones back), reload."""
    before = {name: (NGINX_DIR / name).read_text() if (NGINX_DIR / name).exists() else None
              for name in files}
    default_site = disable_debian_default_site() if nginx.SITE in files else None
    for name, text in files.items():
        if text is None:
            (NGINX_DIR / name).unlink(missing_ok=True)
        else:
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
        raise InstallError("nginx refuses the new configuration (the previous one is back in place): "
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
