"""Course staff's read-only view of a student's copy of a notebook.

An admin hands out a link that expires, or a staff LTI launch naming a student
is redirected to one (the helper's staff_link action):

    nbunits student link COURSE STUDENT NOTEBOOK [--hours 24]
    -> /staff/<course>/<user>/<notebook>?expires=<unix time>&sig=<HMAC-SHA256>

The dispatcher passes it to nbunits-helper, which checks the signature (keyed
with the capability secret, which only root reads), reads the copy without
following the student's symlinks, and renders it as static HTML: no kernel, no
script, nothing the student wrote can run in the staff member's browser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from html import escape
from typing import Any

from nbunits.core import i18n
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import staff_path

MAX_HOURS = 24 * 14


def signature(secret: str, course: str, user: str, notebook: str, expires: int) -> str:
    message = f"staff-view/{course}/{user}/{notebook}/{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def link(secret: str, course: str, user: str, notebook: str, hours: float,
         now: float | None = None) -> str:
    if not 0 < hours <= MAX_HOURS:
        raise NbunitsError(Code.BAD_REQUEST, f"a staff link lasts at most {MAX_HOURS} hours")
    expires = int((now or time.time()) + hours * 3600)
    sig = signature(secret, course, user, notebook, expires)
    return f"{staff_path(course, user, notebook)}?expires={expires}&sig={sig}"


def check(secret: str, course: str, user: str, notebook: str, expires: str, sig: str,
          now: float | None = None) -> None:
    if not re.fullmatch(r"[0-9]{1,12}", expires) or not re.fullmatch(r"[0-9a-f]{64}", sig):
        raise NbunitsError(Code.BAD_REQUEST, "this staff link is malformed")
    if int(expires) < (now or time.time()):
        raise NbunitsError(Code.FORBIDDEN, "this staff link has expired",
                           hint="ask an admin for a new one (nbunits student link)")
    expected = signature(secret, course, user, notebook, int(expires))
    if not hmac.compare_digest(expected, sig):
        raise NbunitsError(Code.FORBIDDEN, "this staff link is not valid")


_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
.cell{{margin:1em 0}} pre{{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}}
.md pre{{background:none;border-left:3px solid #ccc}} .out pre{{background:#fff;border-left:3px solid #7a7}}
.label{{color:#555;font-size:.8em}}</style></head>
<body><h1>{title}</h1><p class="label">{note}</p>
{cells}</body></html>
"""


class PageTooLarge(NbunitsError):
    def __init__(self, limit: int) -> None:
        super().__init__(Code.TOO_LARGE, f"this notebook's page would be over {limit} bytes")


@dataclass
class _Budget:
    """What is left of a page's size (characters; None: no limit). Each piece is
    counted before it is escaped (escaping only lengthens it), so a page over the
    limit stops at the piece that passes it, never rendered whole."""

    limit: int | None
    left: int = 0

    def __post_init__(self) -> None:
        self.left = self.limit or 0

    def spend(self, size: int) -> None:
        if self.limit is not None:
            self.left -= size
            if self.left < 0:
                raise PageTooLarge(self.limit)

    def escape(self, value: object) -> str:
        text = _text(value)
        self.spend(len(text))
        html = escape(text)
        self.spend(len(html) - len(text))
        return html


def render(data: bytes, title: str, language: str = i18n.DEFAULT, note: str | None = None,
           limit: int | None = None) -> str:
    """Static HTML of a notebook: sources and text/image outputs, every field escaped;
    its own words in `language`, with `note` under the title (the staff view's if None).

    The notebook is the student's file: any field may hold anything (markup, wrong
    types), so nothing from it reaches the page but through escape() or a checked
    base64 image. With `limit`, a page that would be larger raises PageTooLarge."""
    try:
        nb = json.loads(data)
    except ValueError:
        nb = None
    if not isinstance(nb, dict):
        raise NbunitsError(Code.BROKEN_NOTEBOOK, "this copy is not a readable notebook")
    note = i18n.text(language, "staff.note") if note is None else note
    budget = _Budget(limit)
    budget.spend(len(_PAGE) + len(title) + len(note))
    parts = []
    for cell in _dicts(nb.get("cells")):
        budget.spend(CELL_MARKUP)
        source = budget.escape(cell.get("source", ""))
        if cell.get("cell_type", "code") == "code":
            count = cell.get("execution_count")
            label = escape(str(count)) if isinstance(count, int) else " "
            parts.append(f'<div class="cell"><span class="label">In [{label}]</span>'
                         f"<pre>{source}</pre>{_outputs(cell.get('outputs'), budget)}</div>")
        else:
            parts.append(f'<div class="cell md"><pre>{source}</pre></div>')
    return _PAGE.format(lang=language, title=escape(title), note=escape(note),
                        cells="\n".join(parts))


# A cell's markup around its text, and an output's, at most (characters).
CELL_MARKUP, OUTPUT_MARKUP = 100, 60


def _outputs(outputs: object, budget: _Budget) -> str:
    html = []
    for out in _dicts(outputs):
        budget.spend(OUTPUT_MARKUP)
        data = out.get("data")
        data = data if isinstance(data, dict) else {}
        kind = out.get("output_type")
        if kind == "stream":
            html.append(f"<pre>{budget.escape(out.get('text', ''))}</pre>")
        elif kind == "error":
            html.append(f"<pre>{budget.escape(out.get('ename', ''))}: "
                        f"{budget.escape(out.get('evalue', ''))}</pre>")
        elif "image/png" in data and _is_base64(png := _png(data["image/png"], budget)):
            html.append(f'<img alt="output" src="data:image/png;base64,{png}">')
        elif "text/plain" in data:
            html.append(f"<pre>{budget.escape(data['text/plain'])}</pre>")
    return f'<div class="out">{"".join(html)}</div>' if html else ""


def _png(value: object, budget: _Budget) -> str:
    png = "".join(_text(value).split())
    budget.spend(len(png))  # counted before it is decoded to be checked
    return png


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: object) -> str:
    if isinstance(value, list):
        return "".join(v if isinstance(v, str) else str(v) for v in value)
    return value if isinstance(value, str) else str(value)


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
        return True
    except ValueError:
        return False
