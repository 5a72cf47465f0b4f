"""nbunits' own pages pass axe-core's WCAG 2.0/2.1 A and AA rules in Chromium (testbed/axe.py):
the pages a student, a colleague or course staff may see, from the dispatcher, the
helper and nginx; the starting page says how the start goes in a live region that
screen readers announce (role=status)."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbunits.core import i18n
from nbunits.core.pages import busy_html
from nbunits.core.protocol import NotebookEntry, StudentEntry, Students
from nbunits.dispatcher import pages
from testbed import axe
from testbed.browser import open_exercise, save_notebook
from testbed.sites import CHROMIUM, framing_site, launch_chromium

from .conftest import LMS, REPO, SHARED_IN_BOX, Nbunits, client

NOTEBOOK = "welcome.ipynb"
LMS_RETURN = "https://lms.mooc.test/api/lti_consumer/v1/lti/7/lti-dl/response"
# The starting page's live region: each text it takes, recorded as it changes.
RECORD_STATUS = """window.nbunitsStatuses = [];
new MutationObserver(() => {
  const live = document.querySelector('[role=status]');
  const text = live && live.textContent;
  if (text && text !== window.nbunitsStatuses[window.nbunitsStatuses.length - 1])
    window.nbunitsStatuses.push(text);
}).observe(document, {subtree: true, childList: true, characterData: true});"""


def nginx_pages() -> dict[str, str]:
    """The pages nginx says itself (return 503 '...'), as install writes them, in each
    language: a front's when no host answers; a client over its launch rate (a GET's
    and a POST's)."""
    found = {}
    for lang in i18n.available():
        found[f"nginx front, no host ({lang})"] = busy_html(lang, 10, reload=True,
                                                            kind="unavailable")
        for reload in (True, False):
            found[f"nginx launches {'GET' if reload else 'POST'} ({lang})"] = busy_html(
                lang, 30, reload=reload, kind="launches")
    return found


def rendered_pages() -> dict[str, str]:
    """The pages that the box would show only under load or over days (the admission
    cap, a course's end, a failed start): rendered by the code that serves them, in
    each language nbunits has."""
    found = {}
    for lang in i18n.available():
        started = (pages._starting_head(lang, "/nb/x", "welcome.ipynb")
                   + pages._FAILED.format(text_js=pages.js(i18n.text(lang, "starting.cannot_start"))))
        listed = Students((
            StudentEntry(id="a1b2", user="s-a1b2", url="/staff/demo/s-a1b2/w.ipynb?x=1",
                         name="Ada Lovelace", active=1_796_000_000.0, score=(7.0, 10.0)),
            StudentEntry(id="c3d4", user="", url="", name="Carol")), "partial", 2)
        picked = [NotebookEntry("week1/loops.ipynb", "Week 1: loops"),
                  NotebookEntry("welcome.ipynb", "")]
        found |= {f"{name} ({lang})": html for name, html in {
            "busy (GET)": pages.busy_page("The notebook server is full right now.", 30,
                                          reload=True, lang=lang).text or "",
            "busy (POST)": pages.busy_page("Many students are starting at once.", 20,
                                           reload=False, lang=lang).text or "",
            "waking": pages.waking_page(30, lang).text or "",  # (2 s: it reloads before axe ends)
            "course ended": pages.error_page(410, "This course ended on 2026-06-30.",
                                             "Your work was kept until then.", lang).text or "",
            "removed notebook": pages.removed_page("/nb/x", "old.ipynb", lang).text or "",
            "staff list": pages.staff_page("demo", "w.ipynb", listed, lang).text or "",
            "start failed": started,
            "deep-link picker": pages.deep_link_page("demo", picked, "t.i.cket",
                                                     "/lti/1.3/deep-link", lang).text or "",
            # Without its script, which would send it away before axe ends.
            "deep-link answer": re.sub(r"<script>.*</script>", "", pages.deep_link_answer(
                LMS_RETURN, "a.b.c", "week1/loops.ipynb", lang).text or ""),
        }.items()}
    return found | nginx_pages()


def check(page: Any, name: str, script: str, problems: dict[str, list[str]]) -> None:
    found = axe.violations(page, script)
    if found:
        problems[name] = found


