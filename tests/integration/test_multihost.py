"""Several nbunits hosts behind an nbunits front, no central app (docs/admin.md, "Beyond one host").

Three hosts and a front, each a throwaway systemd, talking over TCP (testbed/multihost.py);
homes and students' state on a folder every host mounts (the stand-in for NFS). A
launch opens on the host the front's consistent hash gives the student; a killed
host's student continues on the next host with their saved work; a fourth host
takes only the students the hash gives it; a forged hand-off lands nobody anywhere.
Few notebooks are started (each box runs real Jupyter containers).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from nbunits.core import i18n
from nbunits.core.names import user_for
from testbed.ketama import Ring
from testbed.multihost import NBUNITS, Cluster, Host

NOTEBOOK = "welcome.ipynb"
ADDRESSES = {"mh-1": "127.0.1.1", "mh-2": "127.0.1.2", "mh-3": "127.0.1.3", "mh-4": "127.0.1.4"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    work = Path(f"/var/tmp/nbunits-mh-{os.getpid()}")
    cluster = Cluster.create(work, f"nbunits-mh-{os.getpid()}")
    try:
        for name in ("mh-1", "mh-2", "mh-3"):
            cluster.add_host(name, ADDRESSES[name])
        cluster.install_front()
        yield cluster
    finally:
        for host in cluster.hosts.values():
            failed = host.box.failed_units()
            if failed:
                print(host.name, "failed units:", failed, host.box.journal(*failed, lines=60))
        cluster.close()


def ring(cluster: Cluster) -> Ring:
    return Ring([h.upstream for h in cluster.hosts.values()])


def host_of(cluster: Cluster, user: str) -> Host:
    upstream = ring(cluster).host(user)
    return next(h for h in cluster.hosts.values() if h.upstream == upstream)


def session(cluster: Cluster) -> aiohttp.ClientSession:
    assert cluster.site is not None
    return cluster.site.session(timeout=240)


async def launch(http: aiohttp.ClientSession, student: str) -> tuple[str, str]:
    """The course link through the front: any host verifies it and hands it over
    (303 to the student's hand-off path), the student's host opens it (302 to
    /nb/...). Returns the hand-off URL and the notebook's /nb/ URL."""
    async with http.get(f"/ipythonExercice/demo/{NOTEBOOK}/{student}",
                        allow_redirects=False) as resp:
        assert resp.status == 303, f"{resp.status} {(await resp.text())[:300]}"
        handoff = resp.headers["Location"]
    assert urlsplit(handoff).path == f"/_nbunits/handoff/demo/{user_for(student)}"
    async with http.get(handoff, allow_redirects=False) as resp:
        assert resp.status == 302, f"{resp.status} {(await resp.text())[:300]}"
        return handoff, resp.headers["Location"]


async def contents(http: aiohttp.ClientSession, location: str) -> dict:
    prefix = "/".join(location.split("/")[:5]) + "/"
    token = location.split("/")[4]
    async with http.get(f"{prefix}api/contents/{NOTEBOOK}",
                        headers={"Authorization": f"token {token}"}) as resp:
        assert resp.status == 200, f"{resp.status} {(await resp.text())[:300]}"
        return dict(await resp.json())


async def save(http: aiohttp.ClientSession, location: str, marker: str) -> None:
    model = await contents(http, location)
    prefix, token = "/".join(location.split("/")[:5]) + "/", location.split("/")[4]
    model["content"]["cells"].append({"cell_type": "code", "source": marker, "metadata": {},
                                      "outputs": [], "execution_count": None,
                                      "id": secrets.token_hex(4)})
    async with http.put(f"{prefix}api/contents/{NOTEBOOK}",
                        headers={"Authorization": f"token {token}"},
                        json={"type": "notebook", "format": "json",
                              "content": model["content"]}) as resp:
        assert resp.status == 200, await resp.text()


def last_cell(model: dict) -> str:
    return "".join(model["content"]["cells"][-1]["source"])


def running(cluster: Cluster, user: str) -> list[str]:
    """The hosts that run the student's Jupyter now."""
    return [h.name for h in cluster.hosts.values() if h.runs(f"nbunits-demo@{user}.service")]


def student_on(cluster: Cluster, name: str, *, then: str | None = None) -> str:
    """A student id the hash gives host `name` (and, with `then`, host `then` once
    `name` is gone or once `then` has been added)."""
    for _ in range(10_000):
        student = secrets.token_hex(16)
        user = user_for(student)
        if ring(cluster).host(user) != cluster.hosts[name].upstream:
            continue
        if then is None:
            return student
        if then in cluster.hosts:  # the next host on the ring, once `name` is down
            if ring(cluster).host(user, down=[cluster.hosts[name].upstream]) == \
                    cluster.hosts[then].upstream:
                return student
        elif Ring([*(h.upstream for h in cluster.hosts.values()),
                   f"{ADDRESSES[then]}:80"]).host(user) == f"{ADDRESSES[then]}:80":
            return student
    raise AssertionError("no such student in 10,000 tries")


def test_a_launch_opens_on_the_hashed_host_and_a_killed_host_s_student_goes_on_elsewhere(
        cluster: Cluster) -> None:
    student = student_on(cluster, "mh-1", then="mh-2")
    user = user_for(student)
    marker = f"# saved on mh-1 {secrets.token_hex(4)}"

    async def work_on_mh1() -> str:
        async with session(cluster) as http:
            _, location = await launch(http, student)
            await save(http, location, marker)
            return location

    location = asyncio.run(work_on_mh1())
    assert running(cluster, user) == ["mh-1"]
    uid = int(cluster.hosts["mh-1"].box.run("id", "-u", user).stdout)
    # Two hosts never run the student at once: a front whose view differs (it
    # believes mh-1 dead) sends the student's tab to mh-3, which would wake them
    # there; mh-3 cannot take the lock mh-1 holds and says "retry", nothing more.
    async def split_view() -> tuple[int, str]:
        async with cluster.direct(cluster.hosts["mh-3"]) as http:
            prefix, token = "/".join(location.split("/")[:5]) + "/", location.split("/")[4]
            async with http.get(f"{prefix}api/status", allow_redirects=False, headers={
                    "Authorization": f"token {token}", "X-Forwarded-Proto": "https"}) as resp:
                return resp.status, resp.headers.get("Retry-After", "")

    assert asyncio.run(split_view()) == (503, "15")
    assert running(cluster, user) == ["mh-1"]
    assert "runs on mh-1" in cluster.hosts["mh-3"].box.journal(f"nbunits-demo-lock@{user}.service")

    cluster.kill("mh-1")  # the power goes, the student's tab is still open

    async def next_requests() -> tuple[dict, dict]:
        async with session(cluster) as http:
            # The open tab's next request: the front's next host has no socket for
            # the student (502), its wake path makes them there and starts them.
            from_tab = await contents(http, location)
            # Their next click from the course: the same server, the same work.
            _, again = await launch(http, student)
            return from_tab, await contents(http, again)

    from_tab, from_course = asyncio.run(next_requests())
    assert last_cell(from_tab) == last_cell(from_course) == marker, \
        "the saved work did not follow the student"
    assert running(cluster, user) == ["mh-2"]
    assert int(cluster.hosts["mh-2"].box.run("id", "-u", user).stdout) == uid


def test_a_forged_or_moved_handoff_lands_nobody_anywhere(cluster: Cluster) -> None:
    victim, attacker = student_on(cluster, "mh-2"), student_on(cluster, "mh-3")
    victim_user, attacker_user = user_for(victim), user_for(attacker)

    async def attempts() -> list[int]:
        statuses = []
        async with session(cluster) as http:
            # The attacker's own launch gives a genuine hand-off, not followed.
            async with http.get(f"/ipythonExercice/demo/{NOTEBOOK}/{attacker}",
                                allow_redirects=False) as resp:
                assert resp.status == 303
                token = urlsplit(resp.headers["Location"]).query.removeprefix("t=")
            payload, mac = token.split(".")
            forged = {
                # their token on the victim's path (the victim's host): not theirs
                f"/_nbunits/handoff/demo/{victim_user}?t={token}",
                # a token made up for the victim
                f"/_nbunits/handoff/demo/{victim_user}?t={payload}.{'A' * 43}",
                # their own path with an altered payload
                f"/_nbunits/handoff/demo/{attacker_user}?t={payload[:-2]}xx.{mac}",
            }
            for path in sorted(forged):
                async with http.get(path, allow_redirects=False) as resp:
                    statuses.append(resp.status)
        return statuses

    assert all(status in (400, 403) for status in asyncio.run(attempts()))
    for host in cluster.hosts.values():  # nobody was made, nothing started
        assert host.box.run("getent", "passwd", attacker_user, check=False).returncode != 0
        assert not host.runs(f"nbunits-demo@{victim_user}.service")
    assert not (cluster.work / "home" / attacker_user).exists()


def test_lti_launches_through_the_front_are_handed_to_the_student_s_host(
        cluster: Cluster) -> None:
    """A signed body names the student: any host verifies it (the front picks one by
    the client's address, so an LTI 1.3 login and its launch meet the same host),
    then the student's own host, and only it, makes them."""
    from . import lms

    public = json.loads(lms.jwt.algorithms.RSAAlgorithm.to_jwk(lms.PLATFORM_KEY.public_key()))
    (cluster.work / "shared" / "jwks.json").write_text(json.dumps({"keys": [{**public,
                                                                            "kid": "k1"}]}))
    (cluster.work / "shared" / "lti11.secret").write_text(lms.SECRET + "\n")
    for host in cluster.hosts.values():  # an admin adds a course on every host
        host.nbunits("course", "add", lms.COURSE, "--dir", "/opt/nbunits/src/examples/demo",
                     "--lti-context-id", lms.CONTEXT, "--lti11-key", lms.KEY,
                     "--lti11-secret-file", "/srv/nbunits-test/lti11.secret",
                     "--lti13-issuer", lms.ISSUER, "--lti13-client-id", lms.CLIENT,
                     "--lti13-deployment-id", "1", "--lti13-auth-url", lms.AUTH,
                     "--lti13-keys", lms.KEYS_FILE,
                     "--lti13-keys-url", "file:///srv/nbunits-test/jwks.json",
                     "--lti-notebook", f"{lms.LINK}={lms.LINKED_NOTEBOOK}")
    learner11, learner13 = secrets.token_hex(16), f"{secrets.token_hex(4)}-sub"

    async def handed(http: aiohttp.ClientSession, resp: aiohttp.ClientResponse,
                     student: str) -> None:
        assert resp.status == 303, f"{resp.status} {(await resp.text())[:300]}"
        handoff = resp.headers["Location"]
        assert urlsplit(handoff).path == f"/_nbunits/handoff/{lms.COURSE}/{user_for(student)}"
        async with http.get(handoff, allow_redirects=False) as opened:
            assert opened.status == 302, (await opened.text())[:300]
            assert opened.headers["Location"].startswith(f"/nb/{lms.COURSE}/{user_for(student)}/")

    async def launches() -> None:
        async with session(cluster) as http:
            async with http.post("/lti/1.1/launch", data=lms.lti11_form(learner11),
                                 headers=lms.FORM, allow_redirects=False) as resp:
                await handed(http, resp, learner11)
            state, nonce = await lms.lti13_login(http)
            async with http.post("/lti/1.3/launch", data={
                    "id_token": lms.id_token(nonce, learner13), "state": state},
                    allow_redirects=False) as resp:
                await handed(http, resp, learner13)

    asyncio.run(launches())
    for student in (learner11, learner13):
        made = [h.name for h in cluster.hosts.values()
                if h.box.run("getent", "passwd", user_for(student), check=False).returncode == 0]
        assert made == [host_of(cluster, user_for(student)).name]


def routed(cluster: Cluster, users: list[str]) -> dict[str, str]:
    """Which host the real front sends each user to: a hand-off without a token
    (400, nothing changes), read back from the front's access log."""
    assert cluster.front is not None
    tag = secrets.token_hex(4)

    async def probe() -> None:
        async with session(cluster) as http:
            for user in users:
                async with http.get(f"/_nbunits/handoff/demo/{user}",
                                    headers={"User-Agent": f"{tag}-{user}"}) as resp:
                    assert resp.status == 400, resp.status

    asyncio.run(probe())
    time.sleep(0.5)
    found = {}
    for line in cluster.front.read_file("/var/log/nginx/access.log").splitlines():
        if f'"{tag}-' in line:
            user = line.split(f'"{tag}-')[1].split('"')[0]
            found[user] = line.rsplit("host=", 1)[1].strip()
    assert len(found) == len(users)
    return found


def test_a_fourth_host_takes_only_the_students_the_hash_gives_it(cluster: Cluster) -> None:
    users = [user_for(f"probe-{i}") for i in range(200)]
    cluster.install_front()  # the admin takes the dead host out of the front's list
    before = routed(cluster, users)
    assert before == {u: ring(cluster).host(u) for u in users}  # the model is nginx's
    mover = student_on(cluster, "mh-3", then="mh-4")
    marker = f"# before mh-4 {secrets.token_hex(4)}"

    async def open_and_save() -> None:
        async with session(cluster) as http:
            _, location = await launch(http, mover)
            await save(http, location, marker)

    asyncio.run(open_and_save())
    assert running(cluster, user_for(mover)) == ["mh-3"]
    # The student stops working (their server stops; the lock goes with it).
    cluster.hosts["mh-3"].nbunits("student", "stop", "demo", user_for(mover))

    cluster.add_host("mh-4", ADDRESSES["mh-4"])
    cluster.install_front()
    after = routed(cluster, users)
    moved = {u for u in users if after[u] != before[u]}
    predicted = {u for u in users if ring(cluster).host(u) != before[u]}
    assert moved == predicted, (len(moved), len(predicted), sorted(moved ^ predicted)[:5],
                                {u: (before[u], after[u]) for u in sorted(moved ^ predicted)[:5]})
    assert all(after[u] == "127.0.1.4:80" for u in moved)
    # About 1/(N+1) (N = 2 hosts left before): at most 1/N; nobody moves between old hosts.
    assert 0 < len(moved) <= len(users) / (len(cluster.hosts) - 1)

    async def next_click() -> dict:
        async with session(cluster) as http:
            _, location = await launch(http, mover)
            return await contents(http, location)

    assert last_cell(asyncio.run(next_click())) == marker
    assert running(cluster, user_for(mover)) == ["mh-4"]
    print(json.dumps({"probed": len(users), "moved": len(moved)}))


def test_with_no_host_answering_the_front_says_so_in_the_browser_s_language(
        cluster: Cluster) -> None:
    """Every host gone (here: the front's list names a closed port only): the front's
    own page, which retries by itself, in the language the browser names first."""
    assert cluster.front is not None
    cluster.front.run(NBUNITS, "install", "--front=127.0.0.1:9")
    try:
        async def ask(language: str) -> tuple[int, str, str]:
            async with session(cluster) as http:
                async with http.get(f"/ipythonExercice/demo/welcome.ipynb/{secrets.token_hex(16)}",
                                    headers={"Accept-Language": language},
                                    allow_redirects=False) as resp:
                    return resp.status, resp.headers.get("Retry-After", ""), await resp.text()
        deadline = time.monotonic() + 30  # nginx's old workers finish what they have
        while asyncio.run(ask("en"))[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        for language, expected in (("fr-FR,fr;q=0.9,en;q=0.8", "fr"), ("en-US", "en"),
                                   ("de", "en")):
            status, retry, page = asyncio.run(ask(language))
            assert status == 503 and retry == "10", (status, page[:300])
            assert f'<html lang="{expected}">' in page, page[:300]
            assert f"<title>{i18n.html(expected, 'unavailable.title')}</title>" in page
    finally:
        cluster.install_front()


def test_the_front_s_nginx_and_the_lock_unit_pass_the_security_checks(cluster: Cluster) -> None:
    from .test_security import RECORD, SCORE_RE, accepted

    assert cluster.front is not None
    out = cluster.front.run("/opt/nbunits/src/.venv/bin/python", "-m", "gixy", "-f", "json",
                            "/etc/nginx/nginx.conf", check=False)
    issues = json.loads(out.stdout or "null")
    assert isinstance(issues, list), f"gixy failed: {out.stderr[-2000:]}"
    assert not [i for i in issues if not accepted(i)], issues
    assert "File not found" not in out.stderr, out.stderr

    host = next(iter(cluster.hosts.values()))
    rated = host.box.run("systemd-analyze", "security", "--no-pager",
                         f"nbunits-demo-lock@{user_for('anyone')}.service", check=False).stdout
    score = SCORE_RE.search(rated)
    assert score, rated[-2000:]
    recorded = json.loads(RECORD.read_text())["course/nbunits-@COURSE@-lock@.service"]
    assert float(score.group(1)) <= recorded, rated
