"""Only the right student reaches a notebook: students are isolated from each other.

A hostile student runs code in their own kernel. From there (and even as their own
Linux user outside the container, should they ever escape it) they must not read
another student's files, connect to another student's sockets, or see more of the
host's /run/nbunits than their own directory. And a course's kernels get no network
but loopback unless the course asks for slirp4netns (outbound only), never the host's.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import secrets
import stat
from dataclasses import dataclass

import pytest

from nbunits.core.names import user_for
from testbed.browser import Opened, execute, open_exercise, start_kernel

from .conftest import Nbunits, client


@dataclass(frozen=True)
class Pair:
    a: Opened  # the hostile student
    b: Opened  # the victim
    kernel: str  # a kernel of a's


@pytest.fixture(scope="module")
def pair(nb: Nbunits) -> Pair:
    async def launch() -> Pair:
        async with client(nb) as session:
            a = await open_exercise(session, "demo", "welcome.ipynb", secrets.token_hex(16))
            b = await open_exercise(session, "demo", "welcome.ipynb", secrets.token_hex(16))
            return Pair(a, b, await start_kernel(session, a))

    return asyncio.run(launch())


def run_in_kernel(nb: Nbunits, pair: Pair, code: str) -> str:
    async def go() -> str:
        async with client(nb) as session:
            return await execute(session, pair.a, pair.kernel, code)

    return asyncio.run(go())


# Each probe is an expression; it returns what the attempt got: the error's class
# name when it failed, "OK ..." when it succeeded.
PROBE = """
import os, socket, json
def attempt(f):
    try:
        return "OK " + repr(f())[:200]
    except Exception as exc:
        return type(exc).__name__
def connect(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
    finally:
        s.close()
    return path
"""


def test_homes_are_private_and_owned_by_their_student(nb: Nbunits, pair: Pair) -> None:
    for opened in (pair.a, pair.b):
        st = os.stat(nb.home / opened.user)  # /home in the box is this host folder
        assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
        assert st.st_uid == nb.uid(opened.user)


def test_front_sockets_only_for_nginx(nb: Nbunits, pair: Pair) -> None:
    for opened in (pair.a, pair.b):
        path = f"/run/nbunits/front/demo/{opened.user}.sock"
        mode, owner, group = nb.box.run("stat", "-c", "%a %U %G", path).stdout.split()
        assert (mode, owner, group) == ("660", "root", "www-data"), path


def test_a_kernel_cannot_reach_another_student(nb: Nbunits, pair: Pair) -> None:
    b = pair.b.user
    targets = {
        "home": f"/home/{b}/demo/welcome.ipynb",
        "front": f"/run/nbunits/front/demo/{b}.sock",
        "jupyter": f"/run/nbunits/jupyter/demo/{b}.sock",
    }
    code = PROBE + f"""
t = {targets!r}
json.dumps({{
    "home": attempt(lambda: open(t["home"]).read()),
    "home_dir": attempt(lambda: os.listdir("/home")),
    "front": attempt(lambda: connect(t["front"])),
    "jupyter": attempt(lambda: connect(t["jupyter"])),
    "run": attempt(lambda: os.listdir("/run/nbunits")),
    "own_run": attempt(lambda: os.listdir("/run/jupyter")),
    # What of the host's /run is mounted into the container (mountinfo's root field of
    # that file system): podman's own files and this start's settings; not writable.
    "host_run": attempt(lambda: sorted(set((f[3].split("/")[2], f[5].split(",")[0]) for f in
                                           (line.split() for line in open("/proc/self/mountinfo"))
                                           if f[3].startswith("/nbunits/")))),
    "tokens": attempt(lambda: os.listdir("/var/lib/nbunits")),
}})
"""
    got = json.loads(ast.literal_eval(run_in_kernel(nb, pair, code)))
    print(got)
    for key in ("home", "front", "jupyter", "run", "tokens"):
        # Not there at all in the container (a probe's own bug would show another error).
        assert got[key] == "FileNotFoundError", f"{key}: a kernel got {got[key]}"
    # /home in the container is its own (the student's work), not the host's.
    assert b not in got["home_dir"]
    # Jupyter's socket is systemd's, passed in: no folder for it in the container, and
    # of the host's /run only this start's settings file, read-only.
    assert got["own_run"] == "FileNotFoundError", got["own_run"]
    assert got["host_run"] == "OK [('podman', 'ro'), ('settings', 'ro')]", got["host_run"]


PRIVILEGES = PROBE + """
import subprocess
def fields(text):
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())
            if k in ("NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Uid")}
