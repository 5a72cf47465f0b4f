"""The aiohttp application: thin handlers, one error middleware.

The dispatcher is unprivileged and internet-facing. It checks what it can on its
own (names, the course's existence), asks nbunits-helper to do the privileged
part (protocol.py: it imports none of the helper's modules), and redirects the
browser to the student's notebook unit behind nginx.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from nbunits.core import events, i18n
from nbunits.core.aliases import canonical
from nbunits.core.config import Settings, list_courses, load_course, load_secrets
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.i18n import negotiate
from nbunits.core.names import (
    CAPABILITY_RE,
    COURSE_RE,
    USER_RE,
    StudentUnits,
    Target,
    check_course,
    check_notebook,
    check_student_id,
    check_user,
    loggable_path,
)
from nbunits.core.protocol import (
    Html,
    Opened,
    OpenRequest,
    StaffViewRequest,
    StartRequest,
    WakeRequest,
    Woke,
    ask,
)
from nbunits.core.service import log_context
from nbunits.dispatcher import actions, handoff, lti, origins, params
from nbunits.dispatcher.language import COURSE_KEY, LAUNCH_LOCALE, course_default, decide
from nbunits.dispatcher.legacy import check_legacy
from nbunits.dispatcher.pages import (
    busy_page,
    error_page,
    generic_error,
    http_error,
    nginx_page,
    removed_page,
    starting_page,
    student_hint,
    student_message,
    waking_page,
)
from nbunits.dispatcher.reset import reset_requested

logger = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
# On an answer that means "this student's server cannot start" (waiting cannot help).
START_FAILED = ("X-Nbunits-Start", "failed")

# What a course link may carry: ?reset=1, and a signed legacy link's sig and expires.
LEGACY_PARAMS = {"reset": params.FLAG, "sig": params.HEX_SHA256, "expires": params.EXPIRES}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NbunitsError as exc:
        lang = decide(request, request.app[SETTINGS])
        if exc.code == Code.BUSY:  # admission control: the helper logged it for the admin
            return busy_page(exc.message, exc.retry_after or 30,
                             reload=request.method in ("GET", "HEAD"), lang=lang)
        status = exc.meaning.status
        if status is None:  # not written for a student (a bug, a failed command)
            logger.error("%s %s: %s", request.method, log_path(request), exc, exc_info=exc,
                         extra={"ERROR_CODE": exc.code})
            return generic_error(500, lang)
        events.log(logger, events.Event.REFUSED,
                   f"{request.method} {log_path(request)}: {exc.message}",
                   course=None, student=None, ERROR_CODE=exc.code)
        message, hint = student_message(exc.code, exc.message, exc.student_hint, lang, exc.language)
        return error_page(status, message, student_hint(status, hint, lang), lang)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return http_error(exc.status, exc.reason, decide(request, request.app[SETTINGS]))
        raise
    except (ConnectionError, FileNotFoundError) as exc:
        logger.error("cannot reach nbunits-helper: %s", exc)
        return generic_error(503, decide(request, request.app[SETTINGS]))
    except Exception:
        logger.exception("unexpected error for %s", log_path(request))
        return generic_error(500, decide(request, request.app[SETTINGS]))


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only this server's names (and a student's own origin for that student's own
    paths: origins.py): nginx's site already answers others with a 421, but an
    admin's own server block may be a catch-all. Nothing is created for them."""
    if not origins.serves(request.app[SETTINGS].server, request):
        events.log(logger, events.Event.REFUSED, f"refused a request for host {request.host[:100]!r}",
                   course=None, student=None, ERROR_CODE=Code.MISDIRECTED)
        lang = decide(request, request.app[SETTINGS])
        return error_page(421, i18n.text(lang, "status.421.message"), lang=lang)
    return await handler(request)


