"""Configuration: loaded once into frozen dataclasses and passed explicitly.

Two kinds of files, both TOML:
- /etc/nbunits/nbunits.toml: the server's settings (optional; the paths are fixed,
  see Settings);
- /etc/nbunits/courses/<course>.toml: one course's settings, written by
  `nbunits course add`, read by the generator, the helper and the dispatcher.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from .errors import NbunitsError
from .names import StudentUnits, check_course, check_notebook

DEFAULT_CONFIG = Path("/etc/nbunits/nbunits.toml")
# The base image every course runs, unless its repository makes its own on it.
DEFAULT_IMAGE = "localhost/nbunits/jupyter:latest"


class ConfigError(NbunitsError):
    pass


# A DNS name a browser may use for this server (RFC 1123 labels, lower case).
SERVER_NAME_RE = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
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
    # Admission control (README, "Admission control"). Launches (course links, LTI)
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
    # One of several hosts behind an nbunits front (README, "Beyond one host"):
    # launches are verified here, then handed to the student's own host (handoff.py);
    # homes and per-student state are on shared storage.
    multi_host: bool = False
    # On a front (`nbunits install --front`): the hosts, "ADDRESS[:PORT]".
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = [f"server name {n!r}" for n in self.names if not SERVER_NAME_RE.fullmatch(n)]
        for key in ("unload_after", "launch_rate", "launch_burst", "new_students_per_minute"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) <= 0:
                problems.append(f"{key} (a positive whole number)")
        for key in ("memory_budget", "server_memory"):
            value = getattr(self, key)
            if value and (not _SIZE_RE.fullmatch(value) or value == "infinity"
                          or parse_size(value) == 0):
                problems.append(f"{key}={value!r} (e.g. 16G)")
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
            raise ConfigError("bad_config", "invalid server settings: " + "; ".join(problems))

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

    def course_file(self, course: str) -> Path:
        return self.courses_conf_dir / f"{check_course(course)}.toml"

    def secrets_file(self, course: str) -> Path:
        """A course's launch secrets: root:nbunits 0640, read by the dispatcher only."""
        return self.secrets_dir / f"{check_course(course)}.toml"

    def token_file(self, units: StudentUnits) -> Path:
        return self.tokens_dir / units.course / f"{units.user}.env"

    def grant_file(self, units: StudentUnits) -> Path:
        """The student's capability generation and expiry (root's; capability.py)."""
        return self.tokens_dir / units.course / f"{units.user}.grant"

    def copies_file(self, units: StudentUnits) -> Path:
        """The manifest of a student's copies: which master each was made from."""
        return self.copies_dir / units.course / f"{units.user}.json"

    def home(self, user: str) -> Path:
        return self.home_base / user

    @property
    def shares_dir(self) -> Path:
        """Static versions students share (shares.py): root's, served by the helper."""
        return self.state_dir / "shares"


def load_settings(path: Path = DEFAULT_CONFIG) -> Settings:
    """The settings of this server. Its paths are fixed: the unit files and nginx's
    configuration name them too, so a [paths] section is refused, not half obeyed."""
    data = _read_toml(path) if path.exists() else {}
    if "paths" in data:
        raise ConfigError("bad_config", f"{path}: the [paths] settings are not supported",
                          hint="nbunits keeps its files in the fixed places README.md lists; "
                               "remove the [paths] section")
    unknown = set(data) - {"server"}
    if unknown:
        raise ConfigError("bad_config", f"{path}: unknown sections {sorted(unknown)}")
    return Settings(server=server_from_toml(path, data.get("server", {})))


def server_from_toml(path: Path, section: dict[str, Any]) -> Server:
    known = {f.name for f in dataclasses.fields(Server)}
    unknown = set(section) - known
    if unknown:
        raise ConfigError("bad_config", f"{path}: unknown [server] settings {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, list):
            value = tuple(value)
        default = getattr(Server, key, "")
        expected = tuple if key in ("names", "trusted_proxies", "hosts") else type(default)
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool) or (
                expected is tuple and not all(isinstance(v, str) for v in value)):
            raise ConfigError("bad_config", f"{path}: [server] {key} has the wrong type")
        values[key] = value
    return Server(**values)


def server_to_toml(server: Server) -> dict[str, Any]:
    """The `[server]` table of nbunits.toml (for tomli_w)."""
    return {"server": {f.name: list(v) if isinstance(v, tuple) else v
                       for f in dataclasses.fields(server)
                       if (v := getattr(server, f.name)) != f.default}}


