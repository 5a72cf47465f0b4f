"""Deployed as a MOOC deploys it: a real server name, TLS by nginx or by a load
balancer in front, and clients that lie in their headers."""

from __future__ import annotations

import asyncio
import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp

from nbunits.core.names import user_for
from testbed.browser import execute, open_exercise, save_notebook, start_kernel

from .conftest import LB_CLIENT, SERVER, SHARED_IN_BOX, Nbunits, Site, client
from .lms import CLIENT, FORM, ISSUER, LAUNCH13, lti11_form, sign11

HSTS = "max-age=31536000"


async def _get(session: aiohttp.ClientSession, path: str, **headers: str
               ) -> tuple[int, dict[str, str], str]:
    async with session.get(path, headers=headers, allow_redirects=False) as resp:
        return resp.status, dict(resp.headers), await resp.text()


def test_https_by_name_with_hsts_and_http_redirects(nb: Nbunits) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", "welcome.ipynb", student)
            assert opened.page_status == 200
            for path in (f"/ipythonExercice/demo/welcome.ipynb/{student}",
                         f"{opened.prefix}api/status", "/nb/demo/x/", "/nothing"):
                _, headers, _ = await _get(session, path)
                assert headers.get("Strict-Transport-Security") == HSTS, path
            # Plain HTTP, same name: a redirect to the https:// URL, and nothing else.
            plain = f"http://{SERVER}/ipythonExercice/demo/welcome.ipynb/{student}?reset=0"
            status, headers, _ = await _get(session, plain)
            assert status == 301
            assert headers["Location"] == f"https://{SERVER}" + plain.split(SERVER, 1)[1]
            assert "Strict-Transport-Security" not in headers
    asyncio.run(scenario())


def test_a_name_the_server_does_not_serve_reaches_nothing(nb: Nbunits) -> None:
    known = secrets.token_hex(16)
    stranger = secrets.token_hex(16)

    async def scenario() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", "welcome.ipynb", known)
            users = nb.users()
            for host in ("evil.mooc.test", "127.0.0.1", "localhost", "[::1]",
                         f"{SERVER}.evil", f"x.{SERVER}"):
                for path in (f"/ipythonExercice/demo/welcome.ipynb/{stranger}",
                             f"{opened.prefix}api/status", "/lti/1.3/login?iss=x&login_hint=y"):
                    status, _, body = await _get(session, path, Host=host)
                    assert status == 421, (host, path, status, body[:200])
            for scheme in ("http", "https"):
                status, _, _ = await _get(session, f"{scheme}://{SERVER}/nothing", Host="other.example")
                assert status == 421
            assert nb.users() == users
            assert user_for(stranger) not in nb.users()
    asyncio.run(scenario())


def test_jupyter_itself_refuses_another_host(nb: Nbunits) -> None:
    """Even with a catch-all server block of an admin's own in front, the Host check
    stays meaningful: Jupyter accepts this server's names and no other."""
    student = secrets.token_hex(16)

    async def scenario() -> str:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", "welcome.ipynb", student)
            return opened.prefix

    prefix = asyncio.run(scenario())
    user, token = prefix.split("/")[3], prefix.split("/")[4]
    socket = f"/run/nbunits/front/demo/{user}.sock"

    def status(host: str) -> str:
        # The capability goes in a curl config file: a command line shows in the
        # journal (test_logs.py greps every log for it).
        nb.box.write_file(f"{SHARED_IN_BOX}/curl-{user}.conf", "\n".join([
            f'url = "http://x{prefix}api/contents"', f'header = "Host: {host}"',
            f'header = "Authorization: token {token}"', f'unix-socket = "{socket}"',
            'output = "/dev/null"', 'write-out = "%{http_code}"', "silent"]) + "\n", mode=0o600)
        return nb.box.run("curl", "-K", f"{SHARED_IN_BOX}/curl-{user}.conf").stdout
    assert status(SERVER) == "200"
    assert status(f"{SERVER}:443") == "200"
    assert status("evil.mooc.test") == "403"
    assert "Blocking request with non-local 'Host' evil.mooc.test" in nb.box.journal(
        f"nbunits-demo@{user}.service")