def report(problems: dict[str, list[str]]) -> str:
    return "\n".join(f"{name}:\n  " + "\n  ".join(lines) for name, lines in problems.items())


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_nbunits_pages_pass_axe_wcag_aa_and_the_start_is_announced(
        nb: Nbunits, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    script = axe.source()
    student, starting = secrets.token_hex(16), secrets.token_hex(16)

    async def prepare() -> tuple[str, str, str]:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", NOTEBOOK, student)
            await save_notebook(session, opened, "# for the staff and the share")
            api = opened.prefix.replace("/nb/", "/_nbunits/student/", 1)
            async with session.post(api + "share", json={"notebook": NOTEBOOK}) as resp:
                assert resp.status == 200, await resp.text()
                shared = (await resp.json())["url"]
            return opened.user, opened.prefix, shared

    user, prefix, shared = asyncio.run(prepare())
    staff = nb.nbunits("student", "link", "demo", student, NOTEBOOK, "--hours", "1").stdout.strip()
    # Each page over the real stack: (name, path, status).
    served = [
        ("unknown course", f"/ipythonExercice/nosuch/{NOTEBOOK}/{student}", 404),
        ("unknown notebook", f"/ipythonExercice/demo/nosuch.ipynb/{student}", 404),
        ("bad course link", f"/ipythonExercice/demo/{NOTEBOOK}/{student}?reset=maybe", 400),
        ("nginx bad-link", prefix.replace(prefix.split("/")[4], "A" * 22) + "tree", 403),
        ("nginx not-found", "/no/such/page", 404),
        ("shared static page", shared, 200),
        ("staff view", staff, 200),
    ]
    problems: dict[str, list[str]] = {}
    ca = nb.site.ca
    assert ca is not None
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, nb.site.names, ca.cert, tmp_path / "home")
        try:
            # nbunits' pages allow no script (CSP): axe is added all the same.
            context = browser.new_context(bypass_csp=True)
            page = context.new_page()
            # The starting page, a new student's cold start: the notebook it then opens
            # answers 204 here, so the page stays to be checked.
            page.add_init_script(RECORD_STATUS)
            page.route(lambda url: "/nb/" in url, lambda route: route.fulfill(status=204))
            page.goto(nb.site.url(f"/ipythonExercice/demo/{NOTEBOOK}/{starting}"),
                      wait_until="commit")
            status = page.get_by_role("status")
            expect(status).to_have_attribute("aria-live", "polite")
            expect(status).to_contain_text("opening the notebook", timeout=120_000)
            statuses = page.evaluate("window.nbunitsStatuses")
            assert "Starting your notebook server" in statuses[0], statuses
            assert "opening the notebook" in statuses[-1], statuses
            check(page, "starting page", script, problems)
            page.unroute_all()

            for name, path, expected in served:
                response = page.goto(nb.site.url(path) if path.startswith("/") else path)
                assert response is not None and response.status == expected, (name, response)
                check(page, name, script, problems)
            for name, html in rendered_pages().items():
                page.goto("about:blank")  # a new document: its scripts' own globals
                page.set_content(html)
                check(page, name, script, problems)
                if name.startswith("deep-link picker"):  # each notebook, by keyboard
                    page.keyboard.press("Tab")
                    expect(page.locator(":focus")).to_have_text("Week 1: loops")
                    page.keyboard.press("Tab")
                    expect(page.locator(":focus")).to_have_text("welcome.ipynb")
                if "Stop retrying" in html:  # by keyboard: Tab to it, Enter
                    page.keyboard.press("Tab")
                    expect(page.locator(":focus")).to_have_text("Stop retrying")
                    page.keyboard.press("Enter")
                    expect(page.get_by_text("Stopped: reload this page")).to_be_visible()
        except Exception:
            page.screenshot(path=str(tmp_path / "accessibility.png"))
            raise
        finally:
            browser.close()
    assert not problems, "axe-core WCAG 2.1 AA violations:\n" + report(problems)
    assert user  # (the student whose pages were checked)


COURSE = "a11y"
# The Course menu's items, in order, and the dialog each opens (None: a download).
ITEMS = [("Submit for grading", "not graded"),  # the demo's notebook is not graded: refused
         ("Reset to original", "Replace your copy"), ("Share a static version", "Anyone with this link"),
         ("Stop sharing", "no longer works"), ("Download my work", None),
         ("Show my student id", "Your student id")]
# nbunits' own elements in Jupyter's page; the rest is JupyterLab's (docs/accessibility.md).
OURS = [".nbunits-banner", "#nbunits-course-menu", ".nbunits-dialog"]
FOCUSED = "() => document.activeElement && document.activeElement.textContent"
IN_MENUBAR = "() => !!document.activeElement?.closest('.lm-MenuBar')"


