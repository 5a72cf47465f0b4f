"""A course's interface (its `interface` setting): Notebook 7 or JupyterLab. The link
opens the notebook in it, and the Course menu works there, in the course's
cross-site iframe."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from testbed.sites import CHROMIUM, framing_site, launch_chromium

from .conftest import LMS, SERVER, Nbunits, client

LAB = "lab1"
NOTEBOOK = "welcome.ipynb"


@pytest.fixture(scope="module")
def lab(nb: Nbunits) -> str:
    nb.add_course(LAB, interface="lab", lms_origin=f"https://{LMS}")
    return LAB


def launch(nb: Nbunits, course: str) -> tuple[str, str, str]:
    async def go() -> tuple[str, str, str]:
        async with client(nb) as session:
            link = f"/ipythonExercice/{course}/{NOTEBOOK}/{secrets.token_hex(16)}"
            async with session.get(link, allow_redirects=False) as resp:
                assert resp.status == 302, (resp.status, await resp.text())
                location = urlsplit(resp.headers["Location"]).path
            async with session.get(location) as resp:
                assert resp.status == 200, resp.status
                page = await resp.text()
            app = "JupyterLab" if '"appName": "JupyterLab"' in page else \
                "Jupyter Notebook" if '"appName": "Jupyter Notebook"' in page else page[:300]
            root = "/".join(location.split("/")[:5]) + "/"
            async with session.get(root, allow_redirects=False) as resp:
                assert resp.status == 302, resp.status
                return location, app, urlsplit(resp.headers["Location"]).path[len(root):]
    return asyncio.run(go())


def test_the_link_and_the_server_s_root_open_the_course_s_interface(
        nb: Nbunits, lab: str) -> None:
    location, app, root = launch(nb, "demo")  # no setting: Notebook 7
    assert location.endswith(f"/notebooks/{NOTEBOOK}") and app == "Jupyter Notebook", location
    assert root == "tree", root
    location, app, root = launch(nb, lab)
    assert location.endswith(f"/lab/tree/{NOTEBOOK}") and app == "JupyterLab", (location, app)
    assert root == "lab", root


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_jupyterlab_opens_the_notebook_runs_a_cell_and_has_the_course_menu(
        nb: Nbunits, lab: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ca = nb.site.ca
    assert ca is not None
    student = secrets.token_hex(16)
    link = nb.site.url(f"/ipythonExercice/{lab}/{NOTEBOOK}/{student}")
    names = framing_site(ca, nb.site.names, LMS, link)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, names, ca.cert, tmp_path / "home")
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 960})
            page = context.new_page()
            page.goto(f"https://{LMS}/course")
            frame = page.frame_locator("#f")
            # JupyterLab's own shell, with the notebook open in its dock.
            frame.locator("#jp-main-dock-panel .jp-NotebookPanel").wait_for(timeout=120_000)
            tab = frame.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
            assert tab.inner_text().strip() == NOTEBOOK
            inner = page.frames[1].url
            assert inner.startswith(f"https://{SERVER}/nb/{lab}/") \
                and inner.endswith(f"/lab/tree/{NOTEBOOK}"), inner

            cell = frame.locator(".jp-NotebookPanel .jp-CodeCell").nth(1)  # `6 * 7`
            output = frame.locator(".jp-OutputArea-output").filter(has_text="42")
            for attempt in range(3):  # once more if the kernel was not there yet
                cell.locator(".cm-content").click(timeout=60_000)
                page.keyboard.press("Shift+Enter")
                try:
                    output.first.wait_for(timeout=40_000)
                    break
                except Exception:
                    if attempt == 2:
                        raise

            # One kernel: the one started ahead with the server, which JupyterLab found
            # by the notebook's path (kernel_ahead), not a second one of its own.
            api = inner.split("/lab/tree/")[0] + "/api/"
            asked = "async (url) => (await fetch(url, {cache: 'no-store'})).json()"
            kernels = page.frames[1].evaluate(asked, api + "kernels")
            found = page.frames[1].evaluate(asked, api + "sessions")
            assert len(kernels) == 1 and [s["kernel"]["id"] for s in found] == \
                [kernels[0]["id"]], (kernels, found)

            frame.locator(".lm-MenuBar-itemLabel", has_text="Course").click()
            frame.locator(".lm-Menu-itemLabel", has_text="Share a static version").click()
            shared = frame.locator(".nbunits-share-link").get_attribute("href")
            assert shared and shared.startswith(f"https://{SERVER}/shared/"), shared
            frame.locator(".jp-Dialog").get_by_role("button", name="Ok").click()

            # The share link opens, for anyone: the static version, with the cell's output.
            reader = context.new_page()
            answer = reader.goto(shared)
            assert answer is not None and answer.status == 200
            assert "6 * 7" in reader.content() and "42" in reader.content()
        except Exception:
            page.screenshot(path=str(tmp_path / "lab.png"))
            raise
        finally:
            browser.close()
