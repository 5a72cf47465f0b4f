"""What `nbunits install` and `nbunits course add` leave on a real systemd."""

from __future__ import annotations

import asyncio
import secrets

from nbunits.names import user_for
from tests.browser import open_exercise

from .conftest import Nbunits, client


def test_units_and_nginx_config_verify(nb: Nbunits) -> None:
    async def provisioned_user() -> str:
        async with client(nb) as session:
            return (await open_exercise(session, "demo", "welcome.ipynb", "verify-student")).user

    user = asyncio.run(provisioned_user())
    # verify takes files; per-course templates are checked as an instance for a real user.
    nb.box.run("mkdir", "-p", "/run/nbunits-verify")
    paths = [f"/etc/systemd/system/nbunits-{name}" for name in
             ("dispatcher.socket", "dispatcher.service", "helper.socket", "helper.service",
              "refresh-keys.service", "refresh-keys.timer")]
    for template in ("nbunits-demo@.socket", "nbunits-demo@.service", "nbunits-demo-proxy@.service"):
        instance = "/run/nbunits-verify/" + template.replace("@.", f"@{user}.")
        nb.box.run("cp", f"/run/systemd/generator/{template}", instance)
        paths.append(instance)
    result = nb.box.run("systemd-analyze", "verify", *paths, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr
    nb.box.run("nginx", "-t", "-q")


def test_dispatcher_is_unprivileged_socket_activated_and_notify(nb: Nbunits) -> None:
    props = nb.show("nbunits-dispatcher.service", "User", "Type", "TriggeredBy",
                    "NoNewPrivileges", "ProtectSystem")
    assert props == {"User": "nbunits", "Type": "notify", "TriggeredBy": "nbunits-dispatcher.socket",
                     "NoNewPrivileges": "yes", "ProtectSystem": "strict"}
    sockets = nb.box.run("stat", "-c", "%U:%G %a", "/run/nbunits/dispatcher.sock",
                         "/run/nbunits/helper.sock").stdout.split("\n")
    assert sockets[0] == "root:www-data 660"
    assert sockets[1] == "root:nbunits 660"


def test_course_units_are_generated_from_the_course_settings(nb: Nbunits) -> None:
    text = nb.box.systemctl("cat", f"nbunits-demo@{user_for('cat-student')}.service").stdout
    assert "/run/systemd/generator/nbunits-demo@.service" in text
    assert "MemoryMax=1G" in text and "Slice=nbunits-demo.slice" in text
    assert "localhost/nbunits/jupyter:latest" in text


def test_journal_has_course_and_student_fields(nb: Nbunits) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> str:
        async with client(nb) as session:
            return (await open_exercise(session, "demo", "week1/loops.ipynb", student)).user

    user = asyncio.run(scenario())
    lines = nb.box.run("journalctl", "--no-pager", "-o", "cat", "COURSE=demo",
                       f"STUDENT={user}").stdout
    assert "opening week1/loops.ipynb" in lines
    unit_log = nb.box.run("journalctl", "--no-pager", "-o", "cat",
                          "-u", f"nbunits-demo@{user}.service").stdout
    assert "Jupyter Server" in unit_log  # the container's output lands under its unit


def test_course_add_refuses_bad_input_and_changes_nothing(nb: Nbunits) -> None:
    before = nb.nbunits("course", "list").stdout
    bad = [
        ("course", "add", "Bad:Name", "--dir", "/opt/nbunits/src/examples/demo"),
        ("course", "add", "other", "--dir", "/nonexistent"),
        ("course", "add", "demo", "--dir", "/opt/nbunits/src/examples/demo"),
    ]
    for args in bad:
        result = nb.nbunits(*args, check=False)
        assert result.returncode != 0
        assert "nbunits: error:" in result.stderr and "Traceback" not in result.stderr
    assert nb.nbunits("course", "list").stdout == before
