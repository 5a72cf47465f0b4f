"""nbunits-helper: the privileged side of the dispatcher.

A socket-activated root service listening on /run/nbunits/helper.sock (group
nbunits, 0660: only the dispatcher's user reaches it). The protocol is one JSON
object per line each way:

    -> {"action": "open", "course": "demo", "student": "<edX id>", "notebook": "w1/a.ipynb"}
    <- {"ok": true, "user": "nb...", "url": "/nb/demo/nb.../CAP/notebooks/...", "prefix": ...,
        "copied": false, "running": true}
    -> {..., "reset": "1"}: the same, with a fresh copy of the notebook (the old one kept)
    -> {"action": "wake", "course": "demo", "user": "nb..."}
    <- {"ok": true}
    -> {"action": "staff_view", "course", "user", "notebook", "expires", "sig"}
    <- {"ok": true, "html": "..."}
    -> {"action": "staff_link", "course", "student": "<edX id>", "notebook"}
    <- {"ok": true, "url": "/staff/<course>/<user>/<notebook>?expires=...&sig=..."}
    -> {"action": "staff_students", "course", "notebook"}
    <- {"ok": true, "students": [{"user": "nb...", "id": "<edX id>", "url": "/staff/..." or ""}]}
    <- {"ok": false, "code": "unknown_course", "message": "...", "hint": "..."}
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import Settings, load_settings
from .errors import NbunitsError
from .provision import provision, staff_link, staff_students, staff_view, wake
from .service import listen_socket, notify_ready, setup_logging

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024


def _fields(request: dict[str, Any], *names: str) -> list[str]:
    values = [request.get(name) for name in names]
    if not all(isinstance(v, str) for v in values):
        raise NbunitsError("bad_request", f"malformed request: needs {', '.join(names)}")
    return values  # type: ignore[return-value]


async def _open(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    if request.get("reset", "") not in ("", "1"):
        raise NbunitsError("bad_request", "malformed request: reset is \"1\" or absent")
    course, student, notebook = _fields(request, "course", "student", "notebook")
    done = await provision(settings, course, student, notebook, reset=request.get("reset") == "1")
    return {"user": done.user, "url": done.url, "prefix": done.prefix, "copied": done.copied,
            "running": done.running}


async def _wake(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    await wake(settings, *_fields(request, "course", "user"))
    return {}


async def _staff_view(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    html = await staff_view(settings, *_fields(request, "course", "user", "notebook",
                                                "expires", "sig"))
    return {"html": html}


async def _staff_link(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    # Asked by the dispatcher only after a verified staff LTI launch: the signing
    # secret is root's, so the link is made here.
    return {"url": staff_link(settings, *_fields(request, "course", "student", "notebook"))}


async def _staff_students(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    # Asked by the dispatcher only after a verified staff LTI launch naming no student.
    students = await asyncio.to_thread(staff_students, settings,
                                       *_fields(request, "course", "notebook"))
    return {"students": students}


ACTIONS: dict[str, Callable[[Settings, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "open": _open,
    "wake": _wake,
    "staff_view": _staff_view,
    "staff_link": _staff_link,
    "staff_students": _staff_students,
}


async def handle_request(settings: Settings, request: Any) -> dict[str, Any]:
    try:
        if not isinstance(request, dict) or request.get("action", "open") not in ACTIONS:
            raise NbunitsError("bad_request", "malformed request")
        reply = await ACTIONS[request.get("action", "open")](settings, request)
    except NbunitsError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message, "hint": exc.hint}
    except Exception:
        logger.exception("helper request failed")
        return {"ok": False, "code": "internal", "message": "internal error, see the journal"}
    return {"ok": True, **reply}


async def _serve_connection(settings: Settings, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    try:
        line = await reader.readline()
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        reply = await handle_request(settings, request)
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    finally:
        writer.close()


async def ask(path: Path, request: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    """The client side, used by the dispatcher: one request, one reply."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_REQUEST_BYTES)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    reply: dict[str, Any] = json.loads(line)
    if not reply.get("ok"):
        raise NbunitsError(reply.get("code", "internal"), reply.get("message", "error"),
                           hint=reply.get("hint"))
    return reply


async def serve(settings: Settings, sock: socket.socket) -> None:
    server = await asyncio.start_unix_server(
        lambda r, w: _serve_connection(settings, r, w), sock=sock, limit=MAX_REQUEST_BYTES)
    notify_ready()
    async with server:
        await server.serve_forever()


def main() -> None:
    setup_logging()
    settings = load_settings()
    sock = listen_socket(fallback=settings.helper_socket)
    asyncio.run(serve(settings, sock))


if __name__ == "__main__":
    main()
