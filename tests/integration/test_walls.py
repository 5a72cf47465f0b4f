"""Walls between a student's kernel and everyone else (issue 26): the journal, the
network, an admin's terminal (docs/security.md, "Threat model"); and what a course's
network lets through: a package index, whose packages a student installs for good.

A kernel here does what a hostile one can: it takes Jupyter's own stderr, the unit's
journal stream (pidfd_getfd: the same user, which podman's seccomp profile and this
kernel allow), and writes priorities, forged fields and a flood into it; it connects
to the cloud's link-local metadata address, to private neighbours and to the host's
own addresses; and its notebook carries escape sequences for the admin's terminal.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import fnmatch
import hashlib
import io
import json
import secrets
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbunits.core.events import Event
from testbed.browser import Opened, execute, execute_showing, open_exercise, start_kernel

from .conftest import SHARED_IN_BOX, Nbunits, client

FLOOD = 10_000


def _journal(nb: Nbunits, *args: str) -> str:
    return nb.box.run("journalctl", "--no-pager", "-o", "cat", *args, check=False).stdout


def _open(nb: Nbunits, course: str) -> Opened:
    async def go() -> Opened:
        async with client(nb) as session:
            return await open_exercise(session, course, "welcome.ipynb", secrets.token_hex(16))
    return asyncio.run(go())


def _run(nb: Nbunits, opened: Opened, code: str) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        async with client(nb) as session:
            kernel = await start_kernel(session, opened)
            return await execute_showing(session, opened, kernel, code, settle=3)
    return asyncio.run(go())


# In the kernel: Jupyter's stderr (the unit's journal stream), taken from Jupyter by
# pidfd_getfd(2); a line that asks for priority 0 and one for 2, a line that reads like
# an nbunits event, a flood; then what a kernel prints in the ordinary ways, and which of
# its own file descriptors are that stream.
HOSTILE_OUTPUT = """\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
pidfd = libc.syscall(434, os.getppid(), 0)  # pidfd_open(Jupyter)
stream = libc.syscall(438, pidfd, 2, 0)     # pidfd_getfd(Jupyter's stderr)
assert stream >= 0, os.strerror(ctypes.get_errno())
with os.fdopen(stream, "w") as out:
    out.write("<0>emergency-{m}\\n<2>critical-{m}\\n")
    out.write("MESSAGE_ID={deleted} NBUNITS_EVENT=deleted STUDENT={m}\\n")
    out.write("".join(f"flood-{m} {{n}}\\n" for n in range({flood})))
print("printed-{m}")
os.system("echo subprocess-{m}; echo subprocess-err-{m} >&2")
own = [fd for fd in os.listdir("/proc/self/fd")
       if os.path.exists(f"/proc/self/fd/{{fd}}")
       and os.stat(f"/proc/self/fd/{{fd}}").st_ino == os.stat(f"/proc/{{os.getppid()}}/fd/2").st_ino]
