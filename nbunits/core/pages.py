"""Pages a student may meet that are the same for everyone: a page that tries again
by itself, or asks to open the exercise again, in the student's language. The
dispatcher serves them (dispatcher/pages.py); nginx gets them at install, one per
language, for what it refuses by itself (admin/nginx.py)."""

from __future__ import annotations

import json
from html import escape

from nbunits.core import i18n

STYLE = """<style>body{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}
p.hint{color:#555}</style>"""

# A page that tries again by itself: by a script the student can stop (WCAG 2.2.1,
# timing adjustable), not by a timed <meta http-equiv="refresh">.
_COUNTDOWN = """<script>
let left = {seconds};
const secs = document.getElementById("secs");
const timer = setInterval(() => {{ if (--left > 0) secs.textContent = left; else location.reload(); }}, 1000);
document.getElementById("stop").onclick = () => {{
  clearInterval(timer);
  secs.parentNode.textContent = {stopped_js};
}};
</script>"""

_BUSY = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
{style}</head>
<body><h1>{heading}</h1>
<p>{message} {action}</p>
<p>{safe}</p>
{script}</body></html>
"""


def js(text: str) -> str:
    """A JSON string literal that is also safe inside a <script> element."""
    return json.dumps(text).replace("<", "\\u003c")


def retrying(lang: str, seconds: int) -> tuple[str, str]:
    """The words and the script of a page that tries again by itself."""
    words = (i18n.html(lang, "busy.retrying", seconds=f'<span id="secs">{seconds}</span>')
             + f' <button type="button" id="stop">{i18n.html(lang, "retry.stop")}</button>')
    return words, _COUNTDOWN.format(seconds=seconds,
                                    stopped_js=js(i18n.text(lang, "retry.stopped")))


def busy_html(lang: str, retry_after: int, *, reload: bool, message: str | None = None,
              kind: str = "busy") -> str:
    """A full server's page (`kind` "busy": the helper's caps) or too many launches
    from one address (`kind` "launches": nginx's limit). A GET is retried by the page
    itself (`reload`); a POST (an LTI launch) cannot be replayed, so the student opens
    the exercise again. `message`: the cap's own words (English), else the catalog's."""
    if reload:
        action, script = retrying(lang, retry_after)
    else:
        action = i18n.html(lang, "busy.reopen", seconds=str(retry_after))
        script = ""
    said = message if message is not None else i18n.text(lang, f"{kind}.message")
    return _BUSY.format(lang=lang, style=STYLE, title=i18n.html(lang, f"{kind}.title"),
                        heading=i18n.html(lang, f"{kind}.heading"), message=escape(said),
                        action=action, safe=i18n.html(lang, "busy.safe"), script=script)
