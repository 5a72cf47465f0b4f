"""Where a student's score goes: what a verified LTI launch says about it.

LTI 1.3 (Assignment and Grade Services): the launch's AGS endpoint claim names the
line item and the scopes the tool may use; the score is for the launch's `sub`.
LTI 1.1 (Basic Outcomes): `lis_outcome_service_url` and `lis_result_sourcedid`,
signed with the course's consumer key (its secret stays in the course's secrets).

Read only from a launch whose signature the dispatcher checked (dispatcher/launch.py),
carried to root's helper in the open request (core/protocol.py), which records it
root-only (helper/outbox.py). Nothing a student sends afterwards can change it.
Bounded and checked here, so both sides refuse the same things; a launch without
these claims (or with ones that do not fit) records nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
SCORE_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
LTI13_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
MAX_URL = 2048
MAX_ID = 1024  # an opaque id: sub, sourcedid, issuer, client or deployment id, key
MAX_SCOPES = 16
URL_RE = re.compile(r"https?://[!-~]+")
VERSIONS = ("1.3", "1.1")


class BadDestination(ValueError):
    """Claims that do not fit: nothing is recorded."""


def check_url(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_URL or not URL_RE.fullmatch(value):
        raise BadDestination(f"{what} is not an http(s) URL of at most {MAX_URL} characters")
    return value


def check_opaque(value: object, what: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > MAX_ID or (not value and not empty) \
            or not value.isprintable():
        raise BadDestination(f"{what} must be printable text of 1 to {MAX_ID} characters")
    return value


@dataclass(frozen=True)
class Destination:
    """Where (and as whom) one student's score for one notebook is sent."""

    version: str  # "1.3" (AGS) or "1.1" (Basic Outcomes)
    url: str  # 1.3: the line item URL; 1.1: lis_outcome_service_url
    user: str  # 1.3: the launch's sub; 1.1: lis_result_sourcedid
    issuer: str = ""  # 1.3: the platform and the registration the launch was for
    client_id: str = ""
    deployment_id: str = ""
    scopes: tuple[str, ...] = ()  # 1.3: the scopes the platform granted
    consumer_key: str = ""  # 1.1: the course's key the launch was signed with

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise BadDestination(f"unknown LTI version {self.version!r}")
        check_url(self.url, "the line item" if self.version == "1.3" else "lis_outcome_service_url")
        check_opaque(self.user, "the user")
        if self.version == "1.3":
            check_opaque(self.issuer, "iss")
            check_opaque(self.client_id, "the client id")
            check_opaque(self.deployment_id, "the deployment id", empty=True)
            if not isinstance(self.scopes, tuple) or len(self.scopes) > MAX_SCOPES:
                raise BadDestination(f"at most {MAX_SCOPES} scopes")
            for scope in self.scopes:
                check_opaque(scope, "a scope")
        else:
            check_opaque(self.consumer_key, "the consumer key")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "scopes": list(self.scopes)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Destination:
        """Raises BadDestination for anything that is not one."""
        try:
            fields = {k: data[k] for k in ("version", "url", "user")}
            fields.update({k: data.get(k, "") for k in ("issuer", "client_id", "deployment_id",
                                                         "consumer_key")})
            scopes = data.get("scopes", [])
            if not isinstance(scopes, list):
                raise BadDestination("scopes must be a list")
            return cls(**fields, scopes=tuple(scopes))
        except (KeyError, TypeError, AttributeError) as exc:
            raise BadDestination(f"not a destination: {exc}") from exc


def from_lti13(claims: Mapping[str, Any]) -> Destination | None:
    """A verified LTI 1.3 launch's AGS claim; None when it has none (no grades here),
    no line item or no score scope (the platform would refuse our scores)."""
    ags = claims.get(AGS_CLAIM)
    if not isinstance(ags, dict) or not ags.get("lineitem"):
        return None
    scopes = ags.get("scope")
    if not isinstance(scopes, list) or SCORE_SCOPE not in scopes:
        return None
    aud = claims.get("aud")
    client_id = claims.get("azp") if isinstance(aud, list) else aud
    return Destination("1.3", _text(ags["lineitem"]), _text(claims.get("sub")),
                       issuer=_text(claims.get("iss")), client_id=_text(client_id),
                       deployment_id=_text(claims.get(LTI13_CLAIM + "deployment_id", "")),
                       scopes=tuple(scopes))


def from_lti11(params: Mapping[str, Any], consumer_key: str) -> Destination | None:
    """A verified LTI 1.1 launch's outcome service; None without one."""
    url, sourcedid = params.get("lis_outcome_service_url"), params.get("lis_result_sourcedid")
    if not url or not sourcedid:
        return None
    return Destination("1.1", _text(url), _text(sourcedid), consumer_key=consumer_key)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise BadDestination("a claim that should be a string is not")
    return value
