"""Static versions that students share (Course > Share a static version).

A student shares a snapshot of their copy of a notebook: static HTML rendered by
staff.render (sources and outputs escaped, nothing runs), at an unguessable link
/shared/<token> that anyone holding it may read, until the student stops sharing.
Sharing the same notebook again refreshes the snapshot at the same link.

Root's files, read by nbunits-helper only (the dispatcher asks for a page):
    /var/lib/nbunits/shares/<course>/<user>.json   {notebook: token}
    /var/lib/nbunits/shares/pages/<token>.html
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from nbunits.core.config import Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.names import StudentUnits, check_share_token
from nbunits.helper.copies import locked


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


def share(settings: Settings, units: StudentUnits, notebook: str, html: str) -> str:
    """Publish (or refresh) the snapshot of `notebook`; its token."""
    with locked(_index(settings, units)):
        index = load(settings, units)
        token = index.get(notebook) or secrets.token_urlsafe(24)
        page = _page(settings, token)
        page.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(page, html, 0o600)
        if index.get(notebook) != token:
            index[notebook] = token
            _save(settings, units, index)
    return token


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
