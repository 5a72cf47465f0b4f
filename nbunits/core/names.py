"""The one place that turns (course, student, notebook) into names, paths and URLs.

Everything that reaches a unit name, a user name or a file path is validated here
first; nothing else in nbunits concatenates such names. Anything that does not fit
raises `InvalidName`, before any side effect.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote

from nbunits.core.errors import Code, NbunitsError

# Course names appear in URLs, unit names, slice names and paths: lower-case
# letters, digits, '_' and '-'. A course may not end in "-proxy", "-lock" or
# "-jupyter", so that no course's units can be mistaken for another's proxy, lock
# or Jupyter socket units (nbunits-C-proxy@, nbunits-C-lock@, nbunits-C-jupyter@).
COURSE_RE = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,30}[a-z0-9])?")
RESERVED_COURSES = frozenset({"dispatcher", "helper", "proxy"})
# A student's units beside the front socket and the container: name suffix -> unit type.
SUFFIXED_UNITS = {"-proxy": "service", "-lock": "service", "-jupyter": "socket",
                  "-grade": "service"}
RESERVED_SUFFIXES = tuple(SUFFIXED_UNITS)

# The slice every course's slice (and so every student's unit) is in.
STUDENTS_SLICE = "nbunits.slice"

# The journal namespace students' units log to (their LogNamespace=; units/course/):
# `journalctl --namespace=nbunits`.
STUDENTS_JOURNAL = "nbunits"

# edX anonymous ids are 32 hex characters; LTI user ids are opaque strings. We
# accept a conservative printable set: the id is never used verbatim in a name.
STUDENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,254}")

# The Linux user name: "nb" + 16 base32 characters of a hash of the id. 80 bits
# keep accidental collisions out of reach for any course's population, and the
# recorded id (see users.py) turns a collision into an error, not a shared home.
USER_RE = re.compile(r"nb[a-z2-7]{16}")

# Notebook paths: any name git and Jupyter take (unicode, spaces, punctuation),
# but not hidden ones (Jupyter hides them), not '\\' (a separator to some), no
# control or bidi-override characters (they make one name look like another), no
# space at either end, and short enough that a marker or kept copy beside the
# copy (copies.py adds ~25 bytes) still fits the file system's 255 bytes.
MAX_NOTEBOOK_DEPTH = 8
MAX_NOTEBOOK_PART_BYTES = 200
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")


class InvalidName(NbunitsError):
    """A course, student or notebook name that cannot be mapped safely."""


def check_course(course: str) -> str:
    if (not COURSE_RE.fullmatch(course) or course in RESERVED_COURSES
            or course.endswith(RESERVED_SUFFIXES)):
        raise InvalidName(
            Code.BAD_COURSE,
            f"invalid course name {course!r}",
            hint="use 1-32 characters: lower-case letters, digits, '_' or '-' "
                 "(not ending in -proxy, -lock or -jupyter)",
        )
    return course


def check_student_id(student_id: str) -> str:
    if not STUDENT_ID_RE.fullmatch(student_id):
        raise InvalidName(
            Code.BAD_STUDENT,
            "invalid student id",
            hint="an id is 1-255 characters: letters, digits and ._@+=-",
        )
    return student_id


def _digest(student_id: str) -> bytes:
    check_student_id(student_id)
    return hashlib.blake2b(student_id.encode(), digest_size=10).digest()


def user_for(student_id: str) -> str:
    """The Linux user name of a student: deterministic, valid for useradd."""
    return "nb" + base64.b32encode(_digest(student_id)).decode().lower()


# Students' uids (and their groups' gids, equal): derived from the same hash, so a
# student has the same uid on every host. The range lies inside systemd's
# "container" range (524288-1879048191, docs/UIDS-GIDS.md: no system, regular,
# homed or DynamicUser= id is ever allocated there) and above Debian's default
# subordinate ranges (SUB_UID_MAX 600100000), so neither the admin's users nor
# their subuid ranges meet it. 2^30 ids: at 100,000 students about 5 ids collide
# (n^2 / 2N); a collision is refused like a user name's, never shared.
STUDENT_UID_MIN = 0x30000000  # 805306368
STUDENT_UID_COUNT = 0x40000000  # up to 1879048191, the end of systemd's container range


def uid_for(student_id: str) -> int:
    """The uid (and gid) of a student's user: deterministic, in the students' range."""
    return STUDENT_UID_MIN + int.from_bytes(_digest(student_id)[:8], "big") % STUDENT_UID_COUNT


def check_user(user: str) -> str:
    if not USER_RE.fullmatch(user):
        raise InvalidName(Code.BAD_STUDENT, f"invalid student user name {user!r}")
    return user


def check_path_part(part: str) -> bool:
    """One folder or file name of a course: see MAX_NOTEBOOK_PART_BYTES above."""
    return (
        part != "" and not part.startswith(".") and part == part.strip()
        and "\\" not in part
        and len(part.encode("utf-8", errors="replace")) <= MAX_NOTEBOOK_PART_BYTES
        and not any(unicodedata.category(c) in ("Cc", "Cs") or c in _BIDI_CONTROLS
                    for c in part)
    )


def check_notebook(path: str) -> PurePosixPath:
    """A notebook path relative to the course: no '..', no absolute, no oddities.

    Symlinks are checked where the file system is read (notebooks.py).
    """
    parts = path.split("/")
    if (
        not path.endswith(".ipynb")
        or len(parts) > MAX_NOTEBOOK_DEPTH
        or not all(check_path_part(p) for p in parts)
        or parts[-1] == ".ipynb"
    ):
        raise InvalidName(
            Code.BAD_NOTEBOOK,
            f"invalid notebook path {path!r}",
            hint="a relative path to a .ipynb file inside the course: no hidden "
                 "folders, no control characters, no space at either end of a name",
        )
    return PurePosixPath(*parts)


def escape_slice_component(text: str) -> str:
    """systemd-escape for a slice name component ('-' means nesting there)."""
    return "".join(c if c.isalnum() or c in "_." else f"\\x{ord(c):02x}" for c in text)


@dataclass(frozen=True)
class StudentUnits:
    """Names of one (course, student) pair's units and sockets."""

    course: str
    user: str

    def __post_init__(self) -> None:
        check_course(self.course)
        check_user(self.user)

    @property
    def socket(self) -> str:
        return f"nbunits-{self.course}@{self.user}.socket"

    @property
    def container(self) -> str:
        return f"nbunits-{self.course}@{self.user}.service"

    @property
    def proxy(self) -> str:
        return f"nbunits-{self.course}-proxy@{self.user}.service"

    @property
    def jupyter_socket(self) -> str:
        """The socket Jupyter answers on, made by systemd while the container runs."""
        return f"nbunits-{self.course}-jupyter@{self.user}.socket"

    @property
    def started(self) -> tuple[str, str, str, str]:
        """The units a student's click starts (the lock, several hosts only, apart)."""
        return (self.socket, self.proxy, self.container, self.jupyter_socket)

    @property
    def lock(self) -> str:
        """Several hosts: the unit holding the student's lock on shared storage."""
        return f"nbunits-{self.course}-lock@{self.user}.service"

    @property
    def grading(self) -> str:
        """The unit that runs one submitted notebook of the student's (helper/grading.py)."""
        return f"nbunits-{self.course}-grade@{self.user}.service"

    @property
    def url_prefix(self) -> str:
        return f"/nb/{self.course}/{self.user}/"

    def jupyter_prefix(self, capability: str) -> str:
        """Where the student's Jupyter is: /nb/<course>/<user>/<capability>/."""
        if not CAPABILITY_RE.fullmatch(capability):
            raise InvalidName(Code.BAD_CAPABILITY, "invalid capability")
        return f"{self.url_prefix}{capability}/"


