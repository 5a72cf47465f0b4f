"""Configuration: loaded once into frozen dataclasses and passed explicitly.

Two kinds of files, both TOML:
- /etc/nbunits/nbunits.toml: the server's settings (optional; the paths are fixed,
  see Settings);
- /etc/nbunits/courses/<course>.toml: one course's settings, written by
  `nbunits course add`, read by the generator, the helper and the dispatcher.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import tomli_w

from nbunits.core import i18n
from nbunits.core import settings as S
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import (
    COURSE_RE,
    INTERFACES,
    USER_RE,
    StudentUnits,
    check_course,
    check_notebook,
    check_user,
)
from nbunits.core.settings import setting

DEFAULT_CONFIG = Path("/etc/nbunits/nbunits.toml")
# The base image every course runs, unless its repository makes its own on it.
DEFAULT_IMAGE = "localhost/nbunits/jupyter:latest"


class ConfigError(NbunitsError):
    pass


# A DNS name a browser may use for this server (RFC 1123 labels, lower case).
SERVER_NAME_RE = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
# A student's host name is <user>.<student_domain>: 19 characters before it.
MAX_STUDENT_DOMAIN = 253 - 19
# The request header a trusted load balancer puts the client's address in.
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
# A host behind the front: an IPv4 address or a DNS name, or [IPv6], and a port.
HOST_RE = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_SIZE_RE = re.compile(r"\d+[KMGT]?|infinity")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in a size as systemd writes it (1G = 1024^3)."""
    digits = text.rstrip("KMGT")
    return int(digits) * _UNITS[text[len(digits):]]