def publish_new_cell(nb: Nbunits, text: str) -> None:
    """The course team adds a cell to the notebook and updates the course."""
    path = nb.shared / COURSE / NOTEBOOK
    master = nbformat.read(path, 4)
    master.cells.append(nbformat.v4.new_code_cell(text))
    nbformat.write(master, path)
    nb.nbunits("course", "update", COURSE)


def add_course(nb: Nbunits) -> None:
    shutil.copytree(REPO / "examples" / "demo", nb.shared / COURSE)
    nb.nbunits("course", "add", COURSE, "--dir", f"{SHARED_IN_BOX}/{COURSE}", "--legacy", "open",
               "--lms-origin", f"https://{LMS}")


def tab_to(page: Any, jupyter: Any, reached: str) -> None:
    """Tab (only the keyboard) until the focus is on what `reached` (a function in
    the framed page) says."""
    for _ in range(20):
        if jupyter.evaluate(reached):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {reached}")


def open_item(page: Any, jupyter: Any, item: str) -> None:
    """By keyboard: Tab to the menu bar, right to Course, down into it, down to `item`."""
    tab_to(page, jupyter, IN_MENUBAR)
    bar = jupyter.locator(".lm-MenuBar-item.lm-mod-active")
    for _ in range(10):
        if bar.inner_text() == "Course":
            break
        page.keyboard.press("ArrowRight")
    assert bar.inner_text() == "Course"
    page.keyboard.press("ArrowDown")  # opens the menu on its first item
    active = jupyter.locator("#nbunits-course-menu .lm-Menu-item.lm-mod-active .lm-Menu-itemLabel")
    for _ in range(len(ITEMS) + 1):
        if active.inner_text() == item:
            return
        page.keyboard.press("ArrowDown")
    raise AssertionError(f"the keyboard never reached {item!r} in the Course menu")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_the_course_menu_and_banner_pass_axe_and_every_action_is_reached_by_keyboard(
        nb: Nbunits, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    script = axe.source()
    add_course(nb)
    student = secrets.token_hex(16)

    async def edit() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, NOTEBOOK, student)
            await save_notebook(session, opened, "mine = 1")

    asyncio.run(edit())
    publish_new_cell(nb, "new_in_v2 = 2")  # the banner: a newer version
    ca = nb.site.ca
    assert ca is not None
    names = framing_site(ca, nb.site.names, LMS,
                         nb.site.url(f"/ipythonExercice/{COURSE}/{NOTEBOOK}/{student}"))
    problems: dict[str, list[str]] = {}
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, names, ca.cert, tmp_path / "home")
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 960}, bypass_csp=True,
                                       accept_downloads=True).new_page()
            page.goto(f"https://{LMS}/course")
            page.frame_locator("#f").locator(".nbunits-banner").wait_for(timeout=120_000)
            jupyter = next(f for f in page.frames if "/nb/" in f.url)
            # What axe says of the whole page, JupyterLab's own widgets included: printed
            # (docs/accessibility.md names them), not ours to fix.
            print("\n".join(["the whole page:", *axe.violations(jupyter, script)]))
            check_ours(jupyter, "the banner", script, problems)
            dialog = jupyter.locator(".jp-Dialog")
            for item, says in ITEMS:
                open_item(page, jupyter, item)
                check_ours(jupyter, "the Course menu", script, problems)
                if says is None:
                    with page.expect_download(timeout=60_000) as download:
                        page.keyboard.press("Enter")
                    assert download.value.suggested_filename.startswith(f"{COURSE}-my-work-")
                    continue
                page.keyboard.press("Enter")
                dialog.get_by_text(says).wait_for(timeout=30_000)
                check_ours(jupyter, item, script, problems)
                page.keyboard.press("Escape")  # closes it (Reset: cancelled)
                dialog.wait_for(state="detached")
            # The banner's button, by Tab: it opens the reset's dialog.
            tab_to(page, jupyter, f"() => ({FOCUSED})() === 'Reset to the new version'")
            page.keyboard.press("Enter")
            dialog.get_by_text("Replace your copy").wait_for(timeout=30_000)
            page.keyboard.press("Escape")
        except Exception:
            page.screenshot(path=str(tmp_path / "course-menu.png"))
            raise
        finally:
            browser.close()
    assert not problems, "axe-core WCAG 2.1 AA violations:\n" + report(problems)


def check_ours(frame: Any, name: str, script: str, problems: dict[str, list[str]]) -> None:
    present = [s for s in OURS if frame.locator(s).count()]
    found = axe.violations(frame, script, present)
    if found:
        problems.setdefault(name, []).extend(found)
