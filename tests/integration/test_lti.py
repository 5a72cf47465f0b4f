"""Launches that cannot be forged, through nginx on a real systemd: LTI 1.1, LTI 1.3
and the legacy link's per-course modes. A refused launch creates nothing."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import SIGNATURE_TYPE_BODY, Client

from nbunits.dispatcher.legacy import legacy_signature
from nbunits.lti import LTI13_CLAIM

from .conftest import SHARED_IN_BOX, Nbunits, client

COURSE, CONTEXT = "ltidemo", "course-v1:Org+LTI+2026"
KEY, SECRET = "ltidemo-key", secrets.token_hex(16)
ISSUER, CLIENT, AUTH = "https://lms.example.org", "nbunits-tool", "https://lms.example.org/auth"
KEYS_FILE = "/etc/nbunits/ltidemo-platform.json"
PLATFORM_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def lti_course(nb: Nbunits) -> str:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(PLATFORM_KEY.public_key()))
    # The platform's JWKS URL (file:// here: the box has no network); nbunits
    # course add saves it where the dispatcher reads it.
    (nb.nginx_socket.parent / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    (nb.nginx_socket.parent / "lti11.secret").write_text(SECRET + "\n")
    nb.nbunits("course", "add", COURSE, "--dir", "/opt/nbunits/src/examples/demo",
               "--lti-context-id", CONTEXT, "--lti11-key", KEY,
               "--lti11-secret-file", f"{SHARED_IN_BOX}/lti11.secret",
               "--lti13-issuer", ISSUER, "--lti13-client-id", CLIENT,
               "--lti13-deployment-id", "1", "--lti13-auth-url", AUTH,
               "--lti13-keys", KEYS_FILE, "--lti13-keys-url", f"file://{SHARED_IN_BOX}/jwks.json",
               "--legacy", "off",
               "--lti-notebook", "block-v1:Org+LTI+2026+type@lti+block@w1=week1/loops.ipynb")
    return COURSE


def test_secrets_are_kept_from_everyone_but_the_dispatcher(nb: Nbunits, lti_course: str) -> None:
    out = nb.box.run("stat", "-c", "%U:%G %a", f"/etc/nbunits/secrets/{lti_course}.toml").stdout
    assert out.split() == ["root:nbunits", "640"]
    assert SECRET not in nb.box.read_file(f"/etc/nbunits/courses/{lti_course}.toml")


def lti11_form(student: str, secret: str = SECRET, **params: str) -> str:
    form = {"lti_message_type": "basic-lti-launch-request", "lti_version": "LTI-1p0",
            "user_id": student, "context_id": CONTEXT, "roles": "Learner",
            "resource_link_id": "block-v1:Org+LTI+2026+type@lti+block@w1", **params}
    signer = Client(KEY, client_secret=secret, signature_type=SIGNATURE_TYPE_BODY)
    _, _, body = signer.sign("http://localhost/lti/1.1/launch", "POST", urlencode(form), FORM)
    return str(body)


async def open_redirect(session: aiohttp.ClientSession, resp: aiohttp.ClientResponse,
                        course: str) -> tuple[str, str]:
    """A launch's redirect leads to the student's notebook UI: (user, page)."""
    body = await resp.text()
    assert resp.status == 302, f"{resp.status}: {body[:500]}"
    location = resp.headers["Location"]
    parts = urlsplit(location).path.split("/")
    assert parts[1:3] == ["nb", course], location
    async with session.get(location) as page:
        text = await page.text()
        assert page.status == 200, text[:500]
    assert "jupyter-config-data" in text
    return parts[3], text


def test_lti11_signed_launch_opens_the_notebook(nb: Nbunits, lti_course: str) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> str:
        async with client(nb) as session:
            async with session.post("/lti/1.1/launch", data=lti11_form(student), headers=FORM,
                                    allow_redirects=False) as resp:
                user, _ = await open_redirect(session, resp, lti_course)
            return user

    user = asyncio.run(scenario())
    assert (nb.home / user / lti_course / "week1" / "loops.ipynb").is_file()


def test_lti11_forged_or_replayed_launches_create_nothing(nb: Nbunits, lti_course: str) -> None:
    before = nb.users()
    student = secrets.token_hex(16)
    good = lti11_form(student, custom_notebook="welcome.ipynb")
    forged = [
        (lti11_form(secrets.token_hex(16), secret="guessed"), 401),
        (good.replace(student, secrets.token_hex(16)), 401),  # tampered after signing
        (lti11_form(secrets.token_hex(16), context_id="course-v1:Other+1+2"), 403),
        (urlencode({"user_id": student, "context_id": CONTEXT}), 401),  # unsigned
    ]

    async def scenario() -> None:
        async with client(nb) as session:
            for body, status in forged:
                async with session.post("/lti/1.1/launch", data=body, headers=FORM,
                                        allow_redirects=False) as resp:
                    text = await resp.text()
                    assert resp.status == status, (body, text[:300])
                    assert "<h1>" in text and "Traceback" not in text
    asyncio.run(scenario())
    assert nb.users() == before

    async def replay() -> None:
        async with client(nb) as session:
            async with session.post("/lti/1.1/launch", data=good, headers=FORM,
                                    allow_redirects=False) as resp:
                assert resp.status == 302, await resp.text()
            async with session.post("/lti/1.1/launch", data=good, headers=FORM,
                                    allow_redirects=False) as resp:
                assert resp.status == 401, await resp.text()
                assert "used already" in await resp.text()
    asyncio.run(replay())


def id_token(nonce: str, student: str, key: rsa.RSAPrivateKey = PLATFORM_KEY) -> str:
    now = int(time.time())
    return jwt.encode({
        "iss": ISSUER, "aud": CLIENT, "sub": student, "iat": now, "exp": now + 300,
        "nonce": nonce,
        LTI13_CLAIM + "message_type": "LtiResourceLinkRequest",
        LTI13_CLAIM + "version": "1.3.0",
        LTI13_CLAIM + "deployment_id": "1",
        LTI13_CLAIM + "context": {"id": CONTEXT},
        LTI13_CLAIM + "resource_link": {"id": "any"},
        LTI13_CLAIM + "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"],
        LTI13_CLAIM + "custom": {"notebook": "welcome.ipynb"},
    }, key, algorithm="RS256", headers={"kid": "k1"})


async def lti13_login(session: aiohttp.ClientSession) -> tuple[str, str]:
    """The platform's login initiation; returns (state, nonce) from our redirect to it."""
    query = {"iss": ISSUER, "client_id": CLIENT, "login_hint": "opaque",
             "target_link_uri": "http://localhost/lti/1.3/launch", "lti_message_hint": "m"}
    async with session.get("/lti/1.3/login?" + urlencode(query), allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == AUTH
    sent = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert sent["client_id"] == CLIENT and sent["login_hint"] == "opaque"
    assert sent["redirect_uri"] == "http://localhost/lti/1.3/launch"
    assert sent["response_mode"] == "form_post" and sent["lti_message_hint"] == "m"
    return sent["state"], sent["nonce"]


def test_lti13_login_then_launch_opens_the_notebook(nb: Nbunits, lti_course: str) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> str:
        async with client(nb) as session:
            state, nonce = await lti13_login(session)
            async with session.post("/lti/1.3/launch", allow_redirects=False, data={
                    "state": state, "id_token": id_token(nonce, student)}) as resp:
                user, _ = await open_redirect(session, resp, lti_course)
            return user

    user = asyncio.run(scenario())
    assert (nb.home / user / lti_course / "welcome.ipynb").is_file()


def test_lti13_forged_launches_create_nothing(nb: Nbunits, lti_course: str) -> None:
    before = nb.users()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    async def scenario() -> None:
        async with client(nb) as session:
            state, nonce = await lti13_login(session)
            cases = [
                ({"state": state, "id_token": id_token(nonce, "x1", other_key)}, 401),
                ({"state": state, "id_token": id_token("not-the-nonce", "x2")}, 401),
                ({"state": "forged", "id_token": id_token(nonce, "x3")}, 401),
            ]
            for form, status in cases:
                async with session.post("/lti/1.3/launch", data=form,
                                        allow_redirects=False) as resp:
                    assert resp.status == status, await resp.text()
            async with session.get("/lti/1.3/login?" + urlencode(
                    {"iss": "https://evil.example.org", "login_hint": "x"}),
                    allow_redirects=False) as resp:
                assert resp.status == 403, await resp.text()
    asyncio.run(scenario())
    assert nb.users() == before


def test_legacy_link_modes(nb: Nbunits, lti_course: str) -> None:
    student = secrets.token_hex(16)
    link = f"/ipythonExercice/{lti_course}/welcome.ipynb/{student}"
    before = nb.users()

    async def get(url: str, **headers: str) -> int:
        async with client(nb) as session, \
                session.get(url, headers=headers, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    assert asyncio.run(get(link)) == 403  # off
    (nb.nginx_socket.parent / "legacy.secret").write_text("legacy-secret\n")
    nb.nbunits("course", "update", lti_course, "--legacy", "referrer",
               "--legacy-referrer", "fun-mooc.fr")
    assert asyncio.run(get(link)) == 403
    assert asyncio.run(get(link, Referer="https://fun-mooc.fr.evil.org/x")) == 403
    assert nb.users() == before
    assert asyncio.run(get(link, Referer="https://lms.fun-mooc.fr/courses/x")) == 302

    failed = nb.nbunits("course", "update", lti_course, "--legacy", "signed", check=False)
    assert failed.returncode != 0 and "legacy-secret-file" in failed.stderr
    nb.nbunits("course", "update", lti_course, "--legacy", "signed",
               "--legacy-secret-file", f"{SHARED_IN_BOX}/legacy.secret")
    expires = int(time.time()) + 300
    sig = legacy_signature("legacy-secret", lti_course, "welcome.ipynb", student, expires)
    assert asyncio.run(get(link, Referer="https://lms.fun-mooc.fr/courses/x")) == 403
    assert asyncio.run(get(f"{link}?sig={sig}&expires={expires + 1}")) == 403
    assert asyncio.run(get(f"{link}?sig={sig}&expires={expires}")) == 302
