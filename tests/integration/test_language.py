"""Students' pages in their language, through nginx on a real systemd: an LTI 1.1
launch's launch_presentation_locale, remembered for the student; else the browser's
Accept-Language (core/i18n.py; docs/admin.md, "Languages")."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from nbunits.core import i18n
from nbunits.core.names import user_for
from testbed.browser import open_exercise
from testbed.sites import CHROMIUM, framing_site, launch_chromium

from .conftest import LMS, Nbunits, client
from .lms import FORM, SECRET, id_token, lti11_form, lti13_login

STARTING = {"en": "<h1>Starting your notebook</h1>", "fr": "<h1>Démarrage de votre notebook</h1>"}


def launch(nb: Nbunits, student: str, accept_language: str, secret: str = SECRET,
           **params: str) -> tuple[int, str]:
    """An LTI 1.1 launch from a browser: (status, the page it shows)."""
    async def scenario() -> tuple[int, str]:
        async with client(nb) as session:
            async with session.post("/lti/1.1/launch", data=lti11_form(student, secret, **params),
                                    allow_redirects=False, headers={
                                        **FORM, "Accept": "text/html",
                                        "Accept-Language": accept_language}) as resp:
                return resp.status, await resp.text()
    return asyncio.run(scenario())


def starting_in(language: str, page: str) -> bool:
    return f'<html lang="{language}">' in page and STARTING[language] in page


def test_the_launch_locale_chooses_the_language_and_sticks(nb: Nbunits, lti_course: str) -> None:
    student = secrets.token_hex(16)
    user = user_for(student)
    # The LMS says French; the browser prefers English: the LMS wins.
    status, page = launch(nb, student, "en-US,en;q=0.9", launch_presentation_locale="fr-FR")
    assert status == 200 and starting_in("fr", page), page[:600]
    assert "Starting" not in page
    assert nb.box.read_file(f"/var/lib/nbunits/languages/{user}").strip() == "fr"
    # Later, a launch without a locale (the server stopped: a page again) keeps it.
    nb.nbunits("student", "stop", lti_course, user)
    status, page = launch(nb, student, "en-US,en;q=0.9")
    assert status == 200 and starting_in("fr", page), page[:600]


def test_an_lti13_launch_presentation_locale(nb: Nbunits, lti_course: str) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> tuple[int, str]:
        async with client(nb) as session:
            state, nonce = await lti13_login(session)
            token = id_token(nonce, student, claims={"launch_presentation": {"locale": "fr_CA"}})
            async with session.post("/lti/1.3/launch", allow_redirects=False, data={
                    "state": state, "id_token": token}, headers={
                    "Accept": "text/html", "Accept-Language": "en"}) as resp:
                return resp.status, await resp.text()
    status, page = asyncio.run(scenario())
    assert status == 200 and starting_in("fr", page), page[:600]
    assert nb.box.read_file(f"/var/lib/nbunits/languages/{user_for(student)}").strip() == "fr"


def test_without_a_locale_the_browser_chooses(nb: Nbunits, lti_course: str) -> None:
    for accept, language in (("fr-CA,fr;q=0.9,en;q=0.5", "fr"), ("de-DE,en;q=0.5", "en")):
        student = secrets.token_hex(16)
        status, page = launch(nb, student, accept)
        assert status == 200 and starting_in(language, page), page[:600]
        # The browser's language is not remembered: only a launch's locale is.
        assert nb.box.run("test", "-e", f"/var/lib/nbunits/languages/{user_for(student)}",
                          check=False).returncode == 1


def test_a_refused_launch_says_so_in_the_browsers_language(nb: Nbunits, lti_course: str) -> None:
    status, page = launch(nb, secrets.token_hex(16), "fr", secret="not-the-secret")
    assert status == 401 and '<html lang="fr">' in page
    assert "Ce lancement n&#x27;a pas pu être vérifié" in page


def test_a_students_actions_answer_in_their_pages_language(nb: Nbunits) -> None:
    """The Course extension asks in its page's language (Accept-Language): a refusal
    of the helper's and one of the dispatcher's come back in it."""
    nb.add_course("langact")

    async def scenario() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, "langact", "welcome.ipynb",
                                         secrets.token_hex(16))
            reset = opened.prefix.replace("/nb/", "/_nbunits/student/", 1) + "reset"
            for language in ("fr", "en", "fr"):
                words = i18n.catalog(language)
                async with session.post(reset, json={"notebook": "not/there.ipynb"},
                                        headers={"Accept-Language": language}) as resp:
                    said = (await resp.json())["message"]
                    assert resp.status == 404, said
                    assert said == f"{words['action.not_in_course']} " \
                                   f"{words['action.not_in_course.hint']}", said
                async with session.post(reset, data="{", headers={
                        "Accept-Language": language, "Content-Type": "application/json"}) as resp:
                    said = (await resp.json())["message"]
                    assert resp.status == 400 and said.startswith(words["action.bad_request"])
    asyncio.run(scenario())


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_jupyterlab_speaks_the_students_language_in_chromium(nb: Nbunits, tmp_path: Path) -> None:
    """A French browser (Accept-Language fr-FR) opens a course link in the LMS's frame:
    the starting page, then JupyterLab's own menus, in French (its language pack), and
    nbunits' Course menu, a Share's dialog and the shared page in French (the catalog's
    words in the page options; the helper's answer in the page's language); an English
    browser gets them all in English."""
    from playwright.sync_api import sync_playwright

    nb.add_course("langlab", interface="lab", lms_origin=f"https://{LMS}")
    ca = nb.site.ca
    assert ca is not None
    with sync_playwright() as playwright:
        for locale, file_menu in (("fr-FR", "Fichier"), ("en-US", "File")):
            words = i18n.catalog(locale[:2])
            link = nb.site.url(f"/ipythonExercice/langlab/welcome.ipynb/{secrets.token_hex(16)}")
            names = framing_site(ca, nb.site.names, LMS, link)
            browser = launch_chromium(playwright, names, ca.cert, tmp_path / locale)
            try:
                page = browser.new_context(locale=locale).new_page()
                page.goto(f"https://{LMS}/course")
                frame = page.frame_locator("#f")
                frame.locator("#jp-main-dock-panel .jp-NotebookPanel").wait_for(timeout=120_000)
                menus = frame.locator("#jp-MainMenu .lm-MenuBar-itemLabel")
                menus.first.wait_for(timeout=30_000)
                labels = menus.all_inner_texts()
                assert file_menu in labels, (locale, labels)
                assert words["lab.menu.course"] in labels, (locale, labels)
                course_menu(frame, words)
                shared = share_dialog(frame, words)
                # The static page says what it is in the page's language too (the
                # extension asks in it: a page without a launch locale included).
                static = page.context.new_page()
                static.goto(shared)
                assert static.locator("html").get_attribute("lang") == locale[:2]
                assert static.locator("p.label").inner_text() == \
                    words["share.note"].format(course="langlab")
            except Exception:
                page.screenshot(path=str(tmp_path / f"{locale}.png"))
                raise
            finally:
                browser.close()


MENU_ITEMS = ("lab.menu.submit", "lab.menu.reset", "lab.menu.share", "lab.menu.unshare",
              "lab.menu.download", "lab.menu.id")


def course_menu(frame: Any, words: dict[str, str]) -> None:
    """The Course menu opened: its items, in the page's language."""
    frame.locator(".lm-MenuBar-itemLabel", has_text=words["lab.menu.course"]).click()
    items = frame.locator("#nbunits-course-menu .lm-Menu-itemLabel")
    items.first.wait_for(timeout=30_000)
    assert items.all_inner_texts() == [words[key] for key in MENU_ITEMS]


def share_dialog(frame: Any, words: dict[str, str]) -> str:
    """Share (from the open Course menu): the dialog's words, in the page's language.
    The shared page's address."""
    frame.locator("#nbunits-course-menu .lm-Menu-itemLabel",
                  has_text=words["lab.menu.share"]).click()
    dialog = frame.locator(".jp-Dialog")
    dialog.locator(".nbunits-share-link").wait_for(timeout=60_000)
    assert dialog.locator(".jp-Dialog-header").inner_text().strip() == words["lab.share.title"]
    said = dialog.locator(".nbunits-dialog p").all_inner_texts()
    assert said == [words["lab.share.anyone"], words["lab.share.again"]], said
    shared = dialog.locator(".nbunits-share-link").inner_text().strip()
    dialog.locator(".jp-Dialog-footer button").last.click()
    return str(shared)
