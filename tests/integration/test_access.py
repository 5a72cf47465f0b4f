"""Only the right student reaches a notebook; it works in a cross-site iframe."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from aiohttp import web

from tests.browser import Opened, open_exercise
from tests.forward import Names

from .conftest import LMS, SERVER, Nbunits, client

CHROMIUM = Path("/usr/bin/chromium")


def _open(nb: Nbunits, course: str, student: str) -> Opened:
    async def go() -> Opened:
        async with client(nb) as session:
            return await open_exercise(session, course, "welcome.ipynb", student)
    return asyncio.run(go())


def _status(nb: Nbunits, path: str) -> int:
    async def go() -> int:
        async with client(nb) as session:
            async with session.get(path, allow_redirects=False) as resp:
                return resp.status
    return asyncio.run(go())


def test_only_the_capability_opens_a_students_server(nb: Nbunits) -> None:
    alice, bob = _open(nb, "demo", secrets.token_hex(16)), _open(nb, "demo", secrets.token_hex(16))
    assert _status(nb, f"{alice.prefix}api/contents/welcome.ipynb") == 200
    bob_base = f"/nb/demo/{bob.user}/"
    for path in (bob_base + "api/contents/welcome.ipynb",                 # no capability
                 f"{bob_base}{alice.token}/api/contents/welcome.ipynb",   # someone else's
                 f"{bob_base}{'A' * 22}/api/contents/welcome.ipynb",      # made up
                 f"/nb/demo/{alice.user}/{bob.token}/tree",
                 f"/nb/other/{alice.user}/{alice.token}/tree"):           # wrong course
        assert _status(nb, path) == 403, path
    # The capability is not on any command line (ps, systemctl show).
    shown = nb.box.systemctl("show", f"nbunits-demo@{alice.user}.service").stdout
    processes = nb.box.run("ps", "-eo", "args").stdout
    assert alice.token not in shown and alice.token not in processes


def test_only_the_courses_lms_may_frame_the_notebook(nb: Nbunits) -> None:
    nb.add_course("framed", lms_origin="https://lms.example.org")
    opened = _open(nb, "framed", secrets.token_hex(16))

    async def headers() -> str:
        async with client(nb) as session:
            async with session.get(f"{opened.prefix}notebooks/welcome.ipynb") as resp:
                return resp.headers.get("Content-Security-Policy", "")

    assert "frame-ancestors 'self' https://lms.example.org" in asyncio.run(headers())


class _ParentSite:
    """The course's page on another site (the LMS), over HTTPS, embedding the exercise link."""

    def __init__(self, context: ssl.SSLContext, iframe_src: str) -> None:
        self.context, self.iframe_src, self.address = context, iframe_src, ""

    def start(self) -> str:
        ready = threading.Event()
        threading.Thread(target=asyncio.run, args=(self._serve(ready),), daemon=True).start()
        assert ready.wait(10)
        return self.address

    async def _serve(self, ready: threading.Event) -> None:
        async def page(request: web.Request) -> web.Response:
            return web.Response(content_type="text/html", text=(
                "<!doctype html><title>Course</title><h1>Week 1</h1>"
                f'<iframe id="exercise" src="{self.iframe_src}" width="1200" height="900"></iframe>'))
        app = web.Application()
        app.router.add_get("/course", page)
        runner = web.AppRunner(app)
        await runner.setup()
        for _ in range(20):  # a free address of 127/8, port 443 as a real site
            address = f"127.{random.randint(64, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            try:
                await web.TCPSite(runner, address, 443, ssl_context=self.context).start()
            except OSError:
                continue
            self.address = address
            break
        ready.set()
        await asyncio.Event().wait()


def browser_home(ca: Path, home: Path) -> dict[str, str]:
    """A HOME whose NSS database trusts the test CA, as an admin's browser trusts
    their CA: Chromium then verifies both sites' certificates for real."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "nbunits test CA",
                    "-i", str(ca)], check=True)
    return {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_a_notebook_in_a_cross_site_iframe_runs_a_cell_without_third_party_cookies(
        nb: Nbunits, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    # Two HTTPS sites with real names: the LMS's page frames the notebook server's.
    ca = nb.site.ca
    assert ca is not None
    nb.add_course("iframe", lms_origin=f"https://{LMS}")
    student = secrets.token_hex(16)
    lms = _ParentSite(ca.server_context(ca.issue(LMS)),
                      nb.site.url(f"/ipythonExercice/iframe/welcome.ipynb/{student}"))
    names = Names({**nb.site.names.names, LMS: lms.start()})

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), env=browser_home(ca.cert, tmp_path / "home"),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--test-third-party-cookie-phaseout",
                  f"--host-resolver-rules={names.chromium_rules()}"])
        try:
            context = browser.new_context()  # blocks third-party cookies
            page = context.new_page()
            page.goto(f"https://{LMS}/course")
            frame = page.frame_locator("#exercise")
            cell = frame.locator(".jp-CodeCell").nth(1)  # the `6 * 7` cell
            cell.locator(".cm-content").click(timeout=120_000)
            page.keyboard.press("Shift+Enter")
            output = frame.locator(".jp-OutputArea-output").filter(has_text="42")
            output.first.wait_for(timeout=120_000)
            inner = page.frames[1]
            assert inner.url.startswith(f"https://{SERVER}/nb/iframe/")
        finally:
            browser.close()
