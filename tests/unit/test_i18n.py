"""Languages: the catalogs (locales/*.json), the negotiation (core/i18n.py), the
locale an LTI launch carries, what the helper remembers, and the pages it gives."""

from __future__ import annotations

from html import unescape
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa

from nbunits.core import i18n
from nbunits.core.config import CourseConfig, Settings, course_from_toml
from nbunits.core.errors import NbunitsError
from nbunits.core.jwks import platform_keys
from nbunits.dispatcher.launch import NonceStore, verify_lti11, verify_lti13
from nbunits.helper import languages
from tests.unit.test_dispatcher import PREFIX, USER, FakeHelper, opened, run_app
from tests.unit.test_lti import COURSE, REG, SECRET, URL, id_token, jwks, platform_key, signed_11

__all__ = ["jwks", "platform_key"]  # fixtures, used by name
LANGS = ("en", "fr")


@pytest.mark.parametrize(("launch", "accept", "default", "expected"), [
    ("fr-FR", "en", "en", "fr"),              # the launch's locale first
    ("fr_CA", None, "en", "fr"),              # Canvas/Moodle spell it with _
    ("FR", None, "en", "fr"),
    ("en-US", "fr", "fr", "en"),
    ("de-DE", "fr-FR,fr;q=0.9", "en", "fr"),  # a locale we lack: the browser's
    ("", "de-DE,de;q=0.9,fr;q=0.8,en-US;q=0.7", "en", "fr"),
    (None, "en-US;q=0.8, fr;q=0.9", "en", "fr"),  # by weight, not order
    (None, "fr;q=0, en;q=0.1", "fr", "en"),   # q=0: not wanted
    (None, "fr;q=2, en", "fr", "en"),         # a malformed weight drops its range
    (None, "*", "fr", "fr"),
    (None, "de", "fr", "fr"),                 # the course's default
    (None, None, "xx", "en"),                 # a default we no longer have
    ("<script>", ";;;,,,q=", "fr", "fr"),     # garbage is ignored, not an error
    ("fr-" + "a" * 40, "en", "fr", "en"),     # a tag too long
    ("fr" + "\u00e9", None, "en", "en"),
    (None, ",".join(["de"] * 30) + ",fr", "en", "en"),  # past MAX_RANGES: not read
    (None, "x" * 5000 + ",fr", "en", "en"),   # past MAX_ACCEPT: not read
])
def test_negotiate(launch: str | None, accept: str | None, default: str, expected: str) -> None:
    assert i18n.negotiate(launch, accept, default, LANGS) == expected


def test_a_regional_catalog_is_preferred_to_its_language() -> None:
    assert i18n.negotiate("pt-BR", None, "en", ("en", "pt", "pt-BR")) == "pt-BR"
    assert i18n.negotiate("pt-PT", None, "en", ("en", "pt", "pt-BR")) == "pt"


def test_every_catalog_has_every_key_of_english_with_the_same_placeholders() -> None:
    assert i18n.available()[0] == "en" and "fr" in i18n.available()
    english = i18n.catalog("en")
    for language in i18n.available():
        found = i18n.catalog(language)
        assert set(found) == set(english), language
        for key, text in found.items():
            assert text.strip(), (language, key)
            assert i18n.placeholders(text) == i18n.placeholders(english[key]), (language, key)


def test_french_is_french() -> None:
    """Not a copy of the English: few messages may read the same in both."""
    same = [k for k, v in i18n.catalog("fr").items() if v == i18n.catalog("en")[k]]
    assert same == []


def test_the_course_language_setting_takes_a_catalog_only(tmp_path: Path) -> None:
    assert CourseConfig(name="demo", source=tmp_path).language == "en"
    for good in i18n.available():
        assert course_from_toml("demo", {"course": {"source": str(tmp_path),
                                                    "language": good}}).language == good
    with pytest.raises(NbunitsError, match="language"):
        course_from_toml("demo", {"course": {"source": str(tmp_path), "language": "de"}})


def test_lti_launches_carry_their_locale(platform_key: rsa.RSAPrivateKey, jwks: Path) -> None:
    body, headers = signed_11(launch_presentation_locale="fr-FR")
    assert verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore()).locale == "fr-FR"
    token = id_token(platform_key, "n1", claim_launch_presentation={"locale": "fr_CA"})
    assert verify_lti13(token, COURSE, REG, "n1", platform_keys(jwks), NonceStore()).locale \
        == "fr_CA"
    token = id_token(platform_key, "n2", claim_launch_presentation="fr")  # not an object
    assert verify_lti13(token, COURSE, REG, "n2", platform_keys(jwks), NonceStore()).locale == ""


