"""Reset to original: `?reset=1` on an exercise URL.

The student gets a fresh copy of the current master; the helper keeps their old
copy beside it under a timestamped name (nothing is deleted), then the usual
redirect opens the fresh copy. Without a Jupyter extension there is no menu
entry: the link is in the marker file that announces a newer version.
"""

from __future__ import annotations

from aiohttp import web


def reset_requested(request: web.Request) -> bool:
    """Whether the URL asks for a fresh copy (`?reset=1`)."""
    return request.query.get("reset") == "1"
