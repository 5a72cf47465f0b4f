"""Warned before a stop, told after it: in Chromium, in the course's cross-site iframe,
the Course extension's banner comes some seconds before the server's lifetime ends
or before Jupyter stops it for lack of activity; then the page says the server was
stopped, with a Reload button, and lets go of it: no request of the page's starts a
new server behind the student's back (images/extension/src/stopping.ts)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from testbed.forward import Names
from testbed.sites import CHROMIUM, HttpsSite, framing_page, launch_chromium

from .conftest import LMS, Nbunits

LIFE, IDLE = "stop1", "stop2"
NOTEBOOK = "welcome.ipynb"
TYPED = "# typed just before the end"
# The idle student left the tab in the background: the page is told so, as a browser
# tells a hidden tab, and JupyterLab's polls (which Jupyter counts as activity) pause.
HIDDEN = """Object.defineProperty(document, 'visibilityState', {get: () => 'hidden'});
Object.defineProperty(document, 'hidden', {get: () => true});"""


def student_unit(page: Any) -> tuple[str, str]:
    """The user and the container unit of the notebook framed in `page`."""
    frame = next(f for f in page.frames if "/nb/" in f.url)
    _, _, course, user, *_ = urlsplit(frame.url).path.split("/")
    return user, f"nbunits-{course}@{user}.service"


def wait_until_stopped(nb: Nbunits, unit: str, timeout: float) -> float:
    assert nb.wait_for(unit, {"inactive", "failed"}, timeout) == "inactive", unit
    assert nb.show(unit, "Result")["Result"] == "success"
    return time.monotonic()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_a_banner_before_each_stop_and_a_message_after_it(nb: Nbunits, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    # A 45 s lifetime: the banner a third of it before the end (the course's 5 minutes
    # do not fit), and the page lets go of its server 7.5 s before.
    nb.add_course(LIFE, max_lifetime=45, lms_origin=f"https://{LMS}")
    # Idle: the kernel culled after 10 s, Jupyter stops at its first check (once a
    # minute from its start) 30 s after the last activity; the banner 10 s before.
    nb.add_course(IDLE, kernel_idle_timeout=10, jupyter_idle_timeout=30,
                  proxy_idle_timeout=3600, lms_origin=f"https://{LMS}")
    links = {f"/{course}": nb.site.url(f"/ipythonExercice/{course}/{NOTEBOOK}/"
                                       f"{secrets.token_hex(16)}") for course in (LIFE, IDLE)}
    ca = nb.site.ca
    assert ca is not None
    lms = HttpsSite(ca.server_context(ca.issue(LMS)), framing_page(lambda r: links.get(r.path, "about:blank")))
    names = Names({**nb.site.names.names, LMS: lms.start()})

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, names, ca.cert, tmp_path / "home")
        pages = []
        try:
            background = browser.new_context(viewport={"width": 1280, "height": 960})
            background.add_init_script(HIDDEN)
            pages.append(idle_page := background.new_page())
            idle_page.goto(f"https://{LMS}/{IDLE}")
            pages.append(life_page := browser.new_context(
                viewport={"width": 1280, "height": 960}).new_page())
            life_page.goto(f"https://{LMS}/{LIFE}")
            life, idle = life_page.frame_locator("#f"), idle_page.frame_locator("#f")
            # The idle student runs a cell, saves and leaves the tab.
            idle.locator(".jp-Notebook .jp-CodeCell .cm-content").first.click(timeout=60_000)
            idle_page.keyboard.press("Shift+Enter")
            idle.locator(".jp-OutputArea-output", has_text="Hello from").wait_for(timeout=30_000)
            idle_page.keyboard.press("Control+s")

            # The end of a lifetime: the student types, the banner comes while the
            # server runs, says why, and what they typed is saved.
            life.locator(".jp-Notebook .jp-CodeCell .cm-content").first.click(timeout=60_000)
            life_page.keyboard.type(TYPED)
            banner = life.locator(".nbunits-stop-banner")
            banner.wait_for(timeout=60_000)
            warned = time.monotonic()
            life_user, life_unit = student_unit(life_page)
            assert nb.show(life_unit, "ActiveState")["ActiveState"] == "active"
            assert "stops in" in banner.inner_text() and "at most 45 seconds" in banner.inner_text()
            expect(banner.get_by_role("status")).to_contain_text("Your work is saved")
            banner.get_by_role("button", name="Save now").press("Enter")  # by keyboard
            # Then the page says it is over, over everything, its Reload button focused.
            stopped = life.get_by_role("alertdialog")
            stopped.wait_for(timeout=30_000)
            assert "time limit of 45 seconds" in stopped.inner_text()
            expect(stopped.get_by_role("button", name="Reload")).to_be_focused()
            assert wait_until_stopped(nb, life_unit, 20) - warned >= 5
            saved = (nb.home / life_user / LIFE / NOTEBOOK).read_text()
            assert TYPED in saved

            # Idle, in a background tab: the banner before Jupyter's own stop, then
            # the message once the server is gone.
            banner = idle.locator(".nbunits-stop-banner")
            banner.wait_for(timeout=90_000)
            warned = time.monotonic()
            _, idle_unit = student_unit(idle_page)
            assert nb.show(idle_unit, "ActiveState")["ActiveState"] == "active"
            assert "Any activity" in banner.inner_text()
            assert banner.get_by_role("button", name="Keep it running").is_visible()
            stopped = idle.get_by_role("alertdialog")
            stopped.wait_for(timeout=60_000)
            assert "idle for more than 30 seconds" in stopped.inner_text()
            assert wait_until_stopped(nb, idle_unit, 20) - warned >= 3

            # Neither page started its server again (the lifetime's has been stopped
            # for some 20 s: longer than JupyterLab's polls take to come round).
            for unit in (life_unit, idle_unit):
                assert nb.show(unit, "ActiveState")["ActiveState"] == "inactive", unit
            # Reload starts it again, with the saved work.
            life.get_by_role("button", name="Reload").click()
            life.locator(".jp-Notebook .jp-Cell", has_text=TYPED).wait_for(timeout=60_000)
            assert nb.wait_for(life_unit, {"active"}, 10) == "active"
            assert life.get_by_role("alertdialog").count() == 0
        except Exception:
            for n, page in enumerate(pages):
                page.screenshot(path=str(tmp_path / f"page{n}.png"))
            raise
        finally:
            browser.close()
