"""systemd owns the lifecycle: idle stop (three layers), restart, recovery, limits."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp

from testbed.browser import Opened, execute, open_exercise, save_notebook, start_kernel

from .conftest import Nbunits, client

NOTEBOOK = "welcome.ipynb"


async def _open_with_kernel(nb: Nbunits, course: str, student: str
                            ) -> tuple[aiohttp.ClientSession, Opened, str]:
    session = client(nb)
    opened = await open_exercise(session, course, NOTEBOOK, student)
    assert opened.page_status == 200
    kernel = await start_kernel(session, opened)
    assert await execute(session, opened, kernel, "1+1") == "2"
    return session, opened, kernel


def _assert_stopped_cleanly(nb: Nbunits, course: str, user: str) -> None:
    """Nothing of the student runs (no conmon, no pause process, no kernel); the socket listens."""
    assert nb.show(f"nbunits-{course}@{user}.service", "ActiveState")["ActiveState"] == "inactive"
    assert nb.show(f"nbunits-{course}@{user}.socket", "ActiveState")["ActiveState"] == "active"
    assert nb.processes_of(user) == []


# Run in the student's kernel: a file in ~ (outside the course folder), the trust of
# the notebook the server signed when it was saved, IPython's history.
OUTSIDE = "__import__('pathlib').Path.home().joinpath('outside.txt')"
TRUSTED = ("__import__('nbformat.sign', fromlist=['x']).NotebookNotary().check_signature("
           f"__import__('nbformat').read('/home/student/work/{NOTEBOOK}', 4))")
IN_HISTORY = "len(list(get_ipython().history_manager.search('*outside.txt*')))"


def test_idle_stop_layer1_the_proxy_exits_and_the_container_follows(nb: Nbunits) -> None:
    """... and what the student's Jupyter keeps in its home survives the stop."""
    nb.add_course("idle1", proxy_idle_timeout=3)
    student = secrets.token_hex(16)

    async def use_then_leave() -> str:
        session, opened, kernel = await _open_with_kernel(nb, "idle1", student)
        assert await execute(session, opened, kernel, f"{OUTSIDE}.write_text('kept')") == "4"
        await save_notebook(session, opened, "# kept across idle stops")
        assert await execute(session, opened, kernel, TRUSTED) == "True"
        await session.close()  # the tab is closed: no connection left
        return opened.user

    user = asyncio.run(use_then_leave())
    assert nb.wait_for(f"nbunits-idle1@{user}.service", {"inactive"}, timeout=30) == "inactive"
    _assert_stopped_cleanly(nb, "idle1", user)

    async def come_back() -> tuple[str, list[str]]:
        async with client(nb) as session:
            opened = await open_exercise(session, "idle1", NOTEBOOK, student)
            async with session.get(f"{opened.prefix}api/contents/{NOTEBOOK}",
                                   headers=opened.headers) as resp:
                saved = str(await resp.json())
            kernel = await start_kernel(session, opened)
            kept = [await execute(session, opened, kernel, code)
                    for code in (f"{OUTSIDE}.read_text()", TRUSTED, IN_HISTORY)]
            return saved, kept

    saved, kept = asyncio.run(come_back())
    assert "# kept across idle stops" in saved
    assert kept[:2] == ["'kept'", "True"] and int(kept[2]) >= 1, kept
    # On disk, in the student's own home (counted in their quota), not in the course folder.
    home = nb.home / user / ".nbunits" / "idle1" / "home"
    assert (home / "outside.txt").read_text() == "kept"
    assert (home / ".local/share/jupyter/nbsignatures.db").stat().st_uid == nb.uid(user)
    assert oct((home).stat().st_mode & 0o777) == "0o700"
    # What it costs on disk after two sessions (docs/architecture.md: "A home per course, on disk").
    size = sum(f.lstat().st_blocks * 512 for f in home.rglob("*"))
    print(f"persistent home after two sessions: {size / 1024:.0f} KB")
    assert size < 2 * 1024 * 1024, size


def _keep_a_tab_open_until_it_stops(nb: Nbunits, course: str, timeout: float) -> None:
    """A student leaves a notebook tab open (its kernel websocket stays connected),
    and the server must stop anyway, cleanly."""

    async def open_tab() -> str:
        session, opened, kernel = await _open_with_kernel(nb, course, secrets.token_hex(16))
        ws = await session.ws_connect(f"{opened.prefix}api/kernels/{kernel}/channels",
                                      headers=opened.headers)
        unit = f"nbunits-{course}@{opened.user}.service"
        state = await asyncio.to_thread(nb.wait_for, unit, {"inactive", "failed"}, timeout)
        assert state == "inactive", state
        await ws.close()
        await session.close()
        return opened.user

    user = asyncio.run(open_tab())
    assert nb.show(f"nbunits-{course}@{user}.service", "Result")["Result"] == "success"
    _assert_stopped_cleanly(nb, course, user)


def test_idle_stop_layer2_jupyter_culls_and_shuts_down_despite_an_open_tab(nb: Nbunits) -> None:
    nb.add_course("idle2", proxy_idle_timeout=3600, kernel_idle_timeout=10, jupyter_idle_timeout=12)
    _keep_a_tab_open_until_it_stops(nb, "idle2", timeout=150)  # Jupyter checks once a minute


def test_idle_stop_layer3_maximum_lifetime_is_a_clean_stop(nb: Nbunits) -> None:
    nb.add_course("idle3", proxy_idle_timeout=3600, max_lifetime=12)
    _keep_a_tab_open_until_it_stops(nb, "idle3", timeout=60)


