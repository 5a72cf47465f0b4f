"""Walls between a student's kernel and everyone else (issue 26): the journal, the
network, an admin's terminal (docs/security.md, "Threat model").

A kernel here does what a hostile one can: it takes Jupyter's own stderr, the unit's
journal stream (pidfd_getfd: the same user, which podman's seccomp profile and this
kernel allow), and writes priorities, forged fields and a flood into it; it connects
to the cloud's link-local metadata address, to private neighbours and to the host's
own addresses; and its notebook carries escape sequences for the admin's terminal.
"""

from __future__ import annotations

import ast
import asyncio
import json
import secrets
import time
from collections.abc import Iterator

import pytest

from nbunits.core.events import Event
from testbed.browser import Opened, execute, execute_showing, open_exercise, start_kernel

from .conftest import Nbunits, client

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
            return await execute_showing(session, opened, kernel, code)
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


@pytest.fixture
def neighbours(nb: Nbunits) -> Iterator[None]:
    """Listeners on every address of the box and on a public address elsewhere."""
    nb.box.run("sh", "-c", SETUP)
    try:
        for name, where in (("nbwall-box", []), ("nbwall-world", [
                f"--property=NetworkNamespacePath=/run/netns/{WORLD}"])):
            nb.box.run("systemd-run", f"--unit={name}", *where, "python3", "-m", "http.server",
                       "--bind", "0.0.0.0", str(PORT))
        # The host's own addresses changed: refused to students again (as an admin would).
        nb.box.systemctl("restart", "nbunits-host-addresses.service")
        yield
    finally:
        nb.box.systemctl("stop", "nbwall-box.service", "nbwall-world.service", check=False)
        nb.box.run("sh", "-c", TEARDOWN, check=False)
        nb.box.systemctl("restart", "nbunits-host-addresses.service", check=False)


def test_kernels_reach_neither_link_local_nor_private_nor_the_hosts_addresses_unless_listed(
        nb: Nbunits, neighbours: None) -> None:
    nb.add_course("walled", network="slirp4netns")
    nb.add_course("listed", network="slirp4netns", network_allow=[LISTED])  # type: ignore[arg-type]
    code = CONNECT.format(port=PORT, hosts=TARGETS)
    opened = {course: _open(nb, course) for course in ("walled", "listed")}
    for course, student in opened.items():
        got = ast.literal_eval(execute_in(nb, student, code))
        assert {h for h, a in got.items() if a == "reached"} == (
            {ELSEWHERE, LISTED} if course == "listed" else {ELSEWHERE}), (course, got)
    # The same settings, as systemd has them for the unit and its slice.
    slice_denied = nb.show("nbunits.slice", "IPAddressDeny")["IPAddressDeny"].split()
    assert f"{OWN}/32" in slice_denied and "198.51.100.1/32" in slice_denied, slice_denied
    shown = nb.show(f"nbunits-listed@{opened['listed'].user}.service", "IPAddressAllow",
                    "IPAddressDeny")
    assert f"{LISTED}/32" in shown["IPAddressAllow"] and "10.0.0.0/8" in shown["IPAddressDeny"]


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
