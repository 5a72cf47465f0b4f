"""Hostile LTI launches for the fuzz test (test_fuzz.py), and what each must get.

- LTI 1.1 form POSTs: unsigned (with made-up oauth_* fields, or a raw body),
  signed wrongly (secret, key, tampered after signing, expired, PLAINTEXT with the
  real secret), and correctly signed by the fake LMS (lms.py) with hostile fields.
- LTI 1.3 launches: garbage state and id_token; a forged state; id_tokens signed
  with another key, with no algorithm or with HS256 keyed by the public key; and
  tokens the platform signed, with hostile claims, after a real login.
- LTI 1.3 logins with hostile iss, client_id, login_hint and hints.

Signatures, tokens and logins are made when a case is sent (timestamps and nonces
must be fresh). The oracle (`expect`) is written from the docs (docs/openedx.md), not from
nbunits.dispatcher.launch, except for which role names mean staff.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import aiohttp
import jwt
import yarl
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import strategies as st

from nbunits.core.names import user_for
from nbunits.dispatcher.launch import is_staff
from nbunits.dispatcher.lti import MAX_HINTS, hints

from .conftest import Nbunits, client
from .fuzzing import (
    ABSOLUTES,
    INJECTIONS,
    NASTY_TEXT,
    NOTEBOOKS,
    TRAVERSALS,
    VALID_IDS,
    Answer,
    Opens,
    Outcome,
    answer,
    broken,
    judge_open,
    refused,
    valid_id,
)
from .lms import (
    AUTH,
    CLIENT,
    CONTEXT,
    COURSE,
    FORM,
    ISSUER,
    KEY,
    LAUNCH13,
    LINK,
    LINKED_NOTEBOOK,
    PLATFORM_KEY,
    SECRET,
    id_token,
    sign11,
)

OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = PLATFORM_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
STAFF = ("Instructor", "urn:lti:role:ims/lis/Administrator",
         "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor")
# Open edX's forum roles arrive as TeachingAssistant; institution roles are not the course's.
ROLES = STAFF + ("TeachingAssistant", "Learner", "", "Student", "urn:lti:role:ims/lis/Learner",
                 "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant",
                 "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Administrator",
                 "Instructorx",
                 "Instructor\x00", "instructor", "Mentor", "urn:lti:instrole:ims/lis/Observer")


def hostile(pool: tuple[str, ...]) -> st.SearchStrategy[str]:
    """A field value: from the pool, generated text, a path of traversals, overlong."""
    return st.one_of(
        st.sampled_from(pool), NASTY_TEXT,
        st.lists(st.sampled_from(TRAVERSALS + pool), min_size=1, max_size=5).map("/".join),
        st.integers(256, 4000).map(lambda n: "a" * n),
    )


ID_POOL = INJECTIONS + ("", "a" * 256, "a b", "a/b", "../x", "\x00", "a\x00", "nbaaaaaaaaaaaaaaaa",
                        "é", "fuzz-student-1\n", " fuzz-student-1")
STUDENT_ID = st.one_of(st.sampled_from(VALID_IDS), st.sampled_from(VALID_IDS), hostile(ID_POOL))
NB_POOL = ("escape.ipynb", "../welcome.ipynb", "week1/../welcome.ipynb", "./welcome.ipynb",
           "welcome.ipynb\x00", "welcome.ipynb\x00.txt", "welcome", "week1/", "welcome.IPYNB",
           "nosuch.ipynb", "nbunits-demo@x.service.ipynb", "$(id).ipynb", "a" * 300 + ".ipynb",
           "é.ipynb", "week1\\loops.ipynb", "%2e%2e/welcome.ipynb") + ABSOLUTES + INJECTIONS
NOTEBOOK = st.one_of(st.sampled_from(NOTEBOOKS), hostile(NB_POOL))
CONTEXT_ID = st.one_of(st.just(CONTEXT), st.just(CONTEXT), hostile((
    "course-v1:Other+1+2", CONTEXT + "\x00", CONTEXT.lower(), CONTEXT + " ", "", "demo")))
ROLE_LIST = st.lists(st.sampled_from(ROLES), max_size=3)
LINK_ID = st.one_of(st.just(LINK), hostile(("", "other", LINK + "\x00", LINK.upper())))


# --- LTI 1.1 ---------------------------------------------------------------------

@dataclass(frozen=True)
class Lti11:
    signing: str  # good, none, raw, secret, key, tampered, expired, plaintext
    form: tuple[tuple[str, str], ...]

    def body(self) -> str:
        form = dict(self.form)
        if self.signing == "good":
            return sign11(form)
        if self.signing in ("none", "raw"):
            return urlencode(form) if self.signing == "none" else form.get("raw", "")
        if self.signing == "plaintext":  # the real secret, in a method we must not accept
            return urlencode({**form, "oauth_consumer_key": KEY, "oauth_signature_method":
                              "PLAINTEXT", "oauth_signature": f"{SECRET}&",
                              "oauth_timestamp": str(int(time.time())),
                              "oauth_nonce": secrets.token_hex(8), "oauth_version": "1.0"})
        if self.signing == "tampered":
            return sign11(form) + "&custom_notebook=week1%2Floops.ipynb"
        if self.signing == "expired":
            return sign11(form, timestamp=int(time.time()) - 600)
        if self.signing == "secret":
            return sign11(form, secret="guessed")
        return sign11(form, key="guessed")

    def expected(self, notebooks: frozenset[str]) -> Expected:
        form = dict(self.form)
        if self.signing != "good" or form.get("lti_message_type", "basic-lti-launch-request") \
                != "basic-lti-launch-request":
            return None
        return expect(form.get("context_id", ""), form.get("user_id", ""),
                      form.get("custom_notebook", ""), form.get("resource_link_id", ""),
                      form.get("roles", "").split(","), form.get("custom_student", ""),
                      notebooks)


LTI11_FIELDS = st.fixed_dictionaries({
    "user_id": STUDENT_ID, "context_id": CONTEXT_ID, "resource_link_id": LINK_ID,
    "roles": st.one_of(ROLE_LIST.map(",".join), hostile(ROLES)),
}, optional={
    "custom_notebook": NOTEBOOK,
    "custom_student": STUDENT_ID,
    "lti_message_type": st.sampled_from(["basic-lti-launch-request", "ContentItemSelectionRequest",
                                         "", "basic-lti-launch-request\x00"]),
    "lti_version": st.sampled_from(["LTI-1p0", "LTI-2p0", ""]),
})
# Launches that may well be valid (the hostile ones rarely are): staff or not,
# naming a student or not, with hostile extra fields.
A_ROLE = st.sampled_from(STAFF + ("Learner", "Learner,Instructor"))
MAYBE_STUDENT = st.one_of(st.sampled_from(VALID_IDS), st.just(""), hostile(ID_POOL))
LTI11_LIKELY = st.fixed_dictionaries({
    "user_id": st.sampled_from(VALID_IDS), "context_id": st.just(CONTEXT),
    "resource_link_id": LINK_ID, "roles": A_ROLE, "custom_student": MAYBE_STUDENT,
}, optional={
    "custom_notebook": st.sampled_from(NOTEBOOKS),
    "lti_version": hostile(("LTI-1p0",)), "lis_person_name_full": hostile(("Ann",)),
})
OAUTH_FIELDS = st.fixed_dictionaries({}, optional={
    "oauth_consumer_key": st.one_of(st.just(KEY), hostile((KEY + "\x00", ""))),
    "oauth_signature_method": st.sampled_from(["HMAC-SHA1", "PLAINTEXT", "RSA-SHA1",
                                               "HMAC-SHA256", "", "none"]),
    "oauth_timestamp": st.one_of(st.just(str(int(time.time()))),
                                 hostile(("0", "-1", "9" * 40, "1e9", ""))),
    "oauth_nonce": hostile(("", "x")),
    "oauth_version": st.sampled_from(["1.0", "2.0", ""]),
    "oauth_signature": hostile(("", "=", base64.b64encode(b"x" * 20).decode())),
    "oauth_callback": hostile(("about:blank", "javascript:alert(1)")),
})
RAW_BODIES = hostile(("%ff%fe=%00", "a=%", "&&==&", "user_id", "=" * 100, "%" * 50,
                      "oauth_signature=a&oauth_signature=b"))


def _tuples(d: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(d.items())


LTI11 = st.one_of(
    st.builds(Lti11, signing=st.just("good"), form=LTI11_FIELDS.map(_tuples)),
    st.builds(Lti11, signing=st.just("good"), form=LTI11_LIKELY.map(_tuples)),
    st.builds(Lti11, signing=st.just("none"),
              form=st.tuples(LTI11_FIELDS, OAUTH_FIELDS).map(lambda t: _tuples({**t[0], **t[1]}))),
    st.builds(Lti11, signing=st.just("raw"), form=RAW_BODIES.map(lambda b: (("raw", b),))),
    st.builds(Lti11, signing=st.sampled_from(["secret", "key", "tampered", "expired",
                                              "plaintext"]),
              form=LTI11_FIELDS.map(_tuples)),
)


# --- LTI 1.3 ---------------------------------------------------------------------

@dataclass(frozen=True)
class Lti13:
    how: str  # good, garbage, forged-state, other-key, alg-none, hs256, unknown-kid
    claims: tuple[tuple[str, Any], ...] = ()  # overrides of lms.id_token's claims
    state: str = ""  # for garbage
    token: str = ""  # for garbage

    def expected(self, notebooks: frozenset[str]) -> Expected:
        claims = dict(self.claims)
        if self.how != "good" or claims.get("message_type", "LtiResourceLinkRequest") \
                != "LtiResourceLinkRequest" or claims.get("deployment_id", "1") != "1":
            return None
        context, link = claims.get("context"), claims.get("resource_link")
        custom, roles = claims.get("custom", {}), claims.get("roles", [])
        custom = custom if isinstance(custom, dict) else {}
        return expect(context.get("id", "") if isinstance(context, dict) else "",
                      str(claims["sub"]), str(custom.get("notebook", "")),
                      link.get("id", "") if isinstance(link, dict) else "",
                      [str(r) for r in roles] if isinstance(roles, list) else [],
                      str(custom.get("student", "")), notebooks)

    def id_token(self, nonce: str) -> str:
        claims = dict(self.claims)
        sub = str(claims.pop("sub", "fuzz-student-1"))
        if self.how in ("good", "forged-state"):
            return id_token(nonce, sub, claims=claims)
        if self.how == "other-key":
            return id_token(nonce, sub, OTHER_KEY, claims=claims)
        if self.how == "unknown-kid":
            token = id_token(nonce, sub, claims=claims)
            head = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k2"}').rstrip(b"=")
            return head.decode() + token[token.index("."):]
        payload = id_token(nonce, sub, claims=claims).split(".")[1]
        if self.how == "alg-none":
            return f"{_b64({'alg': 'none', 'kid': 'k1'})}.{payload}."
        signed = f"{_b64({'alg': 'HS256', 'kid': 'k1'})}.{payload}"  # key confusion
        mac = hmac.new(PUBLIC_PEM, signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


CLAIMS = st.fixed_dictionaries({
    "sub": STUDENT_ID,
    "context": st.one_of(CONTEXT_ID.map(lambda c: {"id": c}),
                         st.sampled_from([None, CONTEXT, [CONTEXT], {}])),
    "roles": st.one_of(ROLE_LIST, ROLE_LIST, hostile(ROLES), st.sampled_from([None, 7, {}])),
    "custom": st.one_of(
        st.fixed_dictionaries({}, optional={"notebook": NOTEBOOK, "student": STUDENT_ID}),
        st.sampled_from([None, "notebook=welcome.ipynb", ["welcome.ipynb"], 0])),
    "resource_link": st.one_of(LINK_ID.map(lambda r: {"id": r}), st.just(None)),
}, optional={
    "message_type": st.sampled_from(["LtiDeepLinkingRequest", "", None]),
    "deployment_id": st.sampled_from(["2", "", None, 1]),
}).map(lambda d: tuple(d.items()))
CLAIMS_LIKELY = st.fixed_dictionaries({
    "sub": st.sampled_from(VALID_IDS), "context": st.just({"id": CONTEXT}),
    "roles": A_ROLE.map(lambda r: r.split(",")),
    "custom": st.fixed_dictionaries({"student": MAYBE_STUDENT},
                                    optional={"notebook": st.sampled_from(NOTEBOOKS)}),
    "resource_link": LINK_ID.map(lambda r: {"id": r}),
}).map(lambda d: tuple(d.items()))
FORGED_JWT = jwt.encode({"course": COURSE, "nonce": "n", "exp": 2**31}, b"k" * 32)
GARBAGE_JWTS = ("", "a.b.c", "..", "eyJhbGciOiJub25lIn0.e30.", FORGED_JWT, "x" * 5000,
                f"{_b64({'alg': 'none'})}.{_b64({'course': COURSE, 'nonce': 'n'})}.")

LTI13 = st.one_of(
    st.builds(Lti13, how=st.just("good"), claims=CLAIMS),
    st.builds(Lti13, how=st.just("good"), claims=CLAIMS_LIKELY),
    st.builds(Lti13, how=st.sampled_from(["forged-state", "other-key", "alg-none", "hs256",
                                          "unknown-kid"]), claims=CLAIMS),
    st.builds(Lti13, how=st.just("garbage"), state=hostile(GARBAGE_JWTS),
              token=hostile(GARBAGE_JWTS)),
)


@dataclass(frozen=True)
class Login:
    method: str
    params: tuple[tuple[str, str], ...]

    def valid(self) -> bool:
        params = dict(self.params)
        return params.get("iss") == ISSUER and bool(params.get("login_hint")) \
            and params.get("client_id", "") in ("", CLIENT) and self.location_fits()

    def location_fits(self) -> bool:
        """The dispatcher refuses hints that would make its redirect too long."""
        return len(urlencode(hints(dict(self.params)))) <= MAX_HINTS


LOGIN = st.builds(Login, method=st.sampled_from(["GET", "POST"]), params=st.fixed_dictionaries(
    {"iss": st.one_of(st.just(ISSUER), hostile((ISSUER + "/", "https://evil.example.org", "")))},
    optional={"client_id": st.one_of(st.just(CLIENT), hostile((CLIENT + "\x00", ""))),
              "login_hint": hostile(("opaque", "", "\r\nX-Injected: 1")),
              "lti_message_hint": hostile(("m", "\r\nLocation: http://evil/")),
              "target_link_uri": hostile(("http://evil.example.org/", "javascript:x"))},
).map(lambda d: tuple(d.items())))

CASE = st.one_of(LTI11, LTI11, LTI13, LOGIN)


# --- the oracle, sending, judging ------------------------------------------------

# What a verified launch must do: ("open", student, notebook), ("staff", the student
# to view, notebook), ("page", "", notebook): the staff page listing the students;
# None: refused.
Expected = tuple[str, str, str] | None


def expect(context: str, student: str, notebook: str, link: str, roles: list[str],
           view: str, notebooks: frozenset[str]) -> Expected:
    notebook = notebook or (LINKED_NOTEBOOK if link == LINK else "")
    if context != CONTEXT or not valid_id(student) or notebook not in notebooks:
        return None
    if is_staff(roles):
        if not view:
            return ("page", "", notebook)
        return ("staff", view, notebook) if valid_id(view) else None
    return ("open", student, notebook)


@dataclass(frozen=True)
class Oracle:
    """What the judge knows before a run: the course's real notebooks, and the
    students who had opened it (a staff launch may view only them)."""

    notebooks: frozenset[str]
    came: frozenset[str]  # users

    def expected(self, case: Lti11 | Lti13) -> Expected:
        return case.expected(self.notebooks)


def phases(cases: list[Any], oracle: Oracle) -> tuple[list[Any], list[Any]]:
    """Staff launches naming a student go second, once the first phase's learners
    came: whether the student exists is then known from the cases."""
    naming = [c for c in cases if not isinstance(c, Login)
              and (e := oracle.expected(c)) is not None and e[0] == "staff"]
    return [c for c in cases if c not in naming], naming


def sender(oracle: Oracle) -> Callable[[aiohttp.ClientSession, Any, Outcome], Awaitable[None]]:
    async def send(session: aiohttp.ClientSession, case: Lti11 | Lti13 | Login,
                   outcome: Outcome) -> None:
        if isinstance(case, Login):
            await send_login(session, case, outcome)
            return
        try:
            if isinstance(case, Lti11):
                body = case.body()
                got = await answer(outcome, case, lambda: session.post(
                    "/lti/1.1/launch", data=body, headers=FORM, allow_redirects=False))
            else:
                form = await lti13_form(session, case)
                got = await answer(outcome, case, lambda: session.post(
                    "/lti/1.3/launch", data=form, allow_redirects=False))
        except AssertionError as exc:  # the fake LMS's own steps (a login) failed
            outcome.fail(case, f"could not prepare the launch: {exc}")
            return
        if got is None:
            return
        expected = oracle.expected(case)
        if expected and expected[0] == "open":
            outcome.opened.append((Opens(COURSE, expected[1], expected[2]), got))
        problem = judge(expected, got, oracle)
        if expected and expected[0] == "staff" and not problem and got.status == 302:
            outcome.staff_links.append((case, got.location))
        if problem:
            outcome.fail(case, problem)
    return send


async def lti13_form(session: aiohttp.ClientSession, case: Lti13) -> dict[str, str]:
    if case.how == "garbage":
        return {"state": case.state, "id_token": case.token}
    state, nonce = await login_state(session)
    if case.how == "forged-state":
        state = jwt.encode({"course": COURSE, "nonce": nonce, "iat": int(time.time()),
                            "exp": int(time.time()) + 300}, b"k" * 32)
    return {"state": state, "id_token": case.id_token(nonce)}


async def login_state(session: aiohttp.ClientSession) -> tuple[str, str]:
    query = urlencode({"iss": ISSUER, "client_id": CLIENT, "login_hint": "x"})
    async with session.get("/lti/1.3/login?" + query, allow_redirects=False) as resp:
        assert resp.status == 302, resp.status
        sent = parse_qs(urlsplit(resp.headers["Location"]).query)
    return sent["state"][0], sent["nonce"][0]


async def send_login(session: aiohttp.ClientSession, case: Login, outcome: Outcome) -> None:
    params = dict(case.params)
    if case.method == "GET":
        url = yarl.URL("/lti/1.3/login?" + urlencode(params), encoded=True)
        got = await answer(outcome, case, lambda: session.get(url, allow_redirects=False))
    else:
        got = await answer(outcome, case, lambda: session.post(
            "/lti/1.3/login", data=urlencode(params), headers=FORM, allow_redirects=False))
    if got is None:
        return
    problem = judge_login(case, got) if case.valid() else broken(got) or refused(got)
    if problem:
        outcome.fail(case, problem)


def judge_login(case: Login, got: Answer) -> str:
    """A valid login: redirected to the platform's authorization URL with exactly
    the OIDC parameters, the hints as given."""
    split = urlsplit(got.location)
    if got.status != 302 or f"{split.scheme}://{split.netloc}{split.path}" != AUTH:
        return f"a valid login got {got.status} {got.location or got.body[:200]!r}"
    sent = parse_qs(split.query, keep_blank_values=True)
    params = dict(case.params)
    want = {"scope": "openid", "response_type": "id_token", "response_mode": "form_post",
            "prompt": "none", "client_id": CLIENT, "redirect_uri": LAUNCH13,
            "login_hint": params["login_hint"], **hints(params)}
    got_once = {k: v[0] for k, v in sent.items() if len(v) == 1}
    wrong = {k: got_once.get(k) for k, v in want.items() if got_once.get(k) != v}
    if wrong or set(sent) != set(want) | {"state", "nonce"}:
        return f"a login was redirected with the wrong parameters {wrong}: {got.location}"
    return ""


def judge(expected: Expected, got: Answer, oracle: Oracle) -> str:
    if expected is None:
        return broken(got) or refused(got)
    kind, student, notebook = expected
    if kind == "page":
        if got.status != 200 or b"Students' copies of" not in got.body:
            return f"a staff launch naming no student got {got.status} {got.body[:200]!r}"
        return ""
    if kind == "open":
        return judge_open(Opens(COURSE, student, notebook), got, html_ok=False)
    user = user_for(student)
    if user not in oracle.came:  # staff naming a student who never came: nothing to see
        return "" if got.status == 404 and not got.location else \
            f"staff naming a student who never came got {got.status} {got.location}"
    split = urlsplit(got.location)
    query = parse_qs(split.query)
    if got.status != 302 or split.scheme or split.netloc \
            or split.path != f"/staff/{COURSE}/{user}/{quote(notebook)}" \
            or set(query) != {"expires", "sig"} or len(query["sig"]) != 1 \
            or not abs(int(query["expires"][0]) - time.time() - 3600) < 120:
        return f"a valid staff launch got {got.status} {got.location or got.body[:200]!r}"
    return ""


async def follow_staff_links(nb: Nbunits, links: list[tuple[Any, str]]) -> list[str]:
    """Each staff redirect opens that student's copy, read-only."""
    wrong = []
    async with client(nb) as session:
        for case, location in links:
            async with session.get(location, allow_redirects=False) as resp:
                page = await resp.text()
            user, notebook = location.split("?")[0].split("/", 4)[3:]
            if resp.status != 200 or f"{COURSE} / {user} / {unquote(notebook)}" not in page:
                wrong.append(f"{case}: {location} gave {resp.status} {page[:200]!r}")
    return wrong
