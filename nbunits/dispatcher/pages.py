"""The few pages a student may see from the dispatcher: errors, in plain words."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Sequence
from html import escape
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from aiohttp import web

from nbunits.core import i18n
from nbunits.core.errors import MEANINGS, Code, NbunitsError
from nbunits.core.pages import STYLE, busy_html, js, retrying
from nbunits.core.protocol import NotebookEntry, Students, Woke

logger = logging.getLogger(__name__)

_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
{style}</head>
<body><h1>{title}</h1><p>{message}</p>{hint}</body></html>
"""

# Errors whose own message is an admin's wording ("unknown course 'x'"): the catalog
# key of what a student reads instead (its message, and its hint at key + ".hint").
# Their work is never at stake in these.
STUDENT_MESSAGES = {
    Code.UNKNOWN_COURSE: "error.unknown_course",
    Code.UNKNOWN_NOTEBOOK: "error.unknown_notebook",
    Code.UNKNOWN_STUDENT: "error.not_yours",
    Code.BAD_CAPABILITY: "error.not_yours",
}

# Pages nginx shows for what it refuses itself (nginx/nbunits-locations.conf,
# error_page -> /_nbunits/page/<kind>): (status, catalog key).
NGINX_PAGES = {
    "bad-link": (403, "nginx.bad_link"),
    "not-found": (404, "nginx.not_found"),
}


def status_key(status: int, what: str) -> str:
    """The catalog key of a status's title, message or hint."""
    known = f"status.{status}.{what}"
    return known if known in i18n.catalog(i18n.DEFAULT) else f"status.other.{what}"


def student_message(code: Code, message: str, hint: str | None, lang: str = i18n.DEFAULT,
                    said_in: str = "") -> tuple[str, str | None]:
    """The message and hint a student reads for an error of this code. An error's
    own words are used if they are in `lang` (`said_in`: the language a catalog gave
    them in; "" for English of its own); else the catalog's for its code or status."""
    if said_in and said_in == lang:
        return message, hint
    key = STUDENT_MESSAGES.get(code)
    if key:
        return i18n.text(lang, key), i18n.text(lang, key + ".hint")
    if lang == i18n.DEFAULT and not said_in:
        return message, hint
    status = MEANINGS[code].status or 500
    return i18n.text(lang, status_key(status, "message")), None


def nginx_page(kind: str, lang: str = i18n.DEFAULT) -> web.Response:
    status, key = NGINX_PAGES.get(kind, NGINX_PAGES["not-found"])
    page = error_page(status, i18n.text(lang, key), i18n.text(lang, key + ".hint"), lang)
    page.headers["Cache-Control"] = "no-store"
    return page


_REMOVED = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
{style}</head>
<body><h1>{title}</h1>
<p>{body}</p>
<p><a href="{target}">{open}</a></p>
<p class="hint">{hint}</p></body></html>
"""


def removed_page(target: str, notebook: str, lang: str = i18n.DEFAULT) -> web.Response:
    """A notebook gone from the course that the student has a copy of."""
    body = _REMOVED.format(
        lang=lang, style=STYLE, target=escape(target), title=i18n.html(lang, "removed.title"),
        body=i18n.html(lang, "removed.body", notebook=f"<code>{escape(notebook)}</code>"),
        open=i18n.html(lang, "removed.open"), hint=i18n.html(lang, "removed.hint"))
    return web.Response(text=body, content_type="text/html", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "Content-Language": lang})


def student_hint(status: int, hint: str | None, lang: str = i18n.DEFAULT) -> str | None:
    """The hint a student sees: the error's own student hint, or one for its status.
    Never an admin's hint (a command, a file)."""
    if hint:
        return hint
    key = f"status.{status}.hint"
    return i18n.text(lang, key) if key in i18n.catalog(i18n.DEFAULT) else None


