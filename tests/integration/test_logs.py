"""No capability, token, signature, secret or student id in any log (run last: it
reads what the whole session wrote).

testbed/handed.py keeps, for the whole session, every secret the tests were handed
or sent (capabilities, revoked ones and deleted students' included; share and
hand-off tokens; staff and legacy link signatures; the LMS's ids of students, from
course links and LTI launches) and, as each box goes (the multi-host boxes, the
rebooted one, any box a test boots), its journal (every unit, every field: -o
verbose) and nginx's logs and its own secrets (keys, current capabilities). This
test adds the session box's, then looks for every secret in every log of every box.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import nbunits
from testbed import handed
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

    def read() -> list[tuple[str, ...]]:
        return [re.search(r'"([A-Z]+ \S+) HTTP/1.1" ([0-9]{3}) ', line).groups()
                for line in nb.box.read_file("/var/log/nginx/access.log").splitlines()
                if f'"{marker}"' in line]

    expected = [
        f"POST /_nbunits/student/demo/{user}/[capability] 200",
        "GET /shared/[token] 200",
        "GET /shared/[token] 404",  # made up: the dispatcher's 404
        "GET /ipythonExercice/nosuch/[student] 404",
        "GET /ipythonExercice/demo/[student] 400",
        "GET /ipythonExercice/[student] 404",
        "GET /_nbunits/page/not-found 404",  # nginx's own: the page it answered with
        "GET /_nbunits/page/bad-link 403",
        "GET /_nbunits/page/bad-link 403",  # a GET where only a POST goes
        "GET /_nbunits/page/not-found 404",  # the internal wake path
        "GET /shared/[token] 301",  # plain HTTP: the redirect to https://
        "GET /ipythonExercice/demo/[student] 301",
        "GET /x/[...] 301",
        "GET /ipythonExercice/demo/[student] 421",  # a name this server does not serve
        "GET /x/[...] 421"]
    # nginx writes a request's line once its answer is sent: the last may come a
    # moment after the client has it.
    deadline = time.monotonic() + 5
    while len(logged := read()) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [" ".join(entry) for entry in logged] == expected
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

# In a box's own secrets: keys (hex) and capabilities, as its files hold them.
KEYS = re.compile(r"[0-9a-f]{32,}|[A-Za-z0-9_-]{24,}|" + handed.CAPABILITY.pattern)
# What a secret in a log is: a word of its own, between characters that no secret
# has at its ends (a capability in a path, a signature after "sig=", an id after
# "user_id=" or in a quoted line). Words of each alphabet the secrets are made of.
WORDS = (re.compile(r"[A-Za-z0-9_.-]+"), re.compile(r"[A-Za-z0-9._@+-]+"),
         re.compile(r"[A-Za-z0-9._@+=-]+"))
# journald records the command line of a process with each line it logs: an
# admin's `nbunits ...` is what the admin typed (docs/security.md, "Logs").
ADMIN_COMMAND = re.compile(r"^ *_CMDLINE=\S*python3 /opt/nbunits/venv/bin/nbunits .*$", re.M)


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
            # A refused course link of a real student (an unknown course).
            async with session.get(f"/ipythonExercice/nosuch/welcome.ipynb/{student}") as resp:
                assert resp.status == 404

    asyncio.run(noisy())
    link = nb.nbunits("student", "link", "demo", student, "welcome.ipynb").stdout.strip()
    asyncio.run(_get(nb, link))
    asyncio.run(_get(nb, link.replace("sig=", "sig=0")))

    started = time.monotonic()
    handed.save_box(nb.box)  # the session box's, now: the others were kept as they went
    folder = handed.session()
    assert folder is not None
    given = handed.recorded()
    boxes = sorted((folder / "boxes").iterdir())
    for box in boxes:
        given.setdefault("box-secret", set()).update(
            KEYS.findall((box / "secrets.txt").read_text()))
    # Ids the tests also sent where a course or notebook name goes, as names; and ids
    # that are the code's own strings (hypothesis draws those), which logs print as such.
    elsewhere = given.pop("elsewhere", set()) | (
        given["student"] & handed.product_constants(Path(nbunits.__file__).parent))
    given["student"] -= elsewhere
    assert {"capability", "student", "signature", "box-secret"} <= set(given), given.keys()
    assert student in given["student"] and link.split("sig=")[1] in given["signature"]
    logs = {f"{box.name}/{name}": (box / name).read_text(errors="replace")
            for box in boxes for name in ("journal.txt", "nginx.txt")}
    this = max(b.name for b in boxes if b.name.startswith(nb.box.name))
    # Redacted, not just absent: the session box's logs show where a capability was.
    assert "[capability]" in logs[f"{this}/nginx.txt"]
    assert "[capability]" in logs[f"{this}/journal.txt"]
    leaks = []
    for where, text in logs.items():
        words = set().union(*(set(w.findall(ADMIN_COMMAND.sub("", text))) for w in WORDS))
        words |= {w.strip("._-") for w in words}
        leaks += [f"{kind} {value[:12]}… in {where}: …{_around(text, value)}…"
                  for kind, values in given.items() for value in values & words]
    counts = {kind: len(values) for kind, values in given.items()}
    print(f"looked for {counts} ({len(elsewhere)} ids sent as names or in the code left out) in "
          f"{len(logs)} logs of {len(boxes)} boxes "
          f"({sum(map(len, logs.values())) >> 20} MB) in {time.monotonic() - started:.1f} s")
    assert not leaks, f"{len(leaks)} secrets are in the logs, e.g. " + "\n".join(leaks[:10])


def _around(text: str, value: str) -> str:
    at = text.index(value)
    return text[max(0, at - 300):at + len(value) + 100]


async def _get(nb: Nbunits, path: str) -> None:
    async with client(nb) as session:
        async with session.get(path) as resp:
            await resp.read()
