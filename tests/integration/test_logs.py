"""No capability, token or secret in any log (run last: it reads what the whole
session wrote). Every capability the server handed out in this session is in the
box's token files; each must be absent from nginx's logs and from the journal
(every unit, every field), and so must the server's secrets, staff links'
signatures and share tokens. And what nginx's access log writes for paths that
carry a share token or a student id, refused or not: exact lines."""

from __future__ import annotations

import asyncio
import re
import secrets
from urllib.parse import urlsplit

import pytest

from testbed.browser import open_exercise

from .conftest import SERVER, Nbunits, client


def test_the_access_log_writes_no_share_token_and_no_student_id(nb: Nbunits) -> None:
    """Every kind of path that carries one, answered by every part that answers
    (the dispatcher, nginx itself and its error pages, the redirect to https://, the
    default server): the lines, exactly; and the ids and tokens nowhere in the logs."""
    student, marker = secrets.token_hex(16), "log-" + secrets.token_hex(6)
    refused = secrets.token_hex(16)  # an id only refused links carry
    made_up = secrets.token_urlsafe(24)
    fake_cap = "A" * 22 + ".0.9999999999"

    async def requests() -> tuple[str, list[str]]:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", "welcome.ipynb", student)
            ua = {"User-Agent": marker}
            share = f"/_nbunits/student/demo/{opened.user}/{opened.token}/share"
            async with session.post(share, json={"notebook": "welcome.ipynb"},
                                    headers=ua) as resp:
                assert resp.status == 200, await resp.text()
                shared = urlsplit((await resp.json())["url"]).path
            asked = [("GET", shared, {}), ("GET", f"/shared/{made_up}", {}),
                     ("GET", f"/ipythonExercice/nosuch/welcome.ipynb/{refused}", {}),
                     ("GET", f"/ipythonExercice/demo/welcome.ipynb/{refused}!", {}),
                     ("GET", f"/ipythonExercice/{refused}", {}),
                     ("GET", f"/somewhere/{refused}", {}),
                     ("GET", f"/nb/demo/{opened.user}/{fake_cap}/tree", {}),
                     ("GET", f"/_nbunits/student/demo/{opened.user}/{opened.token}/info", {}),
                     ("GET", f"/_nbunits/wake/demo/{opened.user}/{opened.token}", {}),
                     ("GET", f"http://{SERVER}{shared}", {}),
                     ("GET", f"http://{SERVER}/ipythonExercice/demo/welcome.ipynb/{student}", {}),
                     ("GET", f"http://{SERVER}/x/{refused}/y", {}),
                     ("GET", f"/ipythonExercice/demo/welcome.ipynb/{student}",
                      {"Host": "elsewhere.mooc.test"}),
                     ("GET", f"/x/{refused}", {"Host": "elsewhere.mooc.test"})]
            for method, path, headers in asked:
                async with session.request(method, path, headers={**ua, **headers},
                                           allow_redirects=False) as resp:
                    await resp.read()
            return shared.rsplit("/", 1)[1], [opened.user]

    token, [user] = asyncio.run(requests())
    logged = [re.search(r'"([A-Z]+ \S+) HTTP/1.1" ([0-9]{3}) ', line).groups()
              for line in nb.box.read_file("/var/log/nginx/access.log").splitlines()
              if f'"{marker}"' in line]
    assert [" ".join(entry) for entry in logged] == [
        f"POST /_nbunits/student/demo/{user}/[capability] 200",
        "GET /shared/[token] 200",
        "GET /shared/[token] 404",  # made up: the dispatcher's 404
        "GET /ipythonExercice/nosuch/[student] 404",
        "GET /ipythonExercice/demo/[student] 400",
        "GET /ipythonExercice/[...] 404",
        "GET /_nbunits/page/not-found 404",  # nginx's own: the page it answered with
        "GET /_nbunits/page/bad-link 403",
        "GET /_nbunits/page/bad-link 403",  # a GET where only a POST goes
        "GET /_nbunits/page/not-found 404",  # the internal wake path
        "GET /shared/[token] 301",  # plain HTTP: the redirect to https://
        "GET /ipythonExercice/demo/[student] 301",
        "GET /x/[...] 301",
        "GET /ipythonExercice/demo/[student] 421",  # a name this server does not serve
        "GET /x/[...] 421"]
    logs = nb.box.run("sh", "-c", "cat /var/log/nginx/*.log").stdout
    assert "[token]" in logs
    for secret in (student, refused, token, made_up):
        assert secret not in logs, secret
    # The dispatcher's lines about the refused ones cut their paths the same way.
    journal = nb.box.run("journalctl", "--no-pager", "-o", "verbose",
                         "-u", "nbunits-dispatcher.service").stdout
    assert "GET /shared/[token]: " in journal
    for secret in (refused, made_up):
        assert secret not in journal, secret


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
    # Share tokens: the names of the shared pages.
    pages = nb.box.run("sh", "-c", "ls /var/lib/nbunits/shares/pages/ 2>/dev/null; true").stdout
    given |= {name.removesuffix(".html") for name in pages.split()}

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
