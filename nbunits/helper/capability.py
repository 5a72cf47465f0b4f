"""Who may reach /nb/<course>/<user>/: whoever holds that student's capability.

A student's notebook server lives under /nb/<course>/<user>/<capability>/. The
capability is `<mac>.<generation>.<expires>`, in the form nginx's secure_link
module checks without asking anyone:

    mac = base64url(MD5("<secret>/<course>/<user>/<generation>/<expires>"))

So nginx answers 403 to any other path before a byte reaches a student's unit, and
passes the capability on as Jupyter's token (`Authorization: token ...`). No cookie
is involved, which is what makes it work inside a cross-site iframe whose browser
blocks third-party cookies, with Jupyter's token and XSRF checks left on.

- The secret is in /etc/nbunits/capability.secret (root, 0600) and, for nginx, in
  /etc/nginx/snippets/nbunits-secret.conf (root, 0600). Changing it revokes every
  link (students come back through the course, which hands out the new one).
- The generation revokes one student's links (`nbunits student revoke`): it is
  raised, and every older (course, user, generation) goes into nginx's map of
  revoked capabilities (REVOKED_MAP), made from the students' state files here,
  so old links get 403 while nginx still needs no per-student lookup for the rest.
- `expires` (Unix time) ends a link if the course sets `link_lifetime`; otherwise
  it is NEVER. A new expiry is made only while the student's server is stopped,
  and only one that outlives a whole server run (max_lifetime), so a running
  server's link never expires under it.

MD5 here is a keyed digest over a fixed, validated format (no length-extension
gives another valid course/user pair); a stronger MAC would need an nginx module
that Debian does not ship, or the dispatcher on every request's path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from nbunits.core import i18n
from nbunits.core.config import CourseConfig, Server, Settings, granted
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.names import CAPABILITY_RE, DEFAULT_URLS, StudentUnits, student_host

# "Never expires": secure_link needs a positive expiry when it checks one.
NEVER = 9_999_999_999
REVOKED_MAP = Path("/etc/nginx/snippets/nbunits-revoked.map")


@dataclass(frozen=True)
class Grant:
    """A student's current capability parameters (root's state file)."""

    generation: int = 0
    expires: int = NEVER


def capability(secret: str, units: StudentUnits, grant: Grant = Grant()) -> str:
    text = f"{secret}/{units.course}/{units.user}/{grant.generation}/{grant.expires}"
    digest = hashlib.md5(text.encode(), usedforsecurity=True).digest()
    mac = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return f"{mac}.{grant.generation}.{grant.expires}"


def url_prefix(secret: str, units: StudentUnits, grant: Grant = Grant()) -> str:
    return units.jupyter_prefix(capability(secret, units, grant))


def read_secret(settings: Settings) -> str:
    return settings.capability_secret.read_text().strip()


def ensure_secret(settings: Settings, nginx_snippet: Path) -> str:
    """Create the secret once (install); write nginx's copy of it each time."""
    path = settings.capability_secret
    if not path.exists():  # never replaced: that would revoke every link
        write_atomic(path, secrets.token_hex(32) + "\n", 0o600)
    secret = read_secret(settings)
    write_atomic(nginx_snippet, "# nbunits: the secret that student capabilities are keyed "
                 f'with.\nset $nbunits_secret "{secret}";\n', 0o600)
    return secret


# --- one student's grant --------------------------------------------------------

def read_grant(settings: Settings, units: StudentUnits) -> Grant | None:
    """The student's grant; None if they were never given a capability."""
    try:
        data = json.loads(settings.grant_file(units).read_text())
        return Grant(int(data["generation"]), int(data["expires"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise NbunitsError(Code.BAD_STATE, f"{settings.grant_file(units)} is damaged",
                           hint="nbunits student revoke COURSE STUDENT writes a new one") from exc


def write_grant(settings: Settings, units: StudentUnits, grant: Grant) -> None:
    path = settings.grant_file(units)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"generation": grant.generation, "expires": grant.expires})
                 + "\n", 0o600, unless_same=True)


def current_grant(settings: Settings, course: CourseConfig, units: StudentUnits, *,
                  running: bool, now: float | None = None) -> Grant:
    """The grant a launch hands out: the same one while it stays valid for a whole
    server run; a fresh expiry only while the server is stopped (a running Jupyter
    keeps the capability it started with)."""
    now = now or time.time()
    grant = read_grant(settings, units) or Grant()
    if running:
        return grant
    if course.link_lifetime == 0:
        wanted = Grant(grant.generation, NEVER)
    elif grant.expires != NEVER and grant.expires >= now + course.max_lifetime + 60:
        wanted = grant
    else:
        wanted = Grant(grant.generation, int(now) + course.link_lifetime)
    write_grant(settings, units, wanted)
    return wanted