# The capability in /nb/ URLs: <mac>.<generation>.<expires>, the mac being base64url
# of an MD5 digest, unpadded (capability.py); nginx's /nb/ location has the same pattern.
CAPABILITY_RE = re.compile(r"[A-Za-z0-9_-]{22}\.[0-9]{1,9}\.[0-9]{1,11}")

# Unit names, as systemd lists them. A course never ends in a reserved suffix, so
# "nbunits-C-proxy@U.service" is read as course C's proxy, never as course "C-proxy".
UNIT_RE = re.compile(
    r"nbunits-(?P<course>[a-z0-9][a-z0-9_-]*?)(?P<proxy>" + "|".join(SUFFIXED_UNITS) + ")?"
    r"@(?P<user>nb[a-z2-7]{16})\.(?P<kind>socket|service)")


@dataclass(frozen=True)
class ParsedUnit:
    units: StudentUnits
    kind: str  # "socket", "container", "proxy", "lock", "jupyter" (Jupyter's socket) or "grade"


def parse_unit(name: str) -> ParsedUnit | None:
    """A student's unit name back into (course, user, kind: socket, container, proxy,
    lock or jupyter); None for any other unit."""
    m = UNIT_RE.fullmatch(name)
    if not m or (m["proxy"] and m["kind"] != SUFFIXED_UNITS[m["proxy"]]):
        return None
    try:
        units = StudentUnits(m["course"], m["user"])
    except InvalidName:
        return None
    kind = m["proxy"][1:] if m["proxy"] else ("socket" if m["kind"] == "socket" else "container")
    return ParsedUnit(units, kind)