@dataclass(frozen=True)
class Server:
    """How browsers reach this server: `[server]` in nbunits.toml, written by
    `nbunits install`. nginx's site and every student's Jupyter are set from it."""

    # The names browsers use (nginx's server_name, Jupyter's local_hostnames).
    names: tuple[str, ...] = ()
    # Per-student origins (docs/admin.md, "Students' own origins"): each student's
    # server is reachable only at https://<user>.<student_domain>/nb/..., so that no
    # student's page shares an origin (cookies, service workers, storage) with
    # another's. "" serves them all under the names above (one origin).
    student_domain: str = ""
    # nginx terminates TLS with these (PEM files), or a load balancer does.
    tls_cert: str = ""
    tls_key: str = ""
    # Load balancers that terminate TLS in front of nginx: only requests from these
    # addresses (or networks) have their X-Forwarded-Proto and client address believed.
    trusted_proxies: tuple[str, ...] = ()
    # The header those proxies put the client's address in.
    proxy_header: str = "X-Forwarded-For"
    # Students idle for longer than this (seconds) have their units unloaded from
    # systemd by nbunits-unload.timer; their next click or link wakes them.
    unload_after: int = 86400
    # Admission control (docs/admin.md, "Admission control"). Launches (course links, LTI)
    # per client and minute, and the burst nginx lets through at once; a university
    # behind one NAT address is one client, hence generous values.
    launch_rate: int = 120
    launch_burst: int = 60
    # New students (users created) per minute, host-wide.
    new_students_per_minute: int = 120
    # Servers started at once (0 = one per CPU). A start is mostly CPU (Jupyter's
    # imports); more at once only share the cores and each costs more CPU (bursts of
    # 50 on 2 CPUs: 2 at once beat 3 and 4, docs/BENCHMARKS.md), so the helper starts
    # launches' servers this many at a time, in order of arrival (admission.py). It
    # paces, never refuses.
    concurrent_starts: int = 0
    # Running servers are capped at memory_budget / server_memory ("" = 75% of RAM;
    # a server with one idle kernel measured ~104 MB PSS, docs/BENCHMARKS.md).
    memory_budget: str = ""
    server_memory: str = "128M"
    # One of several hosts behind an nbunits front (docs/admin.md, "Beyond one host"):
    # launches are verified here, then handed to the student's own host (handoff.py);
    # homes and per-student state are on shared storage.
    multi_host: bool = False
    # On a front (`nbunits install --front`): the hosts, "ADDRESS[:PORT]".
    hosts: tuple[str, ...] = ()
    # Course images are built from teachers' repositories by an unprivileged user in a
    # unit of its own (admin/builder.py), within these bounds: its memory, its time
    # (seconds), and its disk (the largest file it may write, what it may write in
    # all, and the size of the layers it adds to the shared store).
    image_build_memory: str = "2G"
    image_build_time: int = 1800
    image_build_disk: str = "8G"

    def __post_init__(self) -> None:
        problems = [f"server name {n!r}" for n in self.names if not SERVER_NAME_RE.fullmatch(n)]
        if self.student_domain and (not SERVER_NAME_RE.fullmatch(self.student_domain)
                                    or len(self.student_domain) > MAX_STUDENT_DOMAIN):
            problems.append(f"student domain {self.student_domain!r} (a DNS name, e.g. "
                            "nb.example.org)")
        for key in ("unload_after", "launch_rate", "launch_burst", "new_students_per_minute",
                    "image_build_time"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) <= 0:
                problems.append(f"{key} (a positive whole number)")
        for key in ("memory_budget", "server_memory"):
            value = getattr(self, key)
            if value and (not _SIZE_RE.fullmatch(value) or value == "infinity"
                          or parse_size(value) == 0):
                problems.append(f"{key}={value!r} (e.g. 16G)")
        for key in ("image_build_memory", "image_build_disk"):
            value = getattr(self, key)
            if not isinstance(value, str) or not re.fullmatch(r"[1-9][0-9]*[KMGT]", value):
                problems.append(f"{key}={value!r} (e.g. 4G)")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                problems.append(f"trusted proxy {proxy!r} (an IP address or network)")
        if not isinstance(self.concurrent_starts, int) or self.concurrent_starts < 0:
            problems.append("concurrent_starts (a whole number, 0 for one per CPU)")
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("tls_cert and tls_key go together")
        for path in (self.tls_cert, self.tls_key):
            if path and not path.startswith("/"):
                problems.append(f"{path!r} (an absolute path)")
        problems += [f"host {h!r} (ADDRESS[:PORT])" for h in self.hosts if not HOST_RE.fullmatch(h)]
        if not HEADER_NAME_RE.fullmatch(self.proxy_header):
            problems.append(f"proxy header {self.proxy_header!r}")
        if problems:
            raise ConfigError(Code.BAD_CONFIG, "invalid server settings: " + "; ".join(problems))

    def max_running(self, mem_total: int) -> int:
        """How many servers may run at once: the memory budget over a server's share."""
        budget = parse_size(self.memory_budget) if self.memory_budget else mem_total * 3 // 4
        return max(1, budget // parse_size(self.server_memory))

    def start_slots(self, cpus: int) -> int:
        """How many servers the helper starts at once."""
        return self.concurrent_starts or cpus

    @property
    def https(self) -> bool:
        """Browsers come over HTTPS: nginx's own TLS, or a load balancer's."""
        return bool(self.tls_cert or self.trusted_proxies)


@dataclass(frozen=True)
class Settings:
    """Where nbunits keeps things. The unit files in units/ and nginx/ use these same
    paths, so they are fixed on a server (load_settings); tests point them elsewhere."""

    etc_dir: Path = Path("/etc/nbunits")
    state_dir: Path = Path("/var/lib/nbunits")
    run_dir: Path = Path("/run/nbunits")
    home_base: Path = Path("/home")
    image_store: Path = Path("/var/lib/nbunits/images")
    # Students' users and groups: systemd's JSON user records, read by nss-systemd.
    userdb_dir: Path = Path("/etc/userdb")
    server: Server = Server()

    @property
    def students_nsswitch(self) -> Path:
        """/etc/nsswitch.conf as students' container units see it (nsswitch.py)."""
        return self.etc_dir / "students-nsswitch.conf"

    def seccomp_profile(self, user_namespaces: bool) -> Path:
        """Students' seccomp profile (admin/seccomp.py writes both at install)."""
        return self.etc_dir / ("seccomp-userns.json" if user_namespaces
                               else "seccomp-no-userns.json")

    @property
    def images_file(self) -> Path:
        """What the generator needs of each image in the store (core/rootfs.py),
        recorded in /etc by the admin's tools: the generator may not read /var."""
        return self.etc_dir / "images.json"

    @property
    def courses_conf_dir(self) -> Path:
        return self.etc_dir / "courses"

    @property
    def masters_dir(self) -> Path:
        return self.state_dir / "courses"

    @property
    def tokens_dir(self) -> Path:
        return self.state_dir / "tokens"

    @property
    def students_dir(self) -> Path:
        return self.state_dir / "students"

    @property
    def recent_dir(self) -> Path:
        """A mark per recently active (course, student): whose units systemd keeps loaded."""
        return self.state_dir / "recent"

    @property
    def copies_dir(self) -> Path:
        return self.state_dir / "copies"

    @property
    def git_dir(self) -> Path:
        return self.state_dir / "git"

    @property
    def capability_secret(self) -> Path:
        return self.etc_dir / "capability.secret"

    @property
    def hosts_secret(self) -> Path:
        """Several hosts: the key of hand-offs between them (handoff.py),
        root:nbunits 0640, the same file on every host."""
        return self.etc_dir / "hosts.secret"

    @property
    def lti_tool_key(self) -> Path:
        """The tool's own LTI 1.3 private key (PEM), root:nbunits 0640, made by
        `nbunits install`: it signs deep-linking responses, and the dispatcher
        publishes its public half at /lti/1.3/jwks (dispatcher/deeplink.py)."""
        return self.etc_dir / "lti-tool-key.pem"

    @property
    def nonces_dir(self) -> Path:
        """LTI nonces already used (lti.NonceStore): the dispatcher's StateDirectory;
        on the shared storage with several hosts."""
        return self.state_dir / "nonces"

    @property
    def locks_dir(self) -> Path:
        """Several hosts: one lock per (course, student) on the shared storage, held
        by the host that runs their server (hostlock.py)."""
        return self.state_dir / "locks"

    @property
    def helper_socket(self) -> Path:
        return self.run_dir / "helper.sock"

    @property
    def admission_file(self) -> Path:
        """The helper's admission figures, for the metrics (admission.py)."""
        return self.run_dir / "admission.json"

    @property
    def secrets_dir(self) -> Path:
        return self.etc_dir / "secrets"

    # --- per course and student: every state path is made here --------------------

    def course_masters(self, course: str) -> Path:
        """The course's published files (root's, world-readable)."""
        return self.masters_dir / check_course(course)

    def course_git(self, course: str) -> Path:
        """The course's root-owned git checkout."""
        return self.git_dir / check_course(course)

    def course_tokens(self, course: str) -> Path:
        """A token file and a grant per student who opened one of the course's notebooks."""
        return self.tokens_dir / check_course(course)

    def course_versions(self, course: str) -> Path:
        """The masters students' copies were made from, by source hash: the base of a
        merge of a later update into an edited copy (helper/copies.py)."""
        return self.state_dir / "versions" / check_course(course)

    def course_sources(self, course: str) -> Path:
        """The source versions of the course's graded notebooks (solutions, hidden tests:
        admin/graded.py), root's only (0700/0600): students get release versions."""
        return self.state_dir / "sources" / check_course(course)

    @property
    def grades_dir(self) -> Path:
        return self.state_dir / "grades"

    def course_grades(self, course: str) -> Path:
        """The results of the course's gradings (helper/grading.py), root's only
        (0700/0600): a folder per student, a file per notebook."""
        return self.grades_dir / check_course(course)

    def grade_file(self, units: StudentUnits, notebook: str) -> Path:
        """A student's last grading of one notebook (replaced by a resubmission)."""
        return self.course_grades(units.course) / units.user / (quote(notebook, safe="") + ".json")

    def roster_dir(self, run_id: str) -> Path:
        """One read of a course's learners from its LMS, root's (0700): the request in
        and the list out of units/nbunits-roster@.service, opened by PID 1."""
        return self.run_dir / "roster" / run_id

    def grading_dir(self, units: StudentUnits) -> Path:
        """One grading's notebook in and out, root's (0700): the grading unit's stdin and
        stdout (units/course/nbunits-@COURSE@-grade@.service), opened by PID 1."""
        return self.run_dir / "grading" / units.course / units.user

    def course_copies(self, course: str) -> Path:
        """The manifests of the course's students' copies."""
        return self.copies_dir / check_course(course)

    def course_recent(self, course: str) -> Path:
        """A mark per recently active student of the course (helper/activity.py)."""
        return self.recent_dir / check_course(course)

    def recent_mark(self, units: StudentUnits) -> Path:
        return self.course_recent(units.course) / units.user

    def student_record(self, user: str) -> Path:
        """Who a user is: the student id, root's (the proof a home is theirs)."""
        return self.students_dir / user

    def student_language(self, user: str) -> Path:
        """The language remembered for a student (their LMS's locale), root's."""
        return self.state_dir / "languages" / user

    def userdb_file(self, name: str) -> Path:
        """A JSON user or group record (helper/users.py), e.g. nb....user."""
        return self.userdb_dir / name

    @property
    def aliases_dir(self) -> Path:
        return self.state_dir / "aliases"

    def aliases_file(self, course: str) -> Path:
        """Linked LMS ids of one learner (core/aliases.py), root:nbunits 0640."""
        return self.aliases_dir / f"{check_course(course)}.json"

    def course_shares(self, course: str) -> Path:
        """The indexes of the course's students' shares (their pages: share_page)."""
        return self.shares_dir / check_course(course)

    def share_index(self, units: StudentUnits) -> Path:
        return self.course_shares(units.course) / f"{units.user}.json"

    def share_page(self, token: str) -> Path:
        return self.shares_dir / "pages" / f"{token}.html"

    def backup_file(self, user: str, stamp: str) -> Path:
        """A deleted student's home, root's 0600 (`student delete`)."""
        return self.state_dir / "backups" / f"{user}-{stamp}.tar.gz"

    def course_backup(self, course: str, stamp: str) -> Path:
        """Before an ended course's work is deleted: an archive per student, root's
        (admin/course_end.py)."""
        return self.state_dir / "backups" / "courses" / f"{check_course(course)}-{stamp}"

    def course_folders(self, user: str, course: str) -> tuple[Path, ...]:
        """What a student has of one course in their home: the course folder (their
        work), their home in its container and its podman storage (the course unit's
        --volume and --root, units/course/nbunits-@COURSE@@.service)."""
        home = self.home(check_user(user))
        return (home / check_course(course), home / ".nbunits" / course,
                home / ".local" / "share" / "nbunits" / course)

    @property
    def metrics_state(self) -> Path:
        """The metrics' journal cursor and counters (admin/metrics.py), and its lock."""
        return self.state_dir / "metrics.json"

    @property
    def metrics_lock(self) -> Path:
        return self.state_dir / ".metrics.lock"

    @property
    def storage_conf(self) -> Path:
        """containers-storage.conf for students' podman: the shared image store."""
        return self.etc_dir / "storage.conf"

    def lti13_keys_file(self, course: str, digest: str) -> Path:
        """A platform's fetched LTI 1.3 keys (admin/lms_keys.py)."""
        return self.etc_dir / "lti13-keys" / f"{check_course(course)}-{digest}.json"

    @property
    def dispatcher_socket(self) -> Path:
        """Where the dispatcher listens when systemd passes it no socket (tests)."""
        return self.run_dir / "dispatcher.sock"

    @property
    def rootfs_mounts(self) -> Path:
        """Where an image of several layers is stacked by a mount unit (core/rootfs.py)."""
        return self.run_dir / "rootfs"

    @property
    def build_dir(self) -> Path:
        """Course image builds (admin/builder.py): the builder's home, root's inputs
        for it and root's imports from it, each a folder of its own."""
        return self.state_dir / "build"

    @property
    def builder_home(self) -> Path:
        """The builder user's own folder (0700): its podman storage, its wheels, its export."""
        return self.build_dir / "builder"

    @property
    def build_input(self) -> Path:
        """What root hands the builder (root's, world-readable): the base image, the context."""
        return self.build_dir / "input"

    @property
    def build_base(self) -> Path:
        """The base image as the builder loads it (an OCI layout), and the id it is of;
        images/course-build names them too."""
        return self.build_input / "base"

    @property
    def build_base_id(self) -> Path:
        return self.build_input / "base.id"

    @property
    def build_context(self) -> Path:
        """A build's context: a copy of the repository, or its requirements.txt, and the
        Containerfile (images/course-build names it too)."""
        return self.build_input / "context"

    @property
    def builder_export(self) -> Path:
        """What a build made, as the builder saved it (images/course-build names it too)."""
        return self.builder_home / "export"

    @property
    def build_lock(self) -> Path:
        """Held while a course image builds: one build at a time on a host."""
        return self.build_dir / ".lock"

    @property
    def build_import(self) -> Path:
        """Root's private copy of a build's result, checked before the store loads it."""
        return self.build_dir / "import"

    @property
    def image_build_runroot(self) -> Path:
        """podman's run root for course image builds (admin/course_image.py)."""
        return self.run_dir / "image-build"

    @property
    def jupyter_sockets(self) -> Path:
        """Students' Jupyter sockets, made by systemd: <course>/<user>.sock."""
        return self.run_dir / "jupyter"

    def course_file(self, course: str) -> Path:
        return self.courses_conf_dir / f"{check_course(course)}.toml"

    def secrets_file(self, course: str) -> Path:
        """A course's launch secrets: root:nbunits 0640, read by the dispatcher only."""
        return self.secrets_dir / f"{check_course(course)}.toml"

    def token_file(self, units: StudentUnits) -> Path:
        return self.course_tokens(units.course) / f"{units.user}{TOKEN_SUFFIX}"

    def grant_file(self, units: StudentUnits) -> Path:
        """The student's capability generation and expiry (root's; capability.py)."""
        return self.course_tokens(units.course) / f"{units.user}{GRANT_SUFFIX}"

    def copies_file(self, units: StudentUnits) -> Path:
        """The manifest of a student's copies: which master each was made from."""
        return self.copies_dir / units.course / f"{units.user}.json"

    def home(self, user: str) -> Path:
        return self.home_base / user

    @property
    def shares_dir(self) -> Path:
        """Static versions students share (shares.py): root's, served by the helper."""
        return self.state_dir / "shares"

    @property
    def scores_dir(self) -> Path:
        """Root's only (0700): where each student's scores go, as their verified LTI
        launches said, and the scores waiting to go there (helper/outbox.py)."""
        return self.state_dir / "scores"

    @property
    def scores_lock(self) -> Path:
        return self.scores_dir / ".lock"

    @property
    def scores_sending_lock(self) -> Path:
        """Held by the one `nbunits scores send` that sends."""
        return self.scores_dir / ".sending"

    @property
    def score_counts(self) -> Path:
        """Scores sent and failed attempts so far, per course (for `nbunits metrics`)."""
        return self.scores_dir / "counts.json"

    def score_destination(self, units: StudentUnits, notebook: str) -> Path:
        """Where (course, user, notebook)'s score goes: its last verified LTI launch's."""
        return self.scores_dir / "to" / units.course / units.user / _notebook_key(notebook)

    def score_file(self, units: StudentUnits, notebook: str) -> Path:
        """(course, user, notebook)'s latest score: pending, failing or sent."""
        return self.scores_dir / "outbox" / units.course / units.user / _notebook_key(notebook)

    def score_files(self, course: str = "") -> list[Path]:
        """The latest scores of one course's students (every course's: "")."""
        folder = check_course(course) if course else "*"
        return sorted((self.scores_dir / "outbox").glob(f"{folder}/*/*.json"))


def _notebook_key(notebook: str) -> str:
    """A file name for a notebook path (which may hold folders): its digest. The path
    itself is kept inside the file."""
    return hashlib.sha256(check_notebook(notebook).as_posix().encode()).hexdigest()[:32] + ".json"


# A student's token file (Jupyter's settings for a start) and capability grant, per
# course: the one place that knows their names (tokens_dir/<course>/<user><suffix>).
TOKEN_SUFFIX, GRANT_SUFFIX = ".env", ".grant"


def provisioned_students(settings: Settings, course: str) -> list[str]:
    """Users with a token for this course: whoever opened one of its notebooks."""
    folder = settings.course_tokens(course)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"*{TOKEN_SUFFIX}") if USER_RE.fullmatch(p.stem))


