"""What a student does from inside their notebook: the Course menu (reset, share,
student id) and the newer-version banner, with the capability alone (an LTI-only
course: the legacy link off), in the course's cross-site iframe."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import nbformat
import pytest

from testbed.browser import Opened, open_exercise, save_notebook
from testbed.sites import CHROMIUM, framing_site, launch_chromium

from .conftest import LMS, REPO, SERVER, SHARED_IN_BOX, Nbunits, client

COURSE = "s16"
NOTEBOOK = "welcome.ipynb"


def set_course(nb: Nbunits, **settings: str) -> None:
    """Change course settings as an admin would (the dispatcher reads them per launch)."""
    path = f"/etc/nbunits/courses/{COURSE}.toml"
    lines = nb.box.read_file(path).splitlines()
    for key, value in settings.items():
        lines = [line for line in lines if not line.startswith(f"{key} =")] + [f'{key} = "{value}"']
    nb.box.write_file(path, "\n".join(lines) + "\n")


def publish_new_cell(nb: Nbunits, source: Path, text: str) -> None:
    """The course team adds a cell to the notebook and updates the course."""
    path = source / NOTEBOOK
    master = nbformat.read(path, 4)
    master.cells.append(nbformat.v4.new_code_cell(text))
    nbformat.write(master, path)
    nb.nbunits("course", "update", COURSE)


@pytest.fixture(scope="module")
def source(nb: Nbunits) -> Path:
    folder = nb.shared / COURSE
    shutil.copytree(REPO / "examples" / "demo", folder)
    nb.nbunits("course", "add", COURSE, "--dir", f"{SHARED_IN_BOX}/{COURSE}",
               "--legacy", "open")
    set_course(nb, lms_origin=f"https://{LMS}")
    return folder


def actions(opened: Opened) -> str:
    return opened.prefix.replace("/nb/", "/_nbunits/student/", 1)


async def post(session: aiohttp.ClientSession, url: str, notebook: str = NOTEBOOK
               ) -> tuple[int, Any]:
    async with session.post(url, json={"notebook": notebook}) as resp:
        return resp.status, json.loads(await resp.text() or "null") \
            if resp.content_type == "application/json" else await resp.text()


def test_actions_need_only_the_capability(nb: Nbunits, source: Path) -> None:
    student = secrets.token_hex(16)

    async def go() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, NOTEBOOK, student)
            set_course(nb, legacy="off")  # LTI only from now on
            api = actions(opened)
            status, info = await post(session, api + "info")
            assert status == 200 and info["student_id"] == student and not info["newer"], info
            # nginx refuses another capability, a GET, an unknown action.
            for method, url in (("POST", f"/_nbunits/student/{COURSE}/{opened.user}/{'A' * 22}/info"),
                                ("GET", api + "info"), ("POST", api + "delete")):
                async with session.request(method, url, json={"notebook": NOTEBOOK}) as resp:
                    assert resp.status in (403, 404), (method, url, resp.status)

            # Share a static version; the link shows it, escaped, with nothing that runs.
            await save_notebook(session, opened, "# shared <b>text</b>")
            status, shared = await post(session, api + "share")
            assert status == 200 and shared["url"].startswith("/shared/"), shared
            async with session.get(shared["url"]) as resp:
                page = await resp.text()
                assert resp.status == 200 and "# shared &lt;b&gt;text&lt;/b&gt;" in page
                assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
            assert (await post(session, api + "info"))[1]["url"] == shared["url"]
            assert (await post(session, api + "unshare"))[0] == 200
            async with session.get(shared["url"]) as resp:
                assert resp.status == 404 and "not shared any more" in await resp.text()

            # A newer version: said, with what changed; the reset keeps the old copy.
            await asyncio.to_thread(publish_new_cell, nb, source, "new_in_v2 = 2")
            status, info = await post(session, api + "info")
            assert info["newer"] and any("1 new cell: \u201cnew_in_v2 = 2\u201d" in c
                                         for c in info["changes"]), info
            status, done = await post(session, api + "reset")
            assert status == 200 and done["kept"].startswith("welcome-"), done
            for name, text in ((NOTEBOOK, "new_in_v2"), (done["kept"], "# shared <b>text</b>")):
                async with session.get(f"{opened.prefix}api/contents/{name}",
                                       headers=opened.headers) as resp:
                    assert text in await resp.text(), name
            assert not (await post(session, api + "info"))[1]["newer"]
            # Not a notebook of the course: said in a student's words.
            status, error = await post(session, api + "reset", done["kept"])
            assert status == 404 and "no original" in error["message"], error

    try:
        asyncio.run(go())
    finally:
        set_course(nb, legacy="open")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_the_course_menu_and_banner_in_a_cross_site_iframe(
        nb: Nbunits, source: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    student = secrets.token_hex(16)

    async def edit() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, NOTEBOOK, student)
            await save_notebook(session, opened, "mine = 1")

    asyncio.run(edit())
    publish_new_cell(nb, source, "new_in_v3 = 3")
    ca = nb.site.ca
    assert ca is not None
    link = nb.site.url(f"/ipythonExercice/{COURSE}/{NOTEBOOK}/{student}")
    names = framing_site(ca, nb.site.names, LMS, link)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, names, ca.cert, tmp_path / "home")
        try:
            # Third-party cookies blocked; tall enough for the whole 900-pixel iframe.
            page = browser.new_context(viewport={"width": 1280, "height": 960}).new_page()
            page.goto(f"https://{LMS}/course")
            set_course(nb, legacy="off")  # the page is open: LTI only from now on
            frame = page.frame_locator("#f")
            banner = frame.locator(".nbunits-banner")
            banner.wait_for(timeout=120_000)
            assert "new version" in banner.inner_text() and "new_in_v3" in banner.inner_text()

            def menu(item: str) -> None:
                frame.locator(".lm-MenuBar-itemLabel", has_text="Course").click()
                frame.locator(".lm-Menu-itemLabel", has_text=item).click()

            dialog = frame.locator(".jp-Dialog")
            menu("Show my student id")
            assert frame.locator(".nbunits-student-id").inner_text() == student
            dialog.get_by_role("button", name="Ok").click()
            dialog.wait_for(state="detached")

            menu("Share a static version")
            url = frame.locator(".nbunits-share-link").get_attribute("href")
            assert url and url.startswith(f"https://{SERVER}/shared/"), url
            dialog.get_by_role("button", name="Ok").click()
            dialog.wait_for(state="detached")

            banner.get_by_role("button", name="Reset to the new version").click()
            dialog.get_by_role("button", name="Reset", exact=True).click()
            done = dialog.locator(".jp-Dialog-body")
            done.get_by_text("kept as").wait_for(timeout=30_000)
            kept = done.inner_text()
            dialog.get_by_role("button", name="Ok").click()
            frame.locator(".jp-CodeCell", has_text="new_in_v3").wait_for(timeout=30_000)
            assert banner.count() == 0
        except Exception:
            page.screenshot(path=str(tmp_path / "student.png"))
            raise
        finally:
            browser.close()
            set_course(nb, legacy="open")

    async def check() -> tuple[int, str]:
        async with client(nb) as session:
            assert url is not None
            async with session.get(urlsplit(url).path) as resp:
                return resp.status, await resp.text()

    status, shared = asyncio.run(check())
    assert status == 200 and "mine = 1" in shared  # the static version, as shared
    assert "welcome-" in kept


# Words that belong to admins, never on a student's page.
ADMIN_WORDS = ("nginx", "nbunits ", "journal", "systemctl", "admin", "Traceback")


def test_pages_a_student_may_meet_are_written_for_them(nb: Nbunits, source: Path) -> None:
    student, html = secrets.token_hex(16), {"Accept": "text/html"}
    nb.add_course("gone16")

    async def go() -> dict[str, tuple[int, str]]:
        pages = {}
        async with client(nb) as session:
            async def get(name: str, path: str) -> None:
                async with session.get(path, headers=html, allow_redirects=False) as resp:
                    pages[name] = (resp.status, await resp.text())

            opened = await open_exercise(session, COURSE, "data-and-plots.ipynb", student)
            await get("bad capability", f"/nb/{COURSE}/{opened.user}/{'A' * 22}/tree")
            await get("no capability", f"/nb/{COURSE}/{opened.user}/tree")
            await get("nothing there", "/nothing/here")
            gone = await open_exercise(session, "gone16", NOTEBOOK, student)
            await asyncio.to_thread(nb.nbunits, "course", "remove", "gone16", "--yes")
            await get("course gone", f"{gone.prefix}tree")
            (source / "data-and-plots.ipynb").unlink()
            await asyncio.to_thread(nb.nbunits, "course", "update", COURSE)
            await get("removed, has a copy",
                      f"/ipythonExercice/{COURSE}/data-and-plots.ipynb/{student}")
            await get("removed, no copy",
                      f"/ipythonExercice/{COURSE}/data-and-plots.ipynb/{secrets.token_hex(16)}")
        return pages

    pages = asyncio.run(go())
    expected = {"bad capability": (403, "This link does not work"),
                "no capability": (403, "This link does not work"),
                "nothing there": (404, "There is nothing at this address"),
                "course gone": (404, "This course is not available"),
                "removed, has a copy": (200, "You still have your own copy"),
                "removed, no copy": (404, "This notebook is not in the course")}
    for name, (status, text) in expected.items():
        got, page = pages[name]
        assert got == status and text in page, (name, got, page[:600])
        assert "course page" in page or "Open my copy" in page, (name, page[:600])
        assert not any(word in page for word in ADMIN_WORDS), (name, page[:600])
    assert f'href="/nb/{COURSE}/' in pages["removed, has a copy"][1]
