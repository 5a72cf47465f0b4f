"""A whole MOOC on one host (issue 11): derived uids in JSON user records, only
active students loaded in systemd, and admission control instead of collapse."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import tomllib
from collections.abc import Iterator

import aiohttp
import pytest
import tomli_w

from nbunits.core import i18n
from nbunits.core.events import Event
from nbunits.core.names import uid_for, user_for
from testbed.browser import Opened, execute, open_exercise, open_notebook_kernel, start_kernel

from .conftest import Nbunits, client

NOTEBOOK = "welcome.ipynb"


def _open(nb: Nbunits, student: str, course: str = "demo") -> Opened:
    async def go() -> Opened:
        async with client(nb) as session:
            opened = await open_exercise(session, course, NOTEBOOK, student)
            assert opened.page_status == 200, opened.page[:300]
            kernel = await open_notebook_kernel(session, opened)  # as the notebook does
            assert await execute(session, opened, kernel, "6 * 7") == "42"
            return opened
    return asyncio.run(go())


def _get(nb: Nbunits, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
    async def go() -> tuple[int, dict[str, str], str]:
        async with client(nb) as session:
            async with session.get(path, headers=headers) as resp:
                return resp.status, dict(resp.headers), await resp.text()
    return asyncio.run(go())


def test_a_student_gets_a_uid_derived_from_their_id_in_a_json_user_record(nb: Nbunits) -> None:
    student = secrets.token_hex(16)
    user = user_for(student)
    _open(nb, student)
    uid = uid_for(student)
    assert nb.uid(user) == uid and 805306368 <= uid <= 1879048191
    record = json.loads(nb.box.read_file(f"/etc/userdb/{user}.user"))
    assert record["uid"] == record["gid"] == uid and record["homeDirectory"] == f"/home/{user}"
    assert nb.box.run("getent", "passwd", str(uid)).stdout.startswith(f"{user}:")
    assert nb.box.run("getent", "group", user).stdout.startswith(f"{user}:x:{uid}:")
    # Nothing in the files useradd rewrites, and no subordinate range.
    for path in ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/subuid", "/etc/subgid"):
        assert user not in nb.box.run("cat", path, check=False).stdout, path
    assert nb.box.run("stat", "-c", "%u %a", f"/home/{user}").stdout.split() == [str(uid), "700"]
    # The container's processes are the student's uid on the host.
    assert nb.processes_of(user)


def test_a_uid_held_by_another_account_is_refused(nb: Nbunits) -> None:
    student = secrets.token_hex(16)
    user = user_for(student)
    squatter = f"sq{secrets.token_hex(4)}"
    nb.box.run("useradd", "--no-create-home", "--uid", str(uid_for(student)), squatter)
    try:
        status, _, page = _get(nb, f"/ipythonExercice/demo/{NOTEBOOK}/{student}")
        assert status == 409, page[:300]
        assert user not in nb.users()
        assert nb.box.run("test", "-e", f"/home/{user}", check=False).returncode == 1
        assert f"is taken by {squatter}" in nb.box.journal("nbunits-helper.service")
    finally:
        nb.box.run("userdel", squatter)


def _loaded(nb: Nbunits, unit: str) -> bool:
    return nb.show(unit, "LoadState")["LoadState"] == "loaded" and \
        nb.show(unit, "ActiveState")["ActiveState"] != "inactive"


def test_idle_students_are_unloaded_and_a_bookmark_or_the_course_link_wakes_them(
        nb: Nbunits) -> None:
    student = secrets.token_hex(16)
    opened = _open(nb, student)
    user = opened.user
    socket, container = f"nbunits-demo@{user}.socket", f"nbunits-demo@{user}.service"
    mark = f"/var/lib/nbunits/recent/demo/{user}"
    assert nb.box.run("test", "-f", mark, check=False).returncode == 0

    # Running: never unloaded, however old the mark.
    nb.box.run("touch", "-d", "3 days ago", mark)
    nb.box.systemctl("start", "nbunits-unload.service")
    assert nb.show(container, "ActiveState")["ActiveState"] == "active"
    assert _loaded(nb, socket)

    # Stopped and idle past unload_after: unloaded, mark gone, not enabled at the next reload.
    nb.box.systemctl("stop", f"nbunits-demo-proxy@{user}.service", container)
    nb.box.systemctl("start", "nbunits-unload.service")
    assert not _loaded(nb, socket)
    assert nb.box.run("test", "-e", mark, check=False).returncode == 1
    assert f"/run/nbunits/front/demo/{user}.sock" not in nb.box.run(
        "ls", "/run/nbunits/front/demo").stdout
    nb.box.systemctl("daemon-reload")
    listed = nb.box.systemctl("list-units", "--all", "--plain", "--no-legend", socket).stdout
    assert user not in listed  # systemd forgot it

    # A bookmarked /nb/ link: no socket, nginx's 502 fallback wakes the student.
    async def bookmark() -> None:
        async with client(nb) as session:
            async with session.get(f"{opened.prefix}notebooks/{NOTEBOOK}",
                                   headers={"Accept": "text/html"}) as resp:
                assert resp.status == 200, (await resp.text())[:300]
            kernel = await open_notebook_kernel(session, opened)
            assert await execute(session, opened, kernel, "6 * 7") == "42"
    asyncio.run(bookmark())
    assert _loaded(nb, socket)
    assert nb.box.run("test", "-f", mark, check=False).returncode == 0

    # And the course link, once unloaded again.
    nb.box.systemctl("stop", socket, f"nbunits-demo-proxy@{user}.service", container)
    nb.box.run("touch", "-d", "3 days ago", mark)
    nb.box.systemctl("start", "nbunits-unload.service")
    assert not _loaded(nb, socket)
    assert _open(nb, student).user == user


@pytest.fixture
def small_caps(nb: Nbunits) -> Iterator[int]:
    """Small caps for the time of a test (nginx re-rendered, helper restarted); the
    tests' lifted caps come back after. Yields the cap on running servers."""
    running = len(nb.box.run("sh", "-c", "ls -d /run/nbunits/jupyter/*/* 2>/dev/null || true")
                  .stdout.split())
    cap = running + 4  # the cap on new students (3) binds first
    before = nb.box.read_file("/etc/nbunits/nbunits.toml")
    data = tomllib.loads(before)
    data["server"].update(launch_rate=60, launch_burst=8, new_students_per_minute=3,
                          memory_budget=f"{cap * 128}M", server_memory="128M")
    nb.box.write_file("/etc/nbunits/nbunits.toml", tomli_w.dumps(data))
    nb.nbunits("install")
    nb.box.systemctl("restart", "nbunits-helper.service")
    try:
        yield cap
    finally:
        nb.box.write_file("/etc/nbunits/nbunits.toml", before)
        nb.nbunits("install")
        nb.box.systemctl("restart", "nbunits-helper.service")