def count_provisioned(settings: Settings, course: str) -> int:
    """How many users have a token for this course (one directory listing, no path
    object per student: the metrics count it every 30 s)."""
    try:
        with os.scandir(settings.course_tokens(course)) as entries:
            return sum(1 for e in entries if e.name.endswith(TOKEN_SUFFIX)
                       and USER_RE.fullmatch(e.name[:-len(TOKEN_SUFFIX)]) is not None)
    except (FileNotFoundError, NotADirectoryError):
        return 0


def granted(settings: Settings) -> list[StudentUnits]:
    """Every (course, student) with a capability grant."""
    if not settings.tokens_dir.is_dir():
        return []
    return [StudentUnits(path.parent.name, path.stem)
            for path in sorted(settings.tokens_dir.glob(f"*/*{GRANT_SUFFIX}"))
            if COURSE_RE.fullmatch(path.parent.name) and USER_RE.fullmatch(path.stem)]


def load_settings(path: Path = DEFAULT_CONFIG) -> Settings:
    """The settings of this server. Its paths are fixed: the unit files and nginx's
    configuration name them too, so a [paths] section is refused, not half obeyed."""
    data = _read_toml(path) if path.exists() else {}
    if "paths" in data:
        raise ConfigError(Code.BAD_CONFIG, f"{path}: the [paths] settings are not supported",
                          hint="nbunits keeps its files in the fixed places docs/admin.md lists; "
                               "remove the [paths] section")
    unknown = set(data) - {"server"}
    if unknown:
        raise ConfigError(Code.BAD_CONFIG, f"{path}: unknown sections {sorted(unknown)}")
    return Settings(server=server_from_toml(path, data.get("server", {})))


