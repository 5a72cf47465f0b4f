"""Hostile input, property-based: 10,000 generated requests against the real stack.

Hypothesis generates course links (the legacy /ipythonExercice/<course>/<notebook>/<id>
URL, sent raw, as a hostile client would) with hostile headers: traversal (`..`,
`%2e%2e`, absolute paths, the course's symlink), NUL bytes, overlong and non-ASCII
ids, unit-name and shell injection, odd encodings; most are invalid, some valid.
They all go through nginx to the dispatcher (concurrently, to keep the run short),
and then:

- no answer is a 5xx;
- only a valid request (a known notebook of a real course, an id nbunits.names
  accepts) is redirected, and only to that student's own notebook;
- no user, unit, home or file appears that the valid requests do not explain.

The cases are generated first and sent afterwards (a request per hypothesis example
would serialize them); a failure lists the smallest offending cases.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import pytest
import yarl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from nbunits.names import InvalidName, check_student_id, user_for

from .conftest import Nbunits, client

CASES = 10_000
CONCURRENCY = 32
COURSE = "demo"
NOTEBOOKS = ("welcome.ipynb", "week1/loops.ipynb", "week1/python-basics.ipynb")
SYMLINK = "escape.ipynb"  # a master that is a symlink out of the course (fixture below)
# Few valid ids, so that valid cases create few users (and start few containers).
VALID_IDS = ("fuzz-student-1", "Fuzz.Student+2@example.org", "a" * 255)

TRAVERSALS = ("..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "..%2f", "%2f..", "%252e%252e",
              "..%5c", "%c0%ae%c0%ae", "..;", ".", "%2e", "")
ABSOLUTES = ("/etc/passwd", "%2fetc%2fpasswd", "//etc/shadow", "/home/nbaaaaaaaaaaaaaaaa/x.ipynb",
             "/var/lib/nbunits/tokens/demo", "/run/nbunits/helper.sock", "~root/.ssh")
INJECTIONS = ("nbunits-demo@x.service", "x.service", "a@b", "-rf", "--help", "$(id)",
              "`id`", ";reboot", "a|b", "a\\x2db", "a%0asystemctl", "a%0d%0aX-Injected: 1",
              "%00", "a%00b", "welcome.ipynb%00.txt", "*", "?", "[a-z]", "nbunits-helper",
              "dispatcher", "helper", "demo-proxy", "root", "nbunits", "..%00", "%ff%fe",
              "é", "%c3%a9", "\u202e", "%e2%80%ae", "%f0%9f%92%a9")
NASTY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)


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


def generate(n: int) -> list[Case]:
    cases: list[Case] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(CASE)
    def collect(case: Case) -> None:
        cases.append(case)

    collect()
    return cases


@dataclass
class Outcome:
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[tuple[Case, str]] = field(default_factory=list)
    valid_ids: set[str] = field(default_factory=set)


async def send(session: aiohttp.ClientSession, case: Case, outcome: Outcome,
               limit: asyncio.Semaphore) -> None:
    async with limit:
        try:
            async with session.request(case.method, yarl.URL(case.path, encoded=True),
                                       headers=dict(case.headers),
                                       allow_redirects=False) as resp:
                body = await resp.read()
                status, location = resp.status, resp.headers.get("Location", "")
        except (aiohttp.ClientError, ValueError) as exc:
            # aiohttp refused to send it, or nginx closed on it: no answer at all is fine.
            outcome.statuses[0] = outcome.statuses.get(0, 0) + 1
            if not isinstance(exc, (aiohttp.ClientResponseError, ValueError,
                                    aiohttp.ServerDisconnectedError)):
                outcome.failures.append((case, f"transport error {exc!r}"))
            return
    outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
    student = case.valid_id()
    if student is not None:
        outcome.valid_ids.add(student)
    problem = judge(case, student, status, location, body)
    if problem:
        outcome.failures.append((case, problem))


def judge(case: Case, student: str | None, status: int, location: str, body: bytes) -> str:
    if status >= 500:
        return f"{status}: {body[:300]!r}"
    if b"Traceback" in body:
        return "a traceback reached the client"
    if status in (301, 302, 303, 307, 308) and location:
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


@pytest.fixture(scope="module")
def with_symlinked_master(nb: Nbunits) -> Iterator[None]:
    path = f"/var/lib/nbunits/courses/{COURSE}/{SYMLINK}"
    nb.box.run("ln", "-sf", "/etc/shadow", path)
    yield
    nb.box.run("rm", "-f", path)


def files_under(nb: Nbunits, user: str) -> list[str]:
    top = nb.home / user / COURSE
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()) \
        if top.is_dir() else []


RESET_COPY = re.compile(r"(.+)-\d{8}-\d{6}(-\d+)?\.ipynb")


def test_ten_thousand_hostile_requests(nb: Nbunits, with_symlinked_master: None) -> None:
    users, units = nb.users(), set(nb.student_units())
    homes = {p.name for p in nb.home.iterdir()}
    students_before = set(nb.box.run("ls", "/var/lib/nbunits/students").stdout.split())

    started = time.monotonic()
    cases = generate(CASES)
    generated = time.monotonic() - started
    outcome = Outcome()

    async def fire() -> None:
        limit = asyncio.Semaphore(CONCURRENCY)
        async with client(nb) as session:
            await asyncio.gather(*(send(session, case, outcome, limit) for case in cases))

    asyncio.run(fire())
    took = time.monotonic() - started
    print(f"{len(cases)} cases ({len(outcome.valid_ids)} valid ids used), generated in "
          f"{generated:.1f}s, all done in {took:.1f}s; statuses {sorted(outcome.statuses.items())}")

    assert len(cases) >= CASES
    worst = sorted(outcome.failures, key=lambda f: len(f[0].path) + len(str(f[0].headers)))
    assert not worst, f"{len(worst)} bad answers, e.g. " + "\n".join(
        f"{c.method} {c.path} {dict(c.headers)}: {why}" for c, why in worst[:10])

    allowed = {user_for(i) for i in outcome.valid_ids}
    assert nb.users() - users <= allowed, "a user was created for an invalid request"
    assert {p.name for p in nb.home.iterdir()} - homes <= allowed, "a home appeared"
    new_students = set(nb.box.run("ls", "/var/lib/nbunits/students").stdout.split())
    assert new_students - students_before <= allowed
    new_units = set(nb.student_units()) - units
    strays = [u for u in new_units
              if not any(u.endswith((f"@{user}.socket", f"@{user}.service")) for user in allowed)]
    assert not strays, f"units started for invalid requests: {strays}"
    for user in allowed & nb.users():
        for path in files_under(nb, user):
            match = RESET_COPY.fullmatch(path)
            assert path in NOTEBOOKS or (match and match.group(1) + ".ipynb" in NOTEBOOKS) \
                or ".ipynb_checkpoints" in path or path.endswith(".NEW-VERSION.md"), \
                f"{user}: unexpected file {path}"