def test_the_helper_remembers_a_launch_locale_it_has(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert languages.remember(settings, USER, "") == ""
    assert languages.remember(settings, USER, "de-DE") == ""  # not ours: nothing written
    assert not settings.student_language(USER).exists()
    assert languages.remember(settings, USER, "fr-FR") == "fr"
    assert settings.student_language(USER).stat().st_mode & 0o777 == 0o600
    assert languages.remember(settings, USER, "") == "fr"  # a launch without one keeps it
    assert languages.remember(settings, USER, "x" * 1000) == "fr"
    assert languages.remember(settings, USER, "en_GB") == "en"
    settings.student_language(USER).write_text("../../etc\n")
    assert languages.remember(settings, USER, "") == ""


def page_for(tmp_path: Path, headers: dict[str, str], remembered: str = "",
             path: str = "/ipythonExercice/demo/w1/a.ipynb/s1") -> tuple[int, str, str, list[Any]]:
    base = opened(False)

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        answer = base(request)
        return {**answer, "language": remembered} if request["action"] == "open" else answer
    helper = FakeHelper(reply)
    got: list[Any] = []

    async def test(client: TestClient) -> None:
        resp = await client.get(path, allow_redirects=False,
                                headers={"Accept": "text/html", **headers})
        got.extend([resp.status, unescape(await resp.text()),
                    resp.headers.get("Content-Language", "")])
    run_app(tmp_path, helper, test)
    return got[0], got[1], got[2], helper.requests


def test_the_starting_page_follows_accept_language(tmp_path: Path) -> None:
    status, page, lang, _ = page_for(tmp_path / "fr", {"Accept-Language": "fr-FR,en;q=0.5"})
    assert status == 200 and lang == "fr" and '<html lang="fr">' in page
    assert "Démarrage de votre notebook" in page and "<code>w1/a.ipynb</code>" in page
    assert "Starting" not in page and f'"{PREFIX}notebooks/w1/a.ipynb"' in page
    status, page, lang, _ = page_for(tmp_path / "en", {"Accept-Language": "de"})
    assert lang == "en" and "Starting your notebook" in page and '<html lang="en">' in page


def test_the_remembered_language_beats_the_browser(tmp_path: Path) -> None:
    _, page, lang, requests = page_for(tmp_path, {"Accept-Language": "en-US"}, remembered="fr")
    assert lang == "fr" and "Démarrage" in page
    assert requests[0]["locale"] == ""  # a course link carries no launch locale


def test_error_pages_in_french(tmp_path: Path) -> None:
    fr = {"Accept-Language": "fr"}
    status, page, lang, requests = page_for(tmp_path / "a", fr,
                                            path="/ipythonExercice/nope/a.ipynb/s1")
    assert (status, lang, requests) == (404, "fr", [])
    assert "Ce cours n'est pas (ou plus) disponible" in page and "Introuvable" in page
    status, page, lang, _ = page_for(tmp_path / "b", fr, path="/_nbunits/page/bad-link")
    assert (status, lang) == (403, "fr") and "Ce lien ne fonctionne pas (ou plus)." in page
    status, page, _, _ = page_for(tmp_path / "c", fr, path="/no/such/route")
    assert status == 404 and "Il n'y a rien ici" in page and "Not Found" not in page


def test_the_busy_page_in_french() -> None:
    from nbunits.dispatcher.pages import busy_page

    page = busy_page("The notebook server is full right now.", 30, reload=True, lang="fr")
    assert page.text is not None and "Nouvel essai automatique dans" in page.text
    assert "full" not in page.text and page.headers["Content-Language"] == "fr"




def test_the_refusals_of_a_student_s_actions_are_in_their_language() -> None:
    from nbunits.helper import shares
    from nbunits.helper.bounds import StudentBounds, TooMany
    bounds = StudentBounds(per_minute=1, burst=1)
    bounds.take("demo", USER, "fr")
    with pytest.raises(TooMany) as refused:
        bounds.take("demo", USER, "fr")
    assert refused.value.message == i18n.text("fr", "action.too_many")
    assert refused.value.student_hint == i18n.text("fr", "action.nothing_changed")
    assert refused.value.language == "fr"
    large = shares.too_large("fr")
    assert large.language == "fr" and "5 Mo" in large.message
    assert "5 MB" in shares.too_large().message and shares.too_large().language == "en"


def test_a_static_page_is_in_the_language_it_is_made_for() -> None:
    from nbunits.helper import staff
    data = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    french = staff.render(data, "a.ipynb", "fr")
    assert '<html lang="fr">' in french and i18n.text("fr", "staff.note") in unescape(french)
    shared = staff.render(data, "a.ipynb", "fr", note=i18n.text("fr", "share.note", course="demo"))
    assert i18n.text("fr", "share.note", course="demo") in unescape(shared)
    assert '<html lang="en">' in staff.render(data, "a.ipynb")


def test_a_student_request_keeps_only_a_language_nbunits_has() -> None:
    from nbunits.core.protocol import StudentRequest, decode_request
    cap = "A" * 22 + ".0.9999999999"
    for given, kept in (("fr", "fr"), ("en", "en"), ("xx", ""), ("fr-FR", ""), ("", "")):
        request = StudentRequest("demo", USER, cap, "info", "", given)
        assert request.language == kept
        assert decode_request({"action": "student", **request.to_json()}) == request
    older = {"action": "student", "course": "demo", "user": USER, "capability": cap,
             "what": "info", "notebook": ""}  # from a dispatcher before languages
    assert decode_request(older) == StudentRequest("demo", USER, cap, "info", "")
