"""What a student does from inside their Jupyter (the Course extension), and the
static versions they share.

POST /_nbunits/student/<course>/<user>/<capability>/<action> with {"notebook": ...}:
nginx lets it through only with the student's capability (as for /nb/), and the
helper checks it again before acting. Answers are JSON for the extension; an error
carries a message written for the student, in the language of their page (the
extension says it in Accept-Language).
GET /shared/<token>: a static version a student shares, for anyone with the link.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from nbunits.core import i18n
from nbunits.core.config import MAX_GRADING_TIMEOUT, Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.protocol import Html, SharedViewRequest, StudentRequest, StudentState, ask
from nbunits.dispatcher import origins
from nbunits.dispatcher.language import decide
from nbunits.dispatcher.pages import student_hint, student_message

logger = logging.getLogger(__name__)

# A grading takes the course's grading_timeout (at most MAX_GRADING_TIMEOUT) and its
# container's start and stop: the helper bounds it; this only stops a lost answer.
SUBMIT_TIMEOUT = MAX_GRADING_TIMEOUT + 180

# Static HTML: nothing in it may run, load or be framed elsewhere.
STATIC_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'",
    "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def setup(app: web.Application, settings_key: web.AppKey[Settings]) -> None:
    async def action(request: web.Request) -> web.Response:
        return await student_action(request, request.app[settings_key])

    async def shared(request: web.Request) -> web.Response:
        return await shared_view(request, request.app[settings_key])

    app.router.add_post("/_nbunits/student/{course}/{user}/{cap}/{what}", action)
    app.router.add_get("/shared/{token}", shared, allow_head=False)


async def student_action(request: web.Request, settings: Settings) -> web.Response:
    fields = {"COURSE": request.match_info["course"], "STUDENT": request.match_info["user"]}
    lang = decide(request, settings)
    try:
        try:
            body = json.loads(await request.text() or "{}")
        except ValueError:
            body = None
        notebook = body.get("notebook") if isinstance(body, dict) else None
        if not isinstance(notebook, str):
            raise i18n.error(Code.BAD_REQUEST, lang, "action.bad_request")
        reply = await ask(settings.helper_socket, StudentRequest(
            request.match_info["course"], request.match_info["user"],
            request.match_info["cap"], request.match_info["what"], notebook, lang), StudentState,
            timeout=SUBMIT_TIMEOUT if request.match_info["what"] == "submit" else 120)
    except NbunitsError as exc:
        status = exc.meaning.status or 500
        if exc.code != Code.TOO_MANY:  # the helper says those, once a minute per student
            logger.warning("student action %s: %s", request.match_info["what"], exc.message,
                           extra={**fields, "ERROR_CODE": exc.code})
        if status == 500:
            message = f"{i18n.text(lang, 'status.500.message')} {i18n.text(lang, 'error.later')}"
        else:
            message, hint = student_message(exc.code, exc.message, exc.student_hint, lang,
                                            exc.language)
            hint = student_hint(status, hint, lang)
            message += f" {hint}" if hint else ""
        headers = {"Cache-Control": "no-store", "Content-Language": lang}
        if exc.retry_after:  # the student's own bounds, or every worker busy
            headers["Retry-After"] = str(exc.retry_after)
        return web.json_response({"message": message}, status=status, headers=headers)
    except (ConnectionError, FileNotFoundError) as exc:
        logger.error("cannot reach nbunits-helper: %s", exc)
        message = f"{i18n.text(lang, 'status.503.message')} {i18n.text(lang, 'status.503.hint')}"
        return web.json_response({"message": message}, status=503,
                                 headers={"Content-Language": lang})
    # A shared page is on the server's own name, never on a student's own origin.
    url = origins.main_url(settings.server, request, reply.url) if reply.url else reply.url
    answer = {"student_id": reply.student_id, "course": reply.course,
              "notebook": reply.notebook, "newer": reply.newer,
              "changes": list(reply.changes), "kept": reply.kept, "url": url,
              "grade": reply.grade}
    return web.json_response(answer, headers={"Cache-Control": "no-store"})


async def shared_view(request: web.Request, settings: Settings) -> web.Response:
    reply = await ask(settings.helper_socket, SharedViewRequest(request.match_info["token"]),
                      Html)
    return web.Response(text=reply.html, content_type="text/html", headers=STATIC_HEADERS)