def server_from_toml(path: Path, section: dict[str, Any]) -> Server:
    known = {f.name for f in dataclasses.fields(Server)}
    unknown = set(section) - known
    if unknown:
        raise ConfigError(Code.BAD_CONFIG, f"{path}: unknown [server] settings {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, list):
            value = tuple(value)
        default = getattr(Server, key, "")
        expected = tuple if key in ("names", "trusted_proxies", "hosts") else type(default)
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool) or (
                expected is tuple and not all(isinstance(v, str) for v in value)):
            raise ConfigError(Code.BAD_CONFIG, f"{path}: [server] {key} has the wrong type")
        values[key] = value
    return Server(**values)


def server_to_toml(server: Server) -> dict[str, Any]:
    """The `[server]` table of nbunits.toml (for tomli_w)."""
    return {"server": {f.name: list(v) if isinstance(v, tuple) else v
                       for f in dataclasses.fields(server)
                       if (v := getattr(server, f.name)) != f.default}}


NETWORKS = ("none", "slirp4netns")


def _is_network(value: Any) -> bool:
    """An IP address or network, narrower than all of them."""
    try:
        return isinstance(value, str) and ipaddress.ip_network(value, strict=False).prefixlen > 0
    except ValueError:
        return False


NETWORK_ALLOW = S.strings(
    "CIDR", "IP addresses or networks, e.g. 10.1.2.0/24 or 192.168.5.7 (not 0.0.0.0/0 or ::/0)",
    _is_network)
