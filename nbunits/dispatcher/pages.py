"""The few pages a student may see from the dispatcher: errors, in plain words."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Sequence
from html import escape

from aiohttp import web

from nbunits.core.errors import Code, NbunitsError
from nbunits.core.protocol import StudentEntry, Woke

logger = logging.getLogger(__name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}}
p.hint{{color:#555}}</style></head>
<body><h1>{title}</h1><p>{message}</p>{hint}</body></html>
"""

TITLES = {
    400: "This link is not valid",
    401: "This launch could not be verified",
    403: "This link does not work",
    404: "Not found",
    409: "This account needs an administrator",
    410: "This course has ended",
    421: "Wrong address",
    500: "This notebook cannot be opened",
    503: "The notebook service is not available",
}


# What a student can do about each kind of error, unless the error says better.
STUDENT_HINTS = {
    400: "Open the notebook again from your course page.",
    401: "Open the notebook again from your course page.",
    403: "Open the notebook from your course page.",
    404: "Check the link on your course page; if it keeps failing, tell the course team.",
    409: "Please tell the course team: an administrator has to look at your account.",
    500: "Please try again in a minute; if it keeps failing, tell the course team.",
    503: "Please try again in a minute.",
}


# Errors whose own message is an admin's wording ("unknown course 'x'"): what a
# student reads instead, as (message, hint). Their work is never at stake in these.
STUDENT_MESSAGES = {
    Code.UNKNOWN_COURSE: (
        "This course is not available on this notebook server (any more).",
        "Your saved work has not been deleted. Open the notebook from your course page; "
        "if this page comes back, tell the course team."),
    Code.UNKNOWN_NOTEBOOK: (
        "This notebook is not in the course (any more).",
        "The course team may have renamed or removed it: open it again from your "
        "course page."),
    Code.UNKNOWN_STUDENT: (
        "This link does not lead to your notebooks (any more).",
        "Open the notebook again from your course page: it gives you a link that works."),
    Code.BAD_CAPABILITY: (
        "This link does not lead to your notebooks (any more).",
        "Open the notebook again from your course page: it gives you a link that works."),
}

# Pages nginx shows for what it refuses itself (nginx/nbunits-locations.conf,
# error_page -> /_nbunits/page/<kind>): (status, message, hint).
NGINX_PAGES = {
    "bad-link": (403, "This link does not work (any more).",
                 "Notebook links are personal and change from time to time. Your work is "
                 "safe: open the notebook again from your course page."),
    "not-found": (404, "There is nothing at this address.",
                  "Open your notebook from your course page."),
}


def student_message(code: Code, message: str, hint: str | None) -> tuple[str, str | None]:
    """The message and hint a student reads for an error of this code."""
    return STUDENT_MESSAGES.get(code, (message, hint))


def nginx_page(kind: str) -> web.Response:
    status, message, hint = NGINX_PAGES.get(kind, NGINX_PAGES["not-found"])
    page = error_page(status, message, hint)
    page.headers["Cache-Control"] = "no-store"
    return page