def test_a_flood_of_made_up_ids_meets_the_caps_and_harms_no_running_student(
        nb: Nbunits, small_caps: int) -> None:
    before = nb.users()
    running_student = _open(nb, secrets.token_hex(16))  # one of the 3 new students
    flood = [secrets.token_hex(16) for _ in range(12)]

    async def go(flood: list[str], language: str = "en") -> list[tuple[int, str, str]]:
        async with client(nb) as session:
            async def one(student: str) -> tuple[int, str, str]:
                async with session.get(f"/ipythonExercice/demo/{NOTEBOOK}/{student}",
                                       headers={"Accept": "text/html",
                                                "Accept-Language": language},
                                       allow_redirects=False) as resp:
                    return resp.status, resp.headers.get("Retry-After", ""), await resp.text()
            return await asyncio.gather(*(one(s) for s in flood))

    answers = asyncio.run(go(flood))
    statuses = sorted(status for status, _, _ in answers)
    assert len(nb.users() - before) == 3, statuses
    busy = [a for a in answers if a[0] == 503]
    assert len(busy) == len(flood) - 2, statuses
    for _, retry, page in busy:
        assert int(retry) > 0
        assert "Retrying by itself" in page and "saved work is safe" in page
    # Who refused each: the helper's cap (its page) or nginx's per-client limit.
    refused_by_helper = sum("<title>The notebook server is full</title>" in p for _, _, p in busy)
    refused_by_nginx = sum("<title>Too many launches</title>" in p for _, _, p in busy)
    assert refused_by_helper + refused_by_nginx == len(busy) and refused_by_helper >= 1
    servers = nb.box.run("sh", "-c", "ls -d /run/nbunits/jupyter/*/* 2>/dev/null || true")
    assert len(servers.stdout.split()) <= small_caps
    journal = nb.box.journal("nbunits-helper.service")
    assert journal.count("admission: at the cap of 3 new students per minute") == 1
    capped = nb.box.run("journalctl", "--no-pager", "--output=cat",
                        f"MESSAGE_ID={Event.CAPPED.value}", "ADMISSION_CAP=new_students").stdout
    assert capped.count("admission: at the cap of 3 new students per minute") == 1, capped
    # The metrics count every refusal of the helper's, exactly (the journal says it
    # once a minute); nginx's per-client 503s never reach it.
    assert _refused(nb) == {"new_students": refused_by_helper, "servers": 0}
    assert _metrics(nb)[("nbunits_starts_waiting", "")] == 0
    # The same flood from French browsers, at once: nginx's page (its bucket is empty
    # now) and the helper's are French too.
    french = [a for a in asyncio.run(go([secrets.token_hex(16) for _ in range(12)], "fr-FR"))
              if a[0] == 503]
    assert len(french) == 12 and all('<html lang="fr">' in p for _, _, p in french), french
    titles = {i18n.html("fr", key) for key in ("busy.title", "launches.title")}
    assert sum(f"<title>{i18n.html('fr', 'launches.title')}</title>" in p
               for _, _, p in french) >= 1
    assert all(any(f"<title>{t}</title>" in p for t in titles) for _, _, p in french)

    async def warm() -> None:  # the student who was running is untouched
        async with client(nb) as session:
            kernel = await start_kernel(session, running_student)
            assert await execute(session, running_student, kernel, "1+1") == "2"
    asyncio.run(warm())

    # Per client, in nginx: past the burst, 503 with Retry-After before the dispatcher.
    async def hammer() -> list[tuple[int, str]]:
        async with client(nb) as session:
            async def one() -> tuple[int, str]:
                async with session.get("/ipythonExercice/nosuchcourse/a.ipynb/x",
                                       allow_redirects=False) as resp:
                    return resp.status, resp.headers.get("Retry-After", "")
            return await asyncio.gather(*(one() for _ in range(20)))
    answered = asyncio.run(hammer())
    limited = [r for r in answered if r[0] == 503]
    assert len(limited) >= 20 - 8 - 2 and all(retry == "1" for _, retry in limited), answered


