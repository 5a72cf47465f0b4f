"""Several hosts behind a front: hand-off tokens, the lock, the front's nginx files."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nbunits.admin import nginx
from nbunits.core.config import CourseConfig, Server, Settings, server_from_toml
from nbunits.core.errors import NbunitsError
from nbunits.core.names import Target, parse_unit, user_for
from nbunits.core.outcomes import SCORE_SCOPE, Destination
from nbunits.core.protocol import MAX_REQUEST_BYTES
from nbunits.dispatcher import handoff
from nbunits.dispatcher.app import create_app
from nbunits.helper import hostlock

from .test_dispatcher import PREFIX, FakeHelper, opened

SECRET = b"k" * 64
TARGET = Target("demo", "student-1", "week1/loops.ipynb")


def test_a_handoff_opens_what_the_launch_proved_for_the_path_s_student():
    path_and_query = handoff.url(SECRET, handoff.Handoff(TARGET, reset=True), now=1000)
    path, _, query = path_and_query.partition("?t=")
    assert path == f"/_nbunits/handoff/demo/{TARGET.user}"
    given = handoff.verify(SECRET, "demo", TARGET.user, query, now=1010)
    assert given == handoff.Handoff(TARGET, reset=True)


WHERE = Destination("1.3", "https://lms.test/li/3", "sub-1", issuer="https://lms.test",
                    client_id="c", deployment_id="1", scopes=(SCORE_SCOPE,))


def test_a_handoff_carries_the_launch_s_locale_and_where_its_score_goes():
    carried = handoff.Handoff(TARGET, False, "fr-FR", WHERE)
    token = handoff.sign(SECRET, carried, now=1000)
    assert handoff.verify(SECRET, "demo", TARGET.user, token, now=1010) == carried
    # A token of the release before (five fields) is honoured during an upgrade.
    payload = base64.urlsafe_b64encode(json.dumps(
        ["demo", TARGET.student, TARGET.notebook, True, 1060]).encode()).rstrip(b"=").decode()
    old = f"{payload}.{handoff._mac(SECRET, payload)}"
    assert handoff.verify(SECRET, "demo", TARGET.user, old, now=1010) == \
        handoff.Handoff(TARGET, reset=True)
    # A destination too long for a URL is left out; the launch still opens.
    huge = Destination("1.3", "https://lms.test/" + "a" * 2000, "s" * 1000, issuer="i" * 1000,
                       client_id="c" * 1000, scopes=("x" * 1000,) * 5)
    token = handoff.sign(SECRET, handoff.Handoff(TARGET, False, "fr", huge), now=1000)
    assert handoff.verify(SECRET, "demo", TARGET.user, token, now=1010) == \
        handoff.Handoff(TARGET, False, "fr")


def test_a_forged_altered_expired_or_moved_handoff_is_refused():
    token = handoff.sign(SECRET, handoff.Handoff(TARGET), now=1000)
    payload, mac = token.split(".")
    other = Target("demo", "student-2", TARGET.notebook)
    cases = {
        "forged": (handoff.sign(b"x" * 64, handoff.Handoff(TARGET), now=1000), TARGET.user, 1000),
        "altered": (handoff.sign(SECRET, handoff.Handoff(other), now=1000).split(".")[0]
                    + "." + mac, TARGET.user, 1000),
        "expired": (token, TARGET.user, 1000 + handoff.LIFETIME + 1),
        "another student's path": (token, other.user, 1000),
    }
    for name, (given, user, now) in cases.items():
        with pytest.raises(NbunitsError) as refused:
            handoff.verify(SECRET, "demo", user, given, now=now)
        assert refused.value.code == "forbidden", name
    with pytest.raises(NbunitsError) as refused:
        handoff.verify(SECRET, "other", TARGET.user, token, now=1000)
    assert refused.value.code == "forbidden"
    for bad in ("", "a.b", payload + "." + mac[:-1], token + "\n"):
        with pytest.raises(NbunitsError) as refused:
            handoff.verify(SECRET, "demo", TARGET.user, bad, now=1000)
        assert refused.value.code == "bad_request"


def test_a_short_hosts_secret_is_refused(tmp_path: Path):
    (tmp_path / "s").write_text("short\n")
    with pytest.raises(NbunitsError):
        handoff.read_secret(tmp_path / "s")


def test_one_lock_per_student_and_course_names_its_holder(tmp_path: Path):
    fd = hostlock.lock("demo", TARGET.user, str(tmp_path))
    with pytest.raises(BlockingIOError) as held:
        hostlock.lock("demo", TARGET.user, str(tmp_path))
    assert os.uname().nodename in held.value.strerror
    other = hostlock.lock("other", TARGET.user, str(tmp_path))  # another course
    os.close(fd)
    os.close(other)
    os.close(hostlock.lock("demo", TARGET.user, str(tmp_path)))  # released with its holder
    with pytest.raises(NbunitsError):
        hostlock.lock("demo", "../../etc", str(tmp_path))


def test_lock_units_are_not_taken_for_courses():
    parsed = parse_unit(f"nbunits-demo-lock@{TARGET.user}.service")
    assert parsed is not None and parsed.kind == "lock" and parsed.units.course == "demo"


def test_multi_host_and_hosts_are_server_settings(tmp_path: Path):
    server = server_from_toml(tmp_path, {"multi_host": True, "hosts": ["10.0.0.1:80", "h2"]})
    assert server.multi_host and server.hosts == ("10.0.0.1:80", "h2")
    with pytest.raises(NbunitsError):
        server_from_toml(tmp_path, {"multi_host": "yes"})
    with pytest.raises(NbunitsError):
        Server(hosts=("a b",))


def _blocks(text: str) -> dict[str, str]:
    """nginx's top-level blocks by their first line, comments dropped."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
    blocks, current = {}, []
    for line in lines:
        if current or line.endswith("{"):
            current.append(line)
            if line == "}":
                blocks[current[0]] = "\n".join(current)
                current = []
    return blocks


