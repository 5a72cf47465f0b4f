"""A fake LMS for the LTI tests: one course set up for LTI 1.1 and 1.3, and the
launches its platform would send (signed forms, id_tokens, the OIDC login)."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import SIGNATURE_TYPE_BODY, Client

from nbunits.dispatcher.launch import LTI13_CLAIM

from .conftest import SERVER, SHARED_IN_BOX, Nbunits

COURSE, CONTEXT = "ltidemo", "course-v1:Org+LTI+2026"
KEY, SECRET = "ltidemo-key", secrets.token_hex(16)
ISSUER, CLIENT, AUTH = "https://lms.example.org", "nbunits-tool", "https://lms.example.org/auth"
KEYS_FILE = "/etc/nbunits/ltidemo-platform.json"
LINK, LINKED_NOTEBOOK = "block-v1:Org+LTI+2026+type@lti+block@w1", "week1/loops.ipynb"
PLATFORM_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Where the platform posts and redirects to: the tool's https:// URLs, as configured in the LMS.
LAUNCH11 = f"https://{SERVER}/lti/1.1/launch"
LAUNCH13 = f"https://{SERVER}/lti/1.3/launch"


def add_course(nb: Nbunits) -> str:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(PLATFORM_KEY.public_key()))
    # The platform's JWKS URL (file:// here: the box has no network); nbunits
    # course add saves it where the dispatcher reads it.
    (nb.shared / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    (nb.shared / "lti11.secret").write_text(SECRET + "\n")
    nb.nbunits("course", "add", COURSE, "--dir", "/opt/nbunits/src/examples/demo",
               "--lti-context-id", CONTEXT, "--lti11-key", KEY,
               "--lti11-secret-file", f"{SHARED_IN_BOX}/lti11.secret",
               "--lti13-issuer", ISSUER, "--lti13-client-id", CLIENT,
               "--lti13-deployment-id", "1", "--lti13-auth-url", AUTH,
               "--lti13-keys", KEYS_FILE, "--lti13-keys-url", f"file://{SHARED_IN_BOX}/jwks.json",
               "--legacy", "off", "--lti-notebook", f"{LINK}={LINKED_NOTEBOOK}")
    return COURSE


def sign11(form: dict[str, str], secret: str = SECRET, key: str = KEY,
           timestamp: int | None = None, url: str = LAUNCH11) -> str:
    """The form as the platform POSTs it: OAuth1-signed in the body."""
    signer = Client(key, client_secret=secret, signature_type=SIGNATURE_TYPE_BODY,
                    timestamp=str(timestamp) if timestamp else None)
    _, _, body = signer.sign(url, "POST", urlencode(form), FORM)
    return str(body)


def lti11_form(student: str, secret: str = SECRET, **params: str) -> str:
    form = {"lti_message_type": "basic-lti-launch-request", "lti_version": "LTI-1p0",
            "user_id": student, "context_id": CONTEXT, "roles": "Learner",
            "resource_link_id": LINK, **params}
    return sign11(form, secret)


def id_token(nonce: str, sub: str, key: rsa.RSAPrivateKey = PLATFORM_KEY,
             claims: dict[str, Any] | None = None, **custom: str) -> str:
    """An id_token; `claims` overrides any claim (LTI ones by their short name),
    `custom` adds custom parameters."""
    now = int(time.time())
    token: dict[str, Any] = {
        "iss": ISSUER, "aud": CLIENT, "sub": sub, "iat": now, "exp": now + 300,
        "nonce": nonce,
        LTI13_CLAIM + "message_type": "LtiResourceLinkRequest",
        LTI13_CLAIM + "version": "1.3.0",
        LTI13_CLAIM + "deployment_id": "1",
        LTI13_CLAIM + "context": {"id": CONTEXT},
        LTI13_CLAIM + "resource_link": {"id": "any"},
        LTI13_CLAIM + "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"],
        LTI13_CLAIM + "custom": {"notebook": "welcome.ipynb", **custom},
    }
    for name, value in (claims or {}).items():
        token[name if name in ("iss", "aud", "sub", "iat", "exp", "nonce", "azp")
              else LTI13_CLAIM + name] = value
    return jwt.encode(token, key, algorithm="RS256", headers={"kid": "k1"})


async def lti13_login(session: aiohttp.ClientSession) -> tuple[str, str]:
    """The platform's login initiation; returns (state, nonce) from our redirect to it."""
    query = {"iss": ISSUER, "client_id": CLIENT, "login_hint": "opaque",
             "target_link_uri": LAUNCH13, "lti_message_hint": "m"}
    async with session.get("/lti/1.3/login?" + urlencode(query), allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == AUTH
    sent = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert sent["client_id"] == CLIENT and sent["login_hint"] == "opaque"
    assert sent["redirect_uri"] == LAUNCH13
    assert sent["response_mode"] == "form_post" and sent["lti_message_hint"] == "m"
    return sent["state"], sent["nonce"]
