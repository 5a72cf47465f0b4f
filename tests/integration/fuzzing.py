"""What the fuzz tests share: hostile text, generating cases with hypothesis, sending
them concurrently, judging answers, and checking that nothing was created.

The cases are generated first and sent afterwards (a request per hypothesis example
would serialize them); a failure lists the smallest offending cases.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from nbunits.core.names import user_for

from .conftest import Nbunits, client

T = TypeVar("T")
CONCURRENCY = 32
NOTEBOOKS = ("welcome.ipynb", "week1/loops.ipynb", "week1/python-basics.ipynb",
             "data-and-plots.ipynb")
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
REDIRECTS = (301, 302, 303, 307, 308)


def generate(strategy: st.SearchStrategy[T], n: int) -> list[T]:
    cases: list[T] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(case: T) -> None:
        cases.append(case)

    collect()
    return cases


@dataclass
class Outcome:
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[tuple[Any, str]] = field(default_factory=list)
    valid_ids: set[str] = field(default_factory=set)  # students whose launches may open

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def report(self, describe: Callable[[Any], str] = repr) -> str:
        worst = sorted(self.failures, key=lambda f: len(describe(f[0])))
        return f"{len(worst)} bad answers, e.g. " + "\n".join(
            f"{describe(c)[:600]}: {why}" for c, why in worst[:10])


@dataclass(frozen=True)
class Answer:
    status: int
    location: str
    body: bytes


async def answer(outcome: Outcome, case: Any,
                 request: Callable[[], Any]) -> Answer | None:
    """Send (request() is a session.request(...) context); None if there was no answer,
    which is fine when aiohttp refused to send it or nginx closed on it."""
    try:
        async with request() as resp:
            got = Answer(resp.status, resp.headers.get("Location", ""), await resp.read())
    except (aiohttp.ClientError, ValueError) as exc:
        outcome.count(0)
        if not isinstance(exc, (aiohttp.ClientResponseError, ValueError,
                                aiohttp.ServerDisconnectedError)):
            outcome.failures.append((case, f"transport error {exc!r}"))
        return None
    outcome.count(got.status)
    return got


def broken(got: Answer) -> str:
    """What no answer may ever be: a server error, or one that shows a traceback."""
    if got.status >= 500:
        return f"{got.status}: {got.body[:300]!r}"
    if b"Traceback" in got.body:
        return "a traceback reached the client"
    return ""


def fire(nb: Nbunits, cases: Sequence[T], outcome: Outcome,
         send: Callable[[aiohttp.ClientSession, T, Outcome], Awaitable[None]]) -> None:
    """Send all cases through nginx, CONCURRENCY at a time."""
    async def run() -> None:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(session: aiohttp.ClientSession, case: T) -> None:
            async with limit:
                await send(session, case, outcome)

        async with client(nb) as session:
            await asyncio.gather(*(one(session, case) for case in cases))

    asyncio.run(run())


RESET_COPY = re.compile(r"(.+)-\d{8}-\d{6}(-\d+)?\.ipynb")


@dataclass(frozen=True)
class Snapshot:
    """Users, homes, student records and units before a fuzz run."""

    users: frozenset[str]
    homes: frozenset[str]
    students: frozenset[str]
    units: frozenset[str]

    @classmethod
    def take(cls, nb: Nbunits) -> Snapshot:
        return cls(frozenset(nb.users()), frozenset(p.name for p in nb.home.iterdir()),
                   frozenset(nb.box.run("ls", "/var/lib/nbunits/students").stdout.split()),
                   frozenset(nb.student_units()))

    def check_only_explained(self, nb: Nbunits, valid_ids: set[str], course: str) -> None:
        """Nothing appeared but what valid launches of `valid_ids` explain."""
        allowed = {user_for(i) for i in valid_ids}
        now = Snapshot.take(nb)
        assert now.users - self.users <= allowed, "a user was created for an invalid request"
        assert now.homes - self.homes <= allowed, "a home appeared"
        assert now.students - self.students <= allowed
        strays = [u for u in now.units - self.units
                  if not any(u.endswith((f"@{user}.socket", f"@{user}.service"))
                             for user in allowed)]
        assert not strays, f"units started for invalid requests: {strays}"
        for user in allowed & now.users:
            for path in files_under(nb, user, course):
                match = RESET_COPY.fullmatch(path)
                assert path in NOTEBOOKS or (match and match.group(1) + ".ipynb" in NOTEBOOKS) \
                    or ".ipynb_checkpoints" in path or path.endswith(".NEW-VERSION.md"), \
                    f"{user}: unexpected file {path}"


def files_under(nb: Nbunits, user: str, course: str) -> list[str]:
    top = nb.home / user / course
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()) \
        if top.is_dir() else []
