"""Hand-offs: a launch verified on any host, opened on the student's own host.

Several hosts behind one nginx front (docs/admin.md, "Beyond one host") share no app and no
list of students: the front sends each request to a host by consistent hashing on
the student's user name, which is in the path of every request after a launch
(/nb/<course>/<user>/...). A launch does not carry it in its path: an LTI launch
carries the student in a signed body, the legacy link the student id (the user is a
hash of it, which nginx cannot compute). So the front sends a launch to any host,
which verifies it as a single host does and then, instead of opening the notebook
itself, answers `303 /_nbunits/handoff/<course>/<user>?t=<token>`: the front hashes
that user to their host, whose dispatcher checks the token and opens the notebook.

The token binds what the launch proved (course, student id, notebook, reset, and
the launch's locale and where the student's score goes, core/outcomes.py) to that
path's course and user, for LIFETIME seconds, with an HMAC-SHA256 keyed by the
hosts' shared secret (/etc/nbunits/hosts.secret, the same file on every host). A
forged or altered token, or one for another user than the path's, is refused and
changes nothing; since the front chooses the host from the path and the token must
name the same user, nobody can have a student opened on another host than the one
the hash gives them. Within its lifetime a token is a bearer credential, as the
course link is; it travels in a query string, which nbunits' logs never write.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import HANDOFF_TOKEN_RE, Target, handoff_path
from nbunits.core.outcomes import BadDestination, Destination

logger = logging.getLogger(__name__)

LIFETIME = 60
_CONTEXT = b"nbunits-handoff\n"


@dataclass(frozen=True)
class Handoff:
    target: Target
    reset: bool = False
    locale: str = ""  # the launch's, as the LMS sent it ("": none)
    destination: Destination | None = None  # where the student's score goes, if it said


# The token's payload at most (HANDOFF_TOKEN_RE): a destination that would not fit is
# left out (the launch opens; its score has nowhere to go), as an unusable one is.
MAX_PAYLOAD = 6000


def read_secret(path: Path) -> bytes:
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise NbunitsError(Code.INTERNAL, f"cannot read the hosts' secret {path}: {exc.strerror}",
                           hint="nbunits install --multi-host creates it; copy the same "
                                "file to every host (docs/admin.md, Beyond one host)") from exc
    if len(secret) < 32:
        raise NbunitsError(Code.INTERNAL, f"{path} is too short to be a secret",
                           hint="copy the first host's file here")
    return secret.encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, _CONTEXT + payload.encode(), hashlib.sha256).digest())


def sign(secret: bytes, handoff: Handoff, now: float | None = None) -> str:
    target = handoff.target
    expires = int(time.time() if now is None else now) + LIFETIME
    fields = [target.course, target.student, target.notebook, handoff.reset, expires,
              handoff.locale]
    payload = _b64(json.dumps([*fields, handoff.destination.to_json()
                               if handoff.destination else None], separators=(",", ":")).encode())
    if len(payload) > MAX_PAYLOAD:
        logger.warning("the launch's score destination is too long to hand over: left out")
        payload = _b64(json.dumps([*fields, None], separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, payload)}"


def url(secret: bytes, handoff: Handoff, now: float | None = None) -> str:
    """The path and query the launching host sends the browser to (unquoted parts:
    the token is URL-safe as it is)."""
    return f"{handoff_path(handoff.target.units)}?t={sign(secret, handoff, now)}"


def verify(secret: bytes, course: str, user: str, token: str,
           now: float | None = None) -> Handoff:
    """The hand-off a token proves for the path's course and user, or an error."""
    if not HANDOFF_TOKEN_RE.fullmatch(token):
        raise NbunitsError(Code.BAD_REQUEST, "this hand-off is malformed")
    payload, mac = token.split(".")
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise NbunitsError(Code.FORBIDDEN, "this hand-off is not signed by a host of this "
                           "service", student_hint="open the notebook from your course page")
    try:
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        # Five fields: a token of the release before, honoured during an upgrade.
        course_, student, notebook, reset, expires, locale, where = (
            fields if len(fields) == 7 else [*fields, "", None])
        destination = Destination.from_json(where) if where is not None else None
    except (ValueError, TypeError, BadDestination) as exc:  # signed by a host: a bug
        raise NbunitsError(Code.BAD_REQUEST, "this hand-off is malformed") from exc
    if not (isinstance(expires, int) and isinstance(reset, bool)
            and all(isinstance(v, str) for v in (course_, student, notebook, locale))):
        raise NbunitsError(Code.BAD_REQUEST, "this hand-off is malformed")
    now = time.time() if now is None else now
    if not now <= expires <= now + LIFETIME + 5:
        raise NbunitsError(Code.FORBIDDEN, "this hand-off has expired",
                           student_hint="open the notebook again from your course page")
    target = Target(course_, student, notebook)
    if (target.course, target.user) != (course, user):
        raise NbunitsError(Code.FORBIDDEN, "this hand-off is for another student",
                           student_hint="open the notebook from your course page")
    return Handoff(target, reset, locale, destination)