def course_unit_patterns(course: str | None = None) -> list[str]:
    """systemctl patterns for every student unit of a course (or of all courses)."""
    c = check_course(course) if course else "*"
    return [f"nbunits-{c}@*.socket", f"nbunits-{c}@*.service", f"nbunits-{c}-proxy@*.service",
            f"nbunits-{c}-jupyter@*.socket"]


def user_unit_patterns(user: str) -> list[str]:
    """systemctl patterns for every socket and service of one student, in any course."""
    u = check_user(user)
    return [f"nbunits-*@{u}.socket", f"nbunits-*@{u}.service"]


def grading_pattern(course: str) -> str:
    """systemctl pattern for the gradings running in one course (helper/grading.py)."""
    return f"nbunits-{check_course(course)}-grade@*.service"


def container_pattern(course: str) -> str:
    """systemctl pattern for the Jupyter (container) units of one course."""
    return f"nbunits-{check_course(course)}@*.service"


# The sender of scores to the LMS (units/nbunits-scores.service; helper/scores.py).
SCORES_SERVICE = "nbunits-scores.service"

# Course images are built by this system user, never by root, one step per
# transient unit (admin/builder.py). No '@' in these names: no course's pattern
# (course_unit_patterns) can match them.
BUILDER_USER = "nbunits-builder"
IMAGE_BUILD_UNITS = {"base": "nbunits-image-base.service",
                     "wheels": "nbunits-image-wheels.service",
                     "build": "nbunits-image-build.service"}


def course_image(course: str) -> str:
    """The image a course builds from its repository (course_image.py)."""
    return f"localhost/nbunits/course-{check_course(course)}:latest"


def socket_template(course: str) -> str:
    return f"nbunits-{check_course(course)}@.socket"


def lock_template(course: str) -> str:
    """The lock unit of a course's students, as the container unit names it (%i)."""
    return f"nbunits-{check_course(course)}-lock@%i.service"


def course_slice(course: str) -> str:
    return f"nbunits-{escape_slice_component(check_course(course))}.slice"


# podman refuses a --runroot longer than 50 characters ("the specified runroot is
# longer than 50 characters"). A student's is /run/nbunits/podman/<course>/<user>
# (XDG_RUNTIME_DIR too): that fits for a course name of up to 11 characters. A longer
# name is replaced there by "_" and a digest of it, which no course name can be (a
# name starts with a letter or a digit).
PODMAN_RUNROOT_MAX = 50
USER_LENGTH = 18  # "nb" and 16 base32 characters: user_for


def podman_run_dir(course: str, under: str = "nbunits/podman", runroot: str = "") -> str:
    """The folder under /run that holds, for each student of `course`, the folder of
    their podman runroot (/run/<it>/<user><runroot>): the course unit's @PODMAN_RUN@
    and the grading unit's @GRADE_RUN@ (under nbunits/grade, runroot /run)."""
    folder = f"{under}/{check_course(course)}"
    fixed = len(f"/run/{under}/") + USER_LENGTH + len(runroot) + 1
    if fixed + len(course) <= PODMAN_RUNROOT_MAX:
        return folder
    return f"{under}/_" + hashlib.sha256(course.encode()).hexdigest()[:PODMAN_RUNROOT_MAX - fixed - 1]


@dataclass(frozen=True)
class Target:
    """A validated (course, student id, notebook): what a launch opens.

    Built once where a request enters (the dispatcher, the helper) and passed on,
    so the steps after it need not check the strings again.
    """

    course: str
    student: str  # the LMS's id
    notebook: str  # relative to the course, normalized

    def __post_init__(self) -> None:
        check_course(self.course)
        check_student_id(self.student)
        object.__setattr__(self, "notebook", check_notebook(self.notebook).as_posix())

    @property
    def user(self) -> str:
        return user_for(self.student)

    @property
    def units(self) -> StudentUnits:
        return StudentUnits(self.course, self.user)


# A course's interface (its `interface` setting): where, under the student's Jupyter, a
# notebook opens in it, and where the server's own root sends a browser (Jupyter's
# default_url, relative to the base URL). One server serves both front ends.
INTERFACES = {"notebook": "notebooks/", "lab": "lab/tree/"}
DEFAULT_URLS = {"notebook": "/tree", "lab": "/lab"}