@web.middleware
async def log_fields_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """COURSE= and STUDENT= on every line logged while handling this request, from
    its path as far as it names them (the handlers refine them: service.log_context)."""
    course, user = request.match_info.get("course", ""), request.match_info.get("user", "")
    log_context(course if COURSE_RE.fullmatch(course) else None,
                user if USER_RE.fullmatch(user) else None, new=True)
    return await handler(request)


async def frame_ancestors(request: web.Request, response: web.StreamResponse) -> None:
    """Every page the dispatcher renders may be framed only where a notebook may: the
    server itself and the course's LMS origins (for a launch whose course is not
    known yet, those of any course: its error must show in the LMS's frame)."""
    if "frame-ancestors" in response.headers.get("Content-Security-Policy", ""):
        return
    settings = request.app[SETTINGS]
    course = request.get(COURSE_KEY) or request.match_info.get("course")
    names = [course] if course else (
        list_courses(settings) if request.path.startswith("/lti/") else [])
    origins: list[str] = []
    for name in names:
        try:
            origins += load_course(settings, name).lms_origins
        except NbunitsError:
            continue
    policy = "frame-ancestors " + " ".join(["'self'", *dict.fromkeys(origins)])
    csp = response.headers.get("Content-Security-Policy")
    response.headers["Content-Security-Policy"] = f"{csp}; {policy}" if csp else policy


async def open_exercise(request: web.Request) -> web.StreamResponse:
    """GET /ipythonExercice/<course>/<notebook path>/<student id> (FUN's xblock URL)."""
    course = check_course(request.match_info["course"])
    notebook, _, student = request.match_info["tail"].rpartition("/")
    settings = request.app[SETTINGS]
    config = load_course(settings, course)
    params.query(request, LEGACY_PARAMS)
    if config.legacy != "open":
        check_legacy(request, config, load_secrets(settings, course), notebook, student)
    # The legacy link carries the same per-course id as Open edX's LTI 1.1 launches;
    # linked ids (nbunits student link-ids) lead to the same work.
    student = canonical(settings, course, check_student_id(student))
    log_context(student=Target(course, student, notebook).user)
    return await open_notebook(request, Target(course, student, notebook),
                               reset=reset_requested(request))


async def open_notebook(request: web.Request, target: Target,
                        *, reset: bool = False, handed: bool = False) -> web.StreamResponse:
    """Open a notebook once a launch is trusted: provision through the helper, then
    send the browser to the student's Jupyter (or to a starting page). One of
    several hosts hands a launch to the student's own host instead (handoff.py)."""
    settings = request.app[SETTINGS]
    request[COURSE_KEY] = target.course
    if not settings.course_file(target.course).is_file():
        raise NbunitsError(Code.UNKNOWN_COURSE, f"unknown course {target.course!r}")

    log_context(target.course, target.user)
    if settings.server.multi_host and not handed:
        logger.info("handing %s to the student's host", target.notebook)
        secret = handoff.read_secret(settings.hosts_secret)
        # 303: an LTI launch's POST becomes the GET that the front hashes by user.
        handed_on = handoff.Handoff(target, reset, request.get(LAUNCH_LOCALE, ""),
                                    request.get(lti.LAUNCH_DESTINATION))
        raise web.HTTPSeeOther(handoff.url(secret, handed_on),
                               headers={"Cache-Control": "no-store"})
    launch_locale = request.get(LAUNCH_LOCALE, "")
    fallback = negotiate("", request.headers.get("Accept-Language"),
                         course_default(settings, target.course))
    reply = await ask(settings.helper_socket, OpenRequest(
        target, reset, launch_locale, fallback, request.get(lti.LAUNCH_DESTINATION)), Opened)
    lang = decide(request, settings, reply.language)
    logger.info("opening %s", target.notebook)
    # The capability in the path is the student's credential (see capability.py);
    # on the student's own origin if they have one (origins.py).
    location = origins.notebook_location(settings.server, request, reply.user, reply.url)
    if reply.removed and wants_html(request):
        return removed_page(location, target.notebook, lang)
    if reply.running:
        raise web.HTTPFound(location)
    # A cold start: the helper starts the server in turn with the host's other
    # starts (admission.py) and answers once Jupyter is up.
    started = ask(settings.helper_socket,
                  StartRequest(target.course, reply.user, reply.capability), Woke)
    if wants_html(request):
        # Shown at once, it says the server is starting and opens the notebook then.
        return await starting_page(request, location, target.notebook, started, lang)
    try:
        woke = await started
    except NbunitsError as exc:
        if exc.code == Code.SERVER_FAILED:
            return start_failed(target.course, reply.user, exc, lang)
        raise
    if woke.retry_after:
        return web.Response(status=503, headers={"Retry-After": str(woke.retry_after)},
                            text="notebook server restarting, retry\n")
    raise web.HTTPFound(location)


