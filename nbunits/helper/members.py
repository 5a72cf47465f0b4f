"""Reading a course's learners from its LMS (NRPS 2.0, core/roster.py), for the staff
page of a staff member's verified LTI 1.3 launch. Root's helper has no network: it
asks a run of units/nbunits-roster@.service, which does read() (read_in_unit).

A token of the membership scope (helper/lms.py, the course's registration for the
launch's issuer and client), then the pages, each asked with that bearer token on
the memberships URL's own origin only, within a time for the whole list: the staff
member waits for the page. The list is not kept: the next staff launch reads it anew.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from nbunits.core import roster
from nbunits.core.config import Settings, load_settings
from nbunits.core.errors import NbunitsError
from nbunits.core.roster import Member, Roster
from nbunits.core.systemctl import systemctl
from nbunits.helper import lms

logger = logging.getLogger(__name__)

MAX_SECONDS = 20.0  # for the whole list
MAX_PAGES = 100

Get = Callable[[str, dict[str, str]], lms.Answer]


def get(url: str, headers: dict[str, str]) -> lms.Answer:
    return lms.request("GET", url, None, headers, limit=roster.MAX_PAGE_BYTES)


@dataclass(frozen=True)
class Listed:
    learners: list[Member]
    complete: bool  # False: cut (too many, too long, a page that did not fit)


def read(settings: Settings, course: str, where: Roster, *, fetch: Get = get,
         session: lms.Session | None = None,
         clock: Callable[[], float] = time.monotonic) -> Listed:
    """The course's active learners, as its LMS lists them. LmsError if not even the
    first page can be read (no token, refused, unreachable, not a membership list)."""
    session = session or lms.Session(settings)
    token = session.token(course, where.issuer, where.client_id, roster.NRPS_SCOPE)
    headers = {"Accept": roster.MEMBERSHIP_TYPE, "Authorization": f"Bearer {token}"}
    found: dict[str, Member] = {}
    url: str | None = roster.first_page(where.url)
    deadline = clock() + MAX_SECONDS
    pages = 0
    while url is not None:
        if pages == MAX_PAGES or clock() > deadline or len(found) >= roster.MAX_LISTED:
            return _cut(course, found, f"after {pages} page(s)")
        try:
            answer = fetch(url, headers)
            if answer.status != 200:
                raise lms.refused("the list of members", url, answer.status, answer.body)
            page = roster.learners(answer.body)
        except (lms.LmsError, ValueError) as exc:
            if not pages:
                raise exc if isinstance(exc, lms.LmsError) else lms.LmsError(
                    f"the LMS's list of members is not one: {exc}") from exc
            return _cut(course, found, f"at page {pages + 1}: {getattr(exc, 'message', exc)}")
        pages += 1
        for member in page:
            found.setdefault(member.user_id, member)
        try:
            url = roster.next_page(answer.headers.get("link", ""), url)
        except ValueError as exc:
            return _cut(course, found, f"after page {pages}: {exc}")
    if len(found) > roster.MAX_LISTED:
        return _cut(course, found, f"at {roster.MAX_LISTED} learners")
    logger.info("the LMS lists %d learner(s) in %d page(s)", len(found), pages,
                extra={"COURSE": course})
    return Listed(list(found.values()), complete=True)


def _cut(course: str, found: dict[str, Member], why: str) -> Listed:
    logger.warning("the LMS's list of learners is cut %s (%d learner(s) read)", why,
                   len(found), extra={"COURSE": course})
    return Listed(list(found.values())[:roster.MAX_LISTED], complete=False)


# --- run in its own unit (units/nbunits-roster@.service) --------------------------------

UNIT = "nbunits-roster@{}.service"


def read_in_unit(settings: Settings, course: str, where: Roster) -> Listed:
    """read(), in a run of nbunits-roster@.service: the helper has no network."""
    run_id = secrets.token_hex(8)
    folder = settings.roster_dir(run_id)
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700)
    try:
        (folder / "in.json").write_text(json.dumps({"course": course,
                                                     "roster": where.to_json()}))
        try:
            systemctl("start", UNIT.format(run_id), timeout=60)
        except (NbunitsError, OSError) as exc:
            raise lms.LmsError(f"the list of learners could not be read: {exc}") from exc
        answer = json.loads((folder / "out.json").read_bytes() or b"{}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if "error" in answer:
        raise lms.LmsError(str(answer["error"]))
    return Listed([Member(str(i), str(n)) for i, n in answer["learners"]],
                  bool(answer["complete"]))


def main() -> None:
    """The unit's run: the request on stdin, the list (or the LMS's error) on stdout."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asked = json.load(sys.stdin)
    try:
        listed = read(load_settings(), asked["course"], Roster.from_json(asked["roster"]))
        answer: dict[str, object] = {"learners": [[m.user_id, m.name] for m in listed.learners],
                                     "complete": listed.complete}
    except NbunitsError as exc:
        logger.warning("%s", exc.message, extra={"COURSE": asked.get("course")})
        answer = {"error": exc.message}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
