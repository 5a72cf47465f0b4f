"""A reboot: the same machine (its disk, homes and image store) under a new systemd.

/var/lib/nbunits is a file system of its own there, mounted by systemd from
/etc/fstab, as /var often is: generators run before it is mounted
(systemd.generator(7)), so nbunits' generator must render every course from /etc
alone, and the recently active students' sockets listen once it is mounted
(nbunits-listen.service)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

from testbed.browser import open_exercise, save_notebook
from testbed.harness import Bind, SystemdBox

from .conftest import IMAGE_STORE, IMAGE_STORE_IN_BOX, VENV, box_folders, deploy, reach, use_checkout

NOTEBOOK = "week1/loops.ipynb"
FSTAB = ("/srv/nbunits-state /var/lib/nbunits none bind 0 0\n"
         "/srv/images /var/lib/nbunits/images none bind 0 0\n")


def test_after_a_reboot_the_same_link_gives_back_the_edited_notebook() -> None:
    work = Path(f"/var/tmp/nbunits-reboot-{os.getpid()}")
    home, shared, binds = box_folders(work)
    # The root file system's /var/lib/nbunits: an empty mount point (the box's root
    # is an overlay of this machine's, whose image store must not show through it).
    # The image store is bound elsewhere and mounted under the state by fstab.
    empty = work / "mount-point"
    empty.mkdir()
    binds = [b for b in binds if b.container != IMAGE_STORE_IN_BOX] + [
        Bind(empty, "/var/lib/nbunits"), Bind(IMAGE_STORE, "/srv/images")]
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
        box.run("mkdir", "-p", "/srv/nbunits-state", IMAGE_STORE_IN_BOX)
        box.write_file("/etc/fstab", box.read_file("/etc/fstab") + FSTAB)
        box.systemctl("daemon-reload")
        box.systemctl("start", "var-lib-nbunits-images.mount")
        site = deploy(box, shared)
        box.run(str(VENV / "bin" / "nbunits"), "course", "add", "demo",
                "--dir", "/opt/nbunits/src/examples/demo", "--legacy", "open")

        async def edit() -> tuple[str, str]:
            async with site.session() as session:
                opened = await open_exercise(session, "demo", NOTEBOOK, student)
                await save_notebook(session, opened, marker)
                return opened.prefix, opened.token

        prefix, token = asyncio.run(edit())
        box.shutdown()

        box = boot()  # the same disk: users, units, courses and tokens are still there
        mounts = box.run("findmnt", "--noheadings", "--output", "TARGET", "--list").stdout.split()
        assert "/var/lib/nbunits" in mounts and IMAGE_STORE_IN_BOX in mounts
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
