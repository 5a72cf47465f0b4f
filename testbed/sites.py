"""Other sites a browser visits in the tests (the LMS, the learning MFE), over HTTPS
with real names, and Chromium set up to trust the tests' CA and resolve those names."""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import subprocess
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from testbed import handed
from testbed.forward import Names
from testbed.tls import TestCA

CHROMIUM = Path("/usr/bin/chromium")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpsSite:
    """One site: every GET goes to `handler`; served on port 443 of a free address of
    127/8 (the address `start` returns, for the tests' DNS)."""

    def __init__(self, context: ssl.SSLContext, handler: Handler) -> None:
        self.context, self.handler, self.address = context, handler, ""

    def start(self) -> str:
        ready = threading.Event()
        threading.Thread(target=asyncio.run, args=(self._serve(ready),), daemon=True).start()
        assert ready.wait(10) and self.address, "no free loopback address for a site"
        return self.address

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handler)
        runner = web.AppRunner(app)
        await runner.setup()
        for _ in range(20):
            address = f"127.{random.randint(64, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            try:
                await web.TCPSite(runner, address, 443, ssl_context=self.context).start()
            except OSError:
                continue
            self.address = address
            break
        ready.set()
        await asyncio.Event().wait()


def framing_page(src: Callable[[web.Request], str]) -> Handler:
    """A page that frames `src(request)` in an iframe whose id is "f"."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=(
            f"<!doctype html><title>{request.host}</title>"
            f'<iframe id="f" src="{src(request)}" width="1200" height="900"></iframe>'))
    return page


def framing_site(ca: TestCA, names: Names, name: str, src: str) -> Names:
    """A site `name` (an LMS) whose every page frames `src`, served with a certificate
    from `ca`: `names` plus its address, for the browser's DNS."""
    site = HttpsSite(ca.server_context(ca.issue(name)), framing_page(lambda _: src))
    return Names({**names.names, name: site.start()})


def browser_home(ca: Path, home: Path) -> dict[str, str]:
    """A HOME whose NSS database trusts the test CA, as an admin's browser trusts
    their CA: Chromium then verifies every site's certificate for real."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "nbunits test CA",
                    "-i", str(ca)], check=True)
    return {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def launch_chromium(playwright: Any, names: Names, ca: Path, home: Path) -> Any:
    """Headless Chromium that resolves `names` and trusts `ca`, third-party cookies
    blocked (Chrome's coming default); its contexts' traffic is scanned for secrets
    (testbed/handed.py)."""
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), env=browser_home(ca, home),
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--test-third-party-cookie-phaseout",
              f"--host-resolver-rules={names.chromium_rules()}"])
    # What the browser is handed (capabilities in redirects, ids in launches) is
    # recorded for the log-leak test, as for the tests' other clients.
    new_context = browser.new_context
    browser.new_context = lambda **options: handed.observe_browser(new_context(**options))
    return browser
