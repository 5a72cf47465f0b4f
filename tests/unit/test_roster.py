"""The course's learners as its LMS lists them (LTI Names and Roles 2.0): the launch
claim and the pages as Open edX's own code makes them (tests/openedx.py), read by
core/roster.py and helper/members.py; what reaches the staff page and how it shows."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nbunits.core import i18n, roster
from nbunits.core.errors import NbunitsError
from nbunits.core.outcomes import BadDestination
from nbunits.core.protocol import (
    ProtocolError,
    StaffStudentsRequest,
    StudentEntry,
    Students,
    decode_request,
    encode_request,
    ok_reply,
)
from nbunits.core.roster import Member, Roster
from nbunits.dispatcher.pages import staff_page
from nbunits.helper import lms, members
from tests import openedx

MEMBERS = "https://lms.test/api/lti_consumer/v1/lti/7/memberships"
CONTEXT = "course-v1:Org+Py+2026"
WHERE = Roster(MEMBERS, "https://lms.test", "client")


def edx_members(count: int, staff: int = 1) -> list[dict[str, Any]]:
    """Course members as Open edX's get_course_members gives them to its view."""
    return ([{"id": i, "external_id": f"learner-{i}", "roles": ["student"],
              "name": f"Learner {i}", "email": f"l{i}@x.org"} for i in range(1, count + 1)]
            + [{"id": 1000 + i, "external_id": f"staff-{i}", "roles": ["staff"],
                "name": f"Staff {i}", "email": f"s{i}@x.org"} for i in range(staff)])


def test_the_claim_open_edx_sends_names_where_and_as_which_client() -> None:
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    consumer = openedx.Platform13("https://lms.test", "https://nb/login", "https://nb/launch",
                                  pem, "k", client_id="client",
                                  memberships_url=MEMBERS).consumer()
    claims = {"iss": "https://lms.test", "aud": "client", **consumer.extra_claims}
    assert roster.from_lti13(claims) == WHERE
    assert roster.from_lti13({"iss": "https://lms.test", "aud": "client"}) is None
    other = {**claims, roster.NRPS_CLAIM: {"context_memberships_url": MEMBERS,
                                           "service_versions": ["1.0"]}}
    assert roster.from_lti13(other) is None  # only 2.0 is read
    for url in ("javascript:alert(1)", "file:///etc/shadow", 7):
        with pytest.raises(BadDestination):
            roster.from_lti13({**claims, roster.NRPS_CLAIM: {"context_memberships_url": url}})


def test_learners_of_open_edx_pages_active_learners_only_names_cleaned() -> None:
    listed = edx_members(2) + [{"id": 3, "external_id": "gone", "roles": ["student"],
                                "name": "Gone", "email": "g@x.org"}]
    body, _ = openedx.membership_page(MEMBERS, CONTEXT, listed)
    page = json.loads(body)
    page["members"][2]["status"] = "Inactive"
    page["members"].append({"user_id": "hostile", "roles": ["Learner"],
                            "name": "<script>x</script>\n\x00" + "a" * 500})
    page["members"].append({"user_id": ["not", "a", "string"], "roles": ["Learner"]})
    page["members"].append({"user_id": "noroles"})
    found = roster.learners(json.dumps(page).encode())
    assert [m.user_id for m in found] == ["learner-1", "learner-2", "hostile"]
    assert found[0] == Member("learner-1", "Learner 1")
    assert "\n" not in found[2].name and "\x00" not in found[2].name
    assert len(found[2].name) == roster.MAX_NAME
    for bad in (b"[]", b"{}", b'{"members": {}}', b"not json"):
        with pytest.raises(ValueError):
            roster.learners(bad)


def test_next_pages_stay_on_the_memberships_origin() -> None:
    here = MEMBERS + "?limit=2"
    assert roster.next_page(f'<{MEMBERS}?limit=2&page=2>; rel="next"', here) \
        == MEMBERS + "?limit=2&page=2"
    assert roster.next_page('<?limit=2&page=3>; rel="next", <x>; rel="prev"', here) \
        == MEMBERS + "?limit=2&page=3"
    assert roster.next_page('<https://lms.test/x>; rel="prev"', here) is None
    assert roster.next_page("", here) is None
    for elsewhere in ("https://evil.test/steal", "http://lms.test/m", "//evil.test/m",
                      "https://lms.test:8443/m"):
        with pytest.raises(ValueError, match="another origin"):
            roster.next_page(f'<{elsewhere}>; rel="next"', here)
    assert roster.first_page(MEMBERS) == MEMBERS + "?limit=500"
    assert roster.first_page(MEMBERS + "?rlid=1&limit=9") == MEMBERS + "?rlid=1&limit=9"


class FakeLms:
    """Open edX's memberships view behind a fake network; records what was asked."""

    def __init__(self, listed: list[dict[str, Any]], *, status: int = 200,
                 link_to: str = "") -> None:
        self.listed, self.status, self.link_to = listed, status, link_to
        self.asked: list[tuple[str, dict[str, str]]] = []

    def __call__(self, url: str, headers: dict[str, str]) -> lms.Answer:
        self.asked.append((url, headers))
        if self.status != 200:
            return lms.Answer(self.status, b"nope", {})
        query = parse_qs(urlsplit(url).query)
        page = int(query.get("page", ["1"])[0])
        body, next_url = openedx.membership_page(url, CONTEXT, self.listed,
                                                 limit=int(query["limit"][0]), page=page)
        if self.link_to and page == 2:
            next_url = self.link_to
        return lms.Answer(200, body, {"link": f'<{next_url}>; rel="next"'} if next_url else {})