def start_failed(course: str, user: str, exc: NbunitsError, lang: str) -> web.Response:
    """A student's server cannot start (no image, a crash at start, its start limit)."""
    logger.warning("%s's server cannot start", user,
                   extra={"COURSE": course, "STUDENT": user, "ERROR_CODE": exc.code})
    message, hint = student_message(exc.code, exc.message, exc.student_hint, lang, exc.language)
    page = error_page(500, message, student_hint(500, hint, lang), lang)
    page.headers[START_FAILED[0]] = START_FAILED[1]
    return page


async def handed_over(request: web.Request) -> web.StreamResponse:
    """GET /_nbunits/handoff/<course>/<user>?t=<token>: a launch another host verified
    (several hosts, handoff.py). The front sent it here by hashing <user>; the token
    must name that same student, so no one chooses a student's host."""
    settings = request.app[SETTINGS]
    if not settings.server.multi_host:
        raise web.HTTPNotFound()
    course, user = request.match_info["course"], request.match_info["user"]
    try:
        check_course(course)
        check_user(user)
    except NbunitsError:
        raise web.HTTPBadRequest() from None
    token = params.query(request, {"t": params.HANDOFF}).get("t", "")
    given = handoff.verify(handoff.read_secret(settings.hosts_secret), course, user, token)
    # What the launch said of the student, as the launching host verified it.
    request[LAUNCH_LOCALE] = given.locale
    if given.destination is not None:
        request[lti.LAUNCH_DESTINATION] = given.destination
    return await open_notebook(request, given.target, reset=given.reset, handed=True)


async def wake(request: web.Request) -> web.StreamResponse:
    """nginx's fallback when a student's socket does not answer (502): start it again,
    then send the browser back to what it asked for.

    nginx builds this URI from what its /nb/ location verified (course, user,
    capability), never from the raw request; the helper checks the capability again.
    """
    course, user, cap = (request.match_info[k] for k in ("course", "user", "cap"))
    try:
        check_course(course)
        check_user(user)
    except NbunitsError:
        raise web.HTTPBadRequest() from None
    if not CAPABILITY_RE.fullmatch(cap):
        raise web.HTTPBadRequest()
    fields = {"COURSE": course, "STUDENT": user}
    try:
        reply = await ask(request.app[SETTINGS].helper_socket, WakeRequest(course, user, cap),
                          Woke)
        retry_after = reply.retry_after
    except NbunitsError as exc:
        if exc.code == Code.UNKNOWN_COURSE:
            raise  # the course is gone: says nothing about its students
        if exc.is_unknown or exc.code == Code.FORBIDDEN:
            # One answer whether or not the student exists.
            raise NbunitsError(Code.FORBIDDEN, "this link is not valid",
                               student_hint="open the notebook from your course page") from None
        if exc.code == Code.SERVER_FAILED:  # say so: waiting cannot help
            return start_failed(course, user, exc, decide(request, request.app[SETTINGS]))
        if exc.meaning.for_students and exc.code != Code.INTERNAL:
            raise  # a refusal (busy: the admission page)
        logger.warning("could not wake %s: %s", user, exc.message, extra=fields)
        retry_after = 2
    back = wake_return(request.headers.get("X-Nbunits-Request-Uri", ""),
                       StudentUnits(course, user).jupyter_prefix(cap))
    if retry_after or back is None:
        if wants_html(request):
            return waking_page(max(retry_after, 2), decide(request, request.app[SETTINGS]))
        return web.Response(status=503, headers={"Retry-After": str(max(retry_after, 1))},
                            text="notebook server restarting, retry\n")
    if request.method in ("GET", "HEAD"):
        raise web.HTTPTemporaryRedirect(back)
    return web.Response(status=503, headers={"Retry-After": "0"},
                        text="notebook server restarted, retry\n")