_PERCENT_RE = re.compile(r"\d+%")
NETWORKS = ("none", "slirp4netns")
LEGACY_MODES = ("open", "off", "referrer", "signed")
_DOMAIN_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
# LTI ids and keys are opaque to us: printable ASCII, no spaces.
_OPAQUE_RE = re.compile(r"[!-~]{1,255}")
_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


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
    or one reusable configuration): who signs, for which client, with which keys."""

    issuer: str  # the platform (Open edX: the LMS root URL)
    client_id: str
    deployment_ids: tuple[str, ...] = ()  # empty: any deployment of this client
    auth_url: str = ""  # the platform's OIDC authorization endpoint
    keys: str = ""  # a file: the platform's JWKS (JSON) or public key (PEM)
    # Where `nbunits course add/update` and the nbunits-refresh-keys timer fetch
    # that JWKS from (the dispatcher has no network, so it never fetches keys).
    keys_url: str = ""

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
        if self.keys_url and (not re.match(r"(https?|file)://\S+$", self.keys_url)
                              or not self.keys):
            found.append(f"lti13 keys_url={self.keys_url!r} (a URL, with keys naming the "
                         "file to keep the keys in)")
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


@dataclass(frozen=True)
class CourseConfig:
    """One course's settings. Defaults suit a small course on a small server."""

    name: str
    source: Path  # the folder of master notebooks
    image: str = DEFAULT_IMAGE
    title: str = ""
    # Seconds without a connection before the proxy exits (and the container stops).
    proxy_idle_timeout: int = 120
    # Seconds without activity before Jupyter shuts itself down (open tabs included).
    jupyter_idle_timeout: int = 3600
    # Seconds an idle kernel lives before Jupyter culls it.
    kernel_idle_timeout: int = 1800
    # Hard cap on a container's lifetime, in seconds.
    max_lifetime: int = 8 * 3600
    memory_max: str = "1G"
    cpu_quota: str = "100%"
    tasks_max: int = 512
    course_memory_max: str = "infinity"
    network: str = "none"
    # Security choices (README, "Security"), each with the reason for its default:
    # Jupyter's terminals: a shell is what a kernel's `!cmd` gives anyway, in the
    # same container as the same user, so they add no power; off where a course
    # wants the notebook interface only.
    terminals: bool = True
    # Nested user namespaces (podman's default seccomp profile allows unshare and
    # clone with CLONE_NEWUSER): off by default, since a kernel that can make user
    # namespaces reaches kernel code paths an unprivileged user otherwise cannot,
    # the usual way kernel bugs are exploited. On for courses that run containers
    # or sandboxes (e.g. bubblewrap) inside the notebook.
    user_namespaces: bool = False
    # Per-student disk quota on the home's filesystem (user quota, e.g. "2G"; "" =
    # none). Enforced by the file system, so it needs usrquota on /home (README).
    disk_quota: str = ""
    # Seconds a student's link (capability) stays valid; 0: until revoked. At least
    # max_lifetime + 1 hour, so that a running server's link never expires under it.
    link_lifetime: int = 0
    # Origins allowed to embed the notebooks in a frame (the course's LMS), space
    # separated, e.g. "https://lms.example.org". The server's own origin always is.
    lms_origin: str = ""
    # Where the masters come from, for `nbunits course update`: a git URL (and
    # branch; empty: the remote's default) or a folder.
    git_url: str = ""
    git_branch: str = ""
    origin_dir: str = ""
    # How students get in (README, "Launching from Open edX"). The legacy
    # /ipythonExercice/ link: "open" (anyone who knows a student id), "off",
    # "referrer" (only from pages on legacy_referrers, as nbhosting) or "signed"
    # (an HMAC in the link, keyed by the course's legacy secret).
    legacy: str = "open"
    legacy_referrers: tuple[str, ...] = ()
    # LTI: the course's id in the LMS (context_id; Open edX: course-v1:Org+Num+Run).
    lti_context_id: str = ""
    lti11_key: str = ""  # the consumer key; its secret is in the secrets file
    # LTI 1.3 registrations (`[[course.lti13]]`): Open edX gives each LTI 1.3
    # component its own client id and key by default, so a course has several.
    lti13: tuple[Lti13Registration, ...] = ()
    # Context roles that open the staff views (LIS names; a sub-role as
    # "Instructor#Lecturer"). Institution and system roles never count.
    lti_staff_roles: tuple[str, ...] = DEFAULT_STAFF_ROLES
    # resource_link_id -> notebook, for links that carry no notebook parameter.
    lti_notebooks: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_course(self.name)
        problems = []
        if not _SIZE_RE.fullmatch(self.memory_max):
            problems.append(f"memory_max={self.memory_max!r} (e.g. 1G)")
        if not _SIZE_RE.fullmatch(self.course_memory_max):
            problems.append(f"course_memory_max={self.course_memory_max!r} (e.g. 16G)")
        if not _PERCENT_RE.fullmatch(self.cpu_quota):
            problems.append(f"cpu_quota={self.cpu_quota!r} (e.g. 100%)")
        if self.network not in NETWORKS:
            problems.append(f"network={self.network!r} (one of {', '.join(NETWORKS)})")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", self.image):
            problems.append(f"image={self.image!r}")
        if self.git_url.startswith("-") or any(c.isspace() for c in self.git_url):
            problems.append(f"git_url={self.git_url!r}")
        if self.git_branch and not re.fullmatch(r"[A-Za-z0-9._/][A-Za-z0-9._/-]*", self.git_branch):
            problems.append(f"git_branch={self.git_branch!r}")
        if not all(_ORIGIN_RE.fullmatch(o) for o in self.lms_origins):
            problems.append(f"lms_origin={self.lms_origin!r} (e.g. https://lms.example.org)")
        if self.disk_quota and not re.fullmatch(r"[1-9][0-9]*[KMGT]", self.disk_quota):
            problems.append(f"disk_quota={self.disk_quota!r} (e.g. 2G; empty for none)")
        for key in ("terminals", "user_namespaces"):
            if not isinstance(getattr(self, key), bool):
                problems.append(f"{key} must be true or false")
        if not isinstance(self.link_lifetime, int) or not (
                self.link_lifetime == 0 or self.link_lifetime >= self.max_lifetime + 3600):
            problems.append(f"link_lifetime={self.link_lifetime!r} (0, or at least "
                            "max_lifetime + 3600 seconds)")
        for key in ("proxy_idle_timeout", "jupyter_idle_timeout", "kernel_idle_timeout",
                    "max_lifetime", "tasks_max"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) <= 0:
                problems.append(f"{key} must be a positive whole number")
        problems += self._launch_problems()
        if problems:
            raise ConfigError("bad_course_config",
                              f"course {self.name}: invalid " + "; ".join(problems))

    @property
    def lms_origins(self) -> list[str]:
        return self.lms_origin.split()

    def _launch_problems(self) -> list[str]:
        problems = []
        if self.legacy not in LEGACY_MODES:
            problems.append(f"legacy={self.legacy!r} (one of {', '.join(LEGACY_MODES)})")
        if not isinstance(self.legacy_referrers, tuple) or not all(
                isinstance(d, str) and _DOMAIN_RE.fullmatch(d) for d in self.legacy_referrers):
            problems.append(f"legacy_referrers={self.legacy_referrers!r} (domain names)")
        if self.legacy == "referrer" and not self.legacy_referrers:
            problems.append("legacy = referrer needs legacy_referrers")
        for key in ("lti_context_id", "lti11_key"):
            value = getattr(self, key)
            if value and not _OPAQUE_RE.fullmatch(value):
                problems.append(f"{key}={value!r}")
        problems += self._lti13_problems()
        if not isinstance(self.lti_notebooks, dict):  # from TOML: anything
            problems.append(  # type: ignore[unreachable]
                "lti_notebooks must be a table of resource link id = notebook")
        else:
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
        if not isinstance(self.lti_staff_roles, tuple) or not all(
                isinstance(r, str) for r in self.lti_staff_roles):
            return problems + ["lti_staff_roles must be a list of role names"]
        return problems + check_staff_roles(self.lti_staff_roles)

    def registration(self, issuer: str, client_id: str) -> Lti13Registration | None:
        """The registration a login names; without a client id, the issuer's only one."""
        found = [r for r in self.lti13 if r.issuer == issuer
                 and (r.client_id == client_id or not client_id)]
        return found[0] if len(found) == 1 else None

    def to_toml(self) -> str:
        values = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.name not in ("name", "lti_notebooks", "lti13")}
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
        raise ConfigError("unknown_course", f"unknown course {course!r}",
                          hint="nbunits course list shows the courses")
    return course_from_toml(course, _read_toml(path))


