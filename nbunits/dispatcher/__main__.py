"""nbunits-dispatcher: serve the app on the socket that systemd passes (Type=notify)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from nbunits.core.config import load_settings
from nbunits.core.service import listen_socket, notify_ready, setup_logging
from nbunits.dispatcher.app import create_app

logger = logging.getLogger("nbunits.dispatcher")


async def serve() -> None:
    settings = load_settings()
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, listen_socket(fallback=settings.dispatcher_socket))
    await site.start()
    notify_ready()
    logger.info("dispatcher ready")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    setup_logging()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
