"""Talking to the LMS's LTI Advantage services, as the tool: one module for the HTTP
and the OAuth 2 token both services use (helper/scores.py sends scores by AGS,
helper/members.py reads a context's members by NRPS).

- Every request goes where a verified launch said (its line item, its memberships
  URL) or the course's registration says (its token_url), never where a redirect
  points; answers are read up to a bound; the network's errors are LmsError.
- A token: an OAuth 2 client-credentials grant at the registration's token_url,
  authenticated by a JWT signed with the tool's key (IMS Security Framework 1.0,
  4.1; the LMS reads its public half at /lti/1.3/jwks), for one scope at a time.
  A Session keeps each token it got for its own run.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt

from nbunits.core.config import Settings, load_course
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.jwks import ToolKey, tool_key

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 300
TIMEOUT = 20.0  # seconds for each request to the LMS
MAX_ANSWER = 64 * 1024  # bytes read of an answer (a token, a score's)


class LmsError(NbunitsError):
    def __init__(self, message: str) -> None:
        super().__init__(Code.LMS_FAILED, message)


def client_assertion(key: ToolKey, client_id: str, token_url: str, now: float) -> str:
    """The JWT that authenticates the tool at the token endpoint (IMS Security
    Framework 1.0, 4.1): iss = sub = the client id, aud = the token endpoint."""
    issued = int(now)
    return jwt.encode({"iss": client_id, "sub": client_id, "aud": token_url, "iat": issued,
                       "exp": issued + ASSERTION_SECONDS, "jti": secrets.token_urlsafe(18)},
                      key.private, algorithm="RS256", headers={"kid": key.kid})


def token_form(assertion: str, scope: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion, "scope": scope}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A token, a score or a bearer token goes where it was meant to, never where a
    redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # its first bytes, up to the request's limit (+1: "too long" shows)
    headers: dict[str, str]  # lower-case names


def request(method: str, url: str, body: bytes | None, headers: dict[str, str],
            limit: int = MAX_ANSWER) -> Answer:
    """One request; errors of the network raise LmsError."""
    asked = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with _OPENER.open(asked, timeout=TIMEOUT) as answer:
            return Answer(answer.status, answer.read(limit + 1),
                          {k.lower(): v for k, v in answer.headers.items()})
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(limit + 1),
                      {k.lower(): v for k, v in (exc.headers or {}).items()})
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LmsError(f"cannot reach {urlsplit(url).netloc}: {reason}") from exc


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST; (status, the answer's first bytes)."""
    answer = request("POST", url, body, headers)
    return answer.status, answer.body[:MAX_ANSWER]


Post = Callable[[str, bytes, dict[str, str]], tuple[int, bytes]]


def refused(what: str, url: str, status: int, answer: bytes) -> LmsError:
    text = answer[:200].decode(errors="replace").replace("\n", " ")
    return LmsError(f"{what} refused by {urlsplit(url).netloc}: HTTP {status} {text}".strip())


@dataclass
class Session:
    """One run's dealings with LMSes: a token per (token URL, client, scope), got once."""

    settings: Settings
    http: Post = post
    now: Callable[[], float] = time.time
    tokens: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def token(self, course: str, issuer: str, client_id: str, scope: str) -> str:
        registration = load_course(self.settings, course).registration(issuer, client_id)
        if registration is None or not registration.token_url:
            raise LmsError(f"no token_url for the LTI 1.3 client {client_id} of course "
                           f"{course}: nbunits course update {course} "
                           f"--lti13-client-id {client_id} --lti13-token-url URL")
        key = (registration.token_url, client_id, scope)
        if key in self.tokens:
            return self.tokens[key]
        assertion = client_assertion(tool_key(self.settings.lti_tool_key), client_id,
                                     registration.token_url, self.now())
        status, answer = self.http(registration.token_url,
                                   urlencode(token_form(assertion, scope)).encode(),
                                   {"Content-Type": "application/x-www-form-urlencoded",
                                    "Accept": "application/json"})
        if status != 200:
            raise refused("the token request", registration.token_url, status, answer)
        try:
            token = json.loads(answer)["access_token"]
            if not isinstance(token, str) or not token:
                raise ValueError("no access_token")
        except (ValueError, KeyError, TypeError) as exc:
            raise LmsError(f"the token endpoint's answer is not a token: {exc}") from exc
        self.tokens[key] = token
        return token
