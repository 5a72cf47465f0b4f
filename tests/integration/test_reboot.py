"""A reboot: the same machine (its disk, homes and image store) under a new systemd."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

from testbed.browser import open_exercise, save_notebook
from testbed.harness import SystemdBox

from .conftest import VENV, box_folders, deploy, reach, use_checkout

NOTEBOOK = "week1/loops.ipynb"


def test_after_a_reboot_the_same_link_gives_back_the_edited_notebook() -> None:
    work = Path(f"/var/tmp/nbunits-reboot-{os.getpid()}")
    home, shared, binds = box_folders(work)
    disk = work / "disk"
    disk.mkdir()
    student, marker = secrets.token_hex(16), f"# before the reboot {secrets.token_hex(4)}"

    def boot() -> SystemdBox:
        box = SystemdBox(f"nbunits-reboot-{os.getpid()}", binds=binds, disk=disk)
        box.boot()
        use_checkout(box)
        return box

    box = None
    try:
        box = boot()
        site = deploy(box, shared)
        box.run(str(VENV / "bin" / "nbunits"), "course", "add", "demo",
                "--dir", "/opt/nbunits/src/examples/demo")

        async def edit() -> tuple[str, str]:
            async with site.session() as session:
                opened = await open_exercise(session, "demo", NOTEBOOK, student)
                await save_notebook(session, opened, marker)
                return opened.prefix, opened.token

        prefix, token = asyncio.run(edit())
        box.shutdown()

        box = boot()  # the same disk: users, units, courses and tokens are still there
        site = reach(box, shared, site.ca)

        async def come_back() -> None:
            async with site.session() as session:
                # The student's socket listens from boot on: their bookmark works as is.
                url = f"{prefix}api/contents/{NOTEBOOK}"
                async with session.get(url, headers={"Authorization": f"token {token}"}) as resp:
                    assert resp.status == 200
                    assert marker in str(await resp.json())
                # And the course link opens the same, edited copy.
                opened = await open_exercise(session, "demo", NOTEBOOK, student)
                assert opened.page_status == 200 and opened.prefix == prefix

        asyncio.run(come_back())
    finally:
        if box is not None:
            box.shutdown()
        shutil.rmtree(work, ignore_errors=True)
