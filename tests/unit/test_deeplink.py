"""LTI 1.3 Deep Linking, pure parts: Open edX's own consumer (lti-consumer-xblock)
makes the request and checks nbunits' answer (dispatcher/deeplink.py); the ticket
that binds an author's pick to a verified request; notebook titles; the pages."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nbunits.core import i18n
from nbunits.core.config import CourseConfig, Lti13Registration, Settings
from nbunits.core.protocol import NotebookEntry
from nbunits.dispatcher import deeplink
from nbunits.dispatcher.launch import (
    LTI13_CLAIM,
    LaunchError,
    NonceStore,
    State,
    issue_state,
    verify_lti13_token,
)
from nbunits.dispatcher.pages import deep_link_answer, deep_link_page
from nbunits.helper.notebooks import title
from nbunits.helper.provision import course_notebooks
from tests import openedx

LMS = "https://lms.example.org"
RETURN = LMS + "/api/lti_consumer/v1/lti/7/lti-dl/response"
CONTEXT = "course-v1:Org+Py+2026"
LINK = "block-v1:Org+Py+2026+type@lti_consumer+block@a1"
STAFF = "4a0c6f2e-3b1d-4e5f-9a8b-7c6d5e4f3a2b"
LAUNCH = "https://notebooks.example.org/lti/1.3/launch"
PLATFORM = rsa.generate_private_key(public_exponent=65537, key_size=2048)
TOOL = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY = b"k" * 32  # the dispatcher's state key
# The platform's keys as the dispatcher reads them (core/jwks.py: a JWKS).
KEYS = [jwt.PyJWK({**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(PLATFORM.public_key())),
                   "kid": "kid-a"}, "RS256")]


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def platform() -> openedx.Platform13:
    return openedx.Platform13(LMS, "https://nb/lti/1.3/login", LAUNCH, _pem(PLATFORM), "kid-a",
                              client_id="client-a", tool_key=_public_pem(TOOL),
                              return_url=RETURN)


def course(**changes: object) -> CourseConfig:
    registration = Lti13Registration(LMS, "client-a", ("1",), LMS + "/auth", "/k")
    return CourseConfig(**{"name": "py", "source": Path("/x"), "lti_context_id": CONTEXT,
                           "lti13": (registration,), **changes})


@pytest.fixture
def tool(tmp_path: Path) -> deeplink.ToolKey:
    (tmp_path / "tool.pem").write_text(_pem(TOOL))
    return deeplink.tool_key(tmp_path / "tool.pem")


def request_token(role: str = "instructor", context: str = CONTEXT) -> str:
    """The id_token Open edX posts for Studio's deep-linking button."""
    started = platform().deep_link_login(external_user_id=STAFF, role=role, context_id=context,
                                         resource_link_id=LINK)
    form = started.answer("https://lms/auth?" + urlencode({
        "client_id": "client-a", "redirect_uri": LAUNCH, "nonce": "n1", "state": "s",
        "login_hint": STAFF, "lti_message_hint": _hint(started.login_url)}))
    return form["id_token"]


def _hint(login_url: str) -> str:
    return parse_qs(urlsplit(login_url).query)["lti_message_hint"][0]


def verified(token: str, config: CourseConfig | None = None) -> deeplink.DeepLinking:
    """Checked as the dispatcher checks it: the token, then what deep linking needs."""
    config = config or course()
    claims = verify_lti13_token(token, config, config.lti13[0], "n1", KEYS, NonceStore())
    return deeplink.deep_linking(claims, config)


def test_open_edx_deep_linking_request_verified_as_a_launch() -> None:
    asked = verified(request_token())
    assert asked == deeplink.DeepLinking("py", LMS, "client-a", "1", RETURN, None, "")
    # The same checks as a resource link launch: another course's context is refused.
    with pytest.raises(LaunchError) as info:
        verified(request_token(context="course-v1:Other+X+1"))
    assert info.value.code == "forbidden"


def test_only_staff_choose() -> None:
    with pytest.raises(LaunchError) as info:
        verified(request_token("staff"), course(lti_staff_roles=("Administrator",)))
    assert info.value.code == "forbidden" and "staff" in info.value.message


