"""Launch verification: LTI 1.1 signatures, LTI 1.3 id_tokens, legacy link modes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlencode

import jwt
import pytest
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import SIGNATURE_TYPE_BODY, Client

from nbunits.core.config import CourseConfig, CourseSecrets, Lti13Registration
from nbunits.core.jwks import platform_keys
from nbunits.core.names import InvalidName
from nbunits.dispatcher.launch import (
    LTI13_CLAIM,
    LaunchError,
    NonceStore,
    State,
    is_staff,
    issue_state,
    read_state,
    verify_lti11,
    verify_lti13,
)
from nbunits.dispatcher.legacy import check_legacy, legacy_signature

URL = "https://notebooks.example.org/lti/1.1/launch"
CONTEXT = "course-v1:Org+Num+Run"
ISSUER, CLIENT = "https://lms.example.org", "nbunits-client"
REG = Lti13Registration(ISSUER, CLIENT, deployment_ids=("1",), auth_url=ISSUER + "/auth")
COURSE = CourseConfig(name="demo", source=Path("/srv/demo"), lti_context_id=CONTEXT,
                      lti11_key="demo-key", lti13=(REG,),
                      lti_notebooks={"block-v1:Org+type@lti+block@abc": "week1/loops.ipynb"})
SECRET = "s3cret"
STUDENT = "0123456789abcdef0123456789abcdef"


# --- LTI 1.1 -----------------------------------------------------------------

def signed_11(secret: str = SECRET, key: str = "demo-key", timestamp: int | None = None,
              **params: str) -> tuple[str, dict[str, str]]:
    form = {"lti_message_type": "basic-lti-launch-request", "lti_version": "LTI-1p0",
            "user_id": STUDENT, "context_id": CONTEXT, "roles": "Learner",
            "resource_link_id": "block-v1:Org+type@lti+block@abc",
            "custom_notebook": "welcome.ipynb", **params}
    client = Client(key, client_secret=secret, signature_type=SIGNATURE_TYPE_BODY,
                    timestamp=str(timestamp) if timestamp else None)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    _, headers, body = client.sign(URL, "POST", urlencode(form), headers)
    return body, headers


def test_lti11_signed_launch_opens_the_custom_notebook() -> None:
    body, headers = signed_11()
    launch = verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())
    assert (launch.course, launch.student, launch.notebook, launch.staff) == \
        ("demo", STUDENT, "welcome.ipynb", False)


def test_lti11_resource_link_map_and_staff_role() -> None:
    body, headers = signed_11(custom_notebook="", roles="urn:lti:role:ims/lis/Instructor")
    launch = verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())
    assert launch.notebook == "week1/loops.ipynb" and launch.staff


def test_lti11_staff_may_name_a_student_a_learner_may_not() -> None:
    other = "f" * 32
    body, headers = signed_11(roles="Instructor", custom_student=other)
    launch = verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())
    assert (launch.student, launch.staff, launch.view) == (STUDENT, True, other)
    body, headers = signed_11(roles="Learner", custom_student=other)
    launch = verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())
    assert (launch.student, launch.staff, launch.view) == (STUDENT, False, "")
    body, headers = signed_11(roles="Learner", custom_student="../not an id")
    assert verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore()).view == ""
    body, headers = signed_11(roles="Instructor", custom_student="../not an id")
    with pytest.raises(InvalidName):
        verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())


@pytest.mark.parametrize("change", ["secret", "key", "url", "tampered", "expired", "future"])
def test_lti11_forgeries_are_unauthorized(change: str) -> None:
    now = int(time.time())
    body, headers = signed_11(
        secret="wrong" if change == "secret" else SECRET,
        key="other-key" if change == "key" else "demo-key",
        timestamp={"expired": now - 600, "future": now + 600}.get(change))
    if change == "tampered":
        body = body.replace(STUDENT, "f" * 32)
    url = URL.replace("https", "http") if change == "url" else URL
    with pytest.raises(LaunchError) as info:
        verify_lti11(url, body, headers, COURSE, SECRET, NonceStore())
    assert info.value.code == "unauthorized"


def test_nonces_kept_in_a_folder_are_refused_by_another_store_until_they_expire(
        tmp_path) -> None:
    # Two dispatchers (a restart, or two hosts sharing the folder) see one history.
    first, second = NonceStore(tmp_path, ttl=600), NonceStore(tmp_path, ttl=600)
    first.use("1.1 key n1", now=1000)
    assert second.seen("1.1 key n1", now=1001)
    with pytest.raises(LaunchError):
        second.use("1.1 key n1", now=1001)
    assert not second.seen("1.1 key n2", now=1001)
    second.use("1.1 key n1", now=1700)  # expired: its timestamp is refused anyway by then
    with pytest.raises(LaunchError):
        first.use("1.1 key n1", now=1701)
    first.prune(now=3000)
    assert list(tmp_path.iterdir()) == []


def test_lti11_replayed_nonce_is_refused_but_a_forgery_does_not_burn_it() -> None:
    nonces = NonceStore()
    body, headers = signed_11()
    with pytest.raises(LaunchError):  # same nonce, bad signature: refused, not recorded
        verify_lti11(URL, body.replace(STUDENT, "f" * 32), headers, COURSE, SECRET, nonces)
    verify_lti11(URL, body, headers, COURSE, SECRET, nonces)
    with pytest.raises(LaunchError) as info:
        verify_lti11(URL, body, headers, COURSE, SECRET, nonces)
    assert info.value.code == "unauthorized"


def test_lti11_wrong_context_bad_user_and_unset_course() -> None:
    body, headers = signed_11(context_id="course-v1:Other+1+2")
    with pytest.raises(LaunchError) as info:
        verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())
    assert info.value.code == "forbidden"
    body, headers = signed_11(user_id="not an id!")
    with pytest.raises(InvalidName):
        verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())
    body, headers = signed_11(custom_notebook="", resource_link_id="unknown")
    with pytest.raises(LaunchError) as info:
        verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())
    assert info.value.code == "bad_launch"
    with pytest.raises(LaunchError) as info:
        verify_lti11(URL, *signed_11(), COURSE, "", NonceStore())
    assert info.value.code == "forbidden"


# --- LTI 1.3 -----------------------------------------------------------------

@pytest.fixture(scope="module")
def platform_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks(tmp_path: Path, platform_key: rsa.RSAPrivateKey) -> Path:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(platform_key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    return path


def id_token(key: rsa.RSAPrivateKey, token_nonce: str, kid: str = "k1", **changes: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": ISSUER, "aud": CLIENT, "sub": STUDENT, "iat": now, "exp": now + 300,
        "nonce": token_nonce,
        LTI13_CLAIM + "message_type": "LtiResourceLinkRequest",
        LTI13_CLAIM + "version": "1.3.0",
        LTI13_CLAIM + "deployment_id": "1",
        LTI13_CLAIM + "context": {"id": CONTEXT},
        LTI13_CLAIM + "resource_link": {"id": "block-v1:Org+type@lti+block@abc"},
        LTI13_CLAIM + "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"],
        LTI13_CLAIM + "custom": {"notebook": "welcome.ipynb"},
    }
    claims.update({k.replace("claim_", LTI13_CLAIM): v for k, v in changes.items()})
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def test_lti13_valid_token(platform_key: rsa.RSAPrivateKey, jwks: Path) -> None:
    launch = verify_lti13(id_token(platform_key, "n1"), COURSE, REG, "n1", platform_keys(jwks),
                          NonceStore())
    assert (launch.student, launch.notebook, launch.staff) == (STUDENT, "welcome.ipynb", False)


def test_lti13_pem_key_and_resource_link_map(platform_key: rsa.RSAPrivateKey,
                                             tmp_path: Path) -> None:
    pem = tmp_path / "platform.pem"
    pem.write_bytes(platform_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    token = id_token(platform_key, "n1", claim_custom={}, claim_roles=[
        "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"])
    launch = verify_lti13(token, COURSE, REG, "n1", platform_keys(pem), NonceStore())
    # Open edX's forum roles (Community TA, Group Moderator) arrive as this sub-role.
    assert launch.notebook == "week1/loops.ipynb" and not launch.staff


def test_lti13_custom_student_counts_for_staff_only(platform_key: rsa.RSAPrivateKey,
                                                   jwks: Path) -> None:
    custom = {"notebook": "welcome.ipynb", "student": "f" * 32}
    staff_role = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
    for roles, view in (([staff_role], "f" * 32), (None, ""), ("Instructor", "")):
        token = id_token(platform_key, "n1", claim_custom=custom, claim_roles=roles)
        launch = verify_lti13(token, COURSE, REG, "n1", platform_keys(jwks), NonceStore())
        assert (launch.student, launch.view) == (STUDENT, view)


@pytest.mark.parametrize("changes, code", [
    ({"aud": "someone-else"}, "unauthorized"),
    ({"iss": "https://evil.example.org"}, "unauthorized"),
    ({"exp": int(time.time()) - 3600}, "unauthorized"),
    ({"nonce": "other"}, "unauthorized"),
    ({"claim_context": {"id": "course-v1:Other+1+2"}}, "forbidden"),
    ({"claim_deployment_id": "2"}, "forbidden"),
    ({"claim_message_type": "LtiDeepLinkingRequest"}, "bad_launch"),
])
def test_lti13_bad_tokens(platform_key: rsa.RSAPrivateKey, jwks: Path,
                          changes: dict[str, object], code: str) -> None:
    with pytest.raises(LaunchError) as info:
        verify_lti13(id_token(platform_key, "n1", **changes), COURSE, REG, "n1",
                     platform_keys(jwks), NonceStore())
    assert info.value.code == code


def test_lti13_wrong_key_unknown_kid_and_replay(platform_key: rsa.RSAPrivateKey,
                                                jwks: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys, nonces = platform_keys(jwks), NonceStore()
    for token in (id_token(other, "n1"), id_token(platform_key, "n1", kid="k2")):
        with pytest.raises(LaunchError) as info:
            verify_lti13(token, COURSE, REG, "n1", keys, nonces)
        assert info.value.code == "unauthorized"
    token = id_token(platform_key, "n1")
    verify_lti13(token, COURSE, REG, "n1", keys, nonces)
    with pytest.raises(LaunchError):
        verify_lti13(token, COURSE, REG, "n1", keys, nonces)


def test_state_round_trip_and_forgery() -> None:
    key, state = b"k" * 32, State("demo", ISSUER, CLIENT, "n1")
    assert read_state(key, issue_state(key, state)) == state
    for token in (issue_state(b"x" * 32, state),
                  issue_state(key, state, now=time.time() - 3600), "garbage"):
        with pytest.raises(LaunchError):
            read_state(key, token)


def test_roles() -> None:
    assert is_staff(["Instructor"]) and is_staff(["urn:lti:role:ims/lis/Administrator"])
    assert not is_staff(["Learner", "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"])


# --- legacy links ------------------------------------------------------------

def legacy(mode: str, query: str = "", referer: str = "", now: float | None = None,
           secret: str = "legacy-secret") -> None:
    course = CourseConfig(name="demo", source=Path("/x"), legacy=mode,
                          legacy_referrers=("fun-mooc.fr",) if mode == "referrer" else ())
    request = make_mocked_request("GET", f"/ipythonExercice/demo/welcome.ipynb/{STUDENT}{query}",
                                  headers={"Referer": referer} if referer else {})
    check_legacy(request, course, CourseSecrets(legacy_secret=secret), "welcome.ipynb",
                 STUDENT, now)


def test_legacy_modes() -> None:
    legacy("open")
    with pytest.raises(LaunchError):
        legacy("off")
    legacy("referrer", referer="https://lms.fun-mooc.fr/courses/x")
    for referer in ("", "https://evil.example.org/", "https://fun-mooc.fr.evil.org/"):
        with pytest.raises(LaunchError):
            legacy("referrer", referer=referer)


def test_legacy_signed_links() -> None:
    sig = legacy_signature("legacy-secret", "demo", "welcome.ipynb", STUDENT)
    legacy("signed", f"?sig={sig}")
    later = int(time.time()) + 60
    sig2 = legacy_signature("legacy-secret", "demo", "welcome.ipynb", STUDENT, later)
    legacy("signed", f"?sig={sig2}&expires={later}")
    for query, now in ((f"?sig={sig2}&expires={later}", later + 1.0),  # expired
                       (f"?sig={sig2}&expires={later + 1}", None),      # expiry changed
                       (f"?sig={sig[:-1]}0", None), ("", None)):
        with pytest.raises(LaunchError):
            legacy("signed", query, now=now)
    with pytest.raises(LaunchError):
        legacy("signed", f"?sig={sig}", secret="")


def test_cli_launch_options(tmp_path: Path) -> None:
    from nbunits.admin.cli import build_parser, course_options, course_secrets

    (tmp_path / "secret").write_text("s3cret\n")
    args = build_parser().parse_args([
        "course", "add", "demo", "--dir", "x", "--legacy", "referrer",
        "--legacy-referrer", "fun-mooc.fr", "--legacy-referrer", "example.org",
        "--lti-notebook", "block-v1:a+b=week1/loops.ipynb", "--lti11-key", "k",
        "--lti11-secret-file", str(tmp_path / "secret")])
    assert course_options(args) == {
        "legacy": "referrer", "legacy_referrers": ("fun-mooc.fr", "example.org"),
        "lti_notebooks": {"block-v1:a+b": "week1/loops.ipynb"}, "lti11_key": "k"}
    assert course_secrets(args) == {"lti11_secret": "s3cret"}


def test_platform_keys_are_fetched_over_https_only() -> None:
    """An http keys URL, or an https one that redirects to http, is refused before a
    byte is read: keys that travelled in clear could be anyone's."""
    import http.client
    import io
    import urllib.error
    import urllib.request

    from nbunits.admin.lms_keys import HttpsRedirectsOnly, fetch_keys
    from nbunits.core.errors import NbunitsError

    handler, request = HttpsRedirectsOnly(), urllib.request.Request("https://lms/jwks")

    def redirect(to: str) -> urllib.request.Request | None:
        return handler.redirect_request(request, io.BytesIO(), 302, "Found",
                                        http.client.HTTPMessage(), to)

    with pytest.raises(urllib.error.HTTPError, match="over https only"):
        redirect("http://lms/jwks")
    redirected = redirect("https://keys.lms/jwks")
    assert redirected is not None and redirected.full_url == "https://keys.lms/jwks"
    said: list[str] = []
    with pytest.raises(NbunitsError, match="only over https") as info:
        fetch_keys(Lti13Registration(issuer="i", client_id="c", keys="/nonexistent/k.json",
                                     keys_url="http://127.0.0.1:9/jwks"), said.append)
    assert info.value.code == "bad_keys"
