"""Static versions that students share (Course > Share a static version).

A student shares a snapshot of their copy of a notebook: static HTML rendered by
staff.render (sources and outputs escaped, nothing runs), at an unguessable link
/shared/<token> that anyone holding it may read, until the student stops sharing.
Sharing the same notebook again refreshes the snapshot at the same link.

Root's files, read by nbunits-helper only (the dispatcher asks for a page):
    /var/lib/nbunits/shares/<course>/<user>.json   {notebook: token}
    /var/lib/nbunits/shares/pages/<token>.html
They are root's disk, so each student has bounds in each course: MAX_SHARES shared
notebooks, a page of MAX_PAGE_BYTES at most, MAX_SHARED_BYTES in all. They go with
the student (`nbunits student delete`) and with the course (`nbunits course
remove`): files_of() lists them for those plans. The index is written before the
page, so every page on disk is named in an index.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from nbunits.core import i18n
from nbunits.core.config import Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.names import USER_RE, StudentUnits, check_share_token
from nbunits.helper.copies import locked

MAX_SHARES = 20  # notebooks one student shares at once, per course
MAX_PAGE_BYTES = 5 * 1024 * 1024  # one static version
MAX_SHARED_BYTES = 20 * 1024 * 1024  # all of one student's, per course


def _index(settings: Settings, units: StudentUnits) -> Path:
    return settings.share_index(units)


def _page(settings: Settings, token: str) -> Path:
    return settings.share_page(check_share_token(token))


def load(settings: Settings, units: StudentUnits) -> dict[str, str]:
    try:
        data = json.loads(_index(settings, units).read_text())
    except FileNotFoundError:
        return {}
    return {str(k): str(v) for k, v in data.items()}


def _save(settings: Settings, units: StudentUnits, index: dict[str, str]) -> None:
    path = _index(settings, units)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(index, indent=1, sort_keys=True) + "\n", 0o600)


def check_room(settings: Settings, units: StudentUnits, notebook: str,
               language: str = i18n.DEFAULT) -> None:
    """Refuse a new share past MAX_SHARES before anything is rendered (share() checks
    again, under the lock). Refusals are in `language`, the student's."""
    _check_room(load(settings, units), notebook, language)


def _check_room(index: dict[str, str], notebook: str, language: str) -> None:
    if notebook not in index and len(index) >= MAX_SHARES:
        raise i18n.error(Code.STUDENT_LIMIT, language, "share.too_many", "share.stop_one",
                         count=MAX_SHARES)


def share(settings: Settings, units: StudentUnits, notebook: str, html: str,
          language: str = i18n.DEFAULT) -> str:
    """Publish (or refresh) the snapshot of `notebook`; its token."""
    size = len(html.encode())
    if size > MAX_PAGE_BYTES:
        raise too_large(language)
    with locked(_index(settings, units)):
        index = load(settings, units)
        _check_room(index, notebook, language)
        token = index.get(notebook) or secrets.token_urlsafe(24)
        others = sum(_size(_page(settings, t)) for nb, t in index.items() if nb != notebook)
        if others + size > MAX_SHARED_BYTES:
            raise i18n.error(Code.STUDENT_LIMIT, language, "share.too_much", "share.stop_one",
                             megabytes=MAX_SHARED_BYTES >> 20)
        if index.get(notebook) != token:
            index[notebook] = token
            _save(settings, units, index)
        page = _page(settings, token)
        page.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(page, html, 0o600)
    return token


def too_large(language: str = i18n.DEFAULT) -> NbunitsError:
    return i18n.error(Code.STUDENT_LIMIT, language, "share.too_large", "share.too_large.hint",
                      megabytes=MAX_PAGE_BYTES >> 20)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def unshare(settings: Settings, units: StudentUnits, notebook: str) -> bool:
    """Stop sharing `notebook`: its link shows nothing from now on."""
    with locked(_index(settings, units)):
        index = load(settings, units)
        token = index.pop(notebook, None)
        if token is None:
            return False
        _page(settings, token).unlink(missing_ok=True)
        _save(settings, units, index)
    return True


def page(settings: Settings, token: str) -> str:
    try:
        return _page(settings, token).read_text()
    except FileNotFoundError:
        raise NbunitsError(
            Code.UNKNOWN_SHARE, "This notebook is not shared any more.",
            student_hint="Its author stopped sharing it, or the link is incomplete: "
                         "ask them for the link again.") from None


def files_of(settings: Settings, units: StudentUnits) -> list[Path]:
    """A student's shares in a course, as files: each page, the index, its lock."""
    index_file = _index(settings, units)
    found = [_page(settings, token) for token in sorted(load(settings, units).values())]
    found += [index_file, index_file.with_suffix(".lock")]
    return [path for path in found if path.exists()]


def students_sharing(settings: Settings, course: str) -> list[str]:
    """The users with an index of shares in `course` (shared once, at least)."""
    folder = settings.course_shares(course)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    return sorted({name.rsplit(".", 1)[0] for name in names if name.endswith((".json", ".lock"))
                   and USER_RE.fullmatch(name.rsplit(".", 1)[0])})
