"""No capability, token or secret in any log (run last: it reads what the whole
session wrote). Every capability the server handed out in this session is in the
box's token files; each must be absent from nginx's logs and from the journal
(every unit, every field), and so must the server's secrets and staff links'
signatures."""

from __future__ import annotations

import asyncio
import re
import secrets

import pytest

from testbed.browser import open_exercise

from .conftest import Nbunits, client


@pytest.mark.last
def test_no_capability_token_or_secret_reaches_any_log(nb: Nbunits) -> None:
    student = secrets.token_hex(16)

    async def noisy() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", "welcome.ipynb", student)
            for path in ("api/nosuch", "api/contents/nosuch.ipynb", "tree?token=" + opened.token):
                async with session.get(opened.prefix + path) as resp:
                    await resp.read()  # Jupyter logs 4xx with their paths
            nb.box.systemctl("stop", f"nbunits-demo@{opened.user}.socket",
                             f"nbunits-demo@{opened.user}.service")
            async with session.get(opened.prefix + "api/status", allow_redirects=False) as resp:
                assert resp.status in (307, 503)  # the wake fallback (nginx's 502)
            async with session.get("http://notebooks.mooc.test" + opened.prefix + "x",
                                   allow_redirects=False) as resp:
                assert resp.status == 301  # the plain-HTTP redirect is logged too

    asyncio.run(noisy())
    link = nb.nbunits("student", "link", "demo", student, "welcome.ipynb").stdout.strip()
    asyncio.run(_get(nb, link))
    asyncio.run(_get(nb, link.replace("sig=", "sig=0")))

    given = set()
    for env in nb.box.run("sh", "-c", "cat /var/lib/nbunits/tokens/*/*.env").stdout.split():
        given.add(env.removeprefix("JUPYTER_TOKEN="))
    assert given
    secret_files = "/etc/nbunits/capability.secret /etc/nbunits/secrets/*.toml"
    secrets_text = nb.box.run("sh", "-c", f"cat {secret_files} 2>/dev/null; true").stdout
    given |= set(re.findall(r"[0-9a-f]{32,}|[A-Za-z0-9_-]{24,}", secrets_text))
    given.add(link.split("sig=")[1])

    logs = nb.box.run("sh", "-c", "cat /var/log/nginx/*.log").stdout
    # The system journal and the students' namespace (their containers' output).
    journal = nb.box.run("journalctl", "--namespace=*", "--no-pager", "-o", "verbose",
                         timeout=300).stdout
    journal += nb.box.run("journalctl", "--namespace=*", "--no-pager", "-o", "cat",
                          timeout=300).stdout
    assert "[capability]" in logs and "[capability]" in journal  # redacted, not just absent
    leaked = [g for g in given if g in logs or g in journal]
    where = [text[max(0, text.index(g) - 300):text.index(g) + 100]
             for g in leaked for text in (logs, journal) if g in text]
    assert not leaked, f"{len(leaked)} of {len(given)} secrets are in the logs, e.g. {where[:3]}"


async def _get(nb: Nbunits, path: str) -> None:
    async with client(nb) as session:
        async with session.get(path) as resp:
            await resp.read()
