"""LTI 1.3 Deep Linking: an author picks, in nbunits, the notebook of an LMS component.

The platform sends an `LtiDeepLinkingRequest` through the usual OIDC login and
launch; it is verified as a resource link launch is (launch.verify_lti13_token).
nbunits answers with the course's notebooks; the author's pick comes back with a
ticket, and nbunits answers it with an `LtiDeepLinkingResponse` JWT, signed with
the tool's own key, which the browser posts to the platform's return URL. Its one
`ltiResourceLink` item carries `custom: {"notebook": PATH}`, the parameter every
later launch of that component reads.

The ticket is what binds a pick to a verified request: it carries that request
(course, registration, return URL, data), is MAC'd by the dispatcher, expires
after TICKET_SECONDS and is used once. So nothing is signed for a request the
platform did not sign, for a notebook of another course, or twice.

Pure logic: no network, one file read (the tool's key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt

from nbunits.core.config import CourseConfig
from nbunits.core.errors import Code
from nbunits.core.jwks import ToolKey, thumbprint, tool_key

__all__ = ["ToolKey", "thumbprint", "tool_key"]  # their home was here
from nbunits.dispatcher.launch import (
    LTI13_CLAIM,
    MAX_CLOCK_SKEW,
    LaunchError,
    field,
    is_staff,
    roles_of,
)

logger = logging.getLogger(__name__)

DEEP_LINKING_REQUEST = "LtiDeepLinkingRequest"
DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/"
RESOURCE_LINK = "ltiResourceLink"
# An author's time to pick; the NonceStore remembers a used ticket this long (or longer).
TICKET_SECONDS = 2 * MAX_CLOCK_SKEW
MAX_DATA = 2048  # characters of the platform's opaque `data`, as JSON
MAX_URL = 2048


@dataclass(frozen=True)
class DeepLinking:
    """A verified deep-linking request: where to send the answer, and what to echo."""

    course: str
    issuer: str  # the platform: the answer's aud
    client_id: str  # the registration: the answer's iss
    deployment_id: str
    return_url: str
    data: Any = None  # the settings' opaque `data`, echoed as it came; None: none sent
    locale: str = ""


def deep_linking(claims: Mapping[str, Any], course: CourseConfig) -> DeepLinking:
    """A verified token's claims -> the request, if this course's staff may make it
    and the platform takes what nbunits gives (an LTI resource link)."""
    if not course.lti_context_id or field(claims, "context", "id") != course.lti_context_id:
        raise LaunchError(Code.FORBIDDEN, "this launch comes from another course",
                          hint="the course's lti_context_id must be the LMS's course id")
    if not is_staff(roles_of(claims), course.lti_staff_roles):
        raise LaunchError(Code.FORBIDDEN, "only course staff choose a component's notebook")
    settings = claims.get(DL_CLAIM + "deep_linking_settings")
    if not isinstance(settings, dict):
        raise LaunchError(Code.BAD_LAUNCH, "this deep-linking request has no settings")
    accepted = settings.get("accept_types")
    if not isinstance(accepted, list) or RESOURCE_LINK not in accepted:
        raise LaunchError(Code.BAD_LAUNCH, "this platform does not take an LTI resource link "
                          "here, the only thing nbunits offers",
                          hint="add the notebook as an LTI 1.3 component (its accept_types "
                               "must include ltiResourceLink)")
    url = settings.get("deep_link_return_url")
    parts = urlsplit(url) if isinstance(url, str) and len(url) <= MAX_URL else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        raise LaunchError(Code.BAD_LAUNCH, "this deep-linking request has no valid return URL")
    data = settings.get("data")
    if data is not None and len(json.dumps(data)) > MAX_DATA:
        raise LaunchError(Code.BAD_LAUNCH, "this deep-linking request's data is too long")
    assert isinstance(url, str)
    return DeepLinking(course.name, str(claims["iss"]), _client_id(claims),
                       str(claims.get(LTI13_CLAIM + "deployment_id", "")), url, data,
                       str(field(claims, "launch_presentation", "locale"))[:36])


def _client_id(claims: Mapping[str, Any]) -> str:
    aud = claims.get("aud")
    return str(claims.get("azp") if isinstance(aud, list) else aud)


# --- the ticket: a verified request, carried to the author's pick ------------------

def ticket_key(state_key: bytes) -> bytes:
    """Not the OIDC state's key: a state is never a ticket, nor a ticket a state."""
    return hmac.new(state_key, b"nbunits deep-linking ticket", hashlib.sha256).digest()


def issue_ticket(key: bytes, request: DeepLinking, now: float | None = None) -> str:
    now = int(time.time() if now is None else now)
    claims = {"course": request.course, "iss": request.issuer, "client_id": request.client_id,
              "deployment_id": request.deployment_id, "return_url": request.return_url,
              "locale": request.locale, "jti": secrets.token_urlsafe(18),
              "iat": now, "exp": now + TICKET_SECONDS}
    if request.data is not None:
        claims["data"] = request.data
    return jwt.encode(claims, key, algorithm="HS256")


def read_ticket(key: bytes, ticket: str) -> tuple[DeepLinking, str]:
    """The request a ticket carries, and its id (to be used once)."""
    try:
        claims = jwt.decode(ticket, key, algorithms=["HS256"],
                            options={"require": ["exp", "iat", "jti"]})
        return DeepLinking(str(claims["course"]), str(claims["iss"]), str(claims["client_id"]),
                           str(claims["deployment_id"]), str(claims["return_url"]),
                           claims.get("data"), str(claims.get("locale", ""))), str(claims["jti"])
    except (jwt.InvalidTokenError, KeyError) as exc:
        raise LaunchError(Code.UNAUTHORIZED, "this choice did not start here or took too long",
                          hint="open the component's settings in the LMS and choose again") \
            from exc


# --- the answer, signed with the tool's key -----------------------------------------

def response(key: ToolKey, request: DeepLinking, notebook: str, title: str, launch_url: str,
             now: float | None = None) -> str:
    """The LtiDeepLinkingResponse JWT (LTI Deep Linking 2.0, 4.2): one resource
    link whose custom parameter names the notebook."""
    now = int(time.time() if now is None else now)
    item = {"type": RESOURCE_LINK, "title": title, "url": launch_url,
            "custom": {"notebook": notebook}}
    claims: dict[str, Any] = {
        "iss": request.client_id, "aud": request.issuer, "iat": now,
        "exp": now + MAX_CLOCK_SKEW, "nonce": secrets.token_urlsafe(18),
        LTI13_CLAIM + "deployment_id": request.deployment_id,
        LTI13_CLAIM + "message_type": "LtiDeepLinkingResponse",
        LTI13_CLAIM + "version": "1.3.0",
        DL_CLAIM + "content_items": [item]}
    if request.data is not None:
        claims[DL_CLAIM + "data"] = request.data
    return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})