def test_the_front_hashes_by_student_and_keeps_a_host_s_maps():
    server = Server(names=("notebooks.example.org",), trusted_proxies=("10.0.0.9",),
                    hosts=("10.0.1.1:80", "10.0.1.2:80"))
    front, host = _blocks(nginx.front_conf(server)), _blocks(nginx.http_conf(server))
    for first in ("geo $realip_remote_addr $nbunits_from_proxy {", "map $uri $nbunits_log_uri {",
                  'map "$nbunits_from_proxy:$http_x_forwarded_proto" $nbunits_scheme {',
                  "map $nbunits_scheme $nbunits_to_https {", "map $nbunits_scheme $nbunits_hsts {"):
        assert front[first] == host[first], first
    upstream = front["upstream nbunits_hosts {"]
    assert "hash $nbunits_student consistent;" in upstream
    assert "server 10.0.1.2:80 max_fails=1 fail_timeout=10s;" in upstream
    student = re.search(r'"~(\^/.*?)" \$nbunits_front_user', front["map $uri $nbunits_student {"])
    assert student is not None
    pattern = re.compile(student.group(1).replace("(?<", "(?P<"))
    for path in (f"/nb/demo/{TARGET.user}/cap/", f"/_nbunits/handoff/demo/{TARGET.user}",
                 f"/_nbunits/student/demo/{TARGET.user}/cap/info", f"/staff/demo/{TARGET.user}/a"):
        assert pattern.match(path)["nbunits_front_user"] == TARGET.user, path
    for path in ("/lti/1.1/launch", f"/ipythonExercice/demo/a.ipynb/{TARGET.student}",
                 f"/nb/demo/{TARGET.user}x/cap/"):
        assert not pattern.match(path), path
    site = nginx.front_site_conf(server, ["80"], [])
    assert "proxy_pass http://nbunits_hosts;" in site and "set_real_ip_from 10.0.0.9;" in site


def test_whether_a_student_runs_somewhere_is_read_from_the_lock(tmp_path: Path):
    assert not hostlock.held("demo", TARGET.user, str(tmp_path))
    fd = hostlock.lock("demo", TARGET.user, str(tmp_path))
    assert hostlock.held("demo", TARGET.user, str(tmp_path))
    os.close(fd)
    assert not hostlock.held("demo", TARGET.user, str(tmp_path))


