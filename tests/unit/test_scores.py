"""Scores to the LMS, pure logic: what a launch records, the outbox's replace
semantics and backoff, and what is sent (the AGS score, the client assertion, the
LTI 1.1 replaceResult and its signature), checked with Open edX's own code
(lti-consumer-xblock) where it has some."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from lti_consumer.lti_1p1.oauth import verify_oauth_body_signature
from lti_consumer.outcomes import parse_grade_xml_body
from webob import Request

from nbunits.core.config import CourseConfig, CourseSecrets, Lti13Registration, Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.jwks import ToolKey
from nbunits.core.names import StudentUnits, Target
from nbunits.core.outcomes import AGS_CLAIM, SCORE_SCOPE, BadDestination, Destination, from_lti13
from nbunits.core.protocol import OpenRequest, ProtocolError, decode_request, encode_request
from nbunits.dispatcher.launch import LTI13_CLAIM, destination_of
from nbunits.helper import lms, outbox, scores
from tests import openedx  # noqa: F401  # configures Django for lti_consumer

LINEITEM = "https://lms.test/api/lti_consumer/v1/lti/7/lti-ags/3?x=1"
TOKEN_URL = "https://lms.test/api/lti_consumer/v1/token/abc"
OUTCOMES = "https://lms.test/courses/x/xblock/y/handler_noauth/outcome_service_handler"
UNITS = StudentUnits("demo", "nb" + "a" * 16)
D13 = Destination("1.3", LINEITEM, "sub-1", issuer="https://lms.test", client_id="client",
                  deployment_id="1", scopes=(SCORE_SCOPE,))
D11 = Destination("1.1", OUTCOMES, "ctx:link:user", consumer_key="key")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(outbox, "start_sender", lambda: None)
    return Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state")


def launch13(**ags: Any) -> dict[str, Any]:
    return {"iss": "https://lms.test", "aud": "client", "sub": "sub-1",
            LTI13_CLAIM + "deployment_id": "1",
            **({AGS_CLAIM: ags} if ags else {})}


def test_an_lti13_launch_records_its_line_item_and_sub_only_with_the_score_scope() -> None:
    assert from_lti13(launch13(lineitem=LINEITEM, scope=[SCORE_SCOPE])) == D13
    assert from_lti13(launch13()) is None  # no AGS claim: no grades
    assert from_lti13(launch13(lineitems="https://lms.test/li", scope=[SCORE_SCOPE])) is None
    assert from_lti13(launch13(lineitem=LINEITEM, scope=["other"])) is None


@pytest.mark.parametrize("lineitem", ["javascript:alert(1)", "file:///etc/passwd",
                                      "https://lms.test/" + "a" * 3000, "https://a b", 7])
def test_a_line_item_that_is_no_http_url_records_nothing(lineitem: object) -> None:
    claims = launch13(lineitem=lineitem, scope=[SCORE_SCOPE])
    with pytest.raises(BadDestination):
        from_lti13(claims)
    assert destination_of(lambda: from_lti13(claims), "demo") is None


def test_the_destination_crosses_the_protocol_and_a_bad_one_is_refused() -> None:
    request = OpenRequest(Target("demo", "s1", "w1/a.ipynb"), destination=D13)
    assert decode_request(json.loads(encode_request(request))) == request
    wire = json.loads(encode_request(request))
    wire["destination"]["url"] = "ftp://elsewhere"
    with pytest.raises(ProtocolError):
        decode_request(wire)


def test_the_score_body_is_an_ags_score() -> None:
    body = scores.score_body("sub-1", 7.5, 10.0, "", 1765000000.0)
    assert body == {"userId": "sub-1", "scoreGiven": 7.5, "scoreMaximum": 10.0,
                    "activityProgress": "Completed", "gradingProgress": "FullyGraded",
                    "timestamp": "2025-12-06T05:46:40.000+00:00"}
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert scores.score_body("s", 1, 2, "well done", 0)["comment"] == "well done"
    assert scores.scores_url(LINEITEM) == "https://lms.test/api/lti_consumer/v1/lti/7/lti-ags/3/scores?x=1"


def test_the_client_assertion_names_the_client_and_the_token_endpoint() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = lms.client_assertion(ToolKey(private, "kid1"), "client", TOKEN_URL, 1000.0)
    assert jwt.get_unverified_header(token)["kid"] == "kid1"
    claims = jwt.decode(token, private.public_key(), algorithms=["RS256"], audience=TOKEN_URL,
                        options={"verify_exp": False})
    assert claims["iss"] == claims["sub"] == "client" and claims["aud"] == TOKEN_URL
    assert claims["jti"] and 0 < claims["exp"] - claims["iat"] <= 300
    form = lms.token_form(token, SCORE_SCOPE)
    assert form["grant_type"] == "client_credentials" and form["scope"] == SCORE_SCOPE
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_replace_result_is_what_open_edx_parses_and_its_signature_verifies() -> None:
    body = scores.replace_result_xml("m1", "ctx:link:<user>", 0.75)
    assert parse_grade_xml_body(body) == ("m1", "ctx:link:<user>", 0.75, "replaceResultRequest")
    headers = {"Content-Type": scores.POX_TYPE, **scores.sign11(OUTCOMES, body, "key", "sec")}
    request = Request.blank(OUTCOMES, method="POST", body=body.encode(), headers=headers)
    assert verify_oauth_body_signature(request, "sec", OUTCOMES)
    assert "oauth_body_hash" in headers["Authorization"]
    tampered = Request.blank(OUTCOMES, method="POST", body=body.replace("0.75", "1").encode(),
                             headers=headers)
    with pytest.raises(Exception, match="body hash"):
        verify_oauth_body_signature(tampered, "sec", OUTCOMES)


def test_backoff_doubles_up_to_ten_minutes() -> None:
    assert [outbox.backoff(n) for n in range(1, 8)] == [60, 120, 240, 480, 600, 600, 600]
    assert outbox.backoff(10_000) == 600


def test_a_score_needs_a_recorded_launch_and_a_sane_value(settings: Settings) -> None:
    with pytest.raises(NbunitsError) as refused:
        outbox.enqueue(settings, "demo", UNITS.user, "w1/a.ipynb", 1, 2)
    assert refused.value.code == Code.NO_SCORE_DESTINATION
    assert outbox.scores(settings) == []
    outbox.record(settings, UNITS, "w1/a.ipynb", D13)
    for given, maximum in ((3, 2), (-1, 2), (1, 0), (float("nan"), 1), (True, 1)):
        with pytest.raises(NbunitsError) as bad:
            outbox.enqueue(settings, "demo", UNITS.user, "w1/a.ipynb", given, maximum)
        assert bad.value.code == Code.BAD_SCORE
    assert outbox.scores(settings) == []
    assert oct(settings.scores_dir.stat().st_mode & 0o777) == "0o700"


def test_a_resubmission_replaces_a_pending_or_sent_score(settings: Settings) -> None:
    outbox.record(settings, UNITS, "w1/a.ipynb", D13)
    first = outbox.enqueue(settings, "demo", UNITS.user, "w1/a.ipynb", 1, 4)
    second = outbox.enqueue(settings, "demo", UNITS.user, "w1/a.ipynb", 2, 4)
    assert [(s.given, s.state) for s in outbox.scores(settings)] == [(2, "pending")]
    # The sender finishing the first one must not mark the second as sent.
    assert outbox.mark(settings, first) is None
    assert [(s.given, s.state) for s in outbox.scores(settings)] == [(2, "pending")]
    assert outbox.mark(settings, second) is not None
    assert [(s.given, s.state) for s in outbox.scores(settings)] == [(2, "sent")]
    outbox.enqueue(settings, "demo", UNITS.user, "w1/a.ipynb", 3, 4)
    assert [(s.given, s.state) for s in outbox.scores(settings)] == [(3, "pending")]
    path = settings.score_file(UNITS, "w1/a.ipynb")
    assert oct(path.stat().st_mode & 0o777) == "0o600"


class FakeLms:
    def __init__(self) -> None:
        self.up, self.posts = False, []  # type: ignore[var-annotated]

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        self.posts.append((url, body, headers))
        if not self.up:
            return 503, b"down"
        if url == TOKEN_URL:
            return 200, json.dumps({"access_token": "t", "token_type": "bearer"}).encode()
        return 200, b""


def test_a_failure_keeps_the_score_pending_with_backoff_then_it_is_sent_once(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    course = CourseConfig("demo", Path("/nonexistent"), lti13=(Lti13Registration(
        issuer="https://lms.test", client_id="client", token_url=TOKEN_URL),))
    monkeypatch.setattr(scores, "load_course", lambda settings, name: course)
    monkeypatch.setattr(lms, "load_course", lambda settings, name: course)
    monkeypatch.setattr(scores, "load_secrets", lambda settings, name: CourseSecrets())
    monkeypatch.setattr(lms, "tool_key", lambda path: ToolKey(
        rsa.generate_private_key(public_exponent=65537, key_size=2048), "k"))
    monkeypatch.setattr(scores, "send", lambda *args, **kwargs: None)  # the journal
    outbox.record(settings, UNITS, "w1/a.ipynb", D13)
    given = outbox.enqueue(settings, "demo", UNITS.user, "w1/a.ipynb", 3, 4)
    platform, clock = FakeLms(), [1000.0]
    sender = scores.Sender(settings, platform, lambda: clock[0])
    assert scores.send_pending(settings, sender) == scores.Run(0, 1, 1)
    [failed] = outbox.scores(settings)
    assert failed.state == "failed" and failed.next_try == 1060 and "HTTP 503" in failed.last_error
    assert failed.given == 3
    platform.up = True
    assert scores.send_pending(settings, sender) == scores.Run(0, 0, 1)  # not due yet
    clock[0] = 1061
    assert scores.send_pending(settings, sender) == scores.Run(1, 0, 0)
    url, body, headers = platform.posts[-1]
    assert url == scores.scores_url(LINEITEM) and headers["Authorization"] == "Bearer t"
    assert headers["Content-Type"] == "application/vnd.ims.lis.v1.score+json"
    assert json.loads(body)["scoreGiven"] == 3 and json.loads(body)["userId"] == "sub-1"
    # Stamped when it was given, not when it was sent (platforms keep the latest stamp's).
    assert datetime.fromisoformat(json.loads(body)["timestamp"]).timestamp() == \
        pytest.approx(given.enqueued, abs=0.001)
    assert scores.send_pending(settings, sender) == scores.Run(0, 0, 0)  # sent once
    assert outbox.counts_of(settings) == {"demo": {"failed": 1, "sent": 1}}


def test_nothing_a_student_or_stranger_reaches_sets_or_sends_a_score(tmp_path: Path) -> None:
    """No route of the dispatcher and no request it can make of root's helper sets or
    sends a score: the helper queues scores for root's own callers only (`nbunits score
    set`, grading in the helper), and a launch only says where they go."""
    from nbunits.core.protocol import REQUESTS
    from nbunits.dispatcher.app import create_app

    app = create_app(Settings(etc_dir=tmp_path, state_dir=tmp_path, run_dir=tmp_path))
    paths = [route.resource.canonical for route in app.router.routes() if route.resource]
    assert paths and not [p for p in paths if "score" in p or "grade" in p or "outcome" in p]
    assert not [action for action in REQUESTS if "score" in action or "grade" in action]


def test_verified_launches_say_where_their_scores_go(tmp_path: Path) -> None:
    from nbunits.core.jwks import platform_keys
    from nbunits.dispatcher.launch import NonceStore, verify_lti11, verify_lti13
    from tests.unit.test_lti import CLIENT, COURSE, ISSUER, REG, SECRET, STUDENT, URL, id_token, signed_11

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    keys = platform_keys(tmp_path / "jwks.json")
    ags = {"scope": [SCORE_SCOPE], "lineitem": LINEITEM, "lineitems": LINEITEM + "s"}
    launch = verify_lti13(id_token(key, "n1", **{AGS_CLAIM: ags}), COURSE, REG, "n1", keys,
                          NonceStore())
    assert launch.destination == Destination("1.3", LINEITEM, STUDENT, issuer=ISSUER,
                                             client_id=CLIENT, deployment_id="1",
                                             scopes=(SCORE_SCOPE,))
    assert verify_lti13(id_token(key, "n2"), COURSE, REG, "n2", keys,
                        NonceStore()).destination is None
    body, headers = signed_11(lis_outcome_service_url=OUTCOMES, lis_result_sourcedid="c:l:u")
    launch = verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())
    assert launch.destination == Destination("1.1", OUTCOMES, "c:l:u", consumer_key="demo-key")
    # Claims that do not fit: the notebook still opens, the score goes nowhere.
    body, headers = signed_11(lis_outcome_service_url="javascript:x", lis_result_sourcedid="s")
    launch = verify_lti11(URL, body, headers, COURSE, SECRET, NonceStore())
    assert launch.notebook == "welcome.ipynb" and launch.destination is None


def test_a_grading_s_score_goes_to_the_outbox_where_the_launch_said(settings: Settings) -> None:
    """helper/grading.py puts each graded submission's score in the outbox, or says
    it is not sent when no verified launch of that notebook takes scores."""
    from nbunits.helper.grading import Grade, to_lms
    grade = Grade("w1/a.ipynb", 2.0, 3.0, (), "2026-12-07T23:00:00+00:00")
    assert to_lms(settings, UNITS, grade) is False  # a legacy link: nowhere to send it
    assert outbox.scores(settings) == []
    outbox.record(settings, UNITS, "w1/a.ipynb", D13)
    assert to_lms(settings, UNITS, grade) is True
    [queued] = outbox.scores(settings)
    assert (queued.given, queued.maximum, queued.notebook) == (2.0, 3.0, "w1/a.ipynb")
