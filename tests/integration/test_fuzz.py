"""Hostile input, property-based: 10,000 generated requests against the real stack.

Hypothesis generates course links (the legacy /ipythonExercice/<course>/<notebook>/<id>
URL, sent raw, as a hostile client would) with hostile headers: traversal (`..`,
`%2e%2e`, absolute paths, the course's symlink), NUL bytes, overlong and non-ASCII
ids, unit-name and shell injection, odd encodings; most are invalid, some valid.
They all go through nginx to the dispatcher (concurrently, to keep the run short).
Each case's outcome is decided from the case alone, before its answer is read
(Case.expect: nbunits.core.names, the course's real notebooks, the documented query
rules), and then:

- a valid link (a GET for this server's name, of a real notebook of the course, for
  an id nbunits.core.names accepts) gets exactly its redirect: /nb/<course>/<its
  user>/<its capability>/notebooks/<that notebook>, relative (this server, this
  scheme), or the starting page that goes there; following some opens that
  student's own copy;
- every other request gets a 4xx, no redirect; none gets a 5xx or no answer;
- the users, homes, records, units and files after are exactly what the valid
  links explain.

The same, for LTI (test_hostile_lti_launches): hypothesis-generated LTI 1.1 form POSTs
(unsigned, badly signed, and correctly signed by the fake LMS of lms.py) with hostile
fields, and garbage or forged id_tokens and states for LTI 1.3 (oracle: lti_cases.py);
and for raw /nb/, /staff/ and wake paths (oracle: paths.py).

The machinery (sending concurrently, judging, checking what was created) is in
fuzzing.py. Each of these tests was seen to fail with the dispatcher broken on
purpose: half the valid ids refused, redirects to another site or another notebook,
connections dropped, staff links refused, the wake sending elsewhere, nginx's
capability check removed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, unquote

import aiohttp
import pytest
import yarl
from hypothesis import strategies as st

from nbunits.core.names import user_for
from testbed.browser import Opened, open_exercise

from . import lti_cases, paths
from .conftest import SERVER, Nbunits, client
from .fuzzing import (
    ABSOLUTES,
    INJECTIONS,
    NASTY_TEXT,
    NOTEBOOKS,
    TRAVERSALS,
    VALID_IDS,
    Opens,
    Outcome,
    Snapshot,
    answer,
    broken,
    capabilities,
    check_opened,
    course_notebooks,
    fire,
    generate,
    judge_open,
    refused,
    sent_url,
    served_host,
    valid_id,
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


# A course link's query: the parameters the dispatcher reads, each at most once and
# of this form (docs/security.md); others are ignored.
QUERY_RULES = {"reset": re.compile("[01]"), "sig": re.compile("[0-9a-f]{64}"),
               "expires": re.compile("[0-9]{1,12}")}


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

    @property
    def url(self) -> yarl.URL:
        return sent_url(self.path)

    def expect(self, notebooks: frozenset[str]) -> Opens | None:
        """What this request must open, or None: it must be refused. Only a GET (no
        HEAD: a link prefetcher creates nothing) for this server's name, of a
        notebook of the course, for an id nbunits.core.names accepts, whose query
        the dispatcher accepts."""
        if self.method != "GET" or not served_host(dict(self.headers).get("Host")):
            return None
        url = self.url
        segments = url.raw_path.split("/")[1:]
        if len(segments) < 4 or segments[0] != "ipythonExercice":
            return None
        course, notebook, student = (unquote(segments[1]), unquote("/".join(segments[2:-1])),
                                     unquote(segments[-1]))
        if course != COURSE or notebook not in notebooks or not valid_id(student):
            return None
        for name, pattern in QUERY_RULES.items():
            values = url.query.getall(name, [])
            if len(values) > 1 or (values and not pattern.fullmatch(values[0])):
                return None
        return Opens(COURSE, student, notebook)

    @property
    def wants_html(self) -> bool:
        return "text/html" in dict(self.headers).get("Accept", "")


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


def sender(notebooks: frozenset[str]) -> Callable[
        [aiohttp.ClientSession, Case, Outcome], Awaitable[None]]:
    async def send(session: aiohttp.ClientSession, case: Case, outcome: Outcome) -> None:
        got = await answer(outcome, case, lambda: session.request(
            case.method, case.url, headers=dict(case.headers), allow_redirects=False))
        if got is None:
            return
        opens = case.expect(notebooks)
        if opens is None:
            problem = broken(got) or refused(got)
        else:
            outcome.opened.append((opens, got))
            problem = judge_open(opens, got, html_ok=case.wants_html)
        if problem:
            outcome.fail(case, problem)
    return send


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
    notebooks = course_notebooks(nb, COURSE)
    assert notebooks == set(NOTEBOOKS)  # the symlinked master is none
    before = Snapshot.take(nb)
    started = time.monotonic()
    cases = generate(CASE, CASES)
    generated = time.monotonic() - started
    outcome = Outcome()
    fire(nb, cases, outcome, sender(notebooks))
    took = time.monotonic() - started
    valid = sum(c.expect(notebooks) is not None for c in cases)
    print(f"{len(cases)} cases ({valid} valid, for {len(outcome.students)} ids), generated in "
          f"{generated:.1f}s, all done in {took:.1f}s; statuses {sorted(outcome.statuses.items())}")

    assert len(cases) >= CASES
    assert not outcome.failures, outcome.report(describe)
    assert len(outcome.opened) == valid and valid >= CASES // 40, valid
    check_opened(nb, outcome)
    before.check_exactly(nb, outcome.students, COURSE)


def test_hostile_lti_launches(nb: Nbunits, lti_course: str) -> None:
    before = Snapshot.take(nb)
    started = time.monotonic()
    cases = generate(lti_cases.CASE, LTI_CASES)
    generated = time.monotonic() - started
    outcome = Outcome()
    with symlinked_master(nb, lti_course):
        notebooks = course_notebooks(nb, lti_course)
        assert notebooks == set(NOTEBOOKS)
        came = frozenset(capabilities(nb, lti_course))
        first, naming = lti_cases.phases(cases, lti_cases.Oracle(notebooks, came))
        fire(nb, first, outcome, lti_cases.sender(lti_cases.Oracle(notebooks, came)))
        # Staff launches naming a student: those who came are known now, from the cases.
        came |= {opens.user for opens, _ in outcome.opened}
        second = lti_cases.Oracle(notebooks, came)
        fire(nb, naming, outcome, lti_cases.sender(second))
    took = time.monotonic() - started
    print(f"{len(cases)} LTI cases ({len(outcome.opened)} valid launches, "
          f"{len(outcome.staff_links)} staff views, for {len(outcome.students)} ids), generated in "
          f"{generated:.1f}s, all done in {took:.1f}s; statuses {sorted(outcome.statuses.items())}")

    assert len(cases) >= LTI_CASES
    assert not outcome.failures, outcome.report()
    # Every valid launch was answered as it must be: as many as the cases say.
    opens = [c for c in first if not isinstance(c, lti_cases.Login)
             and (e := second.expected(c)) is not None and e[0] == "open"]
    views = [c for c in naming if user_for(second.expected(c)[1]) in came]
    assert len(outcome.opened) == len(opens) >= 40, (len(outcome.opened), len(opens))
    assert len(outcome.staff_links) == len(views) >= 10, (len(outcome.staff_links), len(views))
    check_opened(nb, outcome)
    wrong = asyncio.run(lti_cases.follow_staff_links(nb, outcome.staff_links))
    assert not wrong, f"{len(wrong)} staff redirects did not open the copy, e.g. {wrong[:3]}"
    before.check_exactly(nb, outcome.students, lti_course)


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


def anchors(attacker: Opened, victim: Opened, staff_link: str) -> list[PathCase]:
    """A case of each kind, whatever hypothesis draws: the attacker's own server, the
    staff link as given, someone else's server with one's own capability, the
    internal wake path, a prefix without its slash, another host, a path above the root."""
    return [PathCase(f"{attacker.prefix}api/status", SERVER), PathCase(staff_link, SERVER),
            PathCase(f"/nb/demo/{victim.user}/{attacker.token}/api/status", SERVER),
            PathCase(f"/_nbunits/wake/demo/{victim.user}/{victim.token}", SERVER),
            PathCase("/staff?x=1", SERVER), PathCase("/", "evil.example"),
            PathCase(f"{attacker.prefix}{'%2e%2e/' * 6}x", SERVER)]


def test_hostile_paths_to_servers_staff_views_and_the_wake_path(nb: Nbunits) -> None:
    async def two() -> tuple[Opened, Opened]:
        async with client(nb) as session:
            return (await open_exercise(session, "demo", "welcome.ipynb", "fuzz-path-1"),
                    await open_exercise(session, "demo", "welcome.ipynb", "fuzz-path-2"))

    attacker, victim = asyncio.run(two())
    victim_units = [f"nbunits-demo@{victim.user}.socket",
                    f"nbunits-demo@{victim.user}.service",
                    f"nbunits-demo-proxy@{victim.user}.service"]
    nb.box.systemctl("stop", *victim_units)
    nb.box.systemctl("stop", f"nbunits-demo@{attacker.user}.socket",
                     f"nbunits-demo@{attacker.user}.service")
    staff_link = nb.nbunits("student", "link", "demo", victim.user, "welcome.ipynb").stdout.strip()
    grants = paths.Grants({("demo", attacker.user, attacker.token): "attacker",
                           ("demo", victim.user, victim.token): "victim"},
                          staff_link.split("?")[0], staff_link.split("?")[1])
    before = Snapshot.take(nb)
    cases = anchors(attacker, victim, staff_link) + generate(path_cases(
        attacker.user, attacker.token, victim.user, victim.token, grants.staff_query), PATH_CASES)
    expected = {case: paths.expect(case.path, case.host, grants) for case in cases}
    assert not [c for c, e in expected.items() if e.kind == "own" and victim.token in e.location]
    outcome = Outcome()

    async def send(session: aiohttp.ClientSession, case: PathCase, outcome: Outcome) -> None:
        got = await answer(outcome, case, lambda: session.get(
            sent_url(case.path), headers={"Host": case.host}, allow_redirects=False))
        problem = got and paths.judge(case.path, expected[case], got)
        if problem:
            outcome.fail(case, problem)

    started = time.monotonic()
    fire(nb, cases, outcome, send)
    kinds = Counter(f"{e.kind} {e.status or ''}".strip() for e in expected.values())
    print(f"{len(cases)} path cases in {time.monotonic() - started:.1f}s; expected "
          f"{sorted(kinds.items())}; statuses {sorted(outcome.statuses.items())}")
    assert not outcome.failures, outcome.report(lambda c: f"{c.host} {c.path}")
    # Every kind of answer was asked for (the counts above are each case's, exact).
    assert all(kinds[k] >= 1 for k in ("own", "status 200", "nginx 403", "nginx 404",
                                       "redirect 301", "status 421", "status 400"))
    assert kinds["own"] >= 50 and kinds["nginx 403"] >= 100, kinds
    # Side effects: only the attacker's own server was woken; the victim's stayed
    # down, and nobody was created.
    states = {u: nb.show(u, "ActiveState")["ActiveState"] for u in victim_units}
    assert set(states.values()) == {"inactive"}, states
    assert nb.show(f"nbunits-demo@{attacker.user}.service", "ActiveState")["ActiveState"] \
        == "active"
    before.check_exactly(nb, {"fuzz-path-1"}, "demo")