def is_current(settings: Settings, units: StudentUnits, presented: str,
               now: float | None = None) -> bool:
    """Whether `presented` is the student's current, unexpired capability: what
    nginx checked, checked again where a request acts on a student's units."""
    grant = read_grant(settings, units)
    if grant is None or not CAPABILITY_RE.fullmatch(presented):
        return False
    expected = capability(read_secret(settings), units, grant)
    return hmac.compare_digest(expected, presented) and grant.expires >= (now or time.time())


def revoke(settings: Settings, course: CourseConfig, units: StudentUnits) -> Grant:
    """A new generation for one student: every link they had stops working."""
    old = read_grant(settings, units) or Grant()
    expires = NEVER if course.link_lifetime == 0 else int(time.time()) + course.link_lifetime
    new = Grant(old.generation + 1, expires)
    write_grant(settings, units, new)
    return new


def revoked_map(settings: Settings) -> str:
    """nginx's map of revoked capabilities: every (course, user, generation) older
    than a student's current one. Keys are what nginx's /nb/ location captures."""
    lines = ["# nbunits: revoked capabilities (nbunits student revoke); generated."]
    for units in granted(settings):
        grant = read_grant(settings, units)
        for generation in range(grant.generation if grant else 0):
            lines.append(f'"{units.course}/{units.user}/{generation}" 1;')
    return "\n".join(lines) + "\n"


def write_revoked_map(settings: Settings, path: Path = REVOKED_MAP) -> bool:
    """Write nginx's map; whether it changed (nginx must then be reloaded)."""
    text = revoked_map(settings)
    if path.exists() and path.read_text() == text:
        return False
    write_atomic(path, text, 0o644)
    return True


def local_hostnames(units: StudentUnits, server: Server) -> list[str]:
    """The Host names the student's Jupyter answers (per start: its settings)."""
    if server.student_domain:
        return [student_host(units.user, server.student_domain)]
    return list(server.names)


def stop_times(course: CourseConfig) -> dict[str, str]:
    """The course's stops, in seconds, as the Course extension reads them from the page
    (images/extension/src/stops.ts; page options are strings). The same values as the
    container unit's command line (generator/render.py)."""
    return {"nbunitsMaxLifetime": str(course.max_lifetime),
            "nbunitsIdleTimeout": str(course.jupyter_idle_timeout),
            "nbunitsKernelIdleTimeout": str(course.kernel_idle_timeout),
            "nbunitsStopWarning": str(course.stop_warning)}


# The catalog entries the Course extension shows (images/extension/src/words.ts).
EXTENSION_PREFIX = "lab."


def extension_text(language: str) -> dict[str, str]:
    """The Course extension's words in `language` (English where its catalog lacks one),
    as page options (strings): the extension's own English covers an older config."""
    language = language if language in i18n.available() else i18n.DEFAULT
    english, found = i18n.catalog(i18n.DEFAULT), i18n.catalog(language)
    words = {k: found.get(k) or v for k, v in english.items() if k.startswith(EXTENSION_PREFIX)}
    return {"nbunitsLanguage": language,
            "nbunitsText": json.dumps(words, ensure_ascii=False, sort_keys=True)}


def jupyter_config(course: CourseConfig, units: StudentUnits, cap: str, server: Server,
                   language: str = i18n.DEFAULT) -> str:
    """The student's Jupyter settings that must not show on a command line."""
    ancestors = " ".join(["'self'", *course.lms_origins])
    config = {
        "ServerApp": {
            "base_url": units.jupyter_prefix(cap),
            # Jupyter refuses a request whose Host is not "local" (DNS rebinding).
            # nginx passes the browser's Host, and only for this server's names:
            # those are the names Jupyter may accept, and no other; with
            # per-student origins, only the student's own host name.
            "local_hostnames": local_hostnames(units, server),
            # Only the course's LMS may embed the notebook in a frame.
            "tornado_settings": {
                "headers": {"Content-Security-Policy": f"frame-ancestors {ancestors}"},
                # What the notebook page is told (Notebook 7 and JupyterLab add this to
                # every page's PageConfig): its server's stops, for the banner before them,
                # and the words of the Course menu, its dialogs and banners.
                "page_config_data": {**stop_times(course), **extension_text(language)},
            },
            # Terminals are a course setting (docs/security.md, "Container settings").
            "terminals_enabled": course.terminals,
        },
        "IdentityProvider": {"token": cap},
        # The server's root page opens the course's interface. Notebook 7's app starts
        # the server and sets ServerApp.default_url from its own (docs/admin.md,
        # "Interface"); JupyterLab is served beside it whatever this says.
        "JupyterNotebookApp": {"default_url": DEFAULT_URLS[course.interface]},
    }
    return json.dumps(config, indent=1) + "\n"
