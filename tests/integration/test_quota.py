"""Per-student disk quotas (docs/admin.md, "Disk quotas"), enforced by the file system: the
box's homes are a loop-mounted btrfs with quotas enabled (conftest; testbed.deploy.
btrfs_homes), where each (course, student) gets subvolumes in a qgroup limited to
the course's disk_quota."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess

import pytest

from testbed.browser import Opened, execute, open_exercise, start_kernel

from .conftest import Nbunits, client

COURSE = "quota"
SUBVOLUME_ROOT_INO = 256

# In the kernel: write 64 MB into the container's home (~/.nbunits/quota/home), the
# other folder of the course than the one notebooks are saved in.
FILL = ("def fill():\n"
        "    try:\n"
        "        with open('/home/student/fill', 'wb') as f:\n"
        "            for _ in range(64):\n"
        "                f.write(b'x' * 1048576)\n"
        "                f.flush()\n"
        "    except OSError as e:\n"
        "        return e.strerror\n"
        "fill()")
# In the kernel: make a btrfs subvolume in the course folder, which would be outside the
# course's qgroup (BTRFS_IOC_SUBVOL_CREATE, as `btrfs subvolume create` does it), by the raw
# syscall: with the plain request, and with high bits set, which the kernel ignores (it
# reads the request as 32 bits) but a seccomp rule comparing 64 bits would not.
SUBVOLUME = ("def subvolume():\n"
             "    import ctypes, os\n"
             "    libc = ctypes.CDLL(None, use_errno=True)\n"
             "    fd = os.open('/home/student/work', os.O_RDONLY)\n"
             "    answers = []\n"
             "    for request, name in ((0x5000940E, b'escape'), (0x15000940E, b'escape-high')):\n"
             "        args = ctypes.create_string_buffer(bytes(8) + name + bytes(4096 - 8 - len(name)))\n"
             "        done = libc.syscall(16, fd, ctypes.c_ulong(request), args)  # SYS_ioctl\n"
             "        answers.append(os.strerror(ctypes.get_errno()) if done else 'made')\n"
             "    return answers, {'escape', 'escape-high'} & set(os.listdir('/home/student/work'))\n"
             "subvolume()")


@pytest.fixture(scope="module", autouse=True)
def quota_course(nb: Nbunits) -> None:
    nb.add_course(COURSE)  # no disk_quota yet: students' folders are plain directories


async def _load(session, opened: Opened) -> dict:
    async with session.get(f"{opened.prefix}api/contents/{opened.notebook}",
                           headers=opened.headers) as resp:
        assert resp.status == 200, f"load: {resp.status} {await resp.text()}"
        return dict(await resp.json())


async def _save(session, opened: Opened, model: dict, marker: str) -> tuple[int, str]:
    """What a browser's save does (testbed.browser.save_notebook) with the notebook it
    has open: its answer, whatever it is."""
    content = model["content"]
    content["cells"].append({"cell_type": "code", "source": marker, "metadata": {},
                             "outputs": [], "execution_count": None, "id": marker[:8]})
    async with session.put(f"{opened.prefix}api/contents/{opened.notebook}",
                           headers=opened.headers,
                           json={"type": "notebook", "format": "json", "content": content}) as resp:
        return resp.status, await resp.text()


def _qgroups(nb: Nbunits) -> str:
    return subprocess.run(["btrfs", "qgroup", "show", "-pcre", "--raw", str(nb.home)],
                          check=True, capture_output=True, text=True).stdout


def test_a_student_over_the_quota_cannot_save_and_the_others_can(nb: Nbunits) -> None:
    before = secrets.token_hex(16)  # a student from before the course had a quota

    async def first_visit() -> Opened:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, "welcome.ipynb", before)
            kernel = await start_kernel(session, opened)
            await execute(session, opened, kernel,
                          "open('/home/student/kept.txt', 'w').write('mine')")
            model = await _load(session, opened)
            assert (await _save(session, opened, model, "saved-before-the-quota"))[0] == 200
            return opened

    old = asyncio.run(first_visit())
    nb.box.systemctl("stop", f"nbunits-{COURSE}@{old.user}.socket",
                     f"nbunits-{COURSE}-proxy@{old.user}.service",
                     f"nbunits-{COURSE}@{old.user}.service")
    assert os.stat(nb.home / old.user / COURSE).st_ino != SUBVOLUME_ROOT_INO
    nb.nbunits("course", "update", COURSE, "--disk-quota", "20M")

    async def over_quota() -> tuple[Opened, str, str, tuple[int, str]]:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, "welcome.ipynb", secrets.token_hex(16))
            model = await _load(session, opened)  # the notebook open in the browser
            kernel = await start_kernel(session, opened)
            escape = await execute(session, opened, kernel, SUBVOLUME)
            filled = await execute(session, opened, kernel, FILL)
            return opened, escape, filled, await _save(session, opened, model, "over-the-quota")

    full, escape, filled, (status, answer) = asyncio.run(over_quota())
    # seccomp.py: no way around it, whatever the request's high bits.
    assert escape == "(['Operation not permitted', 'Operation not permitted'], set())", escape
    assert filled == "'Disk quota exceeded'", filled
    assert status == 500 and "Disk quota exceeded" in answer, (status, answer[:500])

    async def same_course_other_student() -> tuple[str, int, str]:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, "welcome.ipynb", before)
            kernel = await start_kernel(session, opened)
            kept = await execute(session, opened, kernel, "open('/home/student/kept.txt').read()")
            status, _ = await _save(session, opened, await _load(session, opened),
                                    "saved-under-the-quota")
            return kept, status, json.dumps(await _load(session, opened))

    kept, status, notebook = asyncio.run(same_course_other_student())
    # Their plain folders became subvolumes with every file in them, and they save.
    assert kept == "'mine'" and status == 200, (kept, status)
    assert "saved-before-the-quota" in notebook and "saved-under-the-quota" in notebook
    for user in (old.user, full.user):
        for folder in (nb.home / user / COURSE, nb.home / user / ".nbunits" / COURSE / "home"):
            assert os.stat(folder).st_ino == SUBVOLUME_ROOT_INO, folder
    assert not [p for p in (nb.home / old.user).iterdir() if "nbunits-subvolume" in p.name]

    # One qgroup per (course, student), limited to the course's quota.
    group = f"1/{subvolume_id(nb, full.user)}"
    limited = [line.split() for line in _qgroups(nb).splitlines() if line.startswith(group + " ")]
    assert limited and limited[0][3] == str(20 * 1024 * 1024), _qgroups(nb)

    # Deleting the student removes their subvolumes and their qgroup.
    nb.nbunits("student", "delete", full.user, "--yes", "--no-backup")
    subprocess.run(["btrfs", "subvolume", "sync", str(nb.home)], check=True, timeout=60)
    assert not (nb.home / full.user).exists()
    shown = _qgroups(nb)
    assert f"\n{group} " not in shown and full.user not in shown, shown


def subvolume_id(nb: Nbunits, user: str) -> int:
    out = subprocess.run(["btrfs", "inspect-internal", "rootid", str(nb.home / user / COURSE)],
                         check=True, capture_output=True, text=True).stdout
    return int(out)


def test_a_course_with_a_quota_on_homes_without_quotas_is_refused_before_any_change(
        nb: Nbunits) -> None:
    """The admin forgot `btrfs quota enable`: nothing is made for a new student."""
    nb.nbunits("course", "update", COURSE, "--disk-quota", "20M")
    subprocess.run(["btrfs", "quota", "disable", str(nb.home)], check=True)
    try:
        users = nb.users()
        async def launch() -> tuple[int, str]:
            async with client(nb) as session:
                async with session.get(f"/ipythonExercice/{COURSE}/welcome.ipynb/"
                                       f"{secrets.token_hex(16)}", allow_redirects=False) as resp:
                    return resp.status, await resp.text()

        status, page = asyncio.run(launch())
        assert status == 500 and "disk_quota" not in page  # no admin detail for students
        assert nb.users() == users
        journal = nb.box.run("journalctl", "--no-pager", "-o", "cat",
                             "-u", "nbunits-helper.service").stdout
        assert "has no quotas enabled" in journal, journal[-2000:]
    finally:
        subprocess.run(["btrfs", "quota", "enable", str(nb.home)], check=True)


def test_removing_the_course_with_purge_removes_its_qgroups(nb: Nbunits) -> None:
    nb.nbunits("course", "update", COURSE, "--disk-quota", "20M")
    user = _open(nb, secrets.token_hex(16)).user
    group = f"1/{subvolume_id(nb, user)}"
    assert f"\n{group} " in _qgroups(nb)
    nb.nbunits("course", "remove", COURSE, "--purge", "--yes")
    assert not (nb.home / user / COURSE).exists()
    assert f"\n{group} " not in _qgroups(nb), _qgroups(nb)


def _open(nb: Nbunits, student: str) -> Opened:
    async def go() -> Opened:
        async with client(nb) as session:
            return await open_exercise(session, COURSE, "welcome.ipynb", student)
    return asyncio.run(go())