def error_page(status: int, message: str, hint: str | None = None,
               lang: str = i18n.DEFAULT) -> web.Response:
    title = i18n.text(lang, status_key(status, "title"))
    hint_html = f'<p class="hint">{escape(hint)}</p>' if hint else ""
    body = _PAGE.format(lang=lang, style=STYLE, title=escape(title), message=escape(message),
                        hint=hint_html)
    return web.Response(status=status, text=body, content_type="text/html",
                        headers={"Content-Language": lang})


def http_error(status: int, reason: str, lang: str) -> web.Response:
    """aiohttp's own refusals (404, 405...): their reason is English."""
    return error_page(status, reason if lang == i18n.DEFAULT
                      else i18n.text(lang, status_key(status, "message")), lang=lang)


def generic_error(status: int, lang: str) -> web.Response:
    """A failure of ours (500) or the helper out of reach (503), in the student's words."""
    hint = "error.later" if status == 500 else "status.503.hint"
    return error_page(status, i18n.text(lang, status_key(status, "message")),
                      i18n.text(lang, hint), lang)


_STARTING = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<noscript><meta http-equiv="refresh" content="0;url={target}"></noscript>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}}
li.done{{color:#17694a}} li.now{{font-weight:bold}} li.failed{{color:#b22}}</style></head>
<body><main><h1>{title}</h1>
<ol><li class="done">{copy_ready}</li>
<li class="now" id="step" aria-current="step">{server} <span id="secs"></span></li>
<li>{opening}</li></ol>
<p id="note" role="status" aria-live="polite">{usually}</p></main>
<script>
const target = {target_js}, t0 = Date.now();
const secs = document.getElementById("secs"), note = document.getElementById("note");
const timer = setInterval(() => {{
  const s = Math.round((Date.now() - t0) / 1000);
  secs.textContent = s + " s";
  if (s >= 10) note.textContent = {many_js};
  if (s >= 150) failed({did_not_start_js});  // its end never came
}}, 500);
// The note is a live region (role=status): screen readers say each new text of it.
function opening() {{
  clearInterval(timer);
  note.textContent = {ready_js};
}}
function failed(text) {{
  document.getElementById("step").className = "failed";
  secs.remove();
  document.title = {failed_title_js};
  note.textContent = text;
  clearInterval(timer);
}}
</script>
"""
# The rest of the page, sent when the helper answers (the response is streamed).
_STARTED = '<script>opening()</script><script>location.replace(target)</script></body></html>\n'
_RETRY = '<script>setTimeout(() => location.replace(target), {ms})</script></body></html>\n'
_FAILED = '<script>failed({text_js})</script></body></html>\n'


def _starting_head(lang: str, target: str, notebook: str) -> str:
    def t(key: str) -> str:
        return i18n.html(lang, key)

    return _STARTING.format(
        lang=lang, target=escape(target), target_js=js(target), title=t("starting.title"),
        copy_ready=i18n.html(lang, "starting.copy_ready",
                             notebook=f"<code>{escape(notebook)}</code>"),
        server=t("starting.server"), opening=t("starting.opening"),
        usually=t("starting.usually"), many_js=js(i18n.text(lang, "starting.many")),
        ready_js=js(i18n.text(lang, "starting.ready")),
        did_not_start_js=js(i18n.text(lang, "starting.did_not_start")),
        failed_title_js=js(i18n.text(lang, "starting.failed_title")))


async def starting_page(request: web.Request, target: str, notebook: str,
                        started: Awaitable[Woke], lang: str = i18n.DEFAULT) -> web.StreamResponse:
    """Shown at once while a student's server starts (in turn with others: it may
    take a while), then opens the notebook: the page is sent in two parts, the
    second when `started` (the helper's answer) is in."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
        "Content-Language": lang,
        "X-Accel-Buffering": "no"})  # nginx passes the first part on at once
    await response.prepare(request)
    await response.write(_starting_head(lang, target, notebook).encode())
    did_not_start = i18n.text(lang, "starting.did_not_start")
    try:
        woke = await started
        tail = _RETRY.format(ms=woke.retry_after * 1000) if woke.retry_after else _STARTED
    except NbunitsError as exc:  # the status is sent: the page says it
        logger.warning("the student's server did not start: %s", exc.message,
                       extra={"ERROR_CODE": exc.code})  # COURSE= and STUDENT=: log_context
        tail = _FAILED.format(text_js=js(i18n.text(lang, "starting.cannot_start")
                                          if exc.code == Code.SERVER_FAILED else did_not_start))
    except Exception:  # the helper unreachable or too slow, a bug: the page says so
        logger.exception("the student's server did not start")
        tail = _FAILED.format(text_js=js(did_not_start))
    try:
        await response.write(tail.encode())
        await response.write_eof()
    except ConnectionError:  # the student left; the server started all the same
        pass
    return response


