"""A TCP port on 127.0.0.1 forwarded to a unix socket (nginx inside a box).

Boxes have networks of their own; a browser on this machine reaches their nginx
through this. Used by the demo and by the browser tests.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path


class Forwarder:
    """127.0.0.1:PORT -> nginx's unix socket in the box, in a background thread."""

    def __init__(self, port: int, socket_path: Path) -> None:
        self.port, self.socket_path = port, socket_path

    def start(self) -> None:
        ready = threading.Event()
        threading.Thread(target=asyncio.run, args=(self._serve(ready),), daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port}")

    async def _serve(self, ready: threading.Event) -> None:
        server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        ready.set()
        async with server:
            await server.serve_forever()

    async def _forward(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            box_r, box_w = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, box_w), self._pipe(box_r, client_w))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
