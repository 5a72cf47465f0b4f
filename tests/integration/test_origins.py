"""Students' own origins (`nbunits install --student-domain`, docs/admin.md,
"Students' own origins"): each student's server answers on <user>.<student_domain>
and nowhere else; the server's name keeps launches, staff views and shared pages.
A box of its own: the session's box serves one origin.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from nbunits.core.names import user_for
from testbed.browser import Opened, execute, open_exercise, start_kernel
from testbed.harness import SystemdBox

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


@dataclass(frozen=True)
class Hostile:
    """A student, and how to reach their server."""

    course: str
    opened: Opened
    origin: str  # scheme://host of their server


def said_by_jupyter(nb: Nbunits, hostile: Hostile, path: str, host: str) -> str:
    """The headers a student's Jupyter itself answers `path` with (its socket, behind nginx).
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
        nb.nbunits("course", "add", "demo", "--dir", "/opt/nbunits/src/examples/demo")
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
