"""The course's learners as its LMS lists them: LTI Names and Role Provisioning
Services 2.0 (NRPS), for the staff page, pure logic (helper/members.py reads it).

A staff member's verified LTI 1.3 launch may carry the NRPS claim: the context's
memberships URL. Read only from such a launch (dispatcher/launch.py), for the staff
page of that launch, then forgotten: no list of names is kept anywhere. The tool
reads it with a token of the membership scope; the answer is a membership container
(application/vnd.ims.lti-nrps.v2.membershipcontainer+json) whose pages are chained by
Link: <...>; rel="next" (Open edX's pages are ?limit=&page=).

Everything in an answer is the LMS's text, bounded and checked here; a page that links
its next page on another origin is not followed (the tool's token goes to the origin
the launch named, and nowhere else).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from nbunits.core.outcomes import BadDestination, check_opaque, check_url

NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
NRPS_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
MEMBERSHIP_TYPE = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
PAGE_SIZE = 500  # members asked per page (the LMS may send fewer)
MAX_LISTED = 5000  # learners on one staff page; more: the page says it is cut
MAX_PAGE_BYTES = 4 * 1024 * 1024
MAX_NAME = 200
INACTIVE = ("Inactive", "Deleted")  # NRPS statuses of members who are no longer in


@dataclass(frozen=True)
class Roster:
    """Where a staff launch says the context's members are read, and as which client."""

    url: str  # context_memberships_url
    issuer: str
    client_id: str

    def __post_init__(self) -> None:
        check_url(self.url, "the memberships URL")
        check_opaque(self.issuer, "iss")
        check_opaque(self.client_id, "the client id")

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Roster:
        """Raises BadDestination for anything that is not one."""
        try:
            return cls(*(data[k] for k in ("url", "issuer", "client_id")))
        except (KeyError, TypeError) as exc:
            raise BadDestination(f"not a roster: {exc}") from exc


def from_lti13(claims: Mapping[str, Any]) -> Roster | None:
    """A verified LTI 1.3 launch's NRPS claim (version 2.0); None without one."""
    claim = claims.get(NRPS_CLAIM)
    if not isinstance(claim, dict) or not claim.get("context_memberships_url"):
        return None
    versions = claim.get("service_versions")
    if isinstance(versions, list) and "2.0" not in versions:
        return None
    aud = claims.get("aud")
    url, issuer = claim["context_memberships_url"], claims.get("iss")
    client_id = claims.get("azp") if isinstance(aud, list) else aud
    if not (isinstance(url, str) and isinstance(issuer, str) and isinstance(client_id, str)):
        raise BadDestination("a claim that should be a string is not")
    return Roster(url, issuer, client_id)


@dataclass(frozen=True)
class Member:
    user_id: str  # the LMS's id: the `sub` of this member's launches
    name: str  # "" when the LMS shares no names


def learners(data: bytes) -> list[Member]:
    """The active learners of one page of a membership container; a member that
    does not fit (no id, wrong types) is left out. Raises ValueError if the page is
    not a membership container."""
    if len(data) > MAX_PAGE_BYTES:
        raise ValueError(f"a page of members over {MAX_PAGE_BYTES} bytes")
    container = json.loads(data)
    members = container.get("members") if isinstance(container, dict) else None
    if not isinstance(members, list):
        raise ValueError("not a membership container (no members)")
    found = []
    for member in members:
        if not isinstance(member, dict) or member.get("status", "Active") in INACTIVE:
            continue
        user_id, roles = member.get("user_id"), member.get("roles")
        if not (isinstance(user_id, str) and 0 < len(user_id) <= 1024 and user_id.isprintable()
                and isinstance(roles, list) and any(is_learner(r) for r in roles)):
            continue
        found.append(Member(user_id, _name(member)))
    return found


def is_learner(role: object) -> bool:
    """NRPS roles are full URIs; the short "Learner" is allowed for context roles."""
    return role in (LEARNER, "Learner") or (isinstance(role, str)
                                             and role.startswith(LEARNER + "#"))


def _name(member: Mapping[str, Any]) -> str:
    name = member.get("name")
    if not isinstance(name, str) or not name.strip():
        parts = [member.get(k) for k in ("given_name", "family_name")]
        name = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    name = " ".join(name.split())  # no line breaks or runs of spaces
    return "".join(c for c in name if c.isprintable())[:MAX_NAME]


_LINK = re.compile(r'<([^>]*)>\s*((?:;\s*[a-zA-Z]+\s*=\s*(?:"[^"]*"|[^;,\s]*)\s*)*)')


def next_page(link: str, current: str) -> str | None:
    """The Link header's rel="next" URL, resolved against `current`; None if there is
    none. ValueError if it is on another origin than `current`: never followed."""
    for match in _LINK.finditer(link):
        params = re.findall(r';\s*([a-zA-Z]+)\s*=\s*"?([^";]*)"?', match.group(2))
        if any(k.lower() == "rel" and "next" in v.lower().split() for k, v in params):
            url: str = urljoin(current, match.group(1).strip())
            here, there = urlsplit(current), urlsplit(url)
            if (there.scheme, there.netloc) != (here.scheme, here.netloc):
                raise ValueError(f"the next page is on another origin ({there.netloc})")
            return url
    return None


def first_page(url: str) -> str:
    """The memberships URL asking for pages of PAGE_SIZE (its own limit, if any, kept)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "limit" for k, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("limit", str(PAGE_SIZE))])))
