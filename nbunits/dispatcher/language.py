"""Which language a request's pages are in (core/i18n.py negotiates; this reads the
request): the launch's locale, else the one remembered for the student (the helper
keeps it), else the browser's Accept-Language, else the course's default."""

from __future__ import annotations

from aiohttp import web

from nbunits.core import i18n
from nbunits.core.config import Settings, load_course
from nbunits.core.errors import NbunitsError

# The course a request turned out to be about, for headers set after the handler.
COURSE_KEY = web.RequestKey("nbunits_course", str)
# The verified launch's locale, as the LMS sent it.
LAUNCH_LOCALE = web.RequestKey("nbunits_launch_locale", str)
# The language decided for this request, once the helper said what it remembers.
LANGUAGE = web.RequestKey("nbunits_language", str)


def course_default(settings: Settings, course: str | None) -> str:
    if not course:
        return i18n.DEFAULT
    try:
        return load_course(settings, course).language
    except NbunitsError:  # an unknown course: its error page is in the browser's language
        return i18n.DEFAULT


def decide(request: web.Request, settings: Settings, remembered: str = "") -> str:
    """The language of this request's pages (and, once `remembered` is known, kept)."""
    if LANGUAGE in request:
        return request[LANGUAGE]
    course = request.get(COURSE_KEY) or request.match_info.get("course")
    language = i18n.negotiate(request.get(LAUNCH_LOCALE) or remembered,
                              request.headers.get("Accept-Language"),
                              course_default(settings, course))
    if remembered or LAUNCH_LOCALE in request:
        request[LANGUAGE] = language
    return language
