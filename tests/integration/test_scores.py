"""Scores reach the LMS: Open edX's own LTI consumer code (lti-consumer-xblock) as the
LMS's service side, served where nbunits in the box reaches it.

The stand-in listens on 127.0.0.1 inside the box's network namespace (its thread
entered it), over http, as an LMS on another host would be reached. Its token
endpoint is Open edX's LtiAdvantageConsumer.access_token, given nbunits' public key
as read from GET /lti/1.3/jwks (Studio's "Tool Public Key"), plus the claims the
IMS Security Framework asks of a client assertion; its scores endpoint checks the
bearer token with the consumer's check_token for the score scope and the score as
AGS 2.0 defines it; its LTI 1.1 outcome service is the XBlock's own body-signature
check (verify_oauth_body_signature) and parser (parse_grade_xml_body). The launches
are Open edX's, with grades enabled (enable_ags; LTI 1.1's lis_outcome_service_url).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import jwt
import nbformat
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lti_consumer.lti_1p1.consumer import LtiConsumer1p1
from lti_consumer.lti_1p1.oauth import verify_oauth_body_signature
from lti_consumer.outcomes import parse_grade_xml_body
from webob import Request

from nbunits.core.events import Event
from nbunits.core.names import user_for
from testbed.forward import enter_netns
from tests import openedx

from .conftest import REPO, SERVER, SHARED_IN_BOX, Nbunits, client
from .test_graded import homework
from .test_security import exposure

COURSE, CONTEXT = "scores", "course-v1:Scores+Py+2026"
PORT = 18080  # in the box's own network: free (nginx has 80 and 443)
LMS = f"http://127.0.0.1:{PORT}"
ISSUER = "https://lms.scores.test"
AUTH = ISSUER + "/api/lti_consumer/v1/launch/"
CONFIG = str(uuid.uuid4())
TOKEN_URL = f"{LMS}/api/lti_consumer/v1/token/{CONFIG}"
LINEITEMS = f"{LMS}/api/lti_consumer/v1/lti/7/lti-ags"
OUTCOMES = f"{LMS}/courses/{CONTEXT}/xblock/block1/handler_noauth/outcome_service_handler"
MEMBERSHIPS = f"{LMS}/api/lti_consumer/v1/lti/7/memberships"
NRPS_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
NRPS_TYPE = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
PAGE_AT_MOST = 2  # members per page, whatever limit is asked (NRPS 2.0 lets a platform)
BASE = f"https://{SERVER}"
KEY, SECRET = "scores-key", secrets.token_hex(16)
SCORE_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
SCORE_TYPE = "application/vnd.ims.lis.v1.score+json"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NOTEBOOK = "welcome.ipynb"
GRADED = "hw.ipynb"


@dataclass
class GradedComponent(openedx.Platform13):
    """An LTI 1.3 component with grades: Open edX's consumer with AGS enabled (the
    XBlock's "has_score"), its line item that of the component."""

    lineitem: str = ""

    def consumer(self) -> Any:
        consumer = super().consumer()
        consumer.enable_ags(lineitems_url=LINEITEMS, lineitem_url=self.lineitem)
        return consumer


@dataclass(frozen=True)
class Received:
    lineitem: str  # the path the score was posted to
    body: dict[str, Any]


