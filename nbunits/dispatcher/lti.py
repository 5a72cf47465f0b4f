"""LTI routes: POST /lti/1.1/launch, /lti/1.3/login then POST /lti/1.3/launch; deep
linking (dispatcher/deeplink.py): POST /lti/1.3/deep-link, GET /lti/1.3/jwks.

Thin handlers: find the course the launch claims, verify it (nbunits.dispatcher.launch) with
that course's secret or keys, and only then open the notebook. A launch that does
not verify creates nothing (no user, no unit, no file).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import urlencode, urlsplit

import jwt
from aiohttp import web

from nbunits.core.aliases import canonical
from nbunits.core.config import (
    ConfigError,
    CourseConfig,
    Settings,
    list_courses,
    load_course,
    load_secrets,
)
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.jwks import platform_keys
from nbunits.core.names import Target, check_notebook
from nbunits.core.outcomes import Destination
from nbunits.core.protocol import (
    CourseNotebooksRequest,
    Link,
    Notebooks,
    StaffLinkRequest,
    StaffStudentsRequest,
    Students,
    ask,
)
from nbunits.core.service import log_context
from nbunits.dispatcher import deeplink
from nbunits.dispatcher.language import COURSE_KEY, LAUNCH_LOCALE, decide
from nbunits.dispatcher.launch import (
    Launch,
    LaunchError,
    NonceStore,
    State,
    UnknownKey,
    field,
    issue_state,
    message_type,
    read_state,
    resource_link_launch,
    verify_lti11,
    verify_lti13_token,
)
from nbunits.dispatcher.pages import deep_link_answer, deep_link_page, staff_page

logger = logging.getLogger(__name__)

# Platforms send short opaque hints; a Location longer than nginx's buffer (16k for
# /lti/) would be a 502.
MAX_HINTS = 4096


def hints(params: Mapping[str, object]) -> dict[str, str]:
    return {k: str(params[k]) for k in ("login_hint", "lti_message_hint") if params.get(k)}

NONCES = web.AppKey("lti_nonces", NonceStore)
# Signs the OIDC state. Per process: a restart only fails logins in flight (a
# student clicks again), and no secret has to be provisioned.
STATE_KEY = web.AppKey("lti_state_key", bytes)

# Where the student's score goes, as the verified launch being opened says (app.open_notebook
# hands it to root's helper, which records it).
LAUNCH_DESTINATION = web.RequestKey("nbunits_launch_destination", Destination)

# Where an author's pick of a notebook is posted (deep linking).
DEEP_LINK_PATH = "/lti/1.3/deep-link"

# app.open_notebook: (request, what to open) -> the response.
Opener = Callable[[web.Request, Target], Awaitable[web.StreamResponse]]


def setup(app: web.Application, settings_key: web.AppKey[Settings], opener: Opener) -> None:
    # Kept on disk where systemd made the dispatcher's state folder (the unit's
    # StateDirectory=); in memory elsewhere (aiohttp test clients).
    folder = app[settings_key].nonces_dir
    app[NONCES] = NonceStore(folder if os.access(folder, os.W_OK) else None)
    app[STATE_KEY] = secrets.token_bytes(32)
    handlers = Handlers(settings_key, opener)
    app.router.add_post("/lti/1.1/launch", handlers.launch11)
    app.router.add_route("GET", "/lti/1.3/login", handlers.login13)
    app.router.add_route("POST", "/lti/1.3/login", handlers.login13)
    app.router.add_post("/lti/1.3/launch", handlers.launch13)
    app.router.add_post(DEEP_LINK_PATH, handlers.deep_link_pick)
    app.router.add_get("/lti/1.3/jwks", handlers.jwks)


class Handlers:
    def __init__(self, settings_key: web.AppKey[Settings], opener: Opener) -> None:
        self.settings_key, self.opener = settings_key, opener

    async def launch11(self, request: web.Request) -> web.StreamResponse:
        settings = request.app[self.settings_key]
        body = await request.text()
        form = await request.post()
        course = find_course(settings, lambda c: bool(c.lti11_key)
                             and c.lti_context_id == form.get("context_id"))
        launch = verify_lti11(public_url(request), body, request.headers, course,
                              load_secrets(settings, course.name).lti11_secret,
                              request.app[NONCES])
        return await self.opened(request, launch, "1.1")

    async def login13(self, request: web.Request) -> web.StreamResponse:
        """OIDC login initiation: send the browser to the platform with a state and nonce."""
        settings = request.app[self.settings_key]
        params = {**request.query, **(await request.post())}
        issuer, client_id = str(params.get("iss", "")), str(params.get("client_id", ""))
        if not issuer or not params.get("login_hint"):
            raise LaunchError(Code.BAD_LAUNCH, "this LTI 1.3 login lacks iss or login_hint")

        def accepts(c: CourseConfig) -> bool:
            registration = c.registration(issuer, client_id)
            return registration is not None and bool(registration.auth_url) and (
                not registration.deployment_ids or not params.get("lti_deployment_id")
                or params.get("lti_deployment_id") in registration.deployment_ids)

        courses = find_courses(settings, accepts)
        if not courses:
            raise LaunchError(Code.FORBIDDEN, "no course here accepts this launch",
                              hint="the course's LTI settings must match the LMS's")
        registration = courses[0].registration(issuer, client_id)
        assert registration is not None  # accepts() found it
        nonce = secrets.token_urlsafe(24)
        # Several courses may share one registration (one reusable configuration in
        # the LMS): then the launch's context names the course (course_of).
        state = State(courses[0].name if len(courses) == 1 else "", registration.issuer,
                      registration.client_id, nonce)
        query = {"scope": "openid", "response_type": "id_token", "response_mode": "form_post",
                 "prompt": "none", "client_id": registration.client_id,
                 "redirect_uri": public_url(request, "/lti/1.3/launch"),
                 "login_hint": str(params["login_hint"]), "nonce": nonce,
                 "state": issue_state(request.app[STATE_KEY], state)}
        if params.get("lti_message_hint"):
            query["lti_message_hint"] = str(params["lti_message_hint"])
        # The hints go back in the Location: keep it well within nginx's header buffer.
        if len(urlencode(hints(params))) > MAX_HINTS:
            raise LaunchError(Code.BAD_LAUNCH, "this LTI 1.3 login's hints are too long")
        raise web.HTTPFound(registration.auth_url + "?" + urlencode(query))

    async def launch13(self, request: web.Request) -> web.StreamResponse:
        settings = request.app[self.settings_key]
        form = await request.post()
        state = read_state(request.app[STATE_KEY], str(form.get("state", "")))
        id_token = str(form.get("id_token", ""))
        course = load_course(settings, state.course) if state.course \
            else course_of(settings, state, id_token)
        registration = course.registration(state.issuer, state.client_id)
        if registration is None or not registration.keys:
            raise LaunchError(Code.FORBIDDEN, "LTI 1.3 launches are not set up for this course")
        try:
            keys = platform_keys(Path(registration.keys))
        except (OSError, ValueError, NbunitsError) as exc:
            logger.error("cannot read the platform keys %s: %s", registration.keys, exc,
                         extra={"COURSE": course.name})
            raise ConfigError(Code.BAD_COURSE_CONFIG, "this course's LTI keys cannot be read",
                              student_hint="tell the course team") from exc
        try:
            claims = verify_lti13_token(id_token, course, registration,
                                        state.nonce, keys, request.app[NONCES])
        except UnknownKey as exc:
            # For the admin: a rotation the timer has not fetched yet, or a forgery.
            logger.error("LTI 1.3 launch for client %s signed with an unknown key: %s; "
                         "run nbunits course refresh-keys %s", registration.client_id,
                         exc.message, course.name, extra={"COURSE": course.name})
            raise
        if message_type(claims) == deeplink.DEEP_LINKING_REQUEST:
            return await self.deep_linking(request, deeplink.deep_linking(claims, course))
        launch = resource_link_launch(claims, course,
                                      load_secrets(settings, course.name).lti11_secret)
        return await self.opened(request, launch, "1.3")

    async def deep_linking(self, request: web.Request,
                           asked: deeplink.DeepLinking) -> web.StreamResponse:
        """A verified deep-linking request: the course's notebooks, to pick one."""
        settings = request.app[self.settings_key]
        log_context(asked.course)
        request[COURSE_KEY] = asked.course
        request[LAUNCH_LOCALE] = asked.locale
        deeplink.tool_key(settings.lti_tool_key)  # the answer can be signed: say so now if not
        listed = await ask(settings.helper_socket, CourseNotebooksRequest(asked.course), Notebooks)
        logger.info("LTI 1.3 deep-linking request: %d notebook(s) offered",
                    len(listed.notebooks))
        ticket = deeplink.issue_ticket(deeplink.ticket_key(request.app[STATE_KEY]), asked)
        return deep_link_page(asked.course, listed.notebooks, ticket, DEEP_LINK_PATH,
                              decide(request, settings))

    async def deep_link_pick(self, request: web.Request) -> web.StreamResponse:
        """POST /lti/1.3/deep-link: the author's pick -> the signed answer, once, for
        a notebook of the ticket's course only."""
        settings = request.app[self.settings_key]
        form = await request.post()
        asked, jti = deeplink.read_ticket(deeplink.ticket_key(request.app[STATE_KEY]),
                                          str(form.get("ticket", "")))
        log_context(asked.course)
        request[COURSE_KEY] = asked.course
        request[LAUNCH_LOCALE] = asked.locale
        notebook = check_notebook(str(form.get("notebook", ""))).as_posix()
        listed = await ask(settings.helper_socket, CourseNotebooksRequest(asked.course), Notebooks)
        chosen = next((e for e in listed.notebooks if e.path == notebook), None)
        if chosen is None:
            raise NbunitsError(Code.UNKNOWN_NOTEBOOK, f"no notebook {notebook!r} in this course",
                               student_hint="choose one of the course's notebooks")
        key = deeplink.tool_key(settings.lti_tool_key)
        request.app[NONCES].use(f"dl {jti}")  # once: a second post is refused
        token = deeplink.response(key, asked, notebook,
                                  chosen.title or PurePosixPath(notebook).name,
                                  public_url(request, "/lti/1.3/launch"))
        logger.info("LTI 1.3 deep linking: %s chosen, answer signed for client %s",
                    notebook, asked.client_id)
        return deep_link_answer(asked.return_url, token, notebook, decide(request, settings))

    async def jwks(self, request: web.Request) -> web.StreamResponse:
        """GET /lti/1.3/jwks: the tool's public key (the LMS checks deep-linking answers)."""
        key = deeplink.tool_key(request.app[self.settings_key].lti_tool_key)
        return web.json_response(key.jwks(), headers={"Cache-Control": "max-age=300"})

    async def opened(self, request: web.Request, launch: Launch,
                     version: str) -> web.StreamResponse:
        log_context(launch.course)
        request[COURSE_KEY] = launch.course  # its LMS may frame what follows
        request[LAUNCH_LOCALE] = launch.locale
        logger.info("LTI %s launch of %s (%s)", version, launch.notebook,
                    "staff" if launch.staff else "learner")
        settings = request.app[self.settings_key]
        if launch.staff_page:
            # The course's students, each with a read-only link; only root holds
            # the signing secret, so the helper makes the links.
            listed = await ask(settings.helper_socket, StaffStudentsRequest(
                launch.course, launch.notebook, launch.roster), Students)
            return staff_page(launch.course, launch.notebook, listed,
                              decide(request, settings))
        if launch.staff and launch.view:
            # Staff naming a student: that student's copy, read-only. Only root
            # holds the signing secret, so the helper makes the link.
            reply = await ask(settings.helper_socket, StaffLinkRequest(Target(
                launch.course, canonical(settings, launch.course, launch.view),
                launch.notebook)), Link)
            raise web.HTTPFound(reply.url)
        student = canonical(settings, launch.course, launch.student)
        if launch.destination is not None:
            request[LAUNCH_DESTINATION] = launch.destination
        return await self.opener(request, Target(launch.course, student, launch.notebook))