def course_from_toml(course: str, data: dict[str, Any]) -> CourseConfig:
    section = _lti13_from_toml(course, dict(data.get("course", {})))
    known = {f.name for f in dataclasses.fields(CourseConfig)} - {"name"}
    unknown = set(section) - known
    if unknown:
        raise ConfigError("bad_course_config", f"course {course}: unknown settings {sorted(unknown)}")
    if "source" not in section:
        raise ConfigError("bad_course_config", f"course {course}: 'source' is missing")
    section["source"] = Path(section["source"])
    for key in ("legacy_referrers", "lti_staff_roles"):
        if isinstance(section.get(key), list):
            section[key] = tuple(section[key])
    try:
        return CourseConfig(name=course, **section)
    except TypeError as exc:
        raise ConfigError("bad_course_config", f"course {course}: {exc}") from exc


def _lti13_from_toml(course: str, section: dict[str, Any]) -> dict[str, Any]:
    """`[[course.lti13]]` tables -> registrations; the single lti13_* settings of
    older course files become one registration (written as a table at the next
    `course update`)."""
    tables = section.get("lti13", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("bad_course_config", f"course {course}: lti13 must be "
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
            raise ConfigError("bad_course_config", f"course {course}: an lti13 table needs "
                              f"issuer and client_id and may have {sorted(known)}")
        if not all(isinstance(v, str) for k, v in table.items() if k != "deployment_ids") \
                or not isinstance(table.get("deployment_ids", []), list):
            raise ConfigError("bad_course_config", f"course {course}: invalid lti13 table")
        registrations.append(Lti13Registration(
            **{**table, "deployment_ids": tuple(table.get("deployment_ids", []))}))
    section["lti13"] = tuple(registrations)
    return section


@dataclass(frozen=True)
class CourseSecrets:
    """What proves a launch comes from the course's LMS. Kept apart from the course
    file (world-readable) in a file only root and the dispatcher's group can read."""

    lti11_secret: str = ""
    legacy_secret: str = ""

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
        raise ConfigError("bad_course_config", f"{path}: unknown or invalid secrets")
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
        raise ConfigError("bad_config", f"{path}: {exc}") from exc