def _claims(**settings: object) -> dict[str, object]:
    now = int(time.time())
    return {"iss": LMS, "aud": "client-a", "sub": STAFF, "iat": now, "exp": now + 60,
            "nonce": "n1", LTI13_CLAIM + "message_type": "LtiDeepLinkingRequest",
            LTI13_CLAIM + "version": "1.3.0", LTI13_CLAIM + "deployment_id": "1",
            LTI13_CLAIM + "context": {"id": CONTEXT},
            LTI13_CLAIM + "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"],
            deeplink.DL_CLAIM + "deep_linking_settings": {
                "accept_types": ["ltiResourceLink"], "deep_link_return_url": RETURN,
                **settings}}


@pytest.mark.parametrize("settings, says", [
    ({"accept_types": ["link", "html"]}, "does not take an LTI resource link"),
    ({"accept_types": "ltiResourceLink"}, "does not take an LTI resource link"),
    ({"deep_link_return_url": "javascript:alert(1)"}, "no valid return URL"),
    ({"deep_link_return_url": None}, "no valid return URL"),
    ({"deep_link_return_url": "ftp://lms.example.org/dl"}, "no valid return URL"),
    ({"data": "x" * 5000}, "too long"),
])
def test_requests_nbunits_cannot_answer_are_refused(settings: dict[str, object],
                                                    says: str) -> None:
    with pytest.raises(LaunchError) as info:
        deeplink.deep_linking(_claims(**settings), course())
    assert info.value.code == "bad_launch" and says in info.value.message


def test_ticket_carries_the_request_and_nothing_else_makes_one() -> None:
    asked = deeplink.deep_linking(_claims(data={"opaque": "x1"}), course())
    key = deeplink.ticket_key(KEY)
    ticket = deeplink.issue_ticket(key, asked)
    read, jti = deeplink.read_ticket(key, ticket)
    assert read == asked and read.data == {"opaque": "x1"} and jti
    now = time.time()
    refused = [
        deeplink.issue_ticket(deeplink.ticket_key(b"other" * 8), asked),  # another key: forged
        deeplink.issue_ticket(key, asked, now=now - deeplink.TICKET_SECONDS - 1),  # expired
        ticket[:-2] + ("AA" if not ticket.endswith("AA") else "BB"),  # tampered
        issue_state(KEY, State("py", LMS, "client-a", "n1")),  # an OIDC state is no ticket
        jwt.encode({"course": "py", "jti": "x", "iat": int(now), "exp": int(now) + 60}, key,
                   algorithm="HS256"),  # made with the key but not by issue_ticket
        "",
    ]
    for bad in refused:
        with pytest.raises(LaunchError) as info:
            deeplink.read_ticket(key, bad)
        assert info.value.code == "unauthorized", bad


def test_open_edx_takes_the_answer_and_it_names_the_notebook(tool: deeplink.ToolKey) -> None:
    asked = verified(request_token())
    token = deeplink.response(tool, asked, "week1/loops.ipynb", "Week 1: loops", LAUNCH)
    items = platform().content_items(token)  # Open edX's own check, and its serializer
    assert items == [{"type": "ltiResourceLink", "title": "Week 1: loops", "url": LAUNCH,
                      "custom": {"notebook": "week1/loops.ipynb"}}]
    claims = jwt.decode(token, TOOL.public_key(), algorithms=["RS256"], audience=LMS)
    assert claims["iss"] == "client-a" and claims["nonce"]
    assert claims[LTI13_CLAIM + "deployment_id"] == "1"
    assert claims[LTI13_CLAIM + "message_type"] == "LtiDeepLinkingResponse"
    assert deeplink.DL_CLAIM + "data" not in claims  # none was sent
    assert claims["exp"] > claims["iat"] >= time.time() - 5
    # Signed with the key the tool publishes, under its id.
    assert jwt.get_unverified_header(token)["kid"] == tool.kid
    published = jwt.PyJWKSet.from_dict(tool.jwks())
    assert [k.key_id for k in published.keys] == [tool.kid]
    jwt.decode(token, published.keys[0], algorithms=["RS256"], audience=LMS)
    # Any other key: Open edX refuses the answer.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = deeplink.response(deeplink.ToolKey(other, tool.kid), asked, "w.ipynb", "w", LAUNCH)
    with pytest.raises(jwt.InvalidSignatureError):
        platform().content_items(forged)