class Tokens(lms.Session):
    def token(self, course: str, issuer: str, client_id: str, scope: str) -> str:
        assert (course, issuer, client_id, scope) == ("py", WHERE.issuer, WHERE.client_id,
                                                      roster.NRPS_SCOPE)
        return "t0k"


def session() -> Tokens:
    return Tokens(settings=None)  # type: ignore[arg-type]


def test_every_page_is_read_with_the_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roster, "PAGE_SIZE", 2)
    fake = FakeLms(edx_members(5))
    listed = members.read(None, "py", WHERE, fetch=fake, session=session())  # type: ignore[arg-type]
    assert [m.user_id for m in listed.learners] == [f"learner-{i}" for i in range(1, 6)]
    assert listed.complete
    assert len(fake.asked) == 3  # 6 members (a staff member too), 2 per page
    assert all(h == {"Accept": roster.MEMBERSHIP_TYPE, "Authorization": "Bearer t0k"}
               for _, h in fake.asked)


def test_a_page_linking_elsewhere_stops_the_list_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roster, "PAGE_SIZE", 2)
    fake = FakeLms(edx_members(6), link_to="https://evil.test/more")
    listed = members.read(None, "py", WHERE, fetch=fake, session=session())  # type: ignore[arg-type]
    assert not listed.complete and len(listed.learners) == 4
    assert all(urlsplit(url).netloc == "lms.test" for url, _ in fake.asked)


def test_a_long_list_is_cut_and_said_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roster, "PAGE_SIZE", 3)
    monkeypatch.setattr(roster, "MAX_LISTED", 4)
    listed = members.read(None, "py", WHERE, fetch=FakeLms(edx_members(10)),  # type: ignore[arg-type]
                          session=session())
    assert not listed.complete and len(listed.learners) == 4
    clock = iter([0.0, 0.0, members.MAX_SECONDS + 1])
    monkeypatch.setattr(roster, "MAX_LISTED", 5000)
    slow = members.read(None, "py", WHERE, fetch=FakeLms(edx_members(10)),  # type: ignore[arg-type]
                        session=session(), clock=lambda: next(clock))
    assert not slow.complete and len(slow.learners) == 3


def test_a_refused_first_page_is_an_error() -> None:
    with pytest.raises(NbunitsError, match="HTTP 401"):
        members.read(None, "py", WHERE, fetch=FakeLms([], status=401),  # type: ignore[arg-type]
                     session=session())
    with pytest.raises(NbunitsError, match="not one"):
        members.read(None, "py", WHERE, session=session(),  # type: ignore[arg-type]
                     fetch=lambda url, headers: lms.Answer(200, b"<html>", {}))


def test_the_request_and_the_list_cross_the_socket_checked() -> None:
    asked = StaffStudentsRequest("py", "w1/a.ipynb", WHERE)
    assert decode_request(json.loads(encode_request(asked))) == asked
    bare = StaffStudentsRequest("py", "w1/a.ipynb")
    assert decode_request(json.loads(encode_request(bare))) == bare
    line = json.dumps({"action": "staff_students", "course": "py", "notebook": "a.ipynb",
                       "roster": {"url": "file:///etc/shadow", "issuer": "i",
                                  "client_id": "c"}})
    with pytest.raises(ProtocolError):
        decode_request(json.loads(line))
    listed = Students((StudentEntry("nbx", "id1", "/staff/x", "Ann", 12.5, (3.0, 4.0)),
                       StudentEntry("", "id2", "")), "read", 2)
    assert Students.from_json(json.loads(json.dumps(ok_reply(listed)))) == listed


def test_the_staff_page_shows_names_activity_scores_escaped() -> None:
    when = time.mktime((2026, 12, 1, 10, 30, 0, 0, 0, 0)) - time.timezone
    listed = Students((
        StudentEntry("nbaaaa", "learner-1", "/staff/py/nbaaaa/a.ipynb?sig=1", "Ann <b>x</b>",
                     when, (7.0, 10.0)),
        StudentEntry("", "learner-2", "", "Bob"),
        StudentEntry("nbcccc", "old-id", "", "", 0.0, None)), "partial", 2)
    for lang in ("en", "fr"):
        page = staff_page("py", "a.ipynb", listed, lang).text or ""
        assert "Ann &lt;b&gt;x&lt;/b&gt;" in page and "<b>x" not in page
        assert "2026-12-01 10:30 UTC" in page and "7/10" in page
        assert i18n.text(lang, "staff.never") in page and i18n.text(lang, "staff.no_score") in page
        assert i18n.html(lang, "staff.roster_partial") in page
        assert i18n.html(lang, "staff.count_roster", count="2", opened="1") in page
    without = staff_page("py", "a.ipynb", Students(listed.students[:1]), "en").text or ""
    assert i18n.html("en", "staff.count", count="1") in without
    assert "staff.roster" not in without and 'class="note"' not in without
