"""Who may use the legacy link /ipythonExercice/<course>/<notebook>/<student id>.

FUN's xblock-ipython puts that link, unsigned, in an iframe: whoever knows (or
guesses) a student id can open that student's notebook. Each course chooses
(`legacy` in its course file):
- "off": refused; the course launches over LTI. The default: a course added
  without a word, or a course file without the key, takes signed launches only;
- "open": anyone with the link, only if the admin chose it (`--legacy open`);
- "referrer": only from pages on the course's `legacy_referrers` domains, as
  nbhosting does. It stops a link pasted elsewhere, not a forger: any program
  sends the Referer it likes;
- "signed": the link carries `sig`, an HMAC-SHA256 of course, notebook, student id
  (and `expires`, optional) keyed by the course's legacy secret, so only who holds
  the secret (the LMS side that writes the link) can make one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from urllib.parse import urlsplit

from aiohttp import web

from nbunits.core.config import CourseConfig, CourseSecrets
from nbunits.core.errors import Code
from nbunits.dispatcher.launch import LaunchError

logger = logging.getLogger(__name__)


def legacy_signature(secret: str, course: str, notebook: str, student: str,
                     expires: int | None = None) -> str:
    message = "\n".join((course, notebook, student, str(expires or "")))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def check_legacy(request: web.Request, course: CourseConfig, secrets: CourseSecrets,
                 notebook: str, student: str, now: float | None = None) -> None:
    """Raise LaunchError unless the course lets this legacy link through."""
    if course.legacy == "open":
        return
    if course.legacy == "off":
        raise LaunchError(Code.FORBIDDEN, "this course does not open notebooks from this kind "
                          "of link", hint="open the notebook from the course page")
    if course.legacy == "referrer":
        if not referred_from(request.headers.get("Referer", ""), course.legacy_referrers):
            raise LaunchError(Code.FORBIDDEN, "this link only works from the course's pages",
                              hint="open the notebook from the course page")
        return
    check_signed(request, course, secrets, notebook, student,
                 time.time() if now is None else now)


def referred_from(referer: str, domains: tuple[str, ...]) -> bool:
    host = (urlsplit(referer).hostname or "").lower()
    return any(host == d or host.endswith("." + d) for d in domains)


def check_signed(request: web.Request, course: CourseConfig, secrets: CourseSecrets,
                 notebook: str, student: str, now: float) -> None:
    if not secrets.legacy_secret:
        logger.error("legacy = signed without a secret: nbunits course update %s "
                     "--legacy-secret-file FILE", course.name, extra={"COURSE": course.name})
        raise LaunchError(Code.FORBIDDEN, "this course's signed links are not set up",
                          hint="tell the course team")
    sig, expires = request.query.get("sig", ""), request.query.get("expires", "")
    if expires and (not re.fullmatch(r"[0-9]{1,12}", expires) or int(expires) < now):
        raise LaunchError(Code.FORBIDDEN, "this link has expired",
                          hint="open the notebook again from the course page")
    expected = legacy_signature(secrets.legacy_secret, course.name, notebook, student,
                                int(expires) if expires else None)
    if not hmac.compare_digest(sig.encode(), expected.encode()):
        raise LaunchError(Code.FORBIDDEN, "this link is not signed for this course",
                          hint="open the notebook from the course page")
