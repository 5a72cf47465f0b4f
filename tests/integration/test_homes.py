"""A home is only ever its student's: kept homes are adopted only with proof."""

from __future__ import annotations

import asyncio
import secrets

from nbunits.core.names import user_for
from testbed.browser import execute, open_exercise, save_notebook, start_kernel

from .conftest import Nbunits, client

NOTEBOOK = "week1/loops.ipynb"


def _open(nb: Nbunits, student: str, marker: str | None = None) -> str:
    async def go() -> str:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", NOTEBOOK, student)
            assert opened.page_status == 200, opened.page[:300]
            if marker:
                await save_notebook(session, opened, marker)
            kernel = await start_kernel(session, opened)
            assert await execute(session, opened, kernel, "6 * 7") == "42"
            async with session.get(f"{opened.prefix}api/contents/{NOTEBOOK}",
                                   headers=opened.headers) as resp:
                return str(await resp.json())
    return asyncio.run(go())


def _forget_user(nb: Nbunits, user: str) -> None:
    """What a reinstall does: the user is gone (its JSON records), the home stays."""
    nb.box.systemctl("stop", f"nbunits-demo@{user}.socket", f"nbunits-demo-proxy@{user}.service",
                     f"nbunits-demo@{user}.service")
    uid = nb.uid(user)
    nb.box.run("rm", f"/etc/userdb/{user}.user", f"/etc/userdb/{uid}.user",
               f"/etc/userdb/{user}.group", f"/etc/userdb/{uid}.group")


def test_a_kept_home_is_adopted_by_its_student_with_a_new_uid(nb: Nbunits) -> None:
    student, marker = secrets.token_hex(16), f"# kept {secrets.token_hex(4)}"
    user = user_for(student)
    _open(nb, student, marker)
    new_uid = nb.uid(user)
    _forget_user(nb, user)
    # A home from before derived uids: its files belong to another uid.
    old_uid = 4000 + secrets.randbelow(1000)
    nb.box.run("chown", "-R", "--from", f"{new_uid}:{new_uid}", f"{old_uid}:{old_uid}",
               f"/home/{user}")
    # The state record is lost too: the root-owned record in the home proves it.
    nb.box.run("rm", f"/var/lib/nbunits/students/{user}")
    nb.box.run("ln", "-s", "/etc/passwd", f"/home/{user}/planted")
    nb.box.run("chown", "-h", str(old_uid), f"/home/{user}/planted")

    assert marker in _open(nb, student)  # the same work, and a kernel runs
    assert nb.uid(user) == new_uid
    assert nb.box.run("stat", "-c", "%u %a", f"/home/{user}").stdout.split() == [str(new_uid), "700"]
    assert nb.box.run("find", f"/home/{user}", "-uid", str(old_uid)).stdout == ""
    assert nb.box.run("stat", "-c", "%u", "/etc/passwd").stdout.strip() == "0"  # not followed
    assert nb.box.read_file(f"/var/lib/nbunits/students/{user}").strip() == student


def test_a_home_without_proof_is_never_given_away(nb: Nbunits) -> None:
    student = secrets.token_hex(16)
    user = user_for(student)
    home = f"/home/{user}"
    nb.box.run("mkdir", "-p", f"{home}/demo")
    nb.box.write_file(f"{home}/demo/someone-elses.txt", "not yours\n")
    # A record the student could have written (not root's) proves nothing.
    nb.box.write_file(f"{home}/.nbunits-student", student + "\n")
    nb.box.run("chown", "-R", "4242:4242", home)

    async def go() -> tuple[int, str]:
        async with client(nb) as session:
            async with session.get(f"/ipythonExercice/demo/{NOTEBOOK}/{student}",
                                   allow_redirects=False) as resp:
                return resp.status, await resp.text()

    status, page = asyncio.run(go())
    assert status == 409, page[:300]
    assert "administrator" in page
    assert user not in nb.users()
    assert nb.box.run("test", "-e", f"/etc/userdb/{user}.user", check=False).returncode == 1
    assert nb.box.run("stat", "-c", "%u", home).stdout.strip() == "4242"
    assert nb.box.run("test", "-e", f"/var/lib/nbunits/students/{user}", check=False).returncode == 1
    assert not [u for u in nb.student_units() if user in u]
    assert "no record shows it is the home of student" in nb.box.journal("nbunits-dispatcher.service")


def test_a_home_restored_under_an_existing_user_is_given_back_to_it(nb: Nbunits) -> None:
    student, marker = secrets.token_hex(16), f"# restored {secrets.token_hex(4)}"
    user = user_for(student)
    _open(nb, student, marker)
    uid = nb.uid(user)
    nb.box.systemctl("stop", f"nbunits-demo@{user}.socket", f"nbunits-demo-proxy@{user}.service",
                     f"nbunits-demo@{user}.service")
    # A backup restored with the uids of another machine (the record in it is root's).
    nb.box.run("find", f"/home/{user}", "-uid", str(uid), "-exec", "chown", "-h", "4343:4343",
               "{}", "+")
    assert marker in _open(nb, student)
    assert nb.box.run("find", f"/home/{user}", "-uid", "4343").stdout == ""