_WAKING = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
{style}</head>
<body><h1>{heading}</h1>
<p>{body}</p>
<p>{retrying}</p>
{script}</body></html>
"""


def waking_page(seconds: int = 2, lang: str = i18n.DEFAULT) -> web.Response:
    words, script = retrying(lang, seconds)
    body = _WAKING.format(lang=lang, style=STYLE, title=i18n.html(lang, "waking.title"),
                          heading=i18n.html(lang, "waking.heading"),
                          body=i18n.html(lang, "waking.body"), retrying=words, script=script)
    return web.Response(status=503, text=body, content_type="text/html", headers={
        "Retry-After": str(seconds), "Cache-Control": "no-store", "Content-Language": lang})


def busy_page(message: str, retry_after: int, *, reload: bool,
              lang: str = i18n.DEFAULT) -> web.Response:
    """Past an admission cap (admission.py): 503 with Retry-After (core/pages.py).
    The cap's own message is English: another language says the catalog's."""
    body = busy_html(lang, retry_after, reload=reload,
                     message=message if lang == i18n.DEFAULT else None)
    return web.Response(status=503, text=body, content_type="text/html", headers={
        "Retry-After": str(retry_after), "Cache-Control": "no-store", "Content-Language": lang})


_STAFF = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
td,th{{padding:.2em .8em;text-align:left}} code{{font-size:.9em}} .note{{color:#8a4b00}}</style>
</head>
<body><main><h1>{heading}</h1>
<p>{intro} {count}</p>{note}
<table><tr><th scope="col">{student}</th><th scope="col">{active}</th>
<th scope="col">{score}</th><th scope="col">{copy}</th></tr>
{rows}</table></main></body></html>
"""


def staff_page(course: str, notebook: str, listed: Students,
               lang: str = i18n.DEFAULT) -> web.Response:
    """A staff LTI launch naming no student: the course's students (with the LMS's
    list of learners when it gives one), when each was last active, their score for
    `notebook` and a read-only link to their copy."""
    rows = []
    for student in listed.students:
        who = f"<code>{escape(student.id)}</code>" + (
            f" ({escape(student.user)})" if student.user else "")
        if student.name:
            who = f"{escape(student.name)}<br>{who}"
        link = (f'<a href="{escape(student.url)}" target="_blank">'
                f'{i18n.html(lang, "staff.view")}</a>'
                if student.url else i18n.html(lang, "staff.no_copy"))
        active = (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(student.active))
                  if student.active else i18n.html(lang, "staff.never"))
        score = (f"{student.score[0]:g}/{student.score[1]:g}" if student.score
                 else i18n.html(lang, "staff.no_score"))
        rows.append(f"<tr><td>{who}</td><td>{active}</td><td>{score}</td><td>{link}</td></tr>")
    if listed.roster in ("", "failed"):
        count = i18n.html(lang, "staff.count", count=str(sum(1 for s in listed.students
                                                             if s.user)))
    else:  # the LMS's learners come first
        opened = sum(1 for s in listed.students[:listed.learners] if s.user)
        count = i18n.html(lang, "staff.count_roster", count=str(listed.learners),
                          opened=str(opened))
    note = (f'<p class="note" role="status">{i18n.html(lang, "staff.roster_" + listed.roster)}</p>'
            if listed.roster in ("failed", "partial") else "")
    body = _STAFF.format(
        lang=lang, title=i18n.html(lang, "staff.title", course=escape(course)),
        heading=i18n.html(lang, "staff.heading", notebook=f"<code>{escape(notebook)}</code>"),
        intro=i18n.html(lang, "staff.intro"), count=count, note=note,
        student=i18n.html(lang, "staff.student"), active=i18n.html(lang, "staff.active"),
        score=i18n.html(lang, "staff.score"), copy=i18n.html(lang, "staff.copy"),
        rows="\n".join(rows))
    return web.Response(text=body, content_type="text/html", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "Content-Language": lang})


