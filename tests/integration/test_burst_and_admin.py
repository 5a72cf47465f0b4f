"""A whole class clicks at once; then an admin looks with the standard tools and stops it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import aiohttp
import pytest

from testbed.browser import Opened, execute, open_exercise, start_kernel

from .conftest import Nbunits, client

CLASS_SIZE = 50


@pytest.fixture(scope="module")
def burst(nb: Nbunits) -> list[Opened]:
    nb.add_course("burst")

    async def one(session: aiohttp.ClientSession, student: str) -> Opened:
        opened = await open_exercise(session, "burst", "welcome.ipynb", student)
        assert opened.page_status == 200, opened.page[:300]
        kernel = await start_kernel(session, opened)
        assert await execute(session, opened, kernel, "1+1", timeout=300) == "2"
        return opened

    async def everyone() -> list[Opened]:
        session = nb.site.session(limit=0, timeout=600)
        async with session:
            students = [secrets.token_hex(16) for _ in range(CLASS_SIZE)]
            return await asyncio.gather(*(one(session, s) for s in students))

    started = time.monotonic()
    opened = asyncio.run(everyone())
    print(f"{CLASS_SIZE} students opened a notebook and ran a cell in "
          f"{time.monotonic() - started:.1f} s")
    return opened


def test_a_class_of_50_all_get_a_working_notebook(nb: Nbunits, burst: list[Opened]) -> None:
    assert len({o.user for o in burst}) == CLASS_SIZE
    assert not [u for u in nb.box.failed_units() if u.startswith("nbunits")]
    running = nb.box.systemctl("list-units", "--state=active", "--plain", "--no-legend",
                               "nbunits-burst@*.service").stdout
    assert len(running.splitlines()) == CLASS_SIZE


def test_status_and_logs_show_the_class(nb: Nbunits, burst: list[Opened]) -> None:
    table = nb.nbunits("status", "--course", "burst").stdout
    assert table.splitlines()[0].split() == ["COURSE", "STUDENT", "ID", "STATE", "SINCE", "MEMORY"]
    assert f"{CLASS_SIZE} student(s): {CLASS_SIZE} running" in table
    states = json.loads(nb.nbunits("status", "--course", "burst", "--json").stdout)
    assert {s["student"] for s in states} == {o.user for o in burst}
    logs = nb.nbunits("logs", "burst", burst[0].user, "--lines", "500").stdout
    assert "Jupyter Server" in logs and "opening welcome.ipynb" in logs
    assert burst[1].user not in logs
    for command in (["status", "--help"], ["logs", "--help"]):
        assert "usage: nbunits" in nb.nbunits(*command).stdout
    units = nb.box.systemctl("list-units", "--plain", "--no-legend", "nbunits-*").stdout
    assert f"nbunits burst: Jupyter for student {burst[0].user}" in units


def test_stopping_a_course_with_systemctl_stops_everyone_cleanly(
        nb: Nbunits, burst: list[Opened]) -> None:
    nb.box.systemctl("stop", "nbunits-burst@*", timeout=300)
    left = nb.box.systemctl("list-units", "--state=active", "--plain", "--no-legend",
                            "nbunits-burst@*", "nbunits-burst-proxy@*").stdout
    assert left.strip() == ""
    assert all(nb.processes_of(o.user) == [] for o in burst)
    assert "50 student(s): 50 stopped" in nb.nbunits("status", "--course", "burst").stdout

    # A student of the stopped course clicks again: served, no 502 (nginx falls back).
    async def click_again(opened: Opened) -> int:
        async with client(nb) as session:
            async with session.get(f"{opened.prefix}api/status", headers=opened.headers) as resp:
                return resp.status

    assert asyncio.run(click_again(burst[0])) == 200
