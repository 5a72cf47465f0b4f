"""Issue 14's attacks, replayed against the real stack: the wake fallback, user
probing, start-limit resets, revocation, a hostile notebook in front of staff,
nested user namespaces, expired links, terminals off."""

from __future__ import annotations

import ast
import asyncio
import json
import secrets
import time

import aiohttp
import pytest
import yarl

from nbunits.core.names import StudentUnits
from nbunits.helper.capability import Grant, capability
from testbed.browser import Opened, execute, open_exercise, start_kernel

from . import paths
from .conftest import SERVER, Nbunits, client
from .fuzzing import Answer


@pytest.fixture(scope="module", autouse=True)
def attacks_course(nb: Nbunits) -> None:
    """A course of their own: these tests break and stop servers on purpose."""
    nb.add_course("attacks")


def _open(nb: Nbunits, course: str, student: str) -> Opened:
    async def go() -> Opened:
        async with client(nb) as session:
            return await open_exercise(session, course, "welcome.ipynb", student)
    return asyncio.run(go())


def _get(nb: Nbunits, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
    async def go() -> tuple[int, dict[str, str], str]:
        async with client(nb) as session:
            async with session.get(yarl.URL(path, encoded=True), allow_redirects=False,
                                   headers=headers) as resp:
                return resp.status, dict(resp.headers), await resp.text()
    return asyncio.run(go())


def _state(nb: Nbunits, unit: str) -> str:
    return nb.show(unit, "ActiveState")["ActiveState"]


def test_a_student_who_breaks_their_server_cannot_wake_someone_elses(nb: Nbunits) -> None:
    attacker, victim = (_open(nb, "attacks", secrets.token_hex(16)) for _ in range(2))
    victim_units = [f"nbunits-attacks@{victim.user}.socket", f"nbunits-attacks@{victim.user}.service"]
    nb.box.systemctl("stop", *victim_units, f"nbunits-attacks-proxy@{victim.user}.service")
    tricks = [f"/nb/attacks/{victim.user}/%2e%2e/{attacker.user}/{attacker.token}/api/status",
              f"/nb/attacks/{victim.user}/.%2e/{attacker.user}/{attacker.token}/api/status",
              f"/nb/attacks//{victim.user}/%2e%2e//{attacker.user}/{attacker.token}/api/status"]
    grants = paths.Grants({("attacks", attacker.user, attacker.token): "attacker",
                           ("attacks", victim.user, victim.token): "victim"}, "", "")
    for path in tricks:
        # The attacker breaks their own server (its socket no longer answers: 502).
        nb.box.systemctl("stop", f"nbunits-attacks@{attacker.user}.socket",
                         f"nbunits-attacks@{attacker.user}.service")
        # nginx resolves the path before it checks it: the attacker's own server, which
        # woke; the browser is never sent back to a path nginx did not verify (503).
        expected = paths.expect(path, SERVER, grants)
        assert expected == paths.Expect("own", location=attacker.prefix), (path, expected)
        status, headers, body = _get(nb, path)
        got = Answer(status, headers.get("Location", ""), body.encode(), tuple(headers.items()))
        assert status == 503 and not paths.judge(path, expected, got), (path, status, headers)
    assert _state(nb, f"nbunits-attacks@{attacker.user}.service") == "active"
    assert all(_state(nb, unit) == "inactive" for unit in victim_units)
    # The fallback itself is not reachable from outside.
    status, _, _ = _get(nb, f"/_nbunits/wake/demo/{victim.user}/{victim.token}")
    assert status == 404 and all(_state(nb, unit) == "inactive" for unit in victim_units)
    # The victim's own link still wakes their server: back to exactly that link.
    status, headers, _ = _get(nb, f"{victim.prefix}api/status", Authorization=f"token {victim.token}")
    assert (status, headers.get("Location")) == (307, f"{victim.prefix}api/status")
    status, _, _ = _get(nb, f"{victim.prefix}api/status", Authorization=f"token {victim.token}")
    assert status == 200


def test_whether_a_student_exists_does_not_show(nb: Nbunits) -> None:
    real = _open(nb, "attacks", secrets.token_hex(16))
    nobody = "nb" + "a" * 16
    forged = "A" * 22 + ".0.9999999999"
    answers = {_get(nb, f"/nb/attacks/{user}/{forged}/api/status")[::2] for user in (real.user, nobody)}
    assert len(answers) == 1 and next(iter(answers))[0] == 403


def test_a_failed_server_is_not_reset_before_its_start_limit_interval(nb: Nbunits) -> None:
    # A server that podman cannot run (its storage is not a directory): it fails at
    # once (exit 125, no restart), like one whose image is gone.
    nb.add_course("failing")
    opened = _open(nb, "failing", secrets.token_hex(16))
    container = f"nbunits-failing@{opened.user}.service"
    nb.box.systemctl("stop", f"nbunits-failing-proxy@{opened.user}.service", container)
    storage = f"/home/{opened.user}/.local/share/nbunits/failing"
    nb.box.run("rm", "-rf", storage)
    nb.box.write_file(storage, "not podman's storage")
    started = []
    for attempt in range(3):
        status, headers, _ = _get(nb, f"{opened.prefix}api/status",
                                  Authorization=f"token {opened.token}")
        # Told plainly that it cannot start (no image: waiting cannot help), or to come
        # back once the start limit allows; never a 502.
        assert (status == 500 and headers.get("X-Nbunits-Start") == "failed") or (
            status == 503 and 1 <= int(headers["Retry-After"]) <= 60), (attempt, status, headers)
        # The wakes did not reset it: it stays failed, as systemd left it, and its last
        # start is still the one the first wake made (never a restart).
        assert _state(nb, container) == "failed"
        started.append(nb.show(container, "InactiveExitTimestampMonotonic")[
            "InactiveExitTimestampMonotonic"])
    assert len(set(started)) == 1, started
    nb.box.systemctl("stop", f"nbunits-failing@{opened.user}.socket")
    nb.box.systemctl("reset-failed", f"nbunits-failing@{opened.user}.socket",
                     f"nbunits-failing-proxy@{opened.user}.service", container,
                     f"nbunits-failing-jupyter@{opened.user}.socket", check=False)


def test_revoking_a_student_makes_old_links_403_and_the_course_link_hands_out_a_new_one(
        nb: Nbunits) -> None:
    student = secrets.token_hex(16)
    before = _open(nb, "attacks", student)
    nb.nbunits("student", "revoke", "attacks", student)
    assert _state(nb, f"nbunits-attacks@{before.user}.service") == "inactive"
    status, _, _ = _get(nb, f"{before.prefix}api/status", Authorization=f"token {before.token}")
    assert status == 403
    after = _open(nb, "attacks", student)
    assert after.prefix != before.prefix and after.page_status == 200
    assert _get(nb, f"{before.prefix}tree")[0] == 403


def test_an_expired_link_is_refused_by_nginx_and_the_course_link_hands_out_a_fresh_one(
        nb: Nbunits) -> None:
    lifetime = 8 * 3600 + 3600  # the least a course may set: max_lifetime + 1 h
    nb.add_course("expiring", link_lifetime=lifetime)
    fresh = _open(nb, "expiring", secrets.token_hex(16))
    _, generation, expires = fresh.token.split(".")
    assert abs(int(expires) - (time.time() + lifetime)) < 120, fresh.token
    assert fresh.page_status == 200
    # The same student's link as the course handed it out earlier, now past its
    # expiry (signed with the server's secret, as nbunits signs): nginx refuses it.
    # The control: the same link with an expiry still ahead passes nginx (and gets
    # Jupyter's 404: its base URL is the current link), the current link works.
    secret = nb.box.read_file("/etc/nbunits/capability.secret").strip()
    units = StudentUnits("expiring", fresh.user)
    expired, ahead = (capability(secret, units, Grant(int(generation), int(time.time()) + delta))
                      for delta in (-60, 600))
    for link, status in ((expired, 403), (ahead, 404), (fresh.token, 200)):
        assert _get(nb, f"/nb/expiring/{fresh.user}/{link}/api/status",
                    Authorization=f"token {link}")[0] == status, link


def test_terminals_are_a_course_setting(nb: Nbunits) -> None:
    nb.add_course("noterm")
    nb.nbunits("course", "update", "noterm", "--no-terminals")

    async def terminal(course: str) -> tuple[int, str]:
        async with client(nb) as session:
            opened = await open_exercise(session, course, "welcome.ipynb", secrets.token_hex(16))
            async with session.post(f"{opened.prefix}api/terminals",
                                    headers=opened.headers) as resp:
                if resp.status != 200:
                    return resp.status, ""
                name = (await resp.json())["name"]
            async with session.ws_connect(f"{opened.prefix}terminals/websocket/{name}",
                                          headers=opened.headers) as ws:
                await ws.send_str(json.dumps(["stdin", "echo $((6*7))\r"]))
                return 200, await asyncio.wait_for(_output_until(ws, "42"), 30)

    assert asyncio.run(terminal("noterm"))[0] == 404  # Jupyter has no terminals API
    status, output = asyncio.run(terminal("attacks"))  # terminals on: the default
    assert status == 200 and "42" in output, output


async def _output_until(ws: aiohttp.ClientWebSocketResponse, text: str) -> str:
    output = ""
    async for message in ws:
        kind, *data = json.loads(message.data)
        if kind == "stdout":
            output += data[0]
            if text in output:
                break
    return output


HOSTILE = '"><meta http-equiv="refresh" content="0;url=https://evil.example/"><form action=x>'


def test_a_hostile_notebook_is_shown_to_staff_escaped_and_unframeable(nb: Nbunits) -> None:
    student = secrets.token_hex(16)
    opened = _open(nb, "attacks", student)
    notebook = {"cells": [{"cell_type": "code", "source": HOSTILE, "execution_count": HOSTILE,
                           "metadata": {}, "outputs": [
                               {"output_type": "error", "ename": HOSTILE, "evalue": HOSTILE,
                                "traceback": []}]}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    nb.box.write_file(f"/home/{opened.user}/attacks/welcome.ipynb", json.dumps(notebook))
    nb.box.run("chown", f"{opened.user}:{opened.user}", f"/home/{opened.user}/attacks/welcome.ipynb")
    link = nb.nbunits("student", "link", "attacks", student, "welcome.ipynb").stdout.strip()
    status, headers, page = _get(nb, link)
    assert status == 200 and "<meta http-equiv=\"refresh\"" not in page and "<form" not in page
    assert "frame-ancestors 'self'" in headers["Content-Security-Policy"]
    base = link.split("?")[0]
    for query in ("?expires=" + "9" * 5000 + "&sig=" + "0" * 64, "?expires=1&sig=x", "",
                  link[len(base):] + "&sig=" + "0" * 64):
        assert _get(nb, base + query)[0] == 400, query


# In a child process: the kernel itself must stay in its namespace.
UNSHARE = ("__import__('subprocess').run([__import__('sys').executable, '-c', "
           "'import ctypes; print(ctypes.CDLL(None, use_errno=True).unshare(0x10000000))'], "
           "capture_output=True, text=True).stdout.strip()")


def test_a_kernel_cannot_make_user_namespaces_unless_the_course_allows_them(nb: Nbunits) -> None:
    nb.add_course("nested")
    nb.nbunits("course", "update", "nested", "--user-namespaces")

    async def probe(course: str) -> str:
        async with client(nb) as session:
            opened = await open_exercise(session, course, "welcome.ipynb", secrets.token_hex(16))
            kernel = await start_kernel(session, opened)
            return await execute(session, opened, kernel, UNSHARE)

    assert asyncio.run(probe("attacks")) == "'-1'"
    assert asyncio.run(probe("nested")) == "'0'"


def test_a_kernel_cannot_fill_the_hosts_run(nb: Nbunits) -> None:
    # Jupyter's socket is systemd's, passed in: the container has no folder of the
    # host's /run to write in, and what it writes in its own /run is its memory.
    fill = ("__import__('subprocess').run(['sh', '-c', 'for d in /run /run/jupyter; do "
            "dd if=/dev/zero of=$d/fill bs=1M count=32 2>/dev/null && echo $d; done; "
            "ls /run/jupyter 2>&1 | head -1'], capture_output=True, text=True).stdout")

    def host_run_used_kb() -> int:
        return int(nb.box.run("df", "--output=used", "-k", "/run").stdout.split()[-1])

    async def go() -> str:
        async with client(nb) as session:
            opened = await open_exercise(session, "attacks", "welcome.ipynb", secrets.token_hex(16))
            kernel = await start_kernel(session, opened)
            return await execute(session, opened, kernel, fill)

    before = host_run_used_kb()
    wrote = ast.literal_eval(asyncio.run(go()))
    assert wrote.startswith("/run\n"), wrote  # the container's own /run took it
    assert "No such file or directory" in wrote, wrote  # no /run/jupyter at all
    assert host_run_used_kb() - before < 8 * 1024, "the host's /run grew"