def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True)
# A file of its own that its mode forbids: only CAP_DAC_OVERRIDE would read it.
os.makedirs("/tmp/p", exist_ok=True)
open("/tmp/p/locked", "w").write("x")
os.chmod("/tmp/p/locked", 0)
setuid = sorted(os.path.join(d, f) for d in ("/usr/bin", "/usr/sbin", "/bin", "/sbin")
                if os.path.isdir(d) for f in os.listdir(d)
                if os.stat(os.path.join(d, f)).st_mode & 0o4000)
json.dumps({
    "kernel": fields(open("/proc/self/status").read()),
    # What a child gets after exec, and a child exec'd through a setuid-root program.
    "child": fields(run("cat", "/proc/self/status").stdout),
    "setuid": setuid,
    "mount": run("mount", "-t", "tmpfs", "none", "/tmp/p").returncode,
    "read_locked": attempt(lambda: open("/tmp/p/locked").read()),
    "unshare": run("unshare", "-r", "true").returncode,
})
"""


def test_a_kernel_cannot_gain_privileges(nb: Nbunits, pair: Pair) -> None:
    """A kernel runs as the container's root, which is the student's own uid on the
    host: no-new-privileges and no capability at all, not even in its bounding set,
    so no exec (a setuid-root program included) can gain one; what needs one fails."""
    got = json.loads(ast.literal_eval(run_in_kernel(nb, pair, PRIVILEGES)))
    none = "0000000000000000"
    for who in ("kernel", "child"):
        assert got[who]["NoNewPrivs"] == "1", got
        caps = {k: got[who][k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
        assert set(caps.values()) == {none}, (who, caps)
    assert got["setuid"], "the image has setuid-root programs (mount): the exec check needs one"
    assert "/usr/bin/mount" in got["setuid"] or "/bin/mount" in got["setuid"], got["setuid"]
    assert got["mount"] != 0  # setuid-root mount, run as root without capabilities
    assert got["read_locked"] == "PermissionError", got["read_locked"]  # no DAC override
    assert got["unshare"] != 0  # no user namespace (the course does not allow them)


def test_the_student_user_itself_cannot_reach_another_student(nb: Nbunits, pair: Pair) -> None:
    """Even outside the container (as the student's own uid on the host)."""
    b = pair.b.user
    script = PROBE + f"""
results = {{
    "home": attempt(lambda: open("/home/{b}/demo/welcome.ipynb").read()),
    "home_dir": attempt(lambda: os.listdir("/home/{b}")),
    "front": attempt(lambda: connect("/run/nbunits/front/demo/{b}.sock")),
    "jupyter": attempt(lambda: connect("/run/nbunits/jupyter/demo/{b}.sock")),
    "jupyter_dir": attempt(lambda: os.listdir("/run/nbunits/jupyter/demo")),
    "podman_dir": attempt(lambda: os.listdir("/run/nbunits/podman/demo/{b}")),
    "helper": attempt(lambda: connect("/run/nbunits/helper.sock")),
    "tokens": attempt(lambda: os.listdir("/var/lib/nbunits/tokens/demo")),
    "students": attempt(lambda: os.listdir("/var/lib/nbunits/students")),
}}
print(json.dumps(results))
"""
    out = nb.box.run("python3", "-c", script, user=pair.a.user).stdout
    got = json.loads(out)
    print(got)
    reached = {key: value for key, value in got.items() if value != "PermissionError"}
    assert not reached, f"student {pair.a.user} got {reached}, not PermissionError"


def test_a_network_none_course_has_only_loopback(nb: Nbunits, pair: Pair) -> None:
    course = nb.box.read_file("/etc/nbunits/courses/demo.toml")
    assert "slirp4netns" not in course, "the demo course has the default network, none"
    got = run_in_kernel(nb, pair, "import socket; sorted(n for _, n in socket.if_nameindex())")
    assert got == "['lo']", got
    code = PROBE + """
attempt(lambda: socket.create_connection(("10.0.2.2", 80), timeout=3))
"""
    assert not ast.literal_eval(run_in_kernel(nb, pair, code)).startswith("OK")


@pytest.mark.parametrize("network", ["host", "slirp4netns:allow_host_loopback=true",
                                     "container:nbunits-demo-x", "ns:/proc/1/ns/net",
                                     "bridge", "pasta", "private", ""])
def test_no_course_can_ask_for_the_hosts_network(nb: Nbunits, network: str) -> None:
    path = "/etc/nbunits/courses/demo.toml"
    before = nb.box.read_file(path)
    result = nb.nbunits("course", "update", "demo", "--network", network, check=False)
    assert result.returncode != 0, f"network={network!r} was accepted"
    assert nb.box.read_file(path) == before


def test_a_slirp4netns_course_gets_its_own_network_not_the_hosts(nb: Nbunits) -> None:
    nb.add_course("netcourse", network="slirp4netns")

    async def scenario() -> tuple[str, str]:
        async with client(nb) as session:
            opened = await open_exercise(session, "netcourse", "welcome.ipynb",
                                         secrets.token_hex(16))
            kernel = await start_kernel(session, opened)
            names = await execute(session, opened, kernel,
                                  "import socket; sorted(n for _, n in socket.if_nameindex())")
            # 10.0.2.2 is slirp4netns' way to the host's loopback: off by default.
            host = await execute(session, opened, kernel, PROBE + """
attempt(lambda: socket.create_connection(("10.0.2.2", 80), timeout=3))
""")
            return names, host

    names, host = asyncio.run(scenario())
    box_interfaces = nb.box.run("ls", "/sys/class/net").stdout.split()
    assert names == "['lo', 'tap0']", names
    assert not set(ast.literal_eval(names)) - {"lo"} & set(box_interfaces), \
        "the container sees the host's interfaces"
    assert not ast.literal_eval(host).startswith("OK"), host


@pytest.mark.parametrize("target", ["victim", "/etc"])
def test_a_students_symlinks_do_not_redirect_their_copies(nb: Nbunits, target: str) -> None:
    """A student points their week1 folder elsewhere, then asks for a fresh copy."""
    attacker_id, victim_id = secrets.token_hex(16), secrets.token_hex(16)

    async def launch(student_id: str, notebook: str, query: str = "") -> tuple[int, str]:
        async with client(nb) as session:
            url = f"/ipythonExercice/demo/{notebook}/{student_id}{query}"
            async with session.get(url, allow_redirects=False) as resp:
                return resp.status, await resp.text()

    assert asyncio.run(launch(attacker_id, "welcome.ipynb"))[0] in (200, 302)
    assert asyncio.run(launch(victim_id, "week1/loops.ipynb"))[0] in (200, 302)
    attacker, victim = user_for(attacker_id), user_for(victim_id)
    where = f"/home/{victim}/demo" if target == "victim" else target
    nb.box.run("sh", "-c", f"rm -rf /home/{attacker}/demo/week1 && "
               f"ln -s {where} /home/{attacker}/demo/week1", user=attacker)
    before = nb.box.run("sh", "-c", f"ls -la --time-style=full-iso {where} /home/{victim}/demo "
                        "| sha256sum").stdout

    for query in ("", "?reset=1"):
        status, page = asyncio.run(launch(attacker_id, "week1/loops.ipynb", query))
        print(target, query, status, page[:120].replace("\n", " "))
        assert status < 500, page[:300]
        assert "Traceback" not in page

    after = nb.box.run("sh", "-c", f"ls -la --time-style=full-iso {where} /home/{victim}/demo "
                       "| sha256sum").stdout
    assert after == before, f"a copy was written through the symlink into {where}"
    assert nb.box.run("test", "-e", "/etc/loops.ipynb", check=False).returncode != 0