LEGACY_MODES = ("off", "signed", "referrer", "open")
# The platform's keys (JWKS) over TLS only, or from a file on this host (no network).
KEYS_URL_RE = re.compile(r"(https://|file:///)\S+$")
# LTI ids and keys are opaque to us: printable ASCII, no spaces.
_OPAQUE_RE = re.compile(r"[!-~]{1,255}")


# LIS context roles (LTI 1.3 membership#NAME, LTI 1.1 short names / urn:lti:role:ims/lis/).
CONTEXT_ROLES = ("Administrator", "ContentDeveloper", "Instructor", "Learner", "Mentor",
                 "Manager", "Member", "Officer")
DEFAULT_STAFF_ROLES = ("Instructor", "Administrator")
# Open edX sends its forum roles (Community TA, Group Moderator), often held by
# students, as TeachingAssistant: never a staff role here.
FORUM_ROLE = "TeachingAssistant"
# The LTI 1.3 settings of `course add/update` before registrations were tables.
LEGACY_LTI13_FIELDS = {"lti13_issuer": "issuer", "lti13_client_id": "client_id",
                       "lti13_deployment_id": "deployment_ids", "lti13_auth_url": "auth_url",
                       "lti13_keys": "keys", "lti13_keys_url": "keys_url"}


@dataclass(frozen=True)
class Lti13Registration:
    """One LTI 1.3 tool registration on the platform (in Open edX: one component,
    or one reusable configuration): who signs, for which client, with which keys.
    A `[[course.lti13]]` table; the --lti13-* options add or change one."""

    issuer: str = setting("", S.OPAQUE, "the platform (Open edX: the LMS root URL)",
                          option="--lti13-issuer")
    client_id: str = setting("", S.OPAQUE, "the tool's client id on the platform",
                             option="--lti13-client-id")
    deployment_ids: tuple[str, ...] = setting(
        (), S.strings("ID", "deployment ids; none: any deployment of this client",
                      lambda d: isinstance(d, str) and _OPAQUE_RE.fullmatch(d) is not None),
        "accepted deployment ids",
        option="--lti13-deployment-id")
    auth_url: str = setting("", S.Kind("URL", "an http(s) URL", valid=lambda v: isinstance(
        v, str) and (not v or re.match(r"https?://[!-~]+$", v) is not None)),
        "the platform's OIDC authorization endpoint (Open edX: .../api/lti_consumer/v1/"
        "launch/)", option="--lti13-auth-url")
    keys: str = setting("", S.Kind("FILE", "an absolute path", valid=lambda v: isinstance(
        v, str) and (not v or v.startswith("/"))),
        "the platform's keys: a JWKS (JSON) or PEM file, fetched from keys_url or kept by "
        "the admin", option="--lti13-keys")
    keys_url: str = setting("", S.Kind("URL", "an https URL (or file:// for a copy kept on "
                                       "this host)"),
                            "where `course add/update` and nbunits-refresh-keys.timer fetch "
                            "the keys from (Open edX: the Keyset URL), only over https: keys "
                            "fetched over http could be anyone's; the dispatcher has no "
                            "network", option="--lti13-keys-url")
    token_url: str = setting("", S.Kind("URL", "an http(s) URL", valid=lambda v: isinstance(
        v, str) and (not v or re.match(r"https?://[!-~]+$", v) is not None)),
        "the platform's OAuth 2 token endpoint, where nbunits-scores.service gets the token "
        "that sends scores (Open edX: https://LMS/api/lti_consumer/v1/token/<config id>); "
        "none: no LTI 1.3 scores", option="--lti13-token-url")

    def problems(self) -> list[str]:
        found = []
        for key in ("issuer", "client_id"):
            if not _OPAQUE_RE.fullmatch(getattr(self, key)):
                found.append(f"lti13 {key}={getattr(self, key)!r}")
        if not isinstance(self.deployment_ids, tuple) or not all(
                isinstance(d, str) and _OPAQUE_RE.fullmatch(d) for d in self.deployment_ids):
            found.append(f"lti13 deployment_ids={self.deployment_ids!r}")
        if self.auth_url and not re.match(r"https?://[!-~]+$", self.auth_url):
            found.append(f"lti13 auth_url={self.auth_url!r} (an http(s) URL)")
        if self.keys and not self.keys.startswith("/"):
            found.append(f"lti13 keys={self.keys!r} (an absolute path)")
        if self.token_url and not re.match(r"https?://[!-~]+$", self.token_url):
            found.append(f"lti13 token_url={self.token_url!r} (an http(s) URL)")
        if self.keys_url and not re.match(KEYS_URL_RE, self.keys_url):
            found.append(f"lti13 keys_url={self.keys_url!r} (keys only over https: an "
                         "https:// URL, or file:// for a copy kept on this host; over http, "
                         "anyone on the way could hand over keys of their own)")
        elif self.keys_url and not self.keys:
            found.append(f"lti13 keys_url={self.keys_url!r} (with keys naming the file to "
                         "keep the keys in)")
        return found


def check_staff_roles(roles: tuple[str, ...]) -> list[str]:
    problems = []
    for role in roles:
        principal, _, sub = role.partition("#")
        if FORUM_ROLE in (principal, sub):
            problems.append(f"lti_staff_roles: {role!r} (Open edX sends its forum roles, "
                            "often held by students, as TeachingAssistant)")
        elif principal not in CONTEXT_ROLES or (sub and not re.fullmatch(r"[A-Za-z]+", sub)):
            problems.append(f"lti_staff_roles: {role!r} (a context role: "
                            f"{', '.join(CONTEXT_ROLES)}, or a sub-role such as "
                            "Instructor#Lecturer)")
    return problems


# The longest grading_timeout: a student's request waits for the grading's answer, and
# nginx waits for it at most 15 minutes (nbunits-students.conf).
MAX_GRADING_TIMEOUT = 600