_PICK = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;color:#222}}
ul{{list-style:none;padding:0}} li{{margin:.4em 0}}
button{{font:inherit;padding:.4em .8em;text-align:left;cursor:pointer}}
button:focus{{outline:3px solid #1a5fb4;outline-offset:2px}}
code{{font-size:.9em;color:#555}}</style></head>
<body><main><h1 id="heading">{heading}</h1>
<p>{intro}</p>
<form method="post" action="{action}" aria-labelledby="heading">
<input type="hidden" name="ticket" value="{ticket}">
{choices}
</form></main></body></html>
"""

# The picker posts only to nbunits; the answer's page only to the platform.
_PICK_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'"
_SUBMIT_JS = 'document.getElementById("answer").submit();'


def deep_link_page(course: str, notebooks: Sequence[NotebookEntry], ticket: str, action: str,
                   lang: str = i18n.DEFAULT) -> web.Response:
    """A verified deep-linking launch: the course's notebooks, one button each."""
    rows = [f'<li><button type="submit" name="notebook" value="{escape(entry.path)}">'
            f'{escape(entry.title or PurePosixPath(entry.path).name)}</button> '
            f'<code>{escape(entry.path)}</code></li>' for entry in notebooks]
    choices = (f'<ul>{"".join(rows)}</ul>' if rows
               else f'<p role="status">{i18n.html(lang, "deeplink.none")}</p>')
    body = _PICK.format(
        lang=lang, title=i18n.html(lang, "deeplink.title"),
        heading=i18n.html(lang, "deeplink.heading"),
        intro=i18n.html(lang, "deeplink.intro", course=f"<code>{escape(course)}</code>"),
        action=escape(action), ticket=escape(ticket), choices=choices)
    return web.Response(text=body, content_type="text/html", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "Content-Language": lang, "Content-Security-Policy": _PICK_CSP})


_ANSWER = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;color:#222}}</style></head>
<body><main><h1>{title}</h1>
<form id="answer" method="post" action="{url}">
<input type="hidden" name="JWT" value="{jwt}">
<p role="status">{sending}</p>
<button type="submit">{send}</button>
</form></main><script>{script}</script></body></html>
"""


def deep_link_answer(return_url: str, token: str, notebook: str,
                     lang: str = i18n.DEFAULT) -> web.Response:
    """The signed answer, posted by the browser to the platform (LTI Deep Linking
    2.0: an auto-submitted form); its button sends it without script."""
    digest = base64.b64encode(hashlib.sha256(_SUBMIT_JS.encode()).digest()).decode()
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(return_url))
    body = _ANSWER.format(lang=lang, title=i18n.html(lang, "deeplink.sending_title"),
                          url=escape(return_url), jwt=escape(token),
                          sending=i18n.html(lang, "deeplink.sending",
                                            notebook=f"<code>{escape(notebook)}</code>"),
                          send=i18n.html(lang, "deeplink.send"), script=_SUBMIT_JS)
    return web.Response(text=body, content_type="text/html", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "Content-Language": lang,
        "Content-Security-Policy": f"default-src 'none'; style-src 'unsafe-inline'; "
                                   f"script-src 'sha256-{digest}'; base-uri 'none'; "
                                   f"form-action {origin}"})