class StandIn:
    """The LMS's service endpoints, on 127.0.0.1:PORT in the box's network."""

    def __init__(self, box_pid: int, component: GradedComponent) -> None:
        self.box_pid, self.component = box_pid, component
        self.failing = False  # answer 503 to everything
        self.scores: list[Received] = []
        self.outcomes: list[tuple[str, str, float, str]] = []
        # The course's members as Open edX's LMS gives them to its memberships view.
        self.members: list[dict[str, Any]] = []
        self.membership_asks: list[str] = []  # the URL of each memberships request
        self.refusals: list[str] = []  # what the checks refused, and why
        self.jtis: set[str] = set()
        self.tool_public: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None

    def start(self) -> StandIn:
        ready = threading.Event()
        threading.Thread(target=self._thread, args=(ready,), daemon=True).start()
        assert ready.wait(10) and self.site is not None, "the stand-in LMS did not start"
        return self

    def _thread(self, ready: threading.Event) -> None:
        enter_netns(self.box_pid)  # this thread only: its sockets are the box's
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application()
        app.router.add_post("/api/lti_consumer/v1/token/{config}", self.token)
        app.router.add_post("/api/lti_consumer/v1/lti/7/lti-ags/{item}/scores", self.score)
        app.router.add_post(urlsplit(OUTCOMES).path, self.outcome)
        app.router.add_get(urlsplit(MEMBERSHIPS).path, self.memberships)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.loop = asyncio.get_running_loop()
        await self._listen()
        ready.set()
        await asyncio.Event().wait()

    async def _listen(self) -> None:
        assert self.runner is not None
        self.site = web.TCPSite(self.runner, "127.0.0.1", PORT, reuse_address=True)
        await self.site.start()

    def _call(self, coro: Any) -> None:
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def refuse(self) -> None:
        """Down: connections refused (nothing listens)."""
        assert self.site is not None
        self._call(self.site.stop())
        self.site = None

    def serve(self) -> None:
        self.failing = False
        if self.site is None:
            self._call(self._listen())

    def refused(self, why: str, status: int = 400) -> web.Response:
        self.refusals.append(why)
        return web.Response(status=status, text=why)

    async def token(self, request: web.Request) -> web.Response:
        """Open edX's token view: LtiAdvantageConsumer.access_token, and the client
        assertion's claims (IMS Security Framework 1.0, 4.1.1)."""
        if self.failing:
            return web.Response(status=503, text="down for maintenance")
        form = {k: str(v) for k, v in (await request.post()).items()}
        try:
            claims = jwt.decode(form.get("client_assertion", ""), self.tool_public,
                                algorithms=["RS256"], audience=TOKEN_URL,
                                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]})
        except jwt.InvalidTokenError as exc:
            return self.refused(f"client assertion: {exc}")
        client_id = self.component.client_id
        if claims["iss"] != client_id or claims["sub"] != client_id:
            return self.refused("client assertion: iss and sub must be the client id")
        if claims["jti"] in self.jtis or claims["exp"] - claims["iat"] > 3600:
            return self.refused("client assertion: jti used already, or too long-lived")
        self.jtis.add(claims["jti"])
        try:
            answer = self.component.consumer().access_token(form)
        except Exception as exc:  # Open edX's view answers 400 to any of its errors
            return self.refused(f"access_token: {type(exc).__name__} {exc}")
        return web.json_response(answer)

    async def score(self, request: web.Request) -> web.Response:
        """Open edX's AGS scores endpoint: the bearer token for the score scope, the
        score's media type and fields (AGS 2.0, "Score publish service")."""
        if self.failing:
            return web.Response(status=503, text="down for maintenance")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self.refused("no bearer token", 401)
        try:
            allowed = self.component.consumer().check_token(auth[7:], [SCORE_SCOPE])
        except Exception as exc:
            return self.refused(f"check_token: {type(exc).__name__} {exc}", 401)
        if not allowed:
            return self.refused("the token lacks the score scope", 403)
        if request.content_type != SCORE_TYPE:
            return self.refused(f"content type {request.content_type}", 415)
        body = await request.json()
        if not (isinstance(body.get("userId"), str)
                and isinstance(body.get("scoreGiven"), (int, float))
                and isinstance(body.get("scoreMaximum"), (int, float))
                and body["scoreGiven"] >= 0 and body["scoreMaximum"] > 0
                and body.get("activityProgress") == "Completed"
                and body.get("gradingProgress") == "FullyGraded"
                and datetime.fromisoformat(body["timestamp"]).tzinfo is not None):
            return self.refused(f"not an AGS score: {body}")
        self.scores.append(Received(request.match_info["item"], body))
        return web.json_response({}, status=200)

    async def memberships(self, request: web.Request) -> web.Response:
        """Open edX's memberships view (NRPS 2.0): the bearer token checked by the
        consumer's check_token for the membership scope, its media type, and its pages
        (?limit=&page=, Link rel="next") serialized and rendered by its own code
        (openedx.membership_page), by PAGE_AT_MOST members at most."""
        self.membership_asks.append(str(request.url))
        if self.failing:
            return web.Response(status=503, text="down for maintenance")
        auth = request.headers.get("Authorization", "")
        try:
            allowed = auth.startswith("Bearer ") and self.component.consumer().check_token(
                auth[7:], [NRPS_SCOPE])
        except Exception as exc:
            return self.refused(f"check_token: {type(exc).__name__} {exc}", 401)
        if not allowed:
            return self.refused("no token with the membership scope", 403)
        if NRPS_TYPE not in request.headers.get("Accept", ""):
            return self.refused(f"Accept: {request.headers.get('Accept')}", 406)
        limit = min(int(request.query.get("limit", PAGE_AT_MOST)), PAGE_AT_MOST)
        body, next_url = openedx.membership_page(
            MEMBERSHIPS, CONTEXT, self.members, limit=limit, page=int(request.query.get("page", 1)))
        headers = {"Link": f'<{next_url}>; rel="next"'} if next_url else {}
        return web.Response(body=body, content_type=NRPS_TYPE, headers=headers)

    async def outcome(self, request: web.Request) -> web.Response:
        """The LTI 1.1 XBlock's outcome_service_handler: OAuth body signature, then
        its replaceResult parser."""
        if self.failing:
            return web.Response(status=503, text="down for maintenance")
        body = await request.read()
        signed = Request.blank(OUTCOMES, method="POST", body=body, headers={
            "Authorization": request.headers.get("Authorization", ""),
            "Content-Type": request.headers.get("Content-Type", "")})
        try:
            verify_oauth_body_signature(signed, SECRET, OUTCOMES)
            parsed = parse_grade_xml_body(body.decode())
        except Exception as exc:
            return self.refused(f"outcome: {type(exc).__name__} {exc}", 401)
        self.outcomes.append(parsed)
        return web.Response(content_type="application/xml", text=(
            '<?xml version="1.0" encoding="UTF-8"?><imsx_POXEnvelopeResponse xmlns="http://'
            'www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0"><imsx_POXHeader>'
            "<imsx_POXResponseHeaderInfo><imsx_version>V1.0</imsx_version>"
            f"<imsx_messageIdentifier>{secrets.token_hex(4)}</imsx_messageIdentifier>"
            "<imsx_statusInfo><imsx_codeMajor>success</imsx_codeMajor><imsx_severity>status"
            f"</imsx_severity><imsx_messageRefIdentifier>{parsed[0]}</imsx_messageRefIdentifier>"
            "</imsx_statusInfo></imsx_POXResponseHeaderInfo></imsx_POXHeader><imsx_POXBody>"
            "<replaceResultResponse/></imsx_POXBody></imsx_POXEnvelopeResponse>"))