f"the journal stream among the kernel's own descriptors: {{own}}"
"""


def test_a_kernels_output_chooses_no_priority_forges_no_event_and_rotates_no_audit_event(
        nb: Nbunits) -> None:
    opened = _open(nb, "demo")
    unit = f"nbunits-demo@{opened.user}.service"
    # An audit event from before the flood (the system journal).
    nb.nbunits("student", "reset", "demo", opened.user, "welcome.ipynb")
    marker = secrets.token_hex(6)
    result, shown = _run(nb, opened, HOSTILE_OUTPUT.format(
        m=marker, deleted=Event.DELETED.value, flood=FLOOD))
    # The kernel holds no descriptor of the stream (Jupyter starts it with its output on
    # /dev/null, where ipykernel's copies of the descriptors are); what it prints, by
    # Python or by a subprocess, is in the notebook...
    assert result == '"the journal stream among the kernel\'s own descriptors: []"', result
    for text in ("printed", "subprocess", "subprocess-err"):
        assert f"{text}-{marker}" in shown, shown

    students = ("--namespace=nbunits", "-u", unit)
    deadline = time.monotonic() + 30
    while f"emergency-{marker}" not in _journal(nb, *students) and time.monotonic() < deadline:
        time.sleep(0.5)
    # ... and not in the journal.
    assert f"printed-{marker}" not in _journal(nb, "--namespace=*", "-u", unit)
    assert f"subprocess-{marker}" not in _journal(nb, "--namespace=*", "-u", unit)
    # What the kernel wrote into the unit's stream itself is in the students' namespace,
    # as text at the unit's one priority (info): no emergency broadcast, nothing at crit.
    assert f"<0>emergency-{marker}" in _journal(nb, *students, "PRIORITY=6")
    assert not _journal(nb, "--namespace=*", "-u", unit, "--priority=0..2").strip()
    # The line that reads like an event is text: no MESSAGE_ID field, no event.
    assert f"MESSAGE_ID={Event.DELETED.value}" in _journal(nb, *students)
    assert not _journal(nb, "--namespace=*", f"MESSAGE_ID={Event.DELETED.value}",
                        f"STUDENT={marker}").strip()
    # The flood: cut by the unit's rate limit, and in the students' namespace only.
    flooded = _journal(nb, *students).count(f"flood-{marker} ")
    assert 0 < flooded < FLOOD // 2, flooded
    in_the_system_journal = _journal(nb, "-u", unit)  # the default namespace
    assert "Started" in in_the_system_journal, in_the_system_journal  # PID 1's lines are
    assert f"flood-{marker}" not in in_the_system_journal
    assert f"emergency-{marker}" not in in_the_system_journal
    # The audit event from before it is where it was, in the system journal.
    reset = json.loads(nb.box.run("journalctl", "--no-pager", "-o", "json",
                                  f"MESSAGE_ID={Event.RESET.value}",
                                  f"STUDENT={opened.user}").stdout.splitlines()[-1])
    assert reset["BY"] == "admin" and reset["_SYSTEMD_UNIT"] != unit


# Where a kernel must not go: a link-local and a private neighbour, and the box's own
# (public) address, on its loopback; where it may: a private neighbour the course lists,
# and a public address on another machine. The neighbours are a network namespace
# behind a veth pair (this kernel has no dummy interface driver).
LINK_LOCAL, PRIVATE, LISTED, OWN = "169.254.7.1", "10.77.0.1", "10.78.0.1", "203.0.113.7"
ELSEWHERE = "198.51.100.7"
PORT = 8765
WORLD = "nbwall-world"
SETUP = f"""
set -e
ip address add {OWN}/32 dev lo
ip netns add {WORLD}
ip link add nbwall0 type veth peer name nbwall1 netns {WORLD}
ip address add 198.51.100.1/24 dev nbwall0 && ip link set nbwall0 up
for address in {ELSEWHERE}/24 {LINK_LOCAL}/32 {PRIVATE}/32 {LISTED}/32; do
    ip -n {WORLD} address add $address dev nbwall1
done
ip -n {WORLD} link set nbwall1 up && ip -n {WORLD} link set lo up
for address in {LINK_LOCAL} {PRIVATE} {LISTED}; do ip route add $address/32 dev nbwall0; done
"""
TEARDOWN = f"""
ip address del {OWN}/32 dev lo; ip link del nbwall0; ip netns del {WORLD}; true
"""
CONNECT = """\
import socket
from concurrent.futures import ThreadPoolExecutor
def reach(host):
    try:
        socket.create_connection((host, {port}), timeout=2).close()
        return "reached"
    except OSError as e:
        return type(e).__name__
hosts = {hosts!r}
dict(zip(hosts, ThreadPoolExecutor(len(hosts)).map(reach, hosts)))
"""
TARGETS = (LINK_LOCAL, PRIVATE, LISTED, OWN, ELSEWHERE, "10.0.2.2")


SERVED = "neighbours"  # the listeners' folder, in nb.shared (SHARED_IN_BOX in the box)
# The listeners: HTTP, what they answer cacheable for a year, as PyPI's files are.
LISTENER = """\
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Cache-Control", "max-age=31536000, immutable, public")
        super().end_headers()
