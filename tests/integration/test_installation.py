"""What `nbunits install` and `nbunits course add` leave on a real systemd."""

from __future__ import annotations

import asyncio
import secrets

from nbunits.core.names import user_for
from testbed.browser import open_exercise

from .conftest import SERVER, SHARED_IN_BOX, Nbunits, client


def test_units_and_nginx_config_verify(nb: Nbunits) -> None:
    async def provisioned_user() -> str:
        async with client(nb) as session:
            return (await open_exercise(session, "demo", "welcome.ipynb", "verify-student")).user

    user = asyncio.run(provisioned_user())
    # verify takes files; per-course templates are checked as an instance for a real user.
    nb.box.run("mkdir", "-p", "/run/nbunits-verify")
    paths = [f"/etc/systemd/system/nbunits-{name}" for name in
             ("dispatcher.socket", "dispatcher.service", "helper.socket", "helper.service",
              "refresh-keys.service", "refresh-keys.timer", "unload.service", "unload.timer")]
    for template in ("nbunits-demo@.socket", "nbunits-demo@.service", "nbunits-demo-proxy@.service",
                     "nbunits-demo-jupyter@.socket"):
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


def test_the_dispatcher_loads_none_of_the_helpers_modules(nb: Nbunits) -> None:
    """The wall between the two: the dispatcher's code, run as the dispatcher runs it
    (its user, its venv, the installed checkout), imports protocol.py and no module
    that acts as root, nor nbformat/jsonschema that only those need."""
    script = ("import sys, nbunits.dispatcher.__main__, nbunits.dispatcher.app; "
              "print(' '.join(sorted(sys.modules)))")
    loaded = nb.box.run("systemd-run", "--wait", "--pipe", "--quiet", "-p", "User=nbunits",
                        "/opt/nbunits/venv/bin/python3", "-c", script).stdout.split()
    assert "nbunits.core.protocol" in loaded and "aiohttp" in loaded
    privileged = {"nbunits.helper.service", "nbunits.helper.provision", "nbunits.helper.copies", "nbunits.helper.users",
                  "nbunits.helper.notebooks", "nbunits.admin.courses", "nbformat", "jsonschema"}
    assert privileged.isdisjoint(loaded)


def test_course_units_are_generated_from_the_course_settings(nb: Nbunits) -> None:
    text = nb.box.systemctl("cat", f"nbunits-demo@{user_for('cat-student')}.service").stdout
    assert "/run/systemd/generator/nbunits-demo@.service" in text
    assert "MemoryMax=1G" in text and "Slice=nbunits-demo.slice" in text
    assert "# Image: localhost/nbunits/jupyter:latest" in text, "the admin sees which image"


def test_journal_has_course_and_student_fields(nb: Nbunits) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> str:
        async with client(nb) as session:
            return (await open_exercise(session, "demo", "week1/loops.ipynb", student)).user

    user = asyncio.run(scenario())
    lines = nb.box.run("journalctl", "--no-pager", "-o", "cat", "COURSE=demo",
                       f"STUDENT={user}").stdout
    assert "opening week1/loops.ipynb" in lines
    unit_log = nb.box.run("journalctl", "--namespace=nbunits", "--no-pager", "-o", "cat",
                          "-u", f"nbunits-demo@{user}.service").stdout
    assert "Jupyter Server" in unit_log  # the container's output lands under its unit
    # ... in the students' journal namespace, not the system's (test_walls.py), and
    # there in one file, not one per student (8 MB each; units/journald/).
    assert "Jupyter Server" not in nb.box.run("journalctl", "--no-pager", "-o", "cat", "-u",
                                              f"nbunits-demo@{user}.service").stdout
    uid = nb.uid(user)
    files = nb.box.run("sh", "-c", "ls /var/log/journal/*/ /run/log/journal/*/ 2>/dev/null || true").stdout
    assert "system.journal" in files and f"user-{uid}" not in files, files
    assert nb.box.run("journalctl", "--namespace=nbunits", "--no-pager", "-o", "cat",
                      "--system", f"_UID={uid}", "-u", f"nbunits-demo@{user}.service").stdout


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


def test_install_refuses_server_settings_that_cannot_work_and_changes_nothing(nb: Nbunits) -> None:
    ca = nb.site.ca
    assert ca is not None
    other = ca.issue("other.mooc.test")
    watched = ["/etc/nbunits/nbunits.toml", "/etc/nginx/sites-enabled/nbunits",
               "/etc/nginx/conf.d/nbunits.conf", "/etc/nginx/snippets/nbunits-locations.conf"]
    before = {path: nb.box.read_file(path) for path in watched}
    cert = f"{SHARED_IN_BOX}/tls/{SERVER}"
    cases = [
        (["--server-name", "bad name;"], "invalid server settings"),
        (["--server-name", SERVER, "--trusted-proxy", "10.0.0.1; allow all"], "trusted proxy"),
        # A certificate for another name, and a key of another certificate.
        (["--server-name", SERVER, "--tls-cert", f"{SHARED_IN_BOX}/tls/{other.cert.name}",
          "--tls-key", f"{SHARED_IN_BOX}/tls/{other.key.name}"], "is not valid for notebooks"),
        (["--server-name", SERVER, "--tls-cert", cert + ".pem",
          "--tls-key", f"{SHARED_IN_BOX}/tls/{other.key.name}"], "is not the key of"),
        (["--server-name", SERVER, "--tls-cert", "/nonexistent.pem", "--tls-key", cert + ".key"],
         "cannot read /nonexistent.pem"),
        (["--listen", "80", "--listen", "80"], "nginx refuses the new configuration"),
    ]
    for args, message in cases:
        result = nb.nbunits("install", *args, check=False)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert {path: nb.box.read_file(path) for path in watched} == before, args
    nb.box.run("nginx", "-t", "-q")


def test_install_keeps_students_starts_off_the_userdb_listing(nb: Nbunits) -> None:
    # Debian's `group: files systemd`, without systemd: initgroups() for a unit's
    # User= no longer lists every file in /etc/userdb (nbunits/admin/nsswitch.py).
    conf = nb.box.read_file("/etc/nsswitch.conf")
    assert "\ninitgroups:     files\n" in conf, conf
    assert "\ngroup:          files systemd\n" in conf  # lookups still see students' groups
    async def provisioned_user() -> str:
        async with client(nb) as session:
            return (await open_exercise(session, "demo", "welcome.ipynb", "groups-student")).user

    user = asyncio.run(provisioned_user())  # its units ran with User= under that line
    uid = nb.uid(user)
    assert nb.box.run("getent", "initgroups", user).stdout.split() == [user]  # none extra
    assert nb.box.run("id", "-G", user).stdout.split() == [str(uid)]
    assert nb.box.run("id", "-G", "root").stdout.split() == ["0"]
    # The student's own units look groups up without nss-systemd (rootless podman
    # asks for a group named as the student: libsubid), users still with it.
    pid = nb.show(f"nbunits-demo@{user}.service", "MainPID")["MainPID"]
    assert pid != "0"
    inside = ("nsenter", f"--target={pid}", "--mount", "--", "getent")
    assert nb.box.run(*inside, "group", user, check=False).returncode == 2
    assert nb.box.run("getent", "group", user).stdout.startswith(f"{user}:")
    assert nb.box.run(*inside, "passwd", user).stdout.startswith(f"{user}:")