def _access_log_peer(nb: Nbunits, marker: str) -> str:
    """The client address nginx logged for the request whose User-Agent is `marker`
    (the logged path may be another: nginx logs the page it answered with)."""
    deadline = time.monotonic() + 5  # nginx writes the line once the answer is sent
    while not (lines := [line for line in nb.box.read_file("/var/log/nginx/access.log")
                         .splitlines() if marker in line]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lines, marker
    return lines[-1].split()[0]


def test_forged_forwarded_headers_from_a_client_change_nothing(nb: Nbunits, lti_course: str) -> None:
    student = secrets.token_hex(16)
    marker = secrets.token_hex(6)

    async def scenario() -> None:
        async with client(nb) as session:
            # Plain HTTP claiming to be HTTPS is still plain HTTP: a redirect.
            status, _, _ = await _get(session, f"http://{SERVER}/nothing", **{
                "X-Forwarded-Proto": "https"})
            assert status == 301
            # A launch signed for the https:// URL verifies whatever the client claims...
            async with session.post("/lti/1.1/launch", data=lti11_form(student), headers={
                    **FORM, "X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example",
                    "Forwarded": "proto=http;host=evil.example"}, allow_redirects=False) as resp:
                assert resp.status == 302, await resp.text()
            # ... and one signed for http:// does not, whatever the client claims.
            form = {"lti_message_type": "basic-lti-launch-request", "lti_version": "LTI-1p0",
                    "user_id": secrets.token_hex(16), "context_id": "course-v1:Org+LTI+2026",
                    "roles": "Learner", "resource_link_id": "x", "custom_notebook": "welcome.ipynb"}
            body = sign11(form, url=f"http://{SERVER}/lti/1.1/launch")
            async with session.post("/lti/1.1/launch", data=body, headers={
                    **FORM, "X-Forwarded-Proto": "http"}, allow_redirects=False) as resp:
                assert resp.status == 401, await resp.text()
            # The client's address is the peer's, not what it writes.
            await _get(session, "/nothing", **{"User-Agent": marker,
                                               "X-Forwarded-For": "203.0.113.7",
                                                        "X-Real-IP": "203.0.113.8"})
    asyncio.run(scenario())
    assert _access_log_peer(nb, marker) == "127.0.0.1"


def test_behind_a_tls_terminating_load_balancer(nb: Nbunits, lb: Site, lti_course: str) -> None:
    student = secrets.token_hex(16)
    marker = secrets.token_hex(6)

    async def scenario() -> None:
        async with lb.session() as session:
            # The whole path, through the balancer: link, page, kernel websocket, save.
            opened = await open_exercise(session, "demo", "welcome.ipynb", student)
            assert opened.page_status == 200, opened.page[:300]
            kernel = await start_kernel(session, opened)
            assert await execute(session, opened, kernel, "6 * 7") == "42"
            await save_notebook(session, opened, f"# {marker}")
            _, headers, _ = await _get(session, f"{opened.prefix}api/status")
            assert headers.get("Strict-Transport-Security") == HSTS
            # LTI 1.1: the signature covers https://, as the LMS posted it.
            async with session.post("/lti/1.1/launch", data=lti11_form(secrets.token_hex(16)),
                                    headers=FORM, allow_redirects=False) as resp:
                assert resp.status == 302, await resp.text()
            # LTI 1.3: the platform is told to come back to https://.
            query = {"iss": ISSUER, "client_id": CLIENT, "login_hint": "h",
                     "target_link_uri": LAUNCH13}
            async with session.get("/lti/1.3/login?" + urlencode(query),
                                   allow_redirects=False) as resp:
                assert resp.status == 302, await resp.text()
                sent = parse_qs(urlsplit(resp.headers["Location"]).query)
            assert sent["redirect_uri"] == [LAUNCH13]
            # The balancer's word about the client is believed, a client's own is not.
            await _get(session, "/nothing", **{"User-Agent": marker,
                                               "X-Forwarded-For": "203.0.113.7"})
    asyncio.run(scenario())
    assert _access_log_peer(nb, marker) == LB_CLIENT