@dataclass(frozen=True)
class CourseConfig:
    """One course's settings, each declared once (core/settings.py): its key in
    /etc/nbunits/courses/<course>.toml, its option, what it takes, its default and its
    help. Defaults suit a small course on a small server."""

    name: str
    source: Path  # the folder of published masters (nbunits' own, not a setting)
    image: str = setting(DEFAULT_IMAGE, S.IMAGE, "the Jupyter image students run",
                         section="server")
    title: str = setting("", S.TEXT, "the course's title, for people", section="server")
    interface: str = setting(
        "notebook", S.choice("INTERFACE", *INTERFACES), "what a student's link opens the "
        "notebook in: notebook (Notebook 7, one document a page) or lab (JupyterLab: "
        "tabs and a file browser); the Course menu is in both (docs/admin.md, "
        "\"Interface\")", section="server")
    language: str = setting(
        i18n.DEFAULT, S.choice("LANGUAGE", *i18n.available()), "the language of students' "
        "pages when neither the launch nor the browser names one nbunits has "
        "(docs/admin.md, \"Languages\")", section="server")
    proxy_idle_timeout: int = setting(
        120, S.SECONDS, "idle stop: seconds without a connection before the student's "
        "server stops", section="lifecycle")
    jupyter_idle_timeout: int = setting(
        3600, S.SECONDS, "seconds without activity before Jupyter shuts itself down (a "
        "notebook in a background tab is not activity; one in the foreground polls, which "
        "is)", section="lifecycle")
    kernel_idle_timeout: int = setting(
        1800, S.SECONDS, "seconds before an idle kernel is culled", section="lifecycle")
    kernel_ahead: bool = setting(
        True, S.BOOL, "start the kernel of the notebook a launch opens with the student's "
        "server, so it is ready when the notebook asks for it (off: the notebook starts it, "
        "after its page has loaded)", section="lifecycle")
    max_lifetime: int = setting(8 * 3600, S.SECONDS, "hard cap on a student's server's "
                                "lifetime", section="lifecycle")
    stop_warning: int = setting(
        300, S.SECONDS_OR_ZERO, "seconds before an idle or lifetime stop that the student's "
        "notebook says so in a banner (at most a third of that timeout; 0: no banner)",
        section="lifecycle")
    memory_max: str = setting("1G", S.SIZE, "memory per student (systemd MemoryMax=)",
                              section="limits")
    cpu_quota: str = setting("100%", S.PERCENT, "CPU per student (systemd CPUQuota=; 100% "
                             "is one core)", section="limits")
    tasks_max: int = setting(512, S.COUNT, "processes and threads per student (systemd "
                             "TasksMax=)", section="limits")
    course_memory_max: str = setting("infinity", S.SIZE, "memory for the whole course (its "
                                     "slice's MemoryMax=)", section="limits")
    new_students_per_minute: int = setting(
        0, S.COUNT_OR_ZERO, "the course's own cap on new students (users created) in any "
        "60 s, below the host's (0: the host's cap only); past it, its launches of new "
        "students are refused (503), other courses' are not", section="limits")
    max_running: int = setting(
        0, S.COUNT_OR_ZERO, "the course's own cap on its students' servers running at once, "
        "below the host's (0: the host's cap only); past it, a launch that would start "
        "one more is refused (503)", section="limits")
    grading_timeout: int = setting(
        120, S.SECONDS, "seconds a submitted notebook may run when it is graded (the whole "
        "run, in a fresh container; docs/admin.md, \"Grading\")", section="limits")
    network: str = setting("none", S.choice("NETWORK", *NETWORKS), "the containers' network: none "
                           "(loopback only) or slirp4netns (outbound only)", section="limits")
    network_allow: tuple[str, ...] = setting(
        (), NETWORK_ALLOW, "with network = slirp4netns, what the kernels may reach besides "
        "the internet: link-local, private (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) "
        "and the host's own addresses are refused otherwise (docs/security.md, "
        "\"Kernels' network\")", section="limits")
    # Security choices (docs/security.md), each with the reason for its default.
    terminals: bool = setting(
        True, S.BOOL, "Jupyter's terminals: a shell is what a kernel's `!cmd` gives anyway, "
        "in the same container as the same user, so they add no power; off where a course "
        "wants the notebook interface only", section="security")
    user_namespaces: bool = setting(
        False, S.BOOL, "nested user namespaces: off by default, since a kernel that can make "
        "them reaches kernel code an unprivileged user otherwise cannot (the usual way "
        "kernel bugs are exploited); on for courses that run containers or sandboxes "
        "inside the notebook", section="security")
    disk_quota: str = setting("", S.QUOTA, "per-student disk quota, enforced by the file "
                              "system that holds /home (docs/admin.md, Disk quotas)",
                              section="security")
    link_lifetime: int = setting(
        0, S.SECONDS_OR_ZERO, "seconds a student's link stays valid (0: until revoked); at "
        "least max_lifetime + 3600, so that a link never expires under a running server",
        section="security")
    # A course's end (docs/admin.md, "A course's end"): nbunits' own commands read
    # these, the units do not.
    end_date: str = setting(
        "", S.WHEN, "when the course ended (`nbunits course end` sets it to the moment it "
        "runs); the retention period counts from it", section="end")
    retention_days: int | None = setting(
        None, S.DAYS_OR_NONE, "days after end_date until nbunits-course-end.timer saves "
        "every student's work of the course (one archive each, in /var/lib/nbunits/backups/"
        "courses) and then deletes it, with the students who have no other course; none: "
        "kept forever", section="end")
    lms_origin: str = setting("", S.ORIGINS, "origins allowed to frame the notebooks (the "
                              "course's LMS); the server's own origin always is",
                              section="launch")
    # Where the masters come from, for `nbunits course update` (set by --git, --branch
    # and --dir, not by an option of their own).
    git_url: str = setting("", S.TEXT, "the git repository the course is published from",
                           option="", section="origin")
    git_branch: str = setting("", S.TEXT, "its branch or tag (empty: the remote's "
                              "default)", option="", section="origin")
    origin_dir: str = setting("", S.TEXT, "or the folder it is published from", option="",
                              section="origin")
    # How a new version reaches the students who edited their copy.
    merge_updates: bool = setting(
        False, S.BOOL, "merge a new version of a notebook into the copies students edited "
        "(nbdime's three-way merge, at the student's next launch); a merge with conflicts is "
        "put beside the copy, which stays as it is. Off: the student is told and resets "
        "when they choose", section="origin")
    legacy: str = setting(
        "off", S.choice("MODE", *LEGACY_MODES), "who may open the legacy /ipythonExercice/ "
        "link: off (nobody: students get in by LTI), signed (an HMAC keyed by the legacy "
        "secret), referrer (only from pages on legacy_referrers, as nbhosting) or open "
        "(anyone who knows or guesses a student id opens and changes that student's "
        "notebooks: only if chosen). A course file without it means off",
        section="launch")
    legacy_referrers: tuple[str, ...] = setting(
        (), S.DOMAINS, "domains allowed for legacy = referrer", section="launch")
    lti_context_id: str = setting("", S.OPAQUE, "the course's id in the LMS (LTI "
                                  "context_id; Open edX: course-v1:Org+Num+Run)",
                                  section="launch")
    lti11_key: str = setting("", S.OPAQUE, "the LTI 1.1 consumer key (its secret: "
                             "--lti11-secret-file)", section="launch")
    # LTI 1.3 registrations (`[[course.lti13]]`, set by the --lti13-* options): Open edX
    # gives each LTI 1.3 component its own client id and key by default.
    lti13: tuple[Lti13Registration, ...] = ()
    lti_staff_roles: tuple[str, ...] = setting(
        DEFAULT_STAFF_ROLES, S.strings("ROLE", "LIS context roles, e.g. Instructor or "
                                       "Instructor#Lecturer", lambda r: isinstance(r, str)),
        "context roles that open the staff views; institution and system roles never "
        "count, nor TeachingAssistant (Open edX's forum roles)", section="launch")
    lti_notebooks: dict[str, str] = setting(
        None, S.Kind("LINK=NOTEBOOK", "a table of resource link id = notebook",
                     valid=lambda v: isinstance(v, dict), repeat=True),
        "the notebook of an LTI resource link that carries no notebook parameter",
        section="launch", factory=dict)

    def __post_init__(self) -> None:
        check_course(self.name)
        problems = S.problems(self)
        if self.git_url.startswith("-") or any(c.isspace() for c in self.git_url):
            problems.append(f"git_url={self.git_url!r}")
        if self.git_branch and not re.fullmatch(r"[A-Za-z0-9._/][A-Za-z0-9._/-]*", self.git_branch):
            problems.append(f"git_branch={self.git_branch!r}")
        if S.SECONDS_OR_ZERO.valid(self.link_lifetime) and S.SECONDS.valid(self.max_lifetime) \
                and 0 < self.link_lifetime < self.max_lifetime + 3600:
            problems.append(f"link_lifetime={self.link_lifetime!r} (0, or at least "
                            "max_lifetime + 3600 seconds)")
        if S.SECONDS.valid(self.grading_timeout) and self.grading_timeout > MAX_GRADING_TIMEOUT:
            problems.append(f"grading_timeout={self.grading_timeout!r} (at most "
                            f"{MAX_GRADING_TIMEOUT} seconds: nginx waits for the answer)")
        if self.network_allow and self.network == "none":
            problems.append("network_allow needs network = slirp4netns")
        problems += self._launch_problems()
        if problems:
            raise ConfigError(Code.BAD_COURSE_CONFIG,
                              f"course {self.name}: invalid " + "; ".join(problems))

    def deletion_due(self) -> datetime | None:
        """When the students' work of this course is due for deletion: its end plus
        its retention period; None: never (not ended, or kept forever)."""
        ended = S.parse_when(self.end_date) if self.end_date else None
        if ended is None or self.retention_days is None:
            return None
        return ended + timedelta(days=self.retention_days)

    @property
    def lms_origins(self) -> list[str]:
        return self.lms_origin.split()

    def launch_methods(self) -> list[str]:
        """How students get in, for people ("LTI 1.1", "legacy link (signed)"...);
        none: nobody can launch yet."""
        methods = ["LTI 1.1"] if self.lti11_key else []
        if self.lti13:
            count = len(self.lti13)
            methods.append(f"LTI 1.3 ({count} registration{'s' if count > 1 else ''})")
        if self.legacy == "open":
            methods.append("legacy link (OPEN: anyone who knows or guesses a student id)")
        elif self.legacy != "off":
            methods.append(f"legacy link ({self.legacy})")
        return methods

    def how_students_get_in(self) -> str:
        """One line for `course add/update/show` and `nbunits status`."""
        methods = self.launch_methods()
        if not methods:
            return "students cannot get in yet: no LTI settings and the legacy link off"
        return "students get in by: " + ", ".join(methods)

    def _launch_problems(self) -> list[str]:
        problems = []
        if self.legacy == "referrer" and not self.legacy_referrers:
            problems.append("legacy = referrer needs legacy_referrers")
        problems += self._lti13_problems()
        if isinstance(self.lti_notebooks, dict):
            for link, notebook in self.lti_notebooks.items():
                try:
                    check_notebook(str(notebook))
                except NbunitsError:
                    problems.append(f"lti_notebooks[{link!r}]={notebook!r}")
        return problems

    def _lti13_problems(self) -> list[str]:
        if not isinstance(self.lti13, tuple) or not all(
                isinstance(r, Lti13Registration) for r in self.lti13):
            return ["lti13 must be a list of registrations ([[course.lti13]] tables)"]
        problems = [p for r in self.lti13 for p in r.problems()]
        seen = [(r.issuer, r.client_id) for r in self.lti13]
        if len(set(seen)) != len(seen):
            problems.append("lti13: two registrations with the same issuer and client_id")
        roles = self.lti_staff_roles
        if isinstance(roles, tuple) and all(isinstance(r, str) for r in roles):
            problems += check_staff_roles(roles)
        return problems

    def registration(self, issuer: str, client_id: str) -> Lti13Registration | None:
        """The registration a login names; without a client id, the issuer's only one."""
        found = [r for r in self.lti13 if r.issuer == issuer
                 and (r.client_id == client_id or not client_id)]
        return found[0] if len(found) == 1 else None

    def to_toml(self) -> str:
        # TOML has no null: an unset setting (None) is a key left out.
        values = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.name not in ("name", "lti_notebooks", "lti13")
                  and getattr(self, f.name) is not None}
        # An inline table, so that [course] stays one section that an admin can append
        # a line to; the LTI 1.3 registrations, if any, are tables that come after it.
        pairs = (tomli_w.dumps({k: v}).strip() for k, v in self.lti_notebooks.items())
        text = ("# nbunits course settings; apply with: systemctl daemon-reload\n"
                + tomli_w.dumps({"course": values})
                + "lti_notebooks = {" + ", ".join(pairs) + "}\n")
        if self.lti13:
            registrations = [{f.name: _plain(getattr(r, f.name))
                              for f in dataclasses.fields(r) if getattr(r, f.name)}
                             for r in self.lti13]
            text += "\n" + tomli_w.dumps({"course": {"lti13": registrations}})
        return text