def test_a_killed_container_serves_the_next_request(nb: Nbunits) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> None:
        session, opened, _ = await _open_with_kernel(nb, "demo", student)
        unit = f"nbunits-demo@{opened.user}.service"
        before = nb.show(unit, "InvocationID")["InvocationID"]
        nb.box.systemctl("kill", "--signal=KILL", unit)
        async with session.get(f"{opened.prefix}api/status", headers=opened.headers) as resp:
            assert resp.status == 200
        assert nb.show(unit, "InvocationID")["InvocationID"] != before
        kernel = await start_kernel(session, opened)
        assert await execute(session, opened, kernel, "2+3") == "5"
        await session.close()

    asyncio.run(scenario())


def test_many_stop_start_cycles_never_leave_a_502(nb: Nbunits) -> None:
    """Stop/start cycles up to the start limit (20 in 60 s): the fallback heals each,
    nginx never 502s. (Past the limit, the fallback waits out its interval:
    test_attacks.py.)"""
    student = secrets.token_hex(16)

    async def scenario() -> list[int]:
        statuses = []
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", NOTEBOOK, student)
            unit = f"nbunits-demo@{opened.user}.service"
            for _ in range(18):
                nb.box.systemctl("stop", unit)
                for _attempt in range(30):
                    async with session.get(f"{opened.prefix}api/status",
                                           headers=opened.headers) as resp:
                        statuses.append(resp.status)
                        if resp.status == 200:
                            break
                        assert resp.status == 503 and resp.headers.get("Retry-After")
                    await asyncio.sleep(1)
                assert statuses[-1] == 200, statuses
        return statuses

    statuses = asyncio.run(scenario())
    assert 502 not in statuses and 504 not in statuses
    assert not [u for u in nb.box.failed_units() if "nbunits-demo" in u]


def test_dispatcher_crash_interrupts_no_student(nb: Nbunits) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> None:
        session, opened, kernel = await _open_with_kernel(nb, "demo", student)
        unit = f"nbunits-demo@{opened.user}.service"
        before = nb.show(unit, "InvocationID")["InvocationID"]
        nb.box.systemctl("kill", "--signal=KILL", "nbunits-dispatcher.service")
        assert await execute(session, opened, kernel, "40+2") == "42"
        assert nb.show(unit, "InvocationID")["InvocationID"] == before
        # It comes back by itself (socket activation): a new student gets in.
        other = await open_exercise(session, "demo", NOTEBOOK, secrets.token_hex(16))
        assert other.page_status == 200
        await session.close()

    asyncio.run(scenario())


def test_a_cold_start_shows_a_starting_page_to_browsers(nb: Nbunits) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> None:
        async with client(nb) as session:
            html = {"Accept": "text/html,application/xhtml+xml"}
            async with session.get(f"/ipythonExercice/demo/{NOTEBOOK}/{student}",
                                   headers=html, allow_redirects=False) as resp:
                assert resp.status == 200
                # The first part comes at once (nginx does not hold it back)...
                first = (await resp.content.readuntil(b"</script>\n")).decode()
                assert "Starting your notebook" in first
                target = first.split('const target = "')[1].split('"')[0]
                container = f"nbunits-demo@{target.split('/')[3]}.service"
                state = nb.box.run("systemctl", "is-active", container, check=False).stdout
                assert state.strip() in ("inactive", "activating"), state
                rest = (await resp.read()).decode()
            # ... the end once the server is up: it opens the notebook.
            assert rest.endswith("<script>location.replace(target)</script></body></html>\n")
            async with session.get(target.replace("\\u0026", "&"), headers=html) as resp:
                assert resp.status == 200 and "jupyter-config-data" in await resp.text()

    asyncio.run(scenario())


def test_conmon_is_the_main_process_and_in_the_pid_file(nb: Nbunits) -> None:
    """podman's MAINPID= message can be lost when PID 1 is busy (systemd 252 drops a
    message it reads after its sender exited); then systemd, seeing `podman run -d`
    exit, reads the unit's PIDFile=. It must name conmon, the container's keeper."""
    async def scenario() -> Opened:
        async with client(nb) as session:
            return await open_exercise(session, "demo", NOTEBOOK, secrets.token_hex(16))
    opened = asyncio.run(scenario())
    assert opened.page_status == 200
    unit = f"nbunits-demo@{opened.user}.service"
    shown = nb.show(unit, "MainPID", "PIDFile")
    assert shown["PIDFile"] == f"/run/nbunits/podman/demo/{opened.user}/conmon.pid"
    assert nb.box.run("cat", shown["PIDFile"]).stdout.strip() == shown["MainPID"] != "0"
    assert nb.box.run("cat", f"/proc/{shown['MainPID']}/comm").stdout.strip() == "conmon"


def test_limits_and_slices_are_set_from_the_course(nb: Nbunits) -> None:
    nb.add_course("limits", memory_max="512M", cpu_quota="50%", tasks_max=64,
                  course_memory_max="2G")
    student = secrets.token_hex(16)

    async def scenario() -> str:
        async with client(nb) as session:
            return (await open_exercise(session, "limits", NOTEBOOK, student)).user

    user = asyncio.run(scenario())
    props = nb.show(f"nbunits-limits@{user}.service", "MemoryMax", "CPUQuotaPerSecUSec",
                    "TasksMax", "Slice", "OOMPolicy", "User", "Restart")
    assert props == {"MemoryMax": str(512 * 1024 * 1024), "CPUQuotaPerSecUSec": "500ms",
                     "TasksMax": "64", "Slice": "nbunits-limits.slice", "OOMPolicy": "continue",
                     "User": user, "Restart": "on-failure"}
    assert nb.show("nbunits-limits.slice", "MemoryMax")["MemoryMax"] == str(2 * 1024**3)
    assert nb.show("nbunits-limits.slice", "Slice")["Slice"] == "nbunits.slice"
