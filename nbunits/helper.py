"""nbunits-helper: the privileged side of the dispatcher.

A socket-activated root service listening on /run/nbunits/helper.sock (group
nbunits, 0660: only the dispatcher's user reaches it). The protocol is one JSON
object per line each way:

    -> {"course": "demo", "student": "<edX id>", "notebook": "w1/intro.ipynb"}
    <- {"ok": true, "user": "nb...", "url": "/nb/demo/nb.../notebooks/...", "token": "..."}
    <- {"ok": false, "code": "unknown_course", "message": "...", "hint": "..."}
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

from .config import Settings, load_settings
from .errors import NbunitsError
from .provision import provision
from .service import listen_socket, notify_ready, setup_logging

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024


async def handle_request(settings: Settings, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict) or not all(
        isinstance(request.get(k), str) for k in ("course", "student", "notebook")
    ):
        return {"ok": False, "code": "bad_request", "message": "malformed request"}
    try:
        done = await provision(settings, request["course"], request["student"], request["notebook"])
    except NbunitsError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message, "hint": exc.hint}
    except Exception:
        logger.exception("provisioning failed", extra={"COURSE": request["course"][:64]})
        return {"ok": False, "code": "internal", "message": "internal error, see the journal"}
    return {"ok": True, "user": done.user, "url": done.url, "token": done.token,
            "copied": done.copied}


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


async def request_provision(path: Path, course: str, student: str, notebook: str,
                            timeout: float = 120) -> dict[str, Any]:
    """The client side, used by the dispatcher."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_REQUEST_BYTES)
    try:
        payload = {"course": course, "student": student, "notebook": notebook}
        writer.write(json.dumps(payload).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    reply: dict[str, Any] = json.loads(line)
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
