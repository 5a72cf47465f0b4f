"""The whole path on a real systemd: an edX link opens the student's own notebook."""

from __future__ import annotations

import asyncio
import json
import secrets
from urllib.parse import urlsplit

from nbunits.core.names import user_for
from testbed.browser import (
    Opened,
    execute,
    open_exercise,
    open_notebook_kernel,
    save_notebook,
    sessions,
    start_kernel,
)

from .conftest import Nbunits, client

NOTEBOOK = "week1/python-basics.ipynb"


def test_edx_link_opens_a_working_notebook_owned_by_the_student(nb: Nbunits) -> None:
    student = secrets.token_hex(16)  # what edX sends: 32 hex characters
    marker = f"# saved by the e2e test {secrets.token_hex(4)}"

    async def scenario() -> tuple[str, str]:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", NOTEBOOK, student)
            assert opened.page_status == 200, opened.page[:500]
            assert opened.user == user_for(student)
            assert "jupyter-config-data" in opened.page  # the notebook UI, not an error page
            kernel = await start_kernel(session, opened)
            result = await execute(session, opened, kernel, "6*7")
            saved = await save_notebook(session, opened, marker)
            assert saved["path"] == NOTEBOOK
            return opened.user, result

    user, result = asyncio.run(scenario())
    assert result == "42"

    # The save landed in the student's home, owned by the student's own uid.
    copy = nb.home / user / "demo" / NOTEBOOK
    assert copy.stat().st_uid == nb.uid(user)
    cells = json.loads(copy.read_text())["cells"]
    assert "".join(cells[-1]["source"]) == marker
    assert (nb.home / user).stat().st_mode & 0o777 == 0o700

    # The units that served it, and the id recorded for admins.
    assert nb.show(f"nbunits-demo@{user}.service", "ActiveState")["ActiveState"] == "active"
    assert nb.show(f"nbunits-demo@{user}.socket", "ActiveState")["ActiveState"] == "active"
    found = nb.nbunits("student", "find", student).stdout
    assert found.startswith(user)

    # While its proxy unit (nbunits-demo-proxy@...) runs, `nbunits status` reads it as
    # this student's proxy, not as a course "demo-proxy" (it used to crash on that).
    assert nb.show(f"nbunits-demo-proxy@{user}.service", "ActiveState")["ActiveState"] == "active"
    states = json.loads(nb.nbunits("status", "--json").stdout)
    assert {"course": "demo", "student": user} in [
        {"course": s["course"], "student": s["student"]} for s in states if s["state"] == "running"]
    assert all(s["course"] == "demo" for s in states if s["student"] == user)


def test_the_notebook_s_kernel_starts_with_the_server_and_serves_the_notebook(
        nb: Nbunits) -> None:
    """A launch that starts the student's server starts the notebook's kernel with it,
    before any browser asks (units/jupyter/jupyter_server_config.py, kernel_ahead):
    the notebook then connects to that kernel, and no second one starts."""
    async def scenario() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", NOTEBOOK, secrets.token_hex(16))
            assert opened.page_status == 200, opened.page[:500]
            for _ in range(100):  # nobody asked for a kernel: the server makes its session
                found = [s for s in await sessions(session, opened) if s["path"] == NOTEBOOK]
                if found:
                    break
                await asyncio.sleep(0.1)
            assert found and found[0]["kernel"]["name"] == "python3", found
            kernel = await open_notebook_kernel(session, opened)
            assert kernel == found[0]["kernel"]["id"]
            assert await execute(session, opened, kernel, "6*7") == "42"
            async with session.get(opened.url("api/kernels"), headers=opened.headers) as resp:
                assert [k["id"] for k in await resp.json()] == [kernel]
    asyncio.run(scenario())


def test_a_notebook_that_asks_while_its_kernel_starts_ahead_gets_that_kernel(
        nb: Nbunits) -> None:
    """The notebook asks for its session at once, while the kernel ahead is still
    starting: it waits for that kernel and gets it; no second kernel starts."""
    async def scenario() -> None:
        async with client(nb) as session:
            async with session.get(f"/ipythonExercice/demo/{NOTEBOOK}/{secrets.token_hex(16)}",
                                   allow_redirects=False) as resp:
                assert resp.status == 302, resp.status  # Jupyter answers: the kernel starts
                prefix = "/".join(urlsplit(resp.headers["Location"]).path.split("/")[:5]) + "/"
            opened = Opened(prefix, prefix.split("/")[3], prefix.split("/")[4], NOTEBOOK, 200, "")
            kernel = await open_notebook_kernel(session, opened)  # at once: a race
            assert await execute(session, opened, kernel, "6*7") == "42"
            async with session.get(opened.url("api/kernels"), headers=opened.headers) as resp:
                assert [k["id"] for k in await resp.json()] == [kernel]
            assert [s["kernel"]["id"] for s in await sessions(session, opened)] == [kernel]
    asyncio.run(scenario())


def test_without_kernel_ahead_the_notebook_starts_its_kernel(nb: Nbunits) -> None:
    nb.add_course("noahead")
    nb.nbunits("course", "update", "noahead", "--no-kernel-ahead")

    async def scenario() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, "noahead", "welcome.ipynb",
                                         secrets.token_hex(16))
            await asyncio.sleep(3)  # what a kernel ahead takes, and more
            assert await sessions(session, opened) == []
            kernel = await open_notebook_kernel(session, opened)
            assert await execute(session, opened, kernel, "6*7") == "42"
    asyncio.run(scenario())


def test_reload_reuses_the_running_container_and_keeps_the_copy(nb: Nbunits) -> None:
    student = secrets.token_hex(16)

    async def open_twice() -> tuple[str, str, str]:
        async with client(nb) as session:
            first = await open_exercise(session, "demo", "welcome.ipynb", student)
            unit = f"nbunits-demo@{first.user}.service"
            before = nb.show(unit, "InvocationID")["InvocationID"]
            await save_notebook(session, first, "# my edit")
            again = await open_exercise(session, "demo", "welcome.ipynb", student)
            assert again.page_status == 200
            after = nb.show(unit, "InvocationID")["InvocationID"]
            return first.user, before, after

    user, before, after = asyncio.run(open_twice())
    assert before == after, "a page reload started a new container"
    copy = json.loads((nb.home / user / "demo" / "welcome.ipynb").read_text())
    assert "".join(copy["cells"][-1]["source"]) == "# my edit", "an existing copy was overwritten"
