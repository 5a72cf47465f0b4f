"""Only the right student reaches a notebook; it works in a cross-site iframe."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from testbed.browser import Opened, open_exercise
from testbed.forward import Names
from testbed.sites import CHROMIUM, HttpsSite, framing_page, launch_chromium

from .conftest import LMS, SERVER, Nbunits, client


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


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_a_notebook_in_a_cross_site_iframe_runs_a_cell_without_third_party_cookies(
        nb: Nbunits, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    # Two HTTPS sites with real names: the LMS's page frames the notebook server's.
    ca = nb.site.ca
    assert ca is not None
    nb.add_course("iframe", lms_origin=f"https://{LMS}")
    link = nb.site.url(f"/ipythonExercice/iframe/welcome.ipynb/{secrets.token_hex(16)}")
    lms = HttpsSite(ca.server_context(ca.issue(LMS)), framing_page(lambda _: link))
    names = Names({**nb.site.names.names, LMS: lms.start()})

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, names, ca.cert, tmp_path / "home")
        try:
            context = browser.new_context()  # blocks third-party cookies
            page = context.new_page()
            page.goto(f"https://{LMS}/course")
            frame = page.frame_locator("#f")
            cell = frame.locator(".jp-CodeCell").nth(1)  # the `6 * 7` cell
            output = frame.locator(".jp-OutputArea-output").filter(has_text="42")
            # Run the cell as a student does; once more if the first Shift+Enter came
            # before the kernel was there (a loaded machine), never more than 3 times.
            for attempt in range(3):
                cell.locator(".cm-content").click(timeout=120_000)
                page.keyboard.press("Shift+Enter")
                try:
                    output.first.wait_for(timeout=40_000)
                    break
                except Exception:
                    if attempt == 2:
                        page.screenshot(path=str(tmp_path / "iframe.png"))
                        raise
            inner = page.frames[1]
            assert inner.url.startswith(f"https://{SERVER}/nb/iframe/")
        finally:
            browser.close()