_REMOVED = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>This notebook was removed from the course</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}}
p.hint{{color:#555}}</style></head>
<body><h1>This notebook was removed from the course</h1>
<p>The course team removed <code>{notebook}</code> from the course, or renamed it.
You still have your own copy, with everything you wrote in it.</p>
<p><a href="{target}">Open my copy</a></p>
<p class="hint">Your course page may link to a newer notebook instead.</p></body></html>
"""


def removed_page(target: str, notebook: str) -> web.Response:
    """A notebook gone from the course that the student has a copy of."""
    body = _REMOVED.format(target=escape(target), notebook=escape(notebook))
    return web.Response(text=body, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def student_hint(status: int, hint: str | None) -> str | None:
    """The hint a student sees: the error's own student hint, or one for its status.
    Never an admin's hint (a command, a file)."""
    return hint or STUDENT_HINTS.get(status)


def error_page(status: int, message: str, hint: str | None = None) -> web.Response:
    title = TITLES.get(status, "Error")
    hint_html = f'<p class="hint">{escape(hint)}</p>' if hint else ""
    body = _PAGE.format(title=escape(title), message=escape(message), hint=hint_html)
    return web.Response(status=status, text=body, content_type="text/html")


_STARTING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Starting your notebook</title>
<noscript><meta http-equiv="refresh" content="0;url={target}"></noscript>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}}
li.done{{color:#17694a}} li.now{{font-weight:bold}} li.failed{{color:#b22}}</style></head>
<body><main><h1>Starting your notebook</h1>
<ol><li class="done">Your own copy of <code>{notebook}</code> is ready.</li>
<li class="now" id="step" aria-current="step">Starting your notebook server&hellip;
<span id="secs"></span></li>
<li>Opening the notebook.</li></ol>
<p id="note" role="status" aria-live="polite">Starting your notebook server: this usually
takes a second or two.</p></main>
<script>
const target = {target_js}, t0 = Date.now();
const secs = document.getElementById("secs"), note = document.getElementById("note");
const timer = setInterval(() => {{
  const s = Math.round((Date.now() - t0) / 1000);
  secs.textContent = s + " s";
  if (s >= 10) note.textContent = "Many students are starting at once: yours is on its way.";
  if (s >= 150) failed({did_not_start_js});  // its end never came
}}, 500);
// The note is a live region (role=status): screen readers say each new text of it.
function opening() {{
  clearInterval(timer);
  note.textContent = "Your notebook server is ready: opening the notebook.";
}}
function failed(text) {{
  document.getElementById("step").className = "failed";
  secs.remove();
  document.title = "Your notebook server could not start";
  note.textContent = text;
  clearInterval(timer);
}}
</script>
"""
# The rest of the page, sent when the helper answers (the response is streamed).
_STARTED = '<script>opening()</script><script>location.replace(target)</script></body></html>\n'
_RETRY = '<script>setTimeout(() => location.replace(target), {ms})</script></body></html>\n'
_FAILED = '<script>failed({text_js})</script></body></html>\n'
CANNOT_START = ("Your notebook server could not start. This is not something you can fix: "
                "the course team can see why in the server's log. Your saved work is safe; "
                "please try again later.")
DID_NOT_START = "Your notebook server did not start. Please reload this page in a minute."


async def starting_page(request: web.Request, target: str, notebook: str,
                        started: Awaitable[Woke]) -> web.StreamResponse:
    """Shown at once while a student's server starts (in turn with others: it may
    take a while), then opens the notebook: the page is sent in two parts, the
    second when `started` (the helper's answer) is in."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})  # nginx passes the first part on at once
    await response.prepare(request)
    await response.write(_STARTING.format(target=escape(target), notebook=escape(notebook),
                                          target_js=_js(target),
                                          did_not_start_js=_js(DID_NOT_START)).encode())
    try:
        woke = await started
        tail = _RETRY.format(ms=woke.retry_after * 1000) if woke.retry_after else _STARTED
    except NbunitsError as exc:  # the status is sent: the page says it
        logger.warning("the student's server did not start: %s", exc.message,
                       extra={"ERROR_CODE": exc.code})  # COURSE= and STUDENT=: log_context
        tail = _FAILED.format(text_js=_js(CANNOT_START if exc.code == Code.SERVER_FAILED
                                          else DID_NOT_START))
    except Exception:  # the helper unreachable or too slow, a bug: the page says so
        logger.exception("the student's server did not start")
        tail = _FAILED.format(text_js=_js(DID_NOT_START))
    try:
        await response.write(tail.encode())
        await response.write_eof()
    except ConnectionError:  # the student left; the server started all the same
        pass
    return response


# A page that tries again by itself: by a script the student can stop (WCAG 2.2.1,
# timing adjustable), not by a timed <meta http-equiv="refresh">.
_RETRYING = ('Retrying by itself in <span id="secs">{seconds}</span> s. '
             '<button type="button" id="stop">Stop retrying</button>')
_COUNTDOWN = """<script>
let left = {seconds};
const secs = document.getElementById("secs");
const timer = setInterval(() => {{ if (--left > 0) secs.textContent = left; else location.reload(); }}, 1000);
document.getElementById("stop").onclick = () => {{
  clearInterval(timer);
  secs.parentNode.textContent = "Stopped: reload this page to try again.";
}};
</script>"""

_WAKING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Restarting your notebook</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}}</style></head>
<body><h1>Restarting your notebook server</h1>
<p>Your notebook server did not start just now. This page tries again by itself;
your saved work is safe.</p>
<p>{retrying}</p>
{script}</body></html>
"""


def waking_page(seconds: int = 2) -> web.Response:
    body = _WAKING.format(retrying=_RETRYING.format(seconds=seconds),
                          script=_COUNTDOWN.format(seconds=seconds))
    return web.Response(status=503, text=body,
                        content_type="text/html",
                        headers={"Retry-After": str(seconds), "Cache-Control": "no-store"})


_BUSY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>The notebook server is full</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}}</style></head>
<body><h1>The notebook server is full right now</h1>
<p>{message} {action}</p>
<p>Nothing is lost: your saved work is safe.</p>
{script}</body></html>
"""

def busy_page(message: str, retry_after: int, *, reload: bool) -> web.Response:
    """Past an admission cap (admission.py): 503 with Retry-After. A GET (a course
    link, a bookmarked notebook) is retried by the page itself; a POST (an LTI
    launch) cannot be replayed, so the student opens the exercise again."""
    if reload:
        action = _RETRYING.format(seconds=retry_after)
        script = _COUNTDOWN.format(seconds=retry_after)
    else:
        action = f"Please open the exercise again from your course in {retry_after} s."
        script = ""
    body = _BUSY.format(message=escape(message), action=action, script=script)
    return web.Response(status=503, text=body, content_type="text/html", headers={
        "Retry-After": str(retry_after), "Cache-Control": "no-store"})


def _js(text: str) -> str:
    """A JSON string literal that is also safe inside a <script> element."""
    return json.dumps(text).replace("<", "\\u003c")


_STAFF = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Students of {course}</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;color:#222}}
td,th{{padding:.2em .8em;text-align:left}} code{{font-size:.9em}}</style></head>
<body><h1>Students' copies of <code>{notebook}</code></h1>
<p>Course staff view: each link opens a student's copy read-only; links expire in an
hour (launch again for new ones). {count}</p>
<table><tr><th>Student (LMS id)</th><th>Copy</th></tr>
{rows}</table></body></html>
"""


def staff_page(course: str, notebook: str, students: Sequence[StudentEntry]) -> web.Response:
    """A staff LTI launch naming no student: the course's students, with links."""
    rows = []
    for student in students:
        link = (f'<a href="{escape(student.url)}" target="_blank">read-only view</a>'
                if student.url else "no copy yet")
        rows.append(f"<tr><td><code>{escape(student.id)}</code> "
                    f"({escape(student.user)})</td><td>{link}</td></tr>")
    count = f"{len(students)} student(s) have opened a notebook of this course."
    body = _STAFF.format(course=escape(course), notebook=escape(notebook), count=count,
                         rows="\n".join(rows))
    return web.Response(text=body, content_type="text/html", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