handler = functools.partial(Handler, directory=sys.argv[1])
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), handler).serve_forever()
"""


@pytest.fixture
def neighbours(nb: Nbunits) -> Iterator[Path]:
    """Listeners on every address of the box and on a public address elsewhere; they
    serve the folder they yield (over HTTP)."""
    served = nb.shared / SERVED
    served.mkdir(exist_ok=True)
    nb.box.run("sh", "-c", SETUP)
    try:
        for name, where in (("nbwall-box", []), ("nbwall-world", [
                f"--property=NetworkNamespacePath=/run/netns/{WORLD}"])):
            nb.box.run("systemd-run", f"--unit={name}", *where, "python3", "-c", LISTENER,
                       f"{SHARED_IN_BOX}/{SERVED}", str(PORT))
        # The host's own addresses changed: refused to students again (as an admin would).
        nb.box.systemctl("restart", "nbunits-host-addresses.service")
        yield served
    finally:
        nb.box.systemctl("stop", "nbwall-box.service", "nbwall-world.service", check=False)
        nb.box.run("sh", "-c", TEARDOWN, check=False)
        nb.box.systemctl("restart", "nbunits-host-addresses.service", check=False)


@pytest.fixture(scope="module")
def listed(nb: Nbunits) -> str:
    """A course whose kernels may reach the LISTED neighbour."""
    nb.add_course("listed", network="slirp4netns", network_allow=[LISTED])  # type: ignore[arg-type]
    return "listed"


def test_kernels_reach_neither_link_local_nor_private_nor_the_hosts_addresses_unless_listed(
        nb: Nbunits, neighbours: Path, listed: str) -> None:
    nb.add_course("walled", network="slirp4netns")
    code = CONNECT.format(port=PORT, hosts=TARGETS)
    opened = {course: _open(nb, course) for course in ("walled", listed)}
    for course, student in opened.items():
        got = ast.literal_eval(execute_in(nb, student, code))
        assert {h for h, a in got.items() if a == "reached"} == (
            {ELSEWHERE, LISTED} if course == listed else {ELSEWHERE}), (course, got)
    # The same settings, as systemd has them for the unit and its slice.
    slice_denied = nb.show("nbunits.slice", "IPAddressDeny")["IPAddressDeny"].split()
    assert f"{OWN}/32" in slice_denied and "198.51.100.1/32" in slice_denied, slice_denied
    shown = nb.show(f"nbunits-listed@{opened[listed].user}.service", "IPAddressAllow",
                    "IPAddressDeny")
    assert f"{LISTED}/32" in shown["IPAddressAllow"] and "10.0.0.0/8" in shown["IPAddressDeny"]


# A package, as a course's own index would serve it: a pure-Python wheel, made here, in a
# PEP 503 simple index. What a student types in a cell: no --user (PIP_USER=1 in the unit).
PROBE, PROBE_VERSION = "nbunits_probe_pkg", "1.0"
PIP_INSTALL = (f"%pip install -q --index-url http://{LISTED}:{PORT}/simple/ "
               f"--trusted-host {LISTED} nbunits-probe-pkg")
IMPORTED = f"import {PROBE}; ({PROBE}.VALUE, {PROBE}.__file__)"
# Its command (a console script, in ~/.local/bin), run by name as a student would.
COMMAND = ("import subprocess; (subprocess.run(['nbunits-probe'], capture_output=True, "
           "text=True).stdout.strip(), __import__('shutil').which('nbunits-probe'))")


def _wheel(value: str) -> tuple[str, bytes]:
    """A wheel of one module whose VALUE is `value`: its file name and bytes."""
    name, info = f"{PROBE}-{PROBE_VERSION}-py3-none-any.whl", f"{PROBE}-{PROBE_VERSION}.dist-info"
    files = {
        f"{PROBE}/__init__.py": f"VALUE = {value!r}\n\ndef main():\n    print(VALUE)\n",
        f"{info}/entry_points.txt": f"[console_scripts]\nnbunits-probe = {PROBE}:main\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: nbunits-probe-pkg\nVersion: {PROBE_VERSION}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: nbunits-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},sha256={_digest(text.encode())},{len(text.encode())}\n"
                     for path, text in files.items()) + f"{info}/RECORD,,\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path, text in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(path, text)
    return name, out.getvalue()


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _serve_index(served: Path, value: str) -> None:
    name, wheel = _wheel(value)
    (served / name).write_bytes(wheel)
    page = served / "simple" / "nbunits-probe-pkg" / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(f'<!DOCTYPE html><a href="/{name}#sha256={hashlib.sha256(wheel).hexdigest()}">'
                    f"{name}</a>\n")


def test_a_package_a_student_installs_from_an_index_the_course_allows_outlives_a_stop(
        nb: Nbunits, neighbours: Path, listed: str) -> None:
    value, student = secrets.token_hex(8), secrets.token_hex(16)
    _serve_index(neighbours, value)

    def run(code: str) -> tuple[str, tuple[str, str], str]:
        async def go() -> tuple[str, tuple[str, str], str]:
            async with client(nb) as session:
                opened = await open_exercise(session, listed, "welcome.ipynb", student)
                kernel = await start_kernel(session, opened)
                result, shown = await execute_showing(session, opened, kernel, code, timeout=90)
                return opened.user, ast.literal_eval(result), shown
        return asyncio.run(go())

    # Installed and imported in the same kernel, in the container's home.
    user, (got, where), shown = run(f"{PIP_INSTALL}\n{IMPORTED}")
    assert got == value, shown
    home = nb.home / user / ".nbunits" / listed / "home"
    # No second copy of what pip downloaded in the student's quota: no pip cache.
    assert not (home / ".cache" / "pip").exists(), list((home / ".cache").rglob("*"))
    site = f"/home/student/.local/lib/python3.*/site-packages/{PROBE}/__init__.py"
    assert fnmatch.fnmatch(where, site), (where, shown)
    # A stop: the container is gone (a new one starts at the next launch)...
    units = [f"nbunits-{listed}@{user}.socket", f"nbunits-{listed}-proxy@{user}.service",
             f"nbunits-{listed}@{user}.service"]
    nb.box.systemctl("stop", *units)
    assert nb.show(units[-1], "ActiveState")["ActiveState"] == "inactive"
    # ... and the package is still there: in the student's home on the host, theirs...
    on_host = list(home.glob(
        f".local/lib/python3.*/site-packages/{PROBE}/__init__.py"))
    assert len(on_host) == 1 and on_host[0].stat().st_uid == nb.uid(user), on_host
    assert value in on_host[0].read_text()
    # ... and a fresh kernel of a fresh server imports it and runs its command by name.
    assert run(IMPORTED)[1] == (value, where)
    assert run(COMMAND)[1] == (value, "/home/student/.local/bin/nbunits-probe")


def execute_in(nb: Nbunits, opened: Opened, code: str) -> str:
    async def go() -> str:
        async with client(nb) as session:
            return await execute(session, opened, await start_kernel(session, opened), code)
    return asyncio.run(go())


# In a notebook: an OSC that sets the terminal's title, a screen clear, a C1 CSI.
HOSTILE_CELL = "print('hi')  # \x1b]0;pwned\x07\x1b[2J\u009b31m"


def test_student_show_prints_a_hostile_notebook_escaped(nb: Nbunits) -> None:
    opened = _open(nb, "demo")

    async def save() -> None:
        async with client(nb) as session:
            url = f"{opened.prefix}api/contents/{opened.notebook}"
            async with session.get(url, headers=opened.headers) as resp:
                content = (await resp.json())["content"]
            content["cells"].append({
                "cell_type": "code", "source": HOSTILE_CELL, "metadata": {},
                "execution_count": 1, "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": "\x1b[31mred\r\n"}]})
            async with session.put(url, headers=opened.headers, json={
                    "type": "notebook", "format": "json", "content": content}) as resp:
                assert resp.status == 200, await resp.text()

    asyncio.run(save())
    shown = nb.nbunits("student", "show", "demo", opened.user, "welcome.ipynb").stdout
    assert "\x1b" not in shown and "\x07" not in shown and "\u009b" not in shown, repr(shown)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m" in shown, shown
    assert "  >> \\x1b[31mred\\r" in shown, shown
    listed = nb.nbunits("student", "show", "demo", opened.user).stdout
    assert "welcome.ipynb" in listed and "\x1b" not in listed