def _plain(value: object) -> object:
    """A setting as TOML has it: paths as strings, tuples as arrays."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def load_course(settings: Settings, course: str) -> CourseConfig:
    path = settings.course_file(course)
    if not path.is_file():
        raise ConfigError(Code.UNKNOWN_COURSE, f"unknown course {course!r}",
                          hint="nbunits course list shows the courses")
    return course_from_toml(course, _read_toml(path))


def course_from_toml(course: str, data: dict[str, Any]) -> CourseConfig:
    section = _lti13_from_toml(course, dict(data.get("course", {})))
    known = {f.name for f in dataclasses.fields(CourseConfig)} - {"name"}
    unknown = set(section) - known
    if unknown:
        raise ConfigError(Code.BAD_COURSE_CONFIG, f"course {course}: unknown settings {sorted(unknown)}")
    if "source" not in section:
        raise ConfigError(Code.BAD_COURSE_CONFIG, f"course {course}: 'source' is missing")
    section["source"] = Path(section["source"])
    for key in ("legacy_referrers", "lti_staff_roles", "network_allow"):
        if isinstance(section.get(key), list):
            section[key] = tuple(section[key])
    try:
        return CourseConfig(name=course, **section)
    except TypeError as exc:
        raise ConfigError(Code.BAD_COURSE_CONFIG, f"course {course}: {exc}") from exc


def _lti13_from_toml(course: str, section: dict[str, Any]) -> dict[str, Any]:
    """`[[course.lti13]]` tables -> registrations; the single lti13_* settings of
    older course files become one registration (written as a table at the next
    `course update`)."""
    tables = section.get("lti13", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(Code.BAD_COURSE_CONFIG, f"course {course}: lti13 must be "
                          "[[course.lti13]] tables")
    old = {LEGACY_LTI13_FIELDS[k]: section.pop(k) for k in list(section)
           if k in LEGACY_LTI13_FIELDS}
    if old:
        deployment = old.pop("deployment_ids", "")
        tables = [*tables, {**old, "deployment_ids": [deployment] if deployment else []}]
    registrations = []
    known = {f.name for f in dataclasses.fields(Lti13Registration)}
    for table in tables:
        if set(table) - known or not {"issuer", "client_id"} <= set(table):
            raise ConfigError(Code.BAD_COURSE_CONFIG, f"course {course}: an lti13 table needs "
                              f"issuer and client_id and may have {sorted(known)}")
        if not all(isinstance(v, str) for k, v in table.items() if k != "deployment_ids") \
                or not isinstance(table.get("deployment_ids", []), list):
            raise ConfigError(Code.BAD_COURSE_CONFIG, f"course {course}: invalid lti13 table")
        registrations.append(Lti13Registration(
            **{**table, "deployment_ids": tuple(table.get("deployment_ids", []))}))
    section["lti13"] = tuple(registrations)
    return section


@dataclass(frozen=True)
class CourseSecrets:
    """What proves a launch comes from the course's LMS. Kept apart from the course
    file (world-readable) in a file only root and the dispatcher's group can read."""

    lti11_secret: str = setting("", S.Kind("FILE", "a file holding the secret"),
                                "the LTI 1.1 consumer secret", option="--lti11-secret-file")
    legacy_secret: str = setting("", S.Kind("FILE", "a file holding the secret"),
                                 "the HMAC secret of signed legacy links",
                                 option="--legacy-secret-file")

    def to_toml(self) -> str:
        values = {f.name: getattr(self, f.name)
                  for f in dataclasses.fields(self) if getattr(self, f.name)}
        return "# nbunits course secrets: root:nbunits 0640\n" + tomli_w.dumps({"secrets": values})


def load_secrets(settings: Settings, course: str) -> CourseSecrets:
    path = settings.secrets_file(course)
    if not path.is_file():
        return CourseSecrets()
    section = _read_toml(path).get("secrets", {})
    known = {f.name for f in dataclasses.fields(CourseSecrets)}
    if set(section) - known or not all(isinstance(v, str) for v in section.values()):
        raise ConfigError(Code.BAD_COURSE_CONFIG, f"{path}: unknown or invalid secrets")
    return CourseSecrets(**section)


def list_courses(settings: Settings) -> list[str]:
    if not settings.courses_conf_dir.is_dir():
        return []
    return sorted(p.stem for p in settings.courses_conf_dir.glob("*.toml"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(Code.BAD_CONFIG, f"{path}: {exc}") from exc
