"""The few pages a student may see from the dispatcher: errors, in plain words."""

from __future__ import annotations

from html import escape

from aiohttp import web

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}}
p.hint{{color:#555}}</style></head>
<body><h1>{title}</h1><p>{message}</p>{hint}</body></html>
"""

TITLES = {
    400: "This link is not valid",
    404: "Not found",
    409: "This account needs an administrator",
    500: "This notebook cannot be opened",
    503: "The notebook service is not available",
}


def error_page(status: int, message: str, hint: str | None = None) -> web.Response:
    title = TITLES.get(status, "Error")
    hint_html = f'<p class="hint">{escape(hint)}</p>' if hint else ""
    body = _PAGE.format(title=escape(title), message=escape(message), hint=hint_html)
    return web.Response(status=status, text=body, content_type="text/html")
