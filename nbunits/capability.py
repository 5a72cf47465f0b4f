"""Who may reach /nb/<course>/<user>/: whoever holds that student's capability.

A student's notebook server lives under /nb/<course>/<user>/<capability>/. The
capability is a MAC of (course, user) under a server secret, in the form nginx's
secure_link module checks: base64url(MD5("<secret>/<course>/<user>")). So nginx
answers 403 to any other path before a byte reaches a student's unit, and passes
the capability on as Jupyter's token (`Authorization: token ...`). No cookie is
involved, which is what makes it work inside a cross-site iframe whose browser
blocks third-party cookies, with Jupyter's token and XSRF checks left on.

The secret is in /etc/nbunits/capability.secret (root, 0600) and, for nginx, in
/etc/nginx/snippets/nbunits-secret.conf (root, 0600). Changing it revokes every
link (students come back through the course, which hands out the new one).
MD5 here is a keyed digest over a fixed, validated format (no length-extension
gives another valid course/user pair); a stronger MAC would need an nginx module
that Debian does not ship, or the dispatcher on every request's path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path

from .config import CourseConfig, Server, Settings
from .files import write_atomic
from .names import StudentUnits


def capability(secret: str, units: StudentUnits) -> str:
    digest = hashlib.md5(f"{secret}/{units.course}/{units.user}".encode(),
                         usedforsecurity=True).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def url_prefix(secret: str, units: StudentUnits) -> str:
    return units.jupyter_prefix(capability(secret, units))


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


def jupyter_config(course: CourseConfig, units: StudentUnits, secret: str,
                   server: Server) -> str:
    """The student's Jupyter settings that must not show on a command line."""
    cap = capability(secret, units)
    ancestors = " ".join(["'self'", *course.lms_origins])
    config = {
        "ServerApp": {
            "base_url": url_prefix(secret, units),
            # Jupyter refuses a request whose Host is not "local" (DNS rebinding).
            # nginx passes the browser's Host, and only for this server's names:
            # those are the names Jupyter may accept, and no other.
            "local_hostnames": list(server.names),
            # Only the course's LMS may embed the notebook in a frame.
            "tornado_settings": {"headers": {
                "Content-Security-Policy": f"frame-ancestors {ancestors}",
            }},
        },
        "IdentityProvider": {"token": cap},
    }
    return json.dumps(config, indent=1) + "\n"