def test_the_answer_echoes_data(tool: deeplink.ToolKey) -> None:
    asked = deeplink.deep_linking(_claims(data="csrf-ish-opaque"), course())
    token = deeplink.response(tool, asked, "w.ipynb", "w", LAUNCH)
    claims = jwt.decode(token, TOOL.public_key(), algorithms=["RS256"], audience=LMS)
    assert claims[deeplink.DL_CLAIM + "data"] == "csrf-ish-opaque"


def test_kid_is_the_rfc7638_thumbprint(tool: deeplink.ToolKey) -> None:
    # RFC 7638, 3.1's example key and thumbprint.
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
         "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v"
         "-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08"
         "qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8"
         "awapJzKnqDKgw")
    public = rsa.RSAPublicNumbers(65537, int.from_bytes(base64.urlsafe_b64decode(n + "=="),
                                                        "big")).public_key()
    assert deeplink.thumbprint(public) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_no_tool_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:
        deeplink.tool_key(tmp_path / "missing.pem")
    assert getattr(info.value, "code", "") == "no_secret"


@pytest.mark.parametrize("cells, expected", [
    ([{"cell_type": "markdown", "source": ["# Week 1: loops\n", "text"]}], "Week 1: loops"),
    ([{"cell_type": "code", "source": "# not a heading"},
      {"cell_type": "markdown", "source": "Intro\n\n## Exercise  ##\n"}], "Exercise"),
    ([{"cell_type": "markdown", "source": "#nospace\nplain"}], ""),
    ([], ""),
])
def test_title_is_the_first_markdown_heading(cells: list[object], expected: str) -> None:
    assert title(json.dumps({"cells": cells}).encode()) == expected
    assert title(b"not json") == ""


def test_pick_page_lists_titles_or_names_keyboard_reachable() -> None:
    page = deep_link_page("py", [NotebookEntry("w1/a.ipynb", "Loops <b>"),
                                 NotebookEntry("w1/b.ipynb", "")], "T.K<", "/lti/1.3/deep-link",
                          "fr").text
    assert page is not None
    assert '<html lang="fr">' in page and i18n.text("fr", "deeplink.heading") in page
    assert '<button type="submit" name="notebook" value="w1/a.ipynb">Loops &lt;b&gt;</button>' \
        in page
    assert '>b.ipynb</button> <code>w1/b.ipynb</code>' in page
    assert 'name="ticket" value="T.K&lt;"' in page and 'aria-labelledby="heading"' in page
    empty = deep_link_page("py", [], "t", "/x", "en").text
    assert empty is not None and i18n.text("en", "deeplink.none").split(":")[0] in empty


def test_answer_page_posts_the_jwt_to_the_platform_only() -> None:
    answer = deep_link_answer(RETURN, "a.b.c", "w1/a.ipynb", "en")
    page = answer.text
    assert page is not None
    assert f'<form id="answer" method="post" action="{RETURN}">' in page
    assert '<input type="hidden" name="JWT" value="a.b.c">' in page
    csp = answer.headers["Content-Security-Policy"]
    assert f"form-action {LMS}" in csp
    script = re.search(r"<script>(.*)</script>", page)
    assert script
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp


def test_the_course_notebooks_an_author_is_offered(tmp_path: Path) -> None:
    """The published notebooks nbunits could open, by title; nothing it would refuse."""
    source = tmp_path / "published"
    (source / "week1").mkdir(parents=True)
    (source / ".hidden").mkdir()

    def notebook(path: str, heading: str = "") -> None:
        cells = [{"cell_type": "markdown", "metadata": {}, "source": heading}] if heading else []
        (source / path).write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                               "nbformat_minor": 5}))

    notebook("week1/loops.ipynb", "# Week 1: loops")
    notebook("intro.ipynb")
    notebook(".hidden/secret.ipynb", "# Hidden")
    notebook(" leading-space.ipynb", "# A name nbunits refuses")
    (source / "link.ipynb").symlink_to(source / "intro.ipynb")
    settings = Settings(etc_dir=tmp_path / "etc")
    settings.courses_conf_dir.mkdir(parents=True)
    settings.course_file("py").write_text(f'[course]\nsource = "{source}"\n')
    assert course_notebooks(settings, "py") == [
        {"path": "intro.ipynb", "title": ""},
        {"path": "week1/loops.ipynb", "title": "Week 1: loops"}]