def _metrics(nb: Nbunits) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, s.labels.get("cap", "")): s.value for family in
            text_string_to_metric_families(nb.nbunits("metrics").stdout)
            for s in family.samples}


def _refused(nb: Nbunits) -> dict[str, float]:
    """nbunits_launches_refused_total per cap: every refusal since the helper started."""
    samples = _metrics(nb)
    return {cap: samples[("nbunits_launches_refused_total", cap)]
            for cap in ("new_students", "servers")}


def test_a_full_host_refuses_new_servers_only(nb: Nbunits, small_caps: int) -> None:
    running = _open(nb, secrets.token_hex(16))
    # Rather than fill the host, lower the cap below what runs: every new start is
    # refused, what runs keeps running.
    data = tomllib.loads(nb.box.read_file("/etc/nbunits/nbunits.toml"))
    data["server"].update(memory_budget="128M", new_students_per_minute=1000)
    nb.box.write_file("/etc/nbunits/nbunits.toml", tomli_w.dumps(data))
    nb.box.systemctl("restart", "nbunits-helper.service")
    status, headers, page = _get(nb, f"/ipythonExercice/demo/{NOTEBOOK}/{secrets.token_hex(16)}",
                                 Accept="text/html")
    assert status == 503 and headers["Retry-After"] == "30", page[:300]
    assert "The notebook server is full" in page
    assert "running servers (memory budget)" in nb.box.journal("nbunits-helper.service")
    assert _refused(nb) == {"new_students": 0, "servers": 1}  # since the restart: that one
    status, _, _ = _get(nb, f"{running.prefix}api/contents/{NOTEBOOK}?content=0")
    assert status == 200