def test_one_of_several_hosts_hands_a_launch_over_and_opens_only_a_valid_handoff(tmp_path):
    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state",
                        run_dir=tmp_path / "run", server=Server(multi_host=True))
    settings.courses_conf_dir.mkdir(parents=True)
    settings.run_dir.mkdir()
    settings.course_file("demo").write_text(
        CourseConfig(name="demo", source=tmp_path / "masters", legacy="open").to_toml())
    settings.hosts_secret.write_text(SECRET.decode() + "\n")
    helper = FakeHelper(opened(True))
    target = Target("demo", "s1", "w1/a b.ipynb")

    async def main() -> None:
        server = await asyncio.start_unix_server(helper.serve, str(settings.helper_socket),
                                                 limit=MAX_REQUEST_BYTES)
        async with server, TestClient(TestServer(create_app(settings))) as client:
            resp = await client.get("/ipythonExercice/demo/w1/a b.ipynb/s1?reset=1",
                                    allow_redirects=False)
            assert resp.status == 303 and helper.requests == []  # nothing made here
            location = resp.headers["Location"]
            assert location.startswith(f"/_nbunits/handoff/demo/{target.user}?t=")
            resp = await client.get(location, allow_redirects=False)
            assert resp.status == 302 and resp.headers["Location"].startswith(PREFIX)
            assert helper.requests == [{"action": "open", "course": "demo", "student": "s1",
                                        "notebook": "w1/a b.ipynb", "reset": True, "locale": "", "language": "en"}]
            token = location.split("?t=")[1]
            other = user_for("s2")
            for path, status in ((f"/_nbunits/handoff/demo/{other}?t={token}", 403),
                                 (f"/_nbunits/handoff/demo/{target.user}?t=x{token}", 403),
                                 (f"/_nbunits/handoff/demo/{target.user}", 400),
                                 (f"/_nbunits/handoff/demo/{target.user}?t=a&t=b", 400),
                                 ("/_nbunits/handoff/demo/notauser?t=x", 400)):
                resp = await client.get(path, allow_redirects=False)
                assert resp.status == status, (path, resp.status)
            assert len(helper.requests) == 1
            # An LTI launch's locale and score destination reach the student's host.
            carried = handoff.url(SECRET, handoff.Handoff(target, False, "fr", WHERE))
            resp = await client.get(carried, allow_redirects=False)
            assert resp.status == 302, await resp.text()
            assert (helper.requests[-1]["locale"], helper.requests[-1]["destination"]) == \
                ("fr", WHERE.to_json())

    asyncio.run(main())


def test_a_single_host_has_no_handoff_path(tmp_path):
    async def main() -> None:
        settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state")
        async with TestClient(TestServer(create_app(settings))) as client:
            resp = await client.get(f"/_nbunits/handoff/demo/{TARGET.user}?t=x")
            assert resp.status == 404

    asyncio.run(main())


def test_revoke_is_refused_on_a_host_that_does_not_run_the_student(tmp_path: Path, monkeypatch):
    """The host that runs the server holds the old link as its token: only it can
    stop that server, so another host changes nothing and says where it runs."""
    import fcntl

    from nbunits.admin import revocation
    from nbunits.core.names import StudentUnits

    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state",
                        server=Server(names=("n.example.org",), multi_host=True))
    units = StudentUnits("demo", TARGET.user)
    monkeypatch.setattr(revocation, "load_course",
                        lambda _s, name: CourseConfig(name=name, source=Path("/srv")))
    settings.token_file(units).parent.mkdir(parents=True)
    settings.token_file(units).write_text("")
    (settings.locks_dir / "demo").mkdir(parents=True)
    fd = os.open(settings.locks_dir / "demo" / TARGET.user, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"host-2 since 1\n")
    try:
        with pytest.raises(NbunitsError) as refused:
            revocation.revoke(settings, "demo", TARGET.user, tmp_path / "no-nginx" / "map")
        assert refused.value.code == "runs_elsewhere" and "host-2" in str(refused.value)
        assert hostlock.holder("demo", TARGET.user, str(settings.locks_dir)) == "host-2 since 1"
    finally:
        os.close(fd)
    assert hostlock.holder("demo", TARGET.user, str(settings.locks_dir)) is None
    tokens = settings.token_file(units).parent
    assert [p.name for p in tokens.iterdir()] == [settings.token_file(units).name], \
        "nothing was changed"
    assert settings.token_file(units).read_text() == ""


def test_the_lock_step_costs_a_short_python_start():
    """docs/admin.md ("One server per student at a time"): on a --multi-host host each
    server start first runs nbunits.helper.hostlock, a Python start on the standard
    library and nbunits.core: measured here, 5 times, in CPU seconds."""
    cpu = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", "import nbunits.helper.hostlock"], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    print(f"the lock step's Python start: {min(cpu):.3f}-{max(cpu):.3f} CPU s")
    assert statistics.median(cpu) < 0.15, cpu  # a start takes 0.6-0.9 CPU s
