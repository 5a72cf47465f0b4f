"""Walls between a student's kernel and everyone else (issue 26): the journal, an
admin's terminal (docs/security.md, "Threat model").

A kernel here does what a hostile one can: it takes Jupyter's own stderr, the unit's
journal stream (pidfd_getfd: the same user, which podman's seccomp profile and this
kernel allow), and writes priorities, forged fields and a flood into it; and its
notebook carries escape sequences for the admin's terminal.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

from nbunits.core.events import Event
from testbed.browser import Opened, execute_showing, open_exercise, start_kernel

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