def test_launches_start_their_servers_in_turn(nb: Nbunits) -> None:
    """A host-wide cap on servers starting at once: with one slot, three students who
    open a notebook at the same moment are started one after the other (each start
    whole before the next begins), and all three get their notebook."""
    before = nb.box.read_file("/etc/nbunits/nbunits.toml")
    data = tomllib.loads(before)
    data["server"].update(concurrent_starts=1)
    nb.box.write_file("/etc/nbunits/nbunits.toml", tomli_w.dumps(data))
    nb.box.systemctl("restart", "nbunits-helper.service")
    students = [secrets.token_hex(16) for _ in range(3)]
    try:
        waiting: list[int] = []  # what the helper publishes for the metrics, meanwhile

        async def watch() -> None:
            while True:
                text = await asyncio.to_thread(nb.box.read_file, "/run/nbunits/admission.json")
                waiting.append(json.loads(text)["waiting"])
                await asyncio.sleep(0.1)

        async def go() -> list[Opened]:
            watcher = asyncio.create_task(watch())
            async with client(nb) as session:
                opened = await asyncio.gather(*(open_exercise(session, "demo", NOTEBOOK, s)
                                                for s in students))
            watcher.cancel()
            return opened
        opened = asyncio.run(go())
        assert max(waiting) >= 1, waiting
        assert json.loads(nb.box.read_file("/run/nbunits/admission.json"))["waiting"] == 0
    finally:
        nb.box.write_file("/etc/nbunits/nbunits.toml", before)
        nb.box.systemctl("restart", "nbunits-helper.service")
    assert [o.page_status for o in opened] == [200, 200, 200]
    spans = []
    for student in students:
        shown = dict(line.split("=", 1) for line in nb.box.run(
            "systemctl", "show", "-p", "InactiveExitTimestampMonotonic",
            "-p", "ActiveEnterTimestampMonotonic",
            f"nbunits-demo@{user_for(student)}.service").stdout.split())
        spans.append((int(shown["InactiveExitTimestampMonotonic"]),
                      int(shown["ActiveEnterTimestampMonotonic"])))
    spans.sort()
    assert all(0 < began < up for began, up in spans), spans
    for (_, up), (began, _) in itertools.pairwise(spans):
        assert began >= up, spans  # the next start began once the one before was up


def test_a_flood_on_one_course_meets_its_own_caps_and_the_others_are_served(
        nb: Nbunits) -> None:
    """Per-course caps (issue 26): made-up ids flood one course, whose own caps refuse
    them (each refusal counted), while another course's new students are served."""
    from prometheus_client.parser import text_string_to_metric_families

    course = "capped26"
    nb.add_course(course, new_students_per_minute=4, max_running=2)
    flood = [secrets.token_hex(16) for _ in range(10)]

    async def launch(session: aiohttp.ClientSession, course: str, student: str) -> int:
        async with session.get(f"/ipythonExercice/{course}/{NOTEBOOK}/{student}",
                               headers={"Accept": "text/html"}, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    async def go() -> tuple[list[int], list[int]]:
        async with client(nb) as session:
            flooded = await asyncio.gather(*(launch(session, course, s) for s in flood))
            others = [await launch(session, "demo", secrets.token_hex(16)) for _ in range(2)]
            return list(flooded), others

    flooded, others = asyncio.run(go())
    # Two served; two more new students, but the course's servers are full; six over
    # its new students per minute. The other course's new students are served.
    assert sorted(flooded).count(503) == 8 and len(flooded) == 10, flooded
    assert all(status in (200, 302) for status in others), others
    samples = {(s.name, s.labels.get("course", ""), s.labels.get("cap", "")): s.value
               for family in text_string_to_metric_families(nb.nbunits("metrics").stdout)
               for s in family.samples}
    refused = "nbunits_course_launches_refused_total"
    assert samples[(refused, course, "new_students")] == 6, samples
    assert samples[(refused, course, "servers")] == 2, samples
    assert (refused, "demo", "new_students") not in samples or \
        samples[(refused, "demo", "new_students")] == 0
    capped = nb.box.run("journalctl", "--no-pager", "--output=cat",
                        f"MESSAGE_ID={Event.CAPPED.value}", f"COURSE={course}").stdout
    assert capped.count(f"at course {course}'s cap of 4 new students per minute") == 1, capped
    assert capped.count(f"at course {course}'s cap of 2 running servers") == 1, capped
