"""Walls between a student's kernel and everyone else (issue 26): an admin's
terminal (docs/security.md, "Threat model").

A student's notebook here carries escape sequences for the admin's terminal.
"""

from __future__ import annotations

import asyncio
import secrets

from testbed.browser import Opened, open_exercise

from .conftest import Nbunits, client


def _open(nb: Nbunits, course: str) -> Opened:
    async def go() -> Opened:
        async with client(nb) as session:
            return await open_exercise(session, course, "welcome.ipynb", secrets.token_hex(16))
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