def _pem() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def lms(nb: Nbunits) -> Iterator[StandIn]:
    key, pem = _pem()
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (nb.shared / "scores-platform.json").write_text(json.dumps({"keys": [{**public, "kid": "p1"}]}))
    (nb.shared / "scores-11.secret").write_text(SECRET + "\n")
    component = GradedComponent(ISSUER, f"{BASE}/lti/1.3/login", f"{BASE}/lti/1.3/launch", pem,
                                "p1", memberships_url=MEMBERSHIPS, lineitem=f"{LINEITEMS}/3")
    # The demo course and a graded notebook (nbgrader's cells: test_grading's homework).
    shutil.copytree(REPO / "examples" / "demo", nb.shared / "scores-course", dirs_exist_ok=True)
    (nb.shared / "scores-course" / GRADED).write_text(homework())
    nb.nbunits("course", "add", COURSE, "--dir", f"{SHARED_IN_BOX}/scores-course",
               "--lti-context-id", CONTEXT, "--lti11-key", KEY,
               "--lti11-secret-file", f"{SHARED_IN_BOX}/scores-11.secret",
               "--lti13-issuer", ISSUER, "--lti13-client-id", component.client_id,
               "--lti13-deployment-id", "1", "--lti13-auth-url", AUTH,
               "--lti13-keys-url", f"file://{SHARED_IN_BOX}/scores-platform.json",
               "--lti13-token-url", TOKEN_URL, "--legacy", "open")

    async def tool_jwks() -> dict[str, Any]:
        async with client(nb) as session, session.get("/lti/1.3/jwks") as resp:
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
            return answer

    jwk = asyncio.run(tool_jwks())["keys"][0]
    tool_public = jwt.PyJWK.from_dict(jwk).key
    component.tool_key = tool_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    stand_in = StandIn(nb.box.leader_pid, component)
    stand_in.tool_public = tool_public
    yield stand_in.start()


async def _launch13(nb: Nbunits, lms: StandIn, sub: str, role: str = "student") -> int:
    """Open edX's LTI 1.3 launch of the graded component, through the browser's steps."""
    return (await _launched_page(nb, lms, sub, role))[0]


