"""'Download my work' (the Course menu): a zip of the student's course folder, from
their own Jupyter, behind their capability alone, in the course's cross-site iframe
(Chromium). Their files only: what they saved, what they added; no link into the
published course, no link of theirs followed, no checkpoints."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from testbed.browser import Opened, open_exercise, save_notebook
from testbed.sites import CHROMIUM, framing_site, launch_chromium

from .conftest import LMS, REPO, SHARED_IN_BOX, Nbunits, client

COURSE = "dl"
NOTEBOOK = "welcome.ipynb"
DOWNLOAD = "nbunits/download"


@pytest.fixture(scope="module")
def course(nb: Nbunits) -> str:
    shutil.copytree(REPO / "examples" / "demo", nb.shared / COURSE)
    nb.nbunits("course", "add", COURSE, "--dir", f"{SHARED_IN_BOX}/{COURSE}", "--legacy", "open",
               "--lms-origin", f"https://{LMS}")
    return COURSE


async def put(session, opened: Opened, path: str, model: dict[str, str]) -> None:  # noqa: ANN001
    async with session.put(opened.url(f"api/contents/{path}"), headers=opened.headers,
                           json=model) as resp:
        assert resp.status in (200, 201), (path, resp.status, await resp.text())


def their_files(folder: Path) -> set[str]:
    """What the archive must hold: the regular files in the folder, no link followed,
    no checkpoints, under the course's name."""
    found = set()
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".ipynb_checkpoints"
                   and not os.path.islink(os.path.join(top, d))]
        found |= {f"{COURSE}/{os.path.relpath(os.path.join(top, f), folder)}" for f in files
                  if not os.path.islink(os.path.join(top, f))}
    return found


def hostile_links(nb: Nbunits, folder: Path, other: str) -> None:
    """Links the student made (their kernel or terminal could): to a system file, to
    another student's folder, to a folder above."""
    uid = nb.uid(folder.parent.name)
    for name, target in (("passwd", "/etc/passwd"), ("extra/other", f"/home/{other}/{COURSE}"),
                         ("extra/up", "../..")):
        os.symlink(target, folder / name)
        os.lchown(folder / name, uid, uid)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_download_my_work_from_the_course_menu_in_a_cross_site_iframe(
        nb: Nbunits, course: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    student, other_student = secrets.token_hex(16), secrets.token_hex(16)

    async def prepare() -> tuple[Opened, Opened]:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, NOTEBOOK, student)
            other = await open_exercise(session, COURSE, NOTEBOOK, other_student)
            await save_notebook(session, opened, "saved_mine = 1")
            # A checkpoint, as the page's "Save and create checkpoint" makes one.
            async with session.post(opened.url(f"api/contents/{NOTEBOOK}/checkpoints"),
                                    headers=opened.headers) as resp:
                assert resp.status == 201, await resp.text()
            await put(session, opened, "extra", {"type": "directory"})
            await put(session, opened, "extra/notes.txt",
                      {"type": "file", "format": "text", "content": "my notes\n"})
            # Another student's capability opens nothing of this one's (nginx: 403).
            async with session.get(f"/nb/{COURSE}/{opened.user}/{other.token}/{DOWNLOAD}",
                                   allow_redirects=False) as resp:
                assert resp.status == 403, resp.status
            return opened, other

    opened, other = asyncio.run(prepare())
    folder = nb.home / opened.user / COURSE
    hostile_links(nb, folder, other.user)
    (nb.home / other.user / COURSE / "theirs.txt").write_text("the other student's\n")
    ca = nb.site.ca
    assert ca is not None
    names = framing_site(ca, nb.site.names, LMS,
                         nb.site.url(f"/ipythonExercice/{COURSE}/{NOTEBOOK}/{student}"))

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, names, ca.cert, tmp_path / "home")
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 960},
                                       accept_downloads=True).new_page()
            page.goto(f"https://{LMS}/course")
            frame = page.frame_locator("#f")
            frame.locator(".jp-Cell", has_text="saved_mine").wait_for(timeout=120_000)
            # An edit the page has not saved yet: the download saves it first.
            frame.locator(".jp-Cell .cm-content").last.click()
            page.keyboard.press("End")
            page.keyboard.type("  # typed_not_saved")
            # By keyboard, as the other items: open the menu, arrows, Enter.
            frame.locator(".lm-MenuBar-itemLabel", has_text="Course").click()
            active = frame.locator(".lm-Menu-item.lm-mod-active .lm-Menu-itemLabel")
            for _ in range(8):
                page.keyboard.press("ArrowDown")
                if active.inner_text() == "Download my work":
                    break
            assert active.inner_text() == "Download my work"
            with page.expect_download(timeout=60_000) as download_info:
                page.keyboard.press("Enter")
            download = download_info.value
            data = Path(download.path()).read_bytes()
            filename = download.suggested_filename
        except Exception:
            page.screenshot(path=str(tmp_path / "download.png"))
            raise
        finally:
            browser.close()

    days = {time.strftime("%Y-%m-%d", time.gmtime()), time.strftime("%Y-%m-%d")}
    assert filename in {f"{COURSE}-my-work-{day}.zip" for day in days}, filename
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        files = {n for n in archive.namelist() if not n.endswith("/")}
        folders = {n for n in archive.namelist() if n.endswith("/")}
        assert files == their_files(folder), files
        assert {f"{COURSE}/{NOTEBOOK}", f"{COURSE}/extra/notes.txt"} <= files, files
        notebook = archive.read(f"{COURSE}/{NOTEBOOK}").decode()
        assert "saved_mine = 1" in notebook and "typed_not_saved" in notebook
        assert archive.read(f"{COURSE}/extra/notes.txt") == b"my notes\n"
        # Nothing of the published course's (data/, helpers.py: links), no checkpoint,
        # and no link of the student's followed: not /etc/passwd, not the other student's.
        assert not any(n.split("/")[1] in ("data", "helpers.py", "README.md", "passwd")
                       for n in archive.namelist()), archive.namelist()
        assert not any(".ipynb_checkpoints" in n or "/extra/other" in n or "/extra/up" in n
                       for n in archive.namelist()), archive.namelist()
        assert not any(b"root:x:0:0" in archive.read(n) or b"the other student" in archive.read(n)
                       for n in files)
        assert f"{COURSE}/extra/" in folders
    assert (folder / ".ipynb_checkpoints").is_dir()  # there was one to leave out
