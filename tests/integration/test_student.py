"""What a student does from inside their notebook: the Course menu (reset, share,
student id) and the newer-version banner, with the capability alone (an LTI-only
course: the legacy link off), in the course's cross-site iframe."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import nbformat
import pytest

from testbed.browser import Opened, open_exercise, save_notebook

from .conftest import LMS, REPO, SHARED_IN_BOX, Nbunits, client

COURSE = "s16"
NOTEBOOK = "welcome.ipynb"


def set_course(nb: Nbunits, **settings: str) -> None:
    """Change course settings as an admin would (the dispatcher reads them per launch)."""
    path = f"/etc/nbunits/courses/{COURSE}.toml"
    lines = nb.box.read_file(path).splitlines()
    for key, value in settings.items():
        lines = [line for line in lines if not line.startswith(f"{key} =")] + [f'{key} = "{value}"']
    nb.box.write_file(path, "\n".join(lines) + "\n")


def publish_new_cell(nb: Nbunits, source: Path, text: str) -> None:
    """The course team adds a cell to the notebook and updates the course."""
    path = source / NOTEBOOK
    master = nbformat.read(path, 4)
    master.cells.append(nbformat.v4.new_code_cell(text))
    nbformat.write(master, path)
    nb.nbunits("course", "update", COURSE)


@pytest.fixture(scope="module")
def source(nb: Nbunits) -> Path:
    folder = nb.shared / COURSE
    shutil.copytree(REPO / "examples" / "demo", folder)
    nb.nbunits("course", "add", COURSE, "--dir", f"{SHARED_IN_BOX}/{COURSE}")
    set_course(nb, lms_origin=f"https://{LMS}")
    return folder


def actions(opened: Opened) -> str:
    return opened.prefix.replace("/nb/", "/_nbunits/student/", 1)


async def post(session: aiohttp.ClientSession, url: str, notebook: str = NOTEBOOK
               ) -> tuple[int, Any]:
    async with session.post(url, json={"notebook": notebook}) as resp:
        return resp.status, json.loads(await resp.text() or "null") \
            if resp.content_type == "application/json" else await resp.text()


def test_actions_need_only_the_capability(nb: Nbunits, source: Path) -> None:
    student = secrets.token_hex(16)

    async def go() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, NOTEBOOK, student)
            set_course(nb, legacy="off")  # LTI only from now on
            api = actions(opened)
            status, info = await post(session, api + "info")
            assert status == 200 and info["student_id"] == student and not info["newer"], info
            # nginx refuses another capability, a GET, an unknown action.
            for method, url in (("POST", f"/_nbunits/student/{COURSE}/{opened.user}/{'A' * 22}/info"),
                                ("GET", api + "info"), ("POST", api + "delete")):
                async with session.request(method, url, json={"notebook": NOTEBOOK}) as resp:
                    assert resp.status in (403, 404), (method, url, resp.status)

            # Share a static version; the link shows it, escaped, with nothing that runs.
            await save_notebook(session, opened, "# shared <b>text</b>")
            status, shared = await post(session, api + "share")
            assert status == 200 and shared["url"].startswith("/shared/"), shared
            async with session.get(shared["url"]) as resp:
                page = await resp.text()
                assert resp.status == 200 and "# shared &lt;b&gt;text&lt;/b&gt;" in page
                assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
            assert (await post(session, api + "info"))[1]["url"] == shared["url"]
            assert (await post(session, api + "unshare"))[0] == 200
            async with session.get(shared["url"]) as resp:
                assert resp.status == 404 and "not shared any more" in await resp.text()

            # A newer version: said, with what changed; the reset keeps the old copy.
            await asyncio.to_thread(publish_new_cell, nb, source, "new_in_v2 = 2")
            status, info = await post(session, api + "info")
            assert info["newer"] and any("1 new cell: \u201cnew_in_v2 = 2\u201d" in c
                                         for c in info["changes"]), info
            status, done = await post(session, api + "reset")
            assert status == 200 and done["kept"].startswith("welcome-"), done
            for name, text in ((NOTEBOOK, "new_in_v2"), (done["kept"], "# shared <b>text</b>")):
                async with session.get(f"{opened.prefix}api/contents/{name}",
                                       headers=opened.headers) as resp:
                    assert text in await resp.text(), name
            assert not (await post(session, api + "info"))[1]["newer"]
            # Not a notebook of the course: said in a student's words.
            status, error = await post(session, api + "reset", done["kept"])
            assert status == 404 and "no original" in error["message"], error

    try:
        asyncio.run(go())
    finally:
        set_course(nb, legacy="open")