def find_courses(settings: Settings,
                 matches: Callable[[CourseConfig], bool]) -> list[CourseConfig]:
    found = []
    for name in list_courses(settings):
        try:
            course = load_course(settings, name)
        except NbunitsError as exc:
            logger.warning("skipping course %s: %s", name, exc)
            continue
        if matches(course):
            found.append(course)
    return found


def find_course(settings: Settings, matches: Callable[[CourseConfig], bool]) -> CourseConfig:
    found = find_courses(settings, matches)
    if len(found) != 1:
        if found:
            logger.error("LTI settings match %s courses: %s", len(found),
                         ", ".join(c.name for c in found))
        raise LaunchError(Code.FORBIDDEN, "no course here accepts this launch",
                          hint="the course's LTI settings must match the LMS's")
    return found[0]


def course_of(settings: Settings, state: State, id_token: str) -> CourseConfig:
    """Of the courses sharing the login's registration, the one the token's context
    names. Read unchecked only to choose whose settings and keys check it: the
    launch is then verified in full, its context included (launch_for)."""
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise LaunchError(Code.UNAUTHORIZED, "this launch's token is not valid") from exc
    context = field(claims, "context", "id")
    return find_course(settings, lambda c: c.registration(state.issuer, state.client_id)
                       is not None and bool(c.lti_context_id) and c.lti_context_id == context)


def public_url(request: web.Request, path: str | None = None) -> str:
    """The URL the browser used, as the LMS signed it (TLS may end in front of us)."""
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme)
    url = f"{scheme}://{request.host}{request.path_qs if path is None else path}"
    urlsplit(url)  # a malformed Host fails here, not in the signature check
    return url