async def _launched_page(nb: Nbunits, lms: StandIn, sub: str, role: str,
                         notebook: str = NOTEBOOK,
                         session: aiohttp.ClientSession | None = None) -> tuple[int, str]:
    """(status, body) of the launch's answer: the staff page, or for a learner the
    redirect to their notebook (its Location as the body)."""
    started = lms.component.login(external_user_id=sub, role=role, context_id=CONTEXT,
                                  resource_link_id=f"block-v1:x+type@lti_consumer+block@{sub}",
                                  custom=[f"notebook={notebook}"])
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(client(nb))
        login = urlsplit(started.login_url)
        async with session.get(f"{login.path}?{login.query}", allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            form = started.answer(resp.headers["Location"])
        async with session.post("/lti/1.3/launch", data=form, allow_redirects=False,
                                headers={"Accept-Language": "en"}) as resp:
            return resp.status, resp.headers.get("Location") or await resp.text()


async def _launch11(nb: Nbunits, user_id: str) -> int:
    """The LTI 1.1 XBlock's launch with grades: lis_outcome_service_url and the sourcedid."""
    consumer = LtiConsumer1p1(f"{BASE}/lti/1.1/launch", KEY, SECRET)
    link = "block-v1:Scores+Py+2026+type@lti_consumer+block@b11"
    consumer.set_user_data(user_id, "Student,Learner",
                           result_sourcedid=f"{CONTEXT}:{link}:{user_id}")
    consumer.set_context_data(CONTEXT, "Scores", "Org")
    consumer.set_outcome_service_url(OUTCOMES)
    consumer.set_custom_parameters(openedx.studio_params_11([f"notebook={NOTEBOOK}"]))
    form = {k: str(v) for k, v in consumer.generate_launch_request(link).items()}
    async with client(nb) as session, session.post(
            "/lti/1.1/launch", data=urlencode(form), headers=FORM, allow_redirects=False) as resp:
        return resp.status


def _listed(nb: Nbunits, user: str) -> list[dict[str, Any]]:
    rows = json.loads(nb.nbunits("scores", "list", COURSE, "--json").stdout)
    return [r for r in rows if r["user"] == user]


def _events(nb: Nbunits, event: Event, user: str) -> list[dict[str, str]]:
    out = nb.box.run("journalctl", "--no-pager", "--output=json", f"MESSAGE_ID={event.value}",
                     f"COURSE={COURSE}", f"STUDENT={user}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _until(what: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := what()) and time.monotonic() < deadline:
        time.sleep(0.3)
    return found


def _launched13(nb: Nbunits, lms: StandIn) -> str:
    sub = str(uuid.uuid4())
    assert asyncio.run(_launch13(nb, lms, sub)) in (200, 302)
    return sub


def test_an_lti13_score_reaches_the_line_item_for_the_launch_sub(nb: Nbunits,
                                                                  lms: StandIn) -> None:
    sub = _launched13(nb, lms)
    user = user_for(sub)
    # Recorded root-only, from the verified launch.
    out = nb.box.run("find", "/var/lib/nbunits/scores", "-maxdepth", "0", "-printf", "%m %u").stdout
    assert out == "700 root"
    nb.nbunits("score", "set", COURSE, sub, NOTEBOOK, "7", "10")
    got = _until(lambda: [s for s in lms.scores if s.body["userId"] == sub])
    assert [(s.lineitem, s.body["scoreGiven"], s.body["scoreMaximum"]) for s in got] == \
        [("3", 7, 10)], lms.refusals
    assert _until(lambda: [r for r in _listed(nb, user) if r["state"] == "sent"])
    metrics = nb.nbunits("metrics").stdout
    assert f'nbunits_scores_sent_total{{course="{COURSE}"}}' in metrics
    listed = nb.nbunits("scores", "list").stdout  # for people: one line per score
    assert f"{COURSE}\t{user}\t{NOTEBOOK}\tsent\t7/10\t" in listed, listed
    [event] = _events(nb, Event.SCORE_SENT, user)
    assert (event["NOTEBOOK"], event["GIVEN"], event["VERSION"]) == (NOTEBOOK, "7.0", "1.3")
    # A resubmission after it was sent replaces it, and goes too.
    nb.nbunits("score", "set", COURSE, sub, NOTEBOOK, "9", "10")
    assert _until(lambda: len([s for s in lms.scores if s.body["userId"] == sub]) == 2)
    assert [s.body["scoreGiven"] for s in lms.scores if s.body["userId"] == sub] == [7, 9]
    assert _until(lambda: [(r["given"], r["state"]) for r in _listed(nb, user)] == [(9, "sent")])


def test_the_lms_down_keeps_the_score_which_is_sent_once_it_is_back(nb: Nbunits,
                                                                     lms: StandIn) -> None:
    sub = _launched13(nb, lms)
    user = user_for(sub)
    lms.failing = True
    try:
        nb.nbunits("score", "set", COURSE, sub, NOTEBOOK, "3", "10")
        [row] = _until(lambda: [r for r in _listed(nb, user) if r["state"] == "failed"])
        assert "HTTP 503" in row["last_error"] and row["given"] == 3
        lms.refuse()  # now not even listening
        nb.nbunits("score", "set", COURSE, sub, NOTEBOOK, "8", "10")  # a resubmission
        [row] = _until(lambda: [r for r in _listed(nb, user)
                                if r["state"] == "failed" and r["given"] == 8])
        assert "cannot reach" in row["last_error"], row
        nb.nbunits("scores", "send", "--all")
        [row] = _listed(nb, user)
        assert row["state"] == "failed" and row["given"] == 8
    finally:
        lms.serve()
    nb.nbunits("scores", "send", "--all")
    assert _until(lambda: [r for r in _listed(nb, user) if r["state"] == "sent"])
    nb.nbunits("scores", "send", "--all")
    # The replaced score never went; the one kept went once.
    assert [s.body["scoreGiven"] for s in lms.scores if s.body["userId"] == sub] == [8]
    failures = _events(nb, Event.SCORE_FAILED, user)
    assert any("HTTP 503" in e["ERROR"] for e in failures), failures
    assert any("cannot reach" in e["ERROR"] for e in failures), failures


def test_an_lti11_score_is_a_signed_replace_result(nb: Nbunits, lms: StandIn) -> None:
    user_id = secrets.token_hex(16)
    assert asyncio.run(_launch11(nb, user_id)) in (200, 302)
    nb.nbunits("score", "set", COURSE, user_id, NOTEBOOK, "6", "8")
    got = _until(lambda: [o for o in lms.outcomes if o[1].endswith(user_id)])
    assert [(o[1], o[2], o[3]) for o in got] == [
        (f"{CONTEXT}:block-v1:Scores+Py+2026+type@lti_consumer+block@b11:{user_id}", 0.75,
         "replaceResultRequest")], lms.refusals
    assert _until(lambda: [r for r in _listed(nb, user_for(user_id)) if r["state"] == "sent"])


def test_a_score_for_a_student_who_never_launched_is_refused(nb: Nbunits, lms: StandIn) -> None:
    student = str(uuid.uuid4())
    result = nb.nbunits("score", "set", COURSE, student, NOTEBOOK, "1", "2", check=False)
    assert result.returncode != 0
    assert "has not opened" in result.stderr, result.stderr
    assert _listed(nb, user_for(student)) == []
    found = nb.box.run("find", "/var/lib/nbunits/scores", "-path", f"*{user_for(student)}*",
                       check=False).stdout
    assert found == ""


def test_the_sender_is_a_hardened_oneshot_the_timer_runs(nb: Nbunits) -> None:
    units = [f"/etc/systemd/system/nbunits-scores.{kind}" for kind in ("service", "timer")]
    result = nb.box.run("systemd-analyze", "verify", *units, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr
    assert nb.box.systemctl("is-enabled", "nbunits-scores.timer").stdout.strip() == "enabled"
    assert nb.show("nbunits-scores.timer", "ActiveState")["ActiveState"] == "active"
    recorded = json.loads((REPO / "units" / "security-exposure.json").read_text())
    score = exposure(nb, "nbunits-scores.service")
    print(f"nbunits-scores.service exposure: {score}")
    assert score <= recorded["nbunits-scores.service"]  # test_security.py records it


def _row(page: str, text: str) -> str:
    """The staff page's table row that holds `text`."""
    [row] = [r for r in page.split("<tr>") if text in r]
    return row


def test_staff_see_every_learner_the_lms_lists_with_activity_and_score(
        nb: Nbunits, lms: StandIn) -> None:
    ada, bob = _launched13(nb, lms), _launched13(nb, lms)
    nb.nbunits("score", "set", COURSE, ada, NOTEBOOK, "7", "10")
    lms.members = [
        {"id": 1, "external_id": ada, "roles": ["student"], "name": "Ada <i>Lovelace</i>",
         "email": "ada@x.org"},
        {"id": 2, "external_id": bob, "roles": ["student"], "name": "Bob", "email": "b@x.org"},
        {"id": 3, "external_id": str(uuid.uuid4()), "roles": ["student"], "name": "Carol",
         "email": "c@x.org"},
        {"id": 4, "external_id": str(uuid.uuid4()), "roles": ["instructor"], "name": "Prof",
         "email": "p@x.org"},
        {"id": 5, "external_id": str(uuid.uuid4()), "roles": ["student"], "name": "Dan",
         "email": "d@x.org"}]
    asked_before = len(lms.membership_asks)
    # A learner's launch carries the claim too (Open edX sends it in every launch):
    # it reads no list.
    assert asyncio.run(_launch13(nb, lms, bob)) in (200, 302)
    assert len(lms.membership_asks) == asked_before
    status, page = asyncio.run(_launched_page(nb, lms, str(uuid.uuid4()), "instructor"))
    assert status == 200, page[:300]
    asks = lms.membership_asks[asked_before:]
    assert len(asks) == 3 and not lms.refusals, (asks, lms.refusals)  # 4 learners, 2 a page
    # Every learner the LMS lists, opened a notebook or not; staff are not learners.
    assert "The course lists 4 learner(s); 2 of them have opened" in page, page
    assert "Prof" not in page and "Dan" in page
    ada_row = _row(page, ada)
    assert "Ada &lt;i&gt;Lovelace&lt;/i&gt;" in ada_row and "<i>" not in page
    assert "7/10" in ada_row and f"({user_for(ada)})" in ada_row
    assert time.strftime("%Y-%m-%d", time.gmtime()) in ada_row and "/staff/" in ada_row
    assert "none yet" in _row(page, bob) and "read-only view" in _row(page, bob)
    carol = _row(page, "Carol")
    assert "never" in carol and "no copy yet" in carol and "/staff/" not in carol
    # The LMS down: the page still lists who opened a notebook, and says why no more.
    lms.failing = True
    try:
        status, page = asyncio.run(_launched_page(nb, lms, str(uuid.uuid4()), "instructor"))
    finally:
        lms.failing = False
    assert status == 200 and "could not be read from the LMS" in page, page[:300]
    assert ada in page and "Carol" not in page and "7/10" in _row(page, ada)


def test_a_graded_submission_reaches_the_lms_for_the_launch_that_opened_it(
        nb: Nbunits, lms: StandIn) -> None:
    """The whole chain: Open edX's launch of a graded component, the student's saved
    work, Submit from the Course menu (as the extension posts it), the grading in its
    own container, the score to the launch's line item for the launch's user, and the
    student told it went."""
    sub = str(uuid.uuid4())

    async def go() -> tuple[int, dict[str, Any]]:
        async with client(nb) as session:
            status, location = await _launched_page(nb, lms, sub, "student", GRADED, session)
            assert status == 302, location
            prefix = "/".join(urlsplit(location).path.split("/")[:5]) + "/"
            path = nb.home / user_for(sub) / COURSE / GRADED  # their copy, as Jupyter saves it
            copy = nbformat.read(path, 4)
            copy.cells[1].source = "def square(x):\n    return x * x"
            nbformat.write(copy, path)
            os.chown(path, nb.uid(user_for(sub)), nb.uid(user_for(sub)))
            api = prefix.replace("/nb/", "/_nbunits/student/", 1)
            async with session.post(api + "submit", json={"notebook": GRADED},
                                    headers={"Accept-Language": "en"}) as resp:
                return resp.status, await resp.json()

    status, answer = asyncio.run(go())
    assert status == 200, answer
    grade = answer["grade"]
    assert (grade["total"], grade["max"], grade["sent"]) == (2, 2, True), grade
    got = _until(lambda: [r for r in lms.scores if r.body["userId"] == sub])
    assert [(r.lineitem, r.body["scoreGiven"], r.body["scoreMaximum"]) for r in got] == \
        [("3", 2, 2)], lms.refusals
    assert _until(lambda: [r for r in _listed(nb, user_for(sub))
                           if (r["notebook"], r["state"]) == (GRADED, "sent")])
