"""Sending scores to the LMS: what nbunits-scores.service runs (`nbunits scores send`).

Each pending score of the outbox (helper/outbox.py) goes where the student's last
verified launch of the notebook said:
- LTI 1.3, Assignment and Grade Services: a token for the score scope only
  (helper/lms.py), then the score, POSTed to {line item}/scores (AGS 2.0, "Score
  publish service").
- LTI 1.1, Basic Outcomes: replaceResult (POX XML, the score as a fraction 0..1)
  to lis_outcome_service_url, OAuth 1 signed with the course's key and secret,
  with the body's hash (oauth_body_hash).
A failure leaves the score pending, tried again after a wait that doubles up to
ten minutes: an LMS down for an hour loses nothing. Each score sent and each
failure is a journal event (SCORE_SENT, SCORE_FAILED).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape

from oauthlib.oauth1 import SIGNATURE_TYPE_AUTH_HEADER, Client

from nbunits.core.config import Settings, load_course, load_secrets
from nbunits.core.errors import NbunitsError
from nbunits.core.events import Event, send
from nbunits.core.outcomes import SCORE_SCOPE, Destination
from nbunits.helper import outbox
from nbunits.helper.lms import LmsError, Session, refused

logger = logging.getLogger(__name__)

SCORE_TYPE = "application/vnd.ims.lis.v1.score+json"
POX_TYPE = "application/xml"
IDENTIFIER = "nbunits-scores"  # the journal's SYSLOG_IDENTIFIER of its events
SUCCESS = re.compile(rb"<(?:\w+:)?imsx_codeMajor>\s*success\s*</")


# --- what is sent (pure) --------------------------------------------------------------

def score_body(sub: str, given: float, maximum: float, comment: str, when: float) -> dict[str, Any]:
    """An AGS score (application/vnd.ims.lis.v1.score+json)."""
    body: dict[str, Any] = {
        "userId": sub, "scoreGiven": given, "scoreMaximum": maximum,
        "activityProgress": "Completed", "gradingProgress": "FullyGraded",
        "timestamp": datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")}
    if comment:
        body["comment"] = comment
    return body


def scores_url(lineitem: str) -> str:
    """{line item}/scores: the path gets /scores, its query stays (AGS 2.0, 3.4)."""
    parts = urlsplit(lineitem)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/scores"))


def replace_result_xml(message_id: str, sourcedid: str, fraction: float) -> str:
    """Basic Outcomes' replaceResultRequest (LTI 1.1 Outcomes Management, POX)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<imsx_POXEnvelopeRequest xmlns="http://www.imsglobal.org/services/ltiv1p1/xsd/'
        'imsoms_v1p0">\n'
        "<imsx_POXHeader><imsx_POXRequestHeaderInfo><imsx_version>V1.0</imsx_version>"
        f"<imsx_messageIdentifier>{escape(message_id)}</imsx_messageIdentifier>"
        "</imsx_POXRequestHeaderInfo></imsx_POXHeader>\n"
        "<imsx_POXBody><replaceResultRequest><resultRecord>"
        f"<sourcedGUID><sourcedId>{escape(sourcedid)}</sourcedId></sourcedGUID>"
        "<result><resultScore><language>en</language>"
        f"<textString>{fraction:.6g}</textString></resultScore></result>"
        "</resultRecord></replaceResultRequest></imsx_POXBody>\n"
        "</imsx_POXEnvelopeRequest>\n")


def sign11(url: str, body: str, key: str, secret: str) -> dict[str, str]:
    """The headers of an OAuth 1 (HMAC-SHA1) signed POX POST: oauthlib adds
    oauth_body_hash for a body that is not a form."""
    signer = Client(key, client_secret=secret, signature_type=SIGNATURE_TYPE_AUTH_HEADER)
    _, headers, _ = signer.sign(url, "POST", body, {"Content-Type": POX_TYPE})
    return {str(k): str(v) for k, v in headers.items()}


