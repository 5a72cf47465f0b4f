"""Launches exactly as Open edX's own consumer (lti-consumer-xblock) makes them,
checked by nbunits.dispatcher.launch; roles, Studio's custom parameters, several LTI 1.3
registrations per course, the LTI 1.1 migration claim, linked ids."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nbunits.admin import identity
from nbunits.admin.courses import CourseError, edit_registrations
from nbunits.core import aliases
from nbunits.core.config import (
    ConfigError,
    CourseConfig,
    Lti13Registration,
    Settings,
    course_from_toml,
)
from nbunits.core.jwks import platform_keys
from nbunits.dispatcher.launch import LTI13_CLAIM, NonceStore, verify_lti11, verify_lti13
from tests import openedx

URL = "https://notebooks.example.org/lti/1.1/launch"
LMS = "https://lms.example.org"
CONTEXT = "course-v1:Org+Py+2026"
LINK = "block-v1:Org+Py+2026+type@lti_consumer+block@a1"
KEY, SECRET = "py-key", "py-secret"
ANON = "5f1b0e2c9d8a4b7e8f6a1c2d3e4f5a6b"  # what edX sends as the 1.1 user_id
EXTERNAL = "4a0c6f2e-3b1d-4e5f-9a8b-7c6d5e4f3a2b"  # what edX sends as the 1.3 sub
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = PRIVATE.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()


def platform(client_id: str = "client-a") -> openedx.Platform13:
    return openedx.Platform13(LMS, "https://nb/lti/1.3/login", "https://nb/lti/1.3/launch",
                              PEM, "kid-a", client_id=client_id)


def course(**changes: object) -> CourseConfig:
    registrations = (Lti13Registration(LMS, "client-a", ("1",), LMS + "/auth", "/k"),
                     Lti13Registration(LMS, "client-b", (), LMS + "/auth", "/k"))
    return CourseConfig(**{"name": "py", "source": Path("/x"), "lti_context_id": CONTEXT,
                           "lti11_key": KEY, "lti13": registrations, **changes})


def launch11(role: str, custom: list[str], config: CourseConfig | None = None):
    form = openedx.launch11(URL, KEY, SECRET, user_id=ANON, role=role, context_id=CONTEXT,
                            resource_link_id=LINK, custom=custom)
    return verify_lti11(URL, urlencode(form), {"Content-Type": "application/x-www-form-urlencoded"},
                        config or course(), SECRET, NonceStore())


@pytest.fixture
def keys(tmp_path: Path) -> list[jwt.PyJWK]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(PRIVATE.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "kid-a"}]}))
    return platform_keys(tmp_path / "jwks.json")


def launch13(keys: list[jwt.PyJWK], role: str, custom: list[str], forum_role: str = "",
             client_id: str = "client-a", config: CourseConfig | None = None):
    config = config or course()
    started = platform(client_id).login(external_user_id=EXTERNAL, role=role, context_id=CONTEXT,
                                        resource_link_id=LINK, custom=custom,
                                        forum_role=forum_role)
    redirect = "https://lms/auth?" + urlencode({
        "client_id": client_id, "redirect_uri": "https://nb/lti/1.3/launch", "nonce": "n1",
        "state": "s", "login_hint": EXTERNAL})
    form = started.answer(redirect)
    registration = config.registration(LMS, client_id)
    assert registration is not None
    return verify_lti13(form["id_token"], config, registration, "n1", keys, NonceStore())


@pytest.mark.parametrize("role, staff", [("student", False), ("staff", True),
                                         ("instructor", True), ("limited_staff", False)])
def test_lti11_course_roles(role: str, staff: bool) -> None:
    launch = launch11(role, ["notebook=week1/loops.ipynb"])
    assert (launch.student, launch.notebook, launch.staff) == (ANON, "week1/loops.ipynb", staff)


@pytest.mark.parametrize("role, forum_role, staff", [
    ("student", "", False), ("staff", "", True), ("instructor", "", True),
    ("limited_staff", "", True),  # edX sends it as membership#Instructor
    ("student", "Community TA", False), ("student", "Group Moderator", False),
])
def test_lti13_course_and_forum_roles(keys: list[jwt.PyJWK], role: str, forum_role: str,
                                      staff: bool) -> None:
    launch = launch13(keys, role, ["notebook=w.ipynb"], forum_role)
    assert (launch.student, launch.staff) == (EXTERNAL, staff)


def test_staff_roles_are_the_courses(keys: list[jwt.PyJWK]) -> None:
    only_admins = course(lti_staff_roles=("Administrator",))
    assert not launch11("instructor", ["notebook=w.ipynb"], only_admins).staff  # 1.1 Instructor
    assert launch11("staff", ["notebook=w.ipynb"], only_admins).staff          # 1.1 Administrator
    assert not launch13(keys, "staff", ["notebook=w.ipynb"], config=only_admins).staff
    assert launch13(keys, "instructor", ["notebook=w.ipynb"], config=only_admins).staff


def test_custom_parameters_as_studio_writes_them(keys: list[jwt.PyJWK]) -> None:
    # Studio adds custom_ itself (1.1); written with the prefix, it is doubled.
    for custom in (["notebook=week1/loops.ipynb", "student=" + "f" * 32],
                   ["custom_notebook=week1/loops.ipynb", "custom_student=" + "f" * 32]):
        launch = launch11("staff", custom)
        assert (launch.notebook, launch.view) == ("week1/loops.ipynb", "f" * 32)
        launch = launch13(keys, "staff", custom)
        assert (launch.notebook, launch.view) == ("week1/loops.ipynb", "f" * 32)


def test_staff_naming_no_student_get_the_staff_page(keys: list[jwt.PyJWK]) -> None:
    assert launch11("staff", ["notebook=w.ipynb"]).staff_page
    assert launch13(keys, "instructor", ["notebook=w.ipynb"]).staff_page
    assert not launch11("student", ["notebook=w.ipynb"]).staff_page


def test_each_component_its_own_client_id(keys: list[jwt.PyJWK]) -> None:
    assert launch13(keys, "student", ["notebook=w.ipynb"], client_id="client-b").student == EXTERNAL
    with pytest.raises(Exception) as info:  # a token for client-a, checked as client-b's
        started = platform("client-a").login(external_user_id=EXTERNAL, role="student",
                                             context_id=CONTEXT, resource_link_id=LINK,
                                             custom=["notebook=w.ipynb"])
        form = started.answer("https://lms/auth?" + urlencode({
            "client_id": "client-a", "redirect_uri": "https://nb/lti/1.3/launch",
            "nonce": "n1", "state": "s"}))
        verify_lti13(form["id_token"], course(), course().lti13[1], "n1", keys, NonceStore())
    assert getattr(info.value, "code", "") == "unauthorized"


def test_registrations_edited_by_course_options(tmp_path: Path) -> None:
    settings = Settings(etc_dir=tmp_path)
    regs = edit_registrations(settings, "py", (), {"issuer": LMS, "client_id": "a",
                                                   "keys_url": LMS + "/jwks/a"}, [])
    assert regs[0].keys.startswith(str(tmp_path / "lti13-keys" / "py-"))
    # A second component: same issuer by default, its own keys file.
    regs = edit_registrations(settings, "py", regs, {"client_id": "b", "deployment_ids": ("2",),
                                                     "keys_url": LMS + "/jwks/b"}, [])
    assert [(r.issuer, r.client_id, r.deployment_ids) for r in regs] == [
        (LMS, "a", ()), (LMS, "b", ("2",))]
    assert regs[0].keys != regs[1].keys
    with pytest.raises(CourseError):  # which one?
        edit_registrations(settings, "py", regs, {"auth_url": LMS + "/auth"}, [])
    regs = edit_registrations(settings, "py", regs, {"client_id": "a", "auth_url": "https://x"},
                              ["b"])
    assert [(r.client_id, r.auth_url) for r in regs] == [("a", "https://x")]
    config = CourseConfig(name="py", source=Path("/x"), lti13=regs)
    import tomllib
    assert course_from_toml("py", tomllib.loads(config.to_toml())) == config


def test_old_single_lti13_settings_still_load() -> None:
    config = course_from_toml("py", {"course": {
        "source": "/x", "lti13_issuer": LMS, "lti13_client_id": "c",
        "lti13_deployment_id": "1", "lti13_auth_url": LMS + "/auth", "lti13_keys": "/k"}})
    assert config.lti13 == (Lti13Registration(LMS, "c", ("1",), LMS + "/auth", "/k"),)
    with pytest.raises(ConfigError):
        course_from_toml("py", {"course": {"source": "/x", "lti13": [{"issuer": LMS}]}})


def migration_token(sign_secret: str, key: str = KEY, user_id: str = ANON) -> str:
    now = int(time.time())
    claims = {"iss": LMS, "aud": "client-a", "sub": EXTERNAL, "iat": now, "exp": now + 60,
              "nonce": "n1", LTI13_CLAIM + "message_type": "LtiResourceLinkRequest",
              LTI13_CLAIM + "version": "1.3.0", LTI13_CLAIM + "deployment_id": "1",
              LTI13_CLAIM + "context": {"id": CONTEXT},
              LTI13_CLAIM + "resource_link": {"id": LINK},
              LTI13_CLAIM + "roles": [], LTI13_CLAIM + "custom": {"notebook": "w.ipynb"}}
    base = "&".join([key, "1", LMS, "client-a", str(now + 60), "n1"])
    sign = base64.b64encode(hmac.new(sign_secret.encode(), base.encode(),
                                     hashlib.sha256).digest()).decode()
    claims[LTI13_CLAIM + "lti1p1"] = {"user_id": user_id, "oauth_consumer_key": key,
                                      "oauth_consumer_key_sign": sign}
    return jwt.encode(claims, PRIVATE, algorithm="RS256", headers={"kid": "kid-a"})


def test_lti1p1_migration_claim_keeps_the_11_user(keys: list[jwt.PyJWK]) -> None:
    config = course()
    reg = config.lti13[0]
    assert verify_lti13(migration_token(SECRET), config, reg, "n1", keys, NonceStore(),
                        SECRET).student == ANON
    # Without proof that the platform holds the course's 1.1 secret: the sub.
    for token, secret in ((migration_token("guess"), SECRET), (migration_token(SECRET), ""),
                          (migration_token(SECRET, key="other"), SECRET)):
        assert verify_lti13(token, config, reg, "n1", keys, NonceStore(),
                            secret).student == EXTERNAL


def test_link_ids_never_hides_work(tmp_path: Path) -> None:
    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state",
                        home_base=tmp_path / "home")
    (tmp_path / "etc" / "courses").mkdir(parents=True)
    (tmp_path / "etc" / "courses" / "py.toml").write_text('[course]\nsource = "/x"\n')
    work = {("py", ANON)}
    has_work = lambda course, student: (course, student) in work  # noqa: E731
    identity.link(settings, "py", ANON, EXTERNAL, has_work)
    assert aliases.canonical(settings, "py", EXTERNAL) == ANON
    assert aliases.canonical(settings, "py", ANON) == ANON
    # The reverse would hide ANON's work: refused, nothing changes.
    identity.unlink(settings, "py", EXTERNAL)
    with pytest.raises(aliases.IdentityError) as info:
        identity.link(settings, "py", EXTERNAL, ANON, has_work)
    assert info.value.code == "has_work"
    assert aliases.load_aliases(settings, "py") == {}
    # Linked already elsewhere: refused; to the same: nothing to do.
    identity.link(settings, "py", ANON, EXTERNAL, has_work)
    with pytest.raises(aliases.IdentityError):
        identity.link(settings, "py", "c" * 32, EXTERNAL, has_work)
    assert "already" in identity.link(settings, "py", ANON, EXTERNAL, has_work)
    # Chains are flattened: a third id of the same learner leads to ANON too.
    identity.link(settings, "py", EXTERNAL, "third-id", has_work)
    assert aliases.canonical(settings, "py", "third-id") == ANON
