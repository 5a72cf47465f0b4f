"""Hostile input, property-based: 10,000 generated requests against the real stack.

Hypothesis generates course links (the legacy /ipythonExercice/<course>/<notebook>/<id>
URL, sent raw, as a hostile client would) with hostile headers: traversal (`..`,
`%2e%2e`, absolute paths, the course's symlink), NUL bytes, overlong and non-ASCII
ids, unit-name and shell injection, odd encodings; most are invalid, some valid.
They all go through nginx to the dispatcher (concurrently, to keep the run short),
and then:

- no answer is a 5xx;
- only a valid request (a known notebook of a real course, an id nbunits.core.names
  accepts) is redirected, and only to that student's own notebook;
- no user, unit, home or file appears that the valid requests do not explain.

The same, for LTI (test_lti_launches_...): hypothesis-generated LTI 1.1 form POSTs
(unsigned, badly signed, and correctly signed by the fake LMS of lms.py) with hostile
fields, and garbage or forged id_tokens and states for LTI 1.3.

The machinery (sending concurrently, judging, checking what was created) is in
fuzzing.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import pytest
import yarl
from hypothesis import strategies as st

from nbunits.core.names import InvalidName, check_student_id, user_for
from testbed.browser import open_exercise

from . import lti_cases
from .conftest import SERVER, Nbunits, client
from .fuzzing import (
    ABSOLUTES,
    INJECTIONS,
    NASTY_TEXT,
    NOTEBOOKS,
    REDIRECTS,
    TRAVERSALS,
    VALID_IDS,
    Outcome,
    Snapshot,
    answer,
    broken,
    fire,
    generate,
)

CASES = 10_000
LTI_CASES = 4_000
COURSE = "demo"
SYMLINK = "escape.ipynb"  # a master that is a symlink out of the course (fixture below)


def encode(text: str, how: str) -> str:
    """A path segment as a client could send it: raw, or percent-encoded (partly)."""
    if how == "raw":
        return quote(text, safe="/%@+=;:,!$&'()*~.-_")  # only what HTTP cannot carry raw
    if how == "all":
        return "".join(f"%{b:02x}" for b in text.encode())
    return quote(text, safe="")


def segment(pool: tuple[str, ...]) -> st.SearchStrategy[str]:
    """A segment: from the pool (already as sent), or generated text, encoded somehow."""
    return st.one_of(
        st.sampled_from(pool),
        st.tuples(NASTY_TEXT, st.sampled_from(["raw", "all", "quote"])).map(lambda t: encode(*t)),
        st.lists(st.sampled_from(TRAVERSALS + pool), min_size=1, max_size=6).map("/".join),
        st.integers(200, 5000).map(lambda n: "a" * n),
    )


COURSES = (COURSE, COURSE, "dem%6f", "nosuch", "Demo", "demo-proxy", "helper", "dispatcher",
           "demo%2f..", "..", "%2e%2e", "demo.", "a" * 40)
NB_POOL = NOTEBOOKS + (SYMLINK, "week1%2floops.ipynb", "welcome.ipynb%00", "welcome.IPYNB",
                       "welcome", "week1/", "week1/../welcome.ipynb", "./welcome.ipynb",
                       "week1/..%2fwelcome.ipynb", "%77elcome.ipynb") + ABSOLUTES
ID_POOL = VALID_IDS + ("a" * 256, "", "a b", "a/b", ".", "-x", "_x", "nbaaaaaaaaaaaaaaaa") + INJECTIONS

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff,
                                    exclude_characters="\x7f"), max_size=48)
HEADERS = st.fixed_dictionaries({}, optional={
    "Referer": st.one_of(HEADER_TEXT, st.sampled_from([
        "https://lms.example.org/courses/x", "javascript:alert(1)", "http://evil/..%2f..%2f"])),
    "Host": st.one_of(HEADER_TEXT.filter(lambda h: h.strip() == h and h), st.sampled_from([
        "localhost", "evil.example", "localhost:1", "127.0.0.1", "[::1]", "a" * 300])),
    "X-Forwarded-For": HEADER_TEXT,
    "X-Forwarded-Proto": st.sampled_from(["http", "https", "gopher", "", "https, http"]),
    "X-Forwarded-Host": HEADER_TEXT,
    "X-Real-IP": HEADER_TEXT,
    "Accept": st.sampled_from(["text/html", "*/*", "application/json", ""]),
    "Authorization": HEADER_TEXT,
    "Cookie": HEADER_TEXT,
})
QUERIES = st.sampled_from(["", "", "?reset=1", "?reset=0", "?reset=1&reset=1", "?token=x",
                           "?%00", "?reset=%00", "?a=" + "b" * 3000])


@dataclass(frozen=True)
class Case:
    method: str
    course: str
    notebook: str
    student: str
    query: str
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        return f"/ipythonExercice/{self.course}/{self.notebook}/{self.student}{self.query}"

    def resolved(self) -> tuple[str, str, str] | None:
        """(course, notebook, student) as the server sees them: literal "." and ".."
        segments are resolved first (RFC 3986, as nginx and browsers do), then each
        segment is percent-decoded."""
        segments: list[str] = []
        for part in self.path.split("?", 1)[0].split("/")[1:]:
            if part == "..":
                segments = segments[:-1]
            elif part != ".":
                segments.append(part)
        if len(segments) < 4 or segments[0] != "ipythonExercice":
            return None
        return (unquote(segments[1]), unquote("/".join(segments[2:-1])),
                unquote(segments[-1]))

    def valid_id(self) -> str | None:
        """The student id, if this request may legitimately open a notebook."""
        resolved = self.resolved()
        # aiohttp answers HEAD like GET (add_get), so a HEAD opens a notebook too.
        if self.method not in ("GET", "HEAD") or resolved is None:
            return None
        course, notebook, student = resolved
        if course != COURSE or notebook not in NOTEBOOKS:
            return None
        try:
            check_student_id(student)
        except InvalidName:
            return None
        return student


HEADER_TUPLES = HEADERS.map(lambda h: tuple(sorted(h.items())))
HOSTILE = st.builds(
    Case,
    method=st.sampled_from(["GET"] * 8 + ["HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
    course=segment(COURSES),
    notebook=segment(NB_POOL),
    student=segment(ID_POOL),
    query=QUERIES,
    headers=HEADER_TUPLES,
)
# Valid links (some percent-encoded), with hostile headers: these may open a notebook.
VALID = st.builds(
    Case,
    method=st.just("GET"),
    course=st.sampled_from([COURSE, "dem%6f"]),
    notebook=st.sampled_from(NOTEBOOKS + ("week1%2floops.ipynb", "%77elcome.ipynb")),
    student=st.sampled_from(VALID_IDS + ("fuzz%2dstudent%2d1",)),
    query=st.sampled_from(["", "", "", "?reset=0", "?token=x"]),
    headers=HEADER_TUPLES,
)
# About one case in 16 is valid.
CASE = st.integers(0, 15).flatmap(lambda i: VALID if i == 0 else HOSTILE)


async def send(session: aiohttp.ClientSession, case: Case, outcome: Outcome) -> None:
    got = await answer(outcome, case, lambda: session.request(
        case.method, yarl.URL(case.path, encoded=True), headers=dict(case.headers),
        allow_redirects=False))
    if got is None:
        return
    student = case.valid_id()
    if student is not None:
        outcome.valid_ids.add(student)
    problem = broken(got) or judge(case, student, got.status, got.location)
    if problem:
        outcome.failures.append((case, problem))


def judge(case: Case, student: str | None, status: int, location: str) -> str:
    if status in REDIRECTS and location:
        if student is None:
            return f"an invalid request was redirected to {location}"
        path = unquote(urlsplit(location).path)
        prefix = f"/nb/{COURSE}/{user_for(student)}/"
        if not path.startswith(prefix) or "/../" in path or "\x00" in path:
            return f"redirected outside the student's notebooks: {location}"
        resolved = case.resolved()
        if resolved is None or not path.endswith("/notebooks/" + resolved[1]):
            return f"redirected to another notebook: {location}"
    elif status < 400 and student is None:
        return f"an invalid request got {status}"
    return ""


def describe(case: Case) -> str:
    return f"{case.method} {case.path} {dict(case.headers)}"


@contextmanager
def symlinked_master(nb: Nbunits, course: str) -> Iterator[None]:
    path = f"/var/lib/nbunits/courses/{course}/{SYMLINK}"
    nb.box.run("ln", "-sf", "/etc/shadow", path)
    yield
    nb.box.run("rm", "-f", path)


@pytest.fixture(scope="module")
def with_symlinked_master(nb: Nbunits) -> Iterator[None]:
    with symlinked_master(nb, COURSE):
        yield


def test_ten_thousand_hostile_requests(nb: Nbunits, with_symlinked_master: None) -> None:
    before = Snapshot.take(nb)
    started = time.monotonic()
    cases = generate(CASE, CASES)
    generated = time.monotonic() - started
    outcome = Outcome()
    fire(nb, cases, outcome, send)
    took = time.monotonic() - started
    print(f"{len(cases)} cases ({len(outcome.valid_ids)} valid ids used), generated in "
          f"{generated:.1f}s, all done in {took:.1f}s; statuses {sorted(outcome.statuses.items())}")

    assert len(cases) >= CASES
    assert not outcome.failures, outcome.report(describe)
    before.check_only_explained(nb, outcome.valid_ids, COURSE)


def test_hostile_lti_launches(nb: Nbunits, lti_course: str) -> None:
    before = Snapshot.take(nb)
    started = time.monotonic()
    cases = generate(lti_cases.CASE, LTI_CASES)
    generated = time.monotonic() - started
    outcome = Outcome()
    with symlinked_master(nb, lti_course):
        fire(nb, cases, outcome, lti_cases.send)
    took = time.monotonic() - started
    print(f"{len(cases)} LTI cases ({len(outcome.valid_ids)} valid ids used), generated in "
          f"{generated:.1f}s, all done in {took:.1f}s; statuses {sorted(outcome.statuses.items())}")

    assert len(cases) >= LTI_CASES
    assert not outcome.failures, outcome.report()
    assert outcome.statuses.get(302, 0) > 100  # valid launches and logins did happen
    before.check_only_explained(nb, outcome.valid_ids, lti_course)


# --- /nb/, /staff/ and the wake fallback ------------------------------------------------

PATH_CASES = 1_500


@dataclass(frozen=True)
class PathCase:
    path: str
    host: str


def path_cases(attacker: str, cap: str, victim: str, victim_cap: str, staff_query: str
               ) -> st.SearchStrategy[PathCase]:
    """Raw request paths mixing a student's own capability with another's name, dot
    segments (literal and encoded), doubled and encoded slashes, the internal wake
    path (with the victim's capability: it is internal), and staff links with
    hostile parameters, under real host names."""
    parts = st.sampled_from([
        "nb", "demo", "dem%6f", attacker, victim, cap, "A" * 22 + ".0.9999999999",
        cap.split(".")[0], cap + "x", "..", "%2e%2e", ".", "%2e", "", "%2f", "%2F..", "..%2f",
        "_nbunits", "wake", "%5fnbunits", "staff", "welcome.ipynb", "api", "status", "tree",
        "api/contents/welcome.ipynb", "%00", "%0d%0aX:%20y", "x" * 300, "nb%2f" + victim,
        "%252e%252e", ";", "..;", "%c0%ae%c0%ae"])
    tails = st.lists(parts, min_size=1, max_size=9).map("/".join)
    starts = st.sampled_from([
        "/nb/demo/", f"/nb/demo/{victim}/", f"/nb/demo/{victim}/x/../../{attacker}/{cap}/",
        f"/nb/demo/{attacker}/{cap}/", f"/nb/demo//{attacker}/{cap}/", "/_nbunits/wake/",
        f"/_nbunits/wake/demo/{victim}/{victim_cap}/", "/staff/demo/", f"/staff/demo/{victim}/",
        "/./", "/", f"/nb/demo/{attacker}/{cap}/../../{victim}/", "/nb/../_nbunits/wake/demo/"])
    queries = st.sampled_from(["", "", "?token=" + cap, "?" + staff_query,
                               "?expires=" + "9" * 5000 + "&sig=" + "0" * 64,
                               "?expires=1&sig=x&sig=y", "?%00=%00"])
    hosts = st.sampled_from([SERVER, SERVER, f"{SERVER}:443", SERVER.upper(), "localhost",
                             f"{SERVER}.", "evil.example", f"{SERVER}:80@evil.example"])
    # A path may not start with "//" (a client would take it for a host name).
    return st.builds(lambda s, t, q, h: PathCase(("/." + s + t if (s + t).startswith("//")
                                                  else s + t) + q, h),
                     starts, tails, queries, hosts)


def test_hostile_paths_to_servers_staff_views_and_the_wake_path(nb: Nbunits) -> None:
    async def two() -> tuple:
        async with client(nb) as session:
            return tuple([await open_exercise(session, "demo", "welcome.ipynb", f"fuzz-path-{i}")
                          for i in (1, 2)])

    attacker, victim = asyncio.run(two())
    victim_units = [f"nbunits-demo@{victim.user}.socket",
                    f"nbunits-demo@{victim.user}.service",
                    f"nbunits-demo-proxy@{victim.user}.service"]
    nb.box.systemctl("stop", *victim_units)
    nb.box.systemctl("stop", f"nbunits-demo@{attacker.user}.socket",
                     f"nbunits-demo@{attacker.user}.service")
    staff_link = nb.nbunits("student", "link", "demo", victim.user, "welcome.ipynb").stdout
    before = Snapshot.take(nb)
    cases = generate(path_cases(attacker.user, attacker.token, victim.user, victim.token,
                                staff_link.strip().split("?")[1]), PATH_CASES)
    outcome = Outcome()
    own = attacker.prefix.rstrip("/")  # Jupyter may redirect to it without the slash

    async def send(session: aiohttp.ClientSession, case: PathCase, outcome: Outcome) -> None:
        got = await answer(outcome, case, lambda: session.get(
            yarl.URL(case.path, encoded=True), headers={"Host": case.host},
            allow_redirects=False))
        if got is None:
            return
        # Jupyter's own 500 (JSON, no traceback) for an odd path in one's own server.
        jupyters = got.body.startswith(b'{"message": "Unhandled error"') and b"Traceback" not in got.body
        if got.status >= 500 and got.status != 503 and not jupyters:
            outcome.failures.append((case, f"{got.status}: {got.body[:200]!r}"))
        elif got.status in REDIRECTS and not got.location.startswith(("https://", own)):
            outcome.failures.append((case, f"redirected to {got.location}"))
        elif b"Traceback" in got.body:
            outcome.failures.append((case, "a traceback"))

    started = time.monotonic()
    fire(nb, cases, outcome, send)
    print(f"{len(cases)} path cases in {time.monotonic() - started:.1f}s; "
          f"statuses {sorted(outcome.statuses.items())}")
    assert not outcome.failures, outcome.report(lambda c: f"{c.host} {c.path}")
    # Side effects: only the attacker's own server may have been woken; the victim's
    # stayed down, and nobody was created.
    states = {u: nb.show(u, "ActiveState")["ActiveState"] for u in victim_units}
    assert set(states.values()) == {"inactive"}, states
    before.check_only_explained(nb, {"fuzz-path-1"}, "demo")  # the attacker's own units
