"""What the fuzz tests share: hostile text, generating cases with hypothesis, sending
them concurrently, judging answers, and checking what was created.

The cases are generated first and sent afterwards (a request per hypothesis example
would serialize them); a failure lists the smallest offending cases.

Every oracle can fail both ways. Each case's expected outcome is computed from the
case alone (nbunits.core.names, the course's real notebooks, the documented rules),
before its answer is read: a valid launch must get exactly its redirect (or the
starting page that leads there), a hostile one a 4xx and nothing else; an answer
that cannot be read or a dropped connection is a failure; after the run, the users,
homes, records and units are exactly those the valid launches explain, every
redirect carries the student's real capability, and following a sample of them
opens that student's own notebook.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import yarl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from nbunits.core.names import CAPABILITY_RE, InvalidName, check_student_id, quote_path, user_for

from .conftest import SERVER, Nbunits, client

T = TypeVar("T")
CONCURRENCY = 32
NOTEBOOKS = ("welcome.ipynb", "week1/loops.ipynb", "week1/python-basics.ipynb",
             "week1/functions.ipynb", "data-and-plots.ipynb")  # functions: from its .md
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


def valid_id(student: str) -> bool:
    try:
        check_student_id(student)
    except InvalidName:
        return False
    return True


def sent_url(path: str) -> yarl.URL:
    """What a client (a browser, aiohttp) sends for a link with this raw path: its
    literal "." and ".." segments resolved (RFC 3986), the rest as written."""
    return yarl.URL(f"https://{SERVER}").join(yarl.URL(path, encoded=True))


def served_host(host: str | None) -> bool:
    """Whether a Host header names this server for nginx and the dispatcher alike
    (none: the client sends the server's own name)."""
    if host is None:
        return True
    name, _, port = host.rpartition(":")
    if not (name and port.isdigit()):
        name = host
    return name.lower() == SERVER


@dataclass(frozen=True)
class Opens:
    """What a valid launch must do: open `notebook` of `course` for `student`."""

    course: str
    student: str
    notebook: str

    @property
    def user(self) -> str:
        return user_for(self.student)

    def location(self, capability: str) -> str:
        """The redirect's exact target (relative: this server, the scheme of the request)."""
        return quote_path(f"/nb/{self.course}/{self.user}/{capability}/notebooks/{self.notebook}")


@dataclass(frozen=True)
class Answer:
    status: int
    location: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Outcome:
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[tuple[Any, str]] = field(default_factory=list)
    # Every answer to a valid launch, to check against the student's capability after.
    opened: list[tuple[Opens, Answer]] = field(default_factory=list)
    staff_links: list[tuple[Any, str]] = field(default_factory=list)  # LTI staff launches

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def fail(self, case: Any, why: str) -> None:
        self.failures.append((case, why))

    def report(self, describe: Callable[[Any], str] = repr) -> str:
        """The shortest failing case of each kind of failure first."""
        worst = sorted(self.failures, key=lambda f: len(describe(f[0])))
        kinds: dict[str, tuple[Any, str]] = {}
        for case, why in worst:
            kinds.setdefault(why[:40], (case, why))
        worst = list(kinds.values()) + [f for f in worst if f not in kinds.values()]
        return f"{len(worst)} bad answers, e.g. " + "\n".join(
            f"{describe(c)[:600]}: {why}" for c, why in worst[:10])

    @property
    def students(self) -> set[str]:
        return {opens.student for opens, _ in self.opened}


async def answer(outcome: Outcome, case: Any,
                 request: Callable[[], Any]) -> Answer | None:
    """Send (request() is a session.request(...) context). No answer (a dropped
    connection, a response that cannot be parsed, a timeout) is a failure: no case
    of these tests may get one."""
    try:
        async with request() as resp:
            got = Answer(resp.status, resp.headers.get("Location", ""), await resp.read(),
                         tuple(resp.headers.items()))
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        outcome.count(0)
        outcome.fail(case, f"no answer: {exc!r}")
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


def refused(got: Answer) -> str:
    """What a hostile request must get: a 4xx, no redirect anywhere."""
    if not 400 <= got.status < 500:
        return f"a hostile request got {got.status} {got.location or got.body[:200]!r}"
    if got.location:
        return f"a refusal carries a Location: {got.location}"
    return ""


STARTED_TAIL = b"<script>location.replace(target)</script></body></html>\n"


def judge_open(opens: Opens, got: Answer, *, html_ok: bool) -> str:
    """A valid launch: 302 to the student's notebook (its capability is checked once
    known: check_opened), or, for a browser on a cold start, the starting page that
    goes there once the server is up."""
    head, _, tail = opens.location("CAP").partition("/CAP/")
    cap = got.location.removeprefix(head + "/").removesuffix("/" + tail)
    if got.status == 302 and CAPABILITY_RE.fullmatch(cap):
        return ""
    if got.status == 200 and html_ok and got.body.endswith(STARTED_TAIL):
        return ""
    return f"a valid launch of {opens} got {got.status} {got.location or got.body[-300:]!r}"


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


def capabilities(nb: Nbunits, course: str) -> dict[str, str]:
    """Every student's current capability in `course`, from the helper's token files."""
    out = nb.box.run("sh", "-c", f"grep -H ^JUPYTER_TOKEN= /var/lib/nbunits/tokens/{course}/*.env "
                     "2>/dev/null || true").stdout
    found = {}
    for line in out.splitlines():  # (the file also holds the student's Jupyter locale)
        path, _, env = line.partition(":")
        found[path.rsplit("/", 1)[1].removesuffix(".env")] = env.removeprefix("JUPYTER_TOKEN=")
    return found


def check_opened(nb: Nbunits, outcome: Outcome, samples: int = 3) -> None:
    """Every answer to a valid launch went to exactly that student's notebook, with
    their real capability; following a few of them opens that student's own copy."""
    caps = {course: capabilities(nb, course) for course in {o.course for o, _ in outcome.opened}}
    wrong = []
    followed: dict[tuple[str, str], tuple[Opens, str, str]] = {}
    for opens, got in outcome.opened:
        cap = caps[opens.course].get(opens.user)
        if cap is None:
            wrong.append(f"{opens}: no capability was made")
            continue
        target = opens.location(cap)
        if got.status == 302 and got.location != target:
            wrong.append(f"{opens}: redirected to {got.location}, not {target}")
        elif got.status == 200 and \
                f'content="0;url={html.escape(target)}"'.encode() not in got.body:
            wrong.append(f"{opens}: the starting page does not lead to {target}")
        else:
            followed.setdefault((opens.user, opens.notebook), (opens, target, cap))
    assert not wrong, f"{len(wrong)} valid launches went elsewhere, e.g. {wrong[:5]}"
    asyncio.run(_follow(nb, [followed[k] for k in sorted(followed)[:samples]]))


async def _follow(nb: Nbunits, sample: Iterable[tuple[Opens, str, str]]) -> None:
    async with client(nb) as session:
        for opens, target, cap in sample:
            async with session.get(target, allow_redirects=False) as resp:
                page = await resp.text()
                assert resp.status == 200 and "jupyter-config-data" in page, (target, resp.status)
            prefix = target.split("/notebooks/", 1)[0]
            url = f"{prefix}/api/contents/{quote_path(opens.notebook)}?type=file&format=text"
            async with session.get(url, headers={"Authorization": f"token {cap}"}) as resp:
                assert resp.status == 200, (url, resp.status, await resp.text())
                served = (await resp.json())["content"]
            own = (nb.home / opens.user / opens.course / opens.notebook).read_text()
            assert served == own, f"{target} did not open {opens.user}'s own copy"
            assert json.loads(own)["cells"], f"{opens.user}'s copy of {opens.notebook} is empty"


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

    def check_exactly(self, nb: Nbunits, students: set[str], course: str) -> None:
        """What appeared is exactly what valid launches of `students` make: their
        users, homes and records (if new), their course's socket, and in their
        home a copy of each of the course's files; nothing else, no one else."""
        launched = {user_for(s) for s in students}
        now = Snapshot.take(nb)
        assert now.users - self.users == launched - self.users, "users"
        assert launched <= now.users, "a valid launch made no user"
        assert now.homes - self.homes == launched - self.homes, "homes"
        assert now.students - self.students == launched - self.students, "student records"
        sockets = {f"nbunits-{course}@{user}.socket" for user in launched}
        assert sockets <= now.units, f"no socket for {sorted(sockets - now.units)}"
        strays = [u for u in now.units - self.units
                  if not any(u.endswith((f"@{user}.socket", f"@{user}.service"))
                             for user in launched)]
        assert not strays, f"units started for invalid requests: {strays}"
        notebooks = course_notebooks(nb, course)
        for user in sorted(launched):
            files, links = entries_under(nb, user, course)
            assert notebooks <= files, f"{user}: no copy of {sorted(notebooks - files)}"
            for path in files - notebooks:
                match = RESET_COPY.fullmatch(path)
                assert (match and match.group(1) + ".ipynb" in notebooks) \
                    or ".ipynb_checkpoints" in path or path.endswith(".NEW-VERSION.md"), \
                    f"{user}: unexpected file {path}"
            # The course's other files are links into the course's read-only folder.
            assert all(target == f"/home/student/course/{path}" for path, target in links.items()), \
                f"{user}: unexpected links {links}"


def course_notebooks(nb: Nbunits, course: str) -> frozenset[str]:
    """The course's real notebooks (regular files: a symlinked master is none)."""
    return frozenset(p for p in course_files(nb, course) if p.endswith(".ipynb"))


def course_files(nb: Nbunits, course: str) -> set[str]:
    out = nb.box.run("find", f"/var/lib/nbunits/courses/{course}", "-type", "f",
                     "-printf", "%P\\n").stdout
    return set(out.split("\n")) - {""}


def entries_under(nb: Nbunits, user: str, course: str) -> tuple[set[str], dict[str, str]]:
    """A student's files in a course (relative paths) and symlinks (path: target)."""
    top = nb.home / user / course
    files, links = set(), {}
    for path in top.rglob("*") if top.is_dir() else ():
        relative = str(path.relative_to(top))
        if path.is_symlink():
            links[relative] = str(path.readlink())
        elif path.is_file():
            files.add(relative)
    return files, links
