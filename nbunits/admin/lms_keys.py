"""LMS keys: fetch a platform's LTI 1.3 public keys (JWKS) for the dispatcher to read.

The dispatcher has no network by design; `nbunits course add/update` and the
nbunits-refresh-keys timer (`nbunits course refresh-keys`) fetch here. Only over https
(with the system's CAs), or from a file on this host: keys fetched over http, or after a
redirect to http, could be anyone's, and whoever holds the key signs launches as any
student (core/config.py KEYS_URL_RE refuses other URLs at `course add/update`).
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

import jwt

from nbunits.core.config import (
    KEYS_URL_RE,
    CourseConfig,
    Lti13Registration,
    Settings,
    load_course,
)
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.jwks import platform_keys
from nbunits.core.run import run

MAX_KEYS_BYTES = 1 << 20
Say = Callable[[str], None]


def fetch_platform_keys(config: CourseConfig, say: Say) -> None:
    """Save the LMS's LTI 1.3 public keys (JWKS) where the dispatcher reads them,
    and check that the dispatcher can read every registration's keys."""
    for registration in config.lti13:
        if registration.keys_url:
            fetch_keys(registration, say)
        if registration.keys:
            check_keys(Path(registration.keys))


class HttpsRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to another https URL."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: http.client.HTTPMessage,
                         newurl: str) -> urllib.request.Request | None:
        if not newurl.startswith("https://"):
            why = f"redirected to {newurl}: the keys are fetched over https only"
            raise urllib.error.HTTPError(newurl, code, why, headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_keys(registration: Lti13Registration, say: Say) -> None:
    url = registration.keys_url
    say(f"fetching the platform's keys for client {registration.client_id} from {url}")
    try:
        if not KEYS_URL_RE.match(url):  # checked with the course's settings too
            raise ValueError("keys only over https (or file:// on this host)")
        opener = urllib.request.build_opener(HttpsRedirectsOnly)
        with opener.open(url, timeout=30) as reply:
            text = reply.read(MAX_KEYS_BYTES).decode()
        if not jwt.PyJWKSet.from_json(text).keys:
            raise ValueError("no usable key in it")
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise NbunitsError(Code.BAD_KEYS, f"cannot get the keys at {url}: {exc}",
                          hint="check --lti13-keys-url (the platform's JWKS URL)") from exc
    path = Path(registration.keys)
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    write_atomic(path, text)  # atomically: a launch never reads half a key set
    say(f"  new keys saved in {path}")


def check_keys(path: Path) -> None:
    """The key file parses, and the dispatcher's user (nbunits) can read it: a file
    it cannot read would turn every launch into an error."""
    try:
        platform_keys(path)
    except (OSError, ValueError, NbunitsError, jwt.PyJWTError) as exc:
        raise NbunitsError(Code.BAD_KEYS, f"{path} is not a JWKS or PEM public key: {exc}",
                          hint="--lti13-keys names the platform's key file (JWKS or PEM)") from exc
    if run(["getent", "passwd", "nbunits"], check=False).returncode != 0:
        return  # not installed yet: nobody to check for
    readable = run(["setpriv", "--reuid=nbunits", "--regid=nbunits", "--init-groups",
                    "--", "test", "-r", str(path)], check=False)
    if readable.returncode != 0:
        raise NbunitsError(Code.BAD_KEYS, f"the dispatcher (user nbunits) cannot read {path}",
                          hint=f"make it and its folders readable, e.g. chmod a+r {path}")


def keys_path(settings: Settings, course: str, issuer: str, client_id: str) -> Path:
    """Where a registration's keys are kept when the admin names no file."""
    digest = hashlib.sha256(f"{issuer} {client_id}".encode()).hexdigest()[:16]
    return settings.lti13_keys_file(course, digest)


def refresh_keys(settings: Settings, names: list[str], say: Say) -> list[str]:
    """Fetch every LTI 1.3 registration's JWKS again (the nbunits-refresh-keys timer).
    Returns the problems; one course failing does not stop the others."""
    problems = []
    for name in names:
        try:
            config = load_course(settings, name)
            for registration in config.lti13:
                if registration.keys_url:
                    fetch_keys(registration, say)
        except NbunitsError as exc:
            problems.append(f"{name}: {exc.message}")
    return problems