# --- the LMS, over HTTP ----------------------------------------------------------------

@dataclass
class Sender(Session):
    """One run's sending: its tokens got once (lms.Session)."""

    def send(self, score: outbox.Score, to: Destination) -> None:
        if to.version == "1.3":
            self.send13(score, to)
        else:
            self.send11(score, to)

    def send13(self, score: outbox.Score, to: Destination) -> None:
        # When the score was given, not sent: a platform keeps the latest timestamp's.
        body = score_body(to.user, score.given, score.maximum, score.comment, score.enqueued)
        url = scores_url(to.url)
        status, answer = self.http(url, json.dumps(body).encode(), {
            "Content-Type": SCORE_TYPE,
            "Authorization": f"Bearer {self.token(score.course, to.issuer, to.client_id, SCORE_SCOPE)}"})
        if status not in (200, 201, 202, 204):
            raise refused("the score", url, status, answer)

    def send11(self, score: outbox.Score, to: Destination) -> None:
        config = load_course(self.settings, score.course)
        secret = load_secrets(self.settings, score.course).lti11_secret
        if not config.lti11_key or config.lti11_key != to.consumer_key or not secret:
            raise LmsError(f"course {score.course}'s LTI 1.1 key is no longer the one the "
                            "launch was signed with (or it has no secret)")
        body = replace_result_xml(secrets.token_hex(8), to.user, score.given / score.maximum)
        headers = {"Content-Type": POX_TYPE, **sign11(to.url, body, config.lti11_key, secret)}
        status, answer = self.http(to.url, body.encode(), headers)
        if status != 200 or not SUCCESS.search(answer):
            raise refused("replaceResult", to.url, status, answer)


# --- one run ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    sent: int
    failed: int
    pending: int  # still to send after this run (failed ones included)
    busy: bool = False  # another run was sending: this one did nothing


def send_pending(settings: Settings, sender: Sender | None = None, *,
                 waiting_too: bool = False) -> Run:
    """Send every due score (`waiting_too`: also those waiting after a failure); one
    run at a time (a second one returns at once)."""
    outbox.scores_dir(settings)
    fd = os.open(settings.scores_sending_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return Run(0, 0, 0, busy=True)
        return _send_due(settings, sender or Sender(settings), waiting_too)
    finally:
        os.close(fd)


def _send_due(settings: Settings, sender: Sender, waiting_too: bool) -> Run:
    sent = failed = 0
    for score in outbox.scores(settings):
        if score.sent or (score.next_try > sender.now() and not waiting_too):
            continue
        extra = {"NOTEBOOK": score.notebook, "GIVEN": score.given, "MAXIMUM": score.maximum}
        try:
            to = outbox.destination(settings, score.units, score.notebook)
            sender.send(score, to)
        except Exception as exc:  # one score's failure, whatever it is, stops no other
            error = exc.message if isinstance(exc, NbunitsError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, NbunitsError):
                logger.exception("sending a score of %s failed", score.user)
            done = outbox.mark(settings, score, error=error, now=sender.now())
            failed += 1
            wait = round(done.next_try - sender.now()) if done else 0
            outbox.count(settings, score.course, "failed")
            send(Event.SCORE_FAILED, f"score for {score.notebook} not sent: {error}",
                 course=score.course, student=score.user, identifier=IDENTIFIER,
                 ERROR=error, RETRY_SECONDS=wait, **extra)
            continue
        outbox.mark(settings, score, now=sender.now())
        outbox.count(settings, score.course, "sent")
        sent += 1
        send(Event.SCORE_SENT, f"score {score.given:g}/{score.maximum:g} for {score.notebook} "
             f"sent (LTI {to.version})", course=score.course, student=score.user,
             identifier=IDENTIFIER, VERSION=to.version, **extra)
    pending = sum(1 for s in outbox.scores(settings) if not s.sent)
    return Run(sent, failed, pending)