def notebook_url(units: StudentUnits, capability: str, notebook: str,
                 interface: str = "notebook") -> str:
    """The student's notebook in the course's interface (Notebook 7 or JupyterLab),
    unquoted (the dispatcher quotes Locations: quote_path)."""
    if interface not in INTERFACES:
        raise InvalidName(Code.BAD_REQUEST, f"unknown interface {interface!r}")
    return (f"{units.jupyter_prefix(capability)}{INTERFACES[interface]}"
            f"{check_notebook(notebook).as_posix()}")


def student_host(user: str, domain: str) -> str:
    """A student's own origin's host name (per-student origins, [server]
    student_domain): <user>.<domain>. The user name is a DNS label already."""
    return f"{check_user(user)}.{domain}"


def host_user(host: str, domain: str) -> str | None:
    """The student whose own origin `host` (a name without port, lower case) is;
    None for any other host, and always without a student domain."""
    user, dot, rest = host.partition(".")
    return user if domain and dot and rest == domain and USER_RE.fullmatch(user) else None


def origin(scheme: str, host: str, port: str = "") -> str:
    """scheme://host[:port], the port as a Host header gives it ("" or "8080")."""
    if scheme not in ("http", "https") or not (port == "" or port.isdigit()):
        raise InvalidName(Code.BAD_REQUEST, "invalid scheme or port")
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def quote_path(path: str) -> str:
    """A path as it goes into a link or a Location: UTF-8, percent-encoded, '/' kept."""
    return quote(path, safe="/")


def exercise_link_template(course: str, notebook: str) -> str:
    """A notebook's course link as the LMS side writes it: the student id at the end."""
    return f"{exercise_url(course, notebook, 'x')[:-1]}<student id>"


def exercise_url(course: str, notebook: str, student: str, *, reset: bool = False) -> str:
    """The course link (FUN's xblock URL) that opens a notebook for a student,
    percent-encoded (a notebook may be named `Leçon 1/café.ipynb`)."""
    path = f"/ipythonExercice/{check_course(course)}/" \
           f"{quote_path(check_notebook(notebook).as_posix())}/{check_student_id(student)}"
    return path + ("?reset=1" if reset else "")


# A shared static version's token: 24 random bytes, base64url (shares.py).
SHARE_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32}")


def check_share_token(token: str) -> str:
    if not SHARE_TOKEN_RE.fullmatch(token):
        raise InvalidName(Code.UNKNOWN_SHARE, "this shared link is not valid")
    return token


def shared_path(token: str) -> str:
    """Where anyone reads a static version a student shares."""
    return f"/shared/{check_share_token(token)}"


# How a path is written to a log: never a capability, a share token or a student id.
# nginx's access log does the same ($nbunits_log_uri, nginx/nbunits-http.conf: a unit
# test keeps the two in step); the first rule that matches gives the whole line's
# path (None: the path as it is).
_LOG_RULES: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"(?s)^(?P<p>.*?)[A-Za-z0-9_-]{22}\.[0-9]"), r"\g<p>[capability]"),
    (re.compile(r"^(?P<p>/(?:nb|_nbunits/wake|_nbunits/student)/[^/]*/[^/]*/)"),
     r"\g<p>[capability]"),
    (re.compile(r"^/nb/"), "/nb/[capability]"),
    (re.compile(r"^(?P<p>/ipythonExercice/[^/]*/)"), r"\g<p>[student]"),
    (re.compile(r"^/ipythonExercice/"), "/ipythonExercice/[student]"),
    (re.compile(r"^/shared/"), "/shared/[token]"),
    (re.compile(r"^/(?:lti|staff|_nbunits/(?:handoff|page))/|^/_nbunits/health$"), None),
    (re.compile(r"(?s)^(?P<p>/[^/]*/)."), r"\g<p>[...]"),
    (re.compile(r"(?s)^/."), "/[...]"),
)


def loggable_path(path: str) -> str:
    """A request's path as a log line may show it."""
    for pattern, template in _LOG_RULES:
        found = pattern.match(path)
        if found:
            return path if template is None else found.expand(template)
    return path


def check_capability(capability: str) -> str:
    if not CAPABILITY_RE.fullmatch(capability):
        raise InvalidName(Code.BAD_CAPABILITY, "invalid capability")
    return capability


def staff_path(course: str, user: str, notebook: str) -> str:
    """A staff view's path, before its query (expires, sig)."""
    return f"/staff/{check_course(course)}/{check_user(user)}/" \
           f"{quote(check_notebook(notebook).as_posix())}"


HANDOFF_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,6000}\.[A-Za-z0-9_-]{43}")


def handoff_path(units: StudentUnits) -> str:
    """Where a launch verified on any host goes to be opened on the student's own
    (several hosts: the front hashes the user in this path; handoff.py)."""
    return f"/_nbunits/handoff/{units.course}/{units.user}"
