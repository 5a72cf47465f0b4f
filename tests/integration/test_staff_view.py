"""Course staff see a student's copy, read-only, through a signed, expiring link."""

from __future__ import annotations

import asyncio
import secrets

from nbunits.helper import staff
from testbed.browser import open_exercise, save_notebook

from .conftest import Nbunits, client


def test_staff_link_shows_the_students_copy_read_only(nb: Nbunits) -> None:
    student, marker = secrets.token_hex(16), f"# the student wrote this {secrets.token_hex(4)}"

    async def work() -> str:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", "welcome.ipynb", student)
            await save_notebook(session, opened, marker)
            return opened.user

    user = asyncio.run(work())
    link = nb.nbunits("student", "link", "demo", student, "welcome.ipynb", "--hours", "1").stdout.strip()
    secret = nb.box.read_file("/etc/nbunits/capability.secret").strip()
    expired = staff.link(secret, "demo", user, "welcome.ipynb", hours=1, now=1_000_000)
    # A planted symlink must not turn the view into a way to read root's files.
    nb.box.run("ln", "-s", "/etc/shadow", f"/home/{user}/demo/shadow.ipynb", user=user)
    # The CLI will not even make a link to it; a link signed anyway is refused by the view.
    refused = nb.nbunits("student", "link", "demo", user, "shadow.ipynb", check=False)
    assert refused.returncode == 1 and "symbolic links" in refused.stderr, refused.stderr
    planted = staff.link(secret, "demo", user, "shadow.ipynb", hours=1)

    async def look() -> list[tuple[int, str, str]]:
        async with client(nb) as session:
            results = []
            for url in (link, link[:-4] + "0000", expired, planted):
                async with session.get(url) as resp:
                    results.append((resp.status, await resp.text(),
                                    resp.headers.get("Content-Security-Policy", "")))
            return results

    (ok, page, csp), (forged, _, _), (old, old_page, _), (shadow, shadow_page, _) = asyncio.run(look())
    assert ok == 200 and marker in page and "Read-only view" in page
    assert csp.startswith("default-src 'none'")
    assert forged == 403 and old == 403 and "expired" in old_page
    assert 400 <= shadow < 500 and "root:" not in shadow_page
