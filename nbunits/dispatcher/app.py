"""The aiohttp application: thin handlers, one error middleware.

The dispatcher is unprivileged and internet-facing. It checks what it can on its
own (names, the course's existence), asks nbunits-helper to do the privileged
part (protocol.py: it imports none of the helper's modules), and redirects the
browser to the student's notebook unit behind nginx.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from ..config import Settings, load_course, load_secrets
from ..errors import NbunitsError
from ..identity import canonical
from ..names import Target, check_course, check_student_id
from ..protocol import Done, Html, Opened, OpenRequest, StaffViewRequest, WakeRequest, ask
from . import lti
from .legacy import check_legacy
from .pages import busy_page, error_page, starting_page, student_hint, waking_page
from .reset import reset_requested

logger = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)

# How the helper's error codes read over HTTP.
STATUS_FOR_CODE = {
    "bad_course": 400,
    "bad_student": 400,
    "bad_notebook": 400,
    "bad_request": 400,
    "bad_launch": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "unknown_course": 404,
    "unknown_notebook": 404,
    "unknown_student": 404,
    "student_collision": 409,
    "bad_home": 409,
    "broken_notebook": 500,
    "bad_course_config": 500,
    "too_large": 500,
    "internal": 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NbunitsError as exc:
        if exc.code == "busy":  # admission control: the helper logged it for the admin
            return busy_page(exc.message, exc.retry_after or 30,
                             reload=request.method in ("GET", "HEAD"))
        status = STATUS_FOR_CODE.get(exc.code)
        if status is None:  # not written for a student (a bug, a failed command)
            logger.error("%s %s: %s", request.method, request.path, exc, exc_info=exc,
                         extra={"ERROR_CODE": exc.code})
            return error_page(500, "Something went wrong on our side.",
                              "Please try again later.")
        logger.warning("%s %s: %s", request.method, request.path, exc.message,
                       extra={"ERROR_CODE": exc.code})
        return error_page(status, exc.message, student_hint(status, exc.student_hint))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_page(exc.status, exc.reason)
        raise
    except (ConnectionError, FileNotFoundError) as exc:
        logger.error("cannot reach nbunits-helper: %s", exc)
        return error_page(503, "The notebook service is not available right now.",
                          "Please try again in a minute.")
    except Exception:
        logger.exception("unexpected error for %s", request.path)
        return error_page(500, "Something went wrong on our side.", "Please try again later.")


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only this server's names: nginx's site already answers others with a 421, but
    an admin's own server block may be a catch-all. Nothing is created for them."""
    names = request.app[SETTINGS].server.names
    if names and host_name(request.host) not in names:
        logger.warning("refused a request for host %r", request.host[:100])
        return error_page(421, "This server does not serve that host name.")
    return await handler(request)


def host_name(host: str) -> str:
    """A Host header without its port."""
    name, _, port = host.rpartition(":")
    return name.lower() if name and port.isdigit() and not name.endswith(":") else host.lower()


async def open_exercise(request: web.Request) -> web.StreamResponse:
    """GET /ipythonExercice/<course>/<notebook path>/<student id> (FUN's xblock URL)."""
    course = check_course(request.match_info["course"])
    notebook, _, student = request.match_info["tail"].rpartition("/")
    settings = request.app[SETTINGS]
    config = load_course(settings, course)
    if config.legacy != "open":
        check_legacy(request, config, load_secrets(settings, course), notebook, student)
    # The legacy link carries the same per-course id as Open edX's LTI 1.1 launches;
    # linked ids (nbunits student link-ids) lead to the same work.
    student = canonical(settings, course, check_student_id(student))
    return await open_notebook(request, Target(course, student, notebook),
                               reset=reset_requested(request))


async def open_notebook(request: web.Request, target: Target,
                        *, reset: bool = False) -> web.StreamResponse:
    """Open a notebook once a launch is trusted: provision through the helper, then
    send the browser to the student's Jupyter (or to a starting page)."""
    settings = request.app[SETTINGS]
    if not settings.course_file(target.course).is_file():
        raise NbunitsError("unknown_course", f"unknown course {target.course!r}")

    reply = await ask(settings.helper_socket, OpenRequest(target, reset), Opened)
    logger.info("opening %s", target.notebook,
                extra={"COURSE": target.course, "STUDENT": reply.user})
    # The capability in the path is the student's credential (see capability.py).
    location = quote(reply.url)
    if not reply.running and wants_html(request):
        # A cold start takes a moment: show that it is happening, not a blank iframe.
        return starting_page(location, probe=quote(reply.prefix) + "api",
                             notebook=target.notebook)
    raise web.HTTPFound(location)


async def wake(request: web.Request) -> web.StreamResponse:
    """nginx's fallback when a student's socket does not answer (502): start it again,
    then send the browser back to what it asked for."""
    course, user = request.match_info["course"], request.match_info["user"]
    try:
        await ask(request.app[SETTINGS].helper_socket, WakeRequest(course, user), Done)
    except NbunitsError as exc:
        if exc.code.startswith("unknown_") or exc.code.startswith("bad_") or exc.code == "busy":
            raise
        logger.warning("could not wake %s: %s", user, exc.message,
                       extra={"COURSE": course, "STUDENT": user})
        if wants_html(request):
            return waking_page()
        return web.Response(status=503, headers={"Retry-After": "2"},
                            text="notebook server restarting, retry\n")
    original = request.raw_path.removeprefix("/_nbunits/wake")
    if request.method in ("GET", "HEAD"):
        raise web.HTTPTemporaryRedirect(original)
    return web.Response(status=503, headers={"Retry-After": "0"},
                        text="notebook server restarted, retry\n")


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


async def staff_view(request: web.Request) -> web.Response:
    """GET /staff/<course>/<user>/<notebook>?expires=&sig= : a read-only copy for staff."""
    reply = await ask(request.app[SETTINGS].helper_socket, StaffViewRequest(
        request.match_info["course"], request.match_info["user"],
        request.match_info["notebook"], request.query.get("expires", ""),
        request.query.get("sig", "")), Html)
    # Static HTML: nothing in it may run, load or be framed elsewhere.
    return web.Response(text=reply.html, content_type="text/html", headers={
        "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[host_middleware, error_middleware])
    app[SETTINGS] = settings
    # No HEAD: a link prefetcher must not create users or start units.
    app.router.add_get("/ipythonExercice/{course}/{tail:.+}", open_exercise, allow_head=False)
    lti.setup(app, SETTINGS, open_notebook)
    app.router.add_get("/_nbunits/health", health)
    app.router.add_get("/staff/{course}/{user}/{notebook:.+}", staff_view)
    app.router.add_route("*", "/_nbunits/wake/nb/{course}/{user}/{rest:.*}", wake)
    return app