MAX_RETURN = 4000  # nginx buffers an upstream's headers in 16k (nbunits-locations.conf)


def wake_return(raw: str, prefix: str) -> str | None:
    """Where a woken request goes back to: the browser's own URI if, decoded and
    normalized as nginx does, it is plainly under the verified `prefix` (no dot
    segments, doubled or encoded slashes, control characters); else None (the
    client retries the URI it has)."""
    if len(raw) > MAX_RETURN:
        return None
    path, sep, query = raw.partition("?")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    if not raw.startswith(prefix) or not decoded.startswith(prefix):
        return None
    segments = decoded[len(prefix):].split("/")
    if any(seg in (".", "..") for seg in segments) or "" in segments[:-1] \
            or any(ord(c) < 0x20 or c == "\x7f" for c in decoded):
        return None
    return path + sep + query


def log_path(request: web.Request) -> str:
    """The request's path for a log line: never a capability, a share token or a
    student id (cut as nginx's access log cuts it: names.loggable_path)."""
    return loggable_path(request.path)[:200]


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


async def staff_view(request: web.Request) -> web.Response:
    """GET /staff/<course>/<user>/<notebook>?expires=&sig= : a read-only copy for staff."""
    course, user, notebook = (request.match_info[k] for k in ("course", "user", "notebook"))
    check_course(course)
    check_user(user)
    check_notebook(notebook)
    given = params.query(request, {"expires": params.EXPIRES, "sig": params.HEX_SHA256})
    if len(given) != 2:
        raise NbunitsError(Code.BAD_REQUEST, "this staff link is incomplete")
    settings = request.app[SETTINGS]
    reply = await ask(settings.helper_socket, StaffViewRequest(
        course, user, notebook, given["expires"], given["sig"], decide(request, settings)), Html)
    # Static HTML: nothing in it may run or load; frame-ancestors is added as for
    # every page (the course's LMS, as for its notebooks).
    return web.Response(text=reply.html, content_type="text/html", headers={
        "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                                   "base-uri 'none'; form-action 'none'",
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


async def page(request: web.Request) -> web.Response:
    """What nginx shows for what it refuses itself (a bad capability, no such path)."""
    return nginx_page(request.match_info["kind"], decide(request, request.app[SETTINGS]))


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[log_fields_middleware, host_middleware, error_middleware])
    app[SETTINGS] = settings
    app.on_response_prepare.append(frame_ancestors)
    # No HEAD: a link prefetcher must not create users or start units.
    app.router.add_get("/ipythonExercice/{course}/{tail:.+}", open_exercise, allow_head=False)
    lti.setup(app, SETTINGS, open_notebook)
    app.router.add_get("/_nbunits/health", health)
    app.router.add_get("/staff/{course}/{user}/{notebook:.+}", staff_view)
    app.router.add_route("*", "/_nbunits/wake/{course}/{user}/{cap}", wake)
    # No HEAD, as for course links.
    app.router.add_get("/_nbunits/handoff/{course}/{user}", handed_over, allow_head=False)
    actions.setup(app, SETTINGS)
    app.router.add_get("/_nbunits/page/{kind}", page)
    return app
