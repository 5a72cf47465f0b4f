"""A flood of students' actions, from a process of its own.

    python -m testbed.flood SPEC.json

SPEC: {"netns_pid": the box's PID 1, "server": its name, "ca": the CA's certificate,
"control": a file, "results": a file, "students": [[url of their actions,
[[action, notebook], ...]], ...]}. The process enters the box's network (setns, before
it opens any socket) and reaches nginx as a browser would, by name and over TLS: the
bytes go nowhere near the caller's process, whose own measures they would slow.

Each student posts their actions one after the other, as fast as they are answered,
while the control file says "on"; on "off" they wait with nothing in flight; "stop"
ends the flood. After each answer, the results file says how many answers of each
status came back and how many students are idle.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp

from testbed.forward import Names, enter_netns


class Flood:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.control, self.results = Path(spec["control"]), Path(spec["results"])
        self.answered: dict[str, int] = {}
        self.idle = 0

    def state(self) -> str:
        return self.control.read_text().strip()

    def publish(self) -> None:
        tmp = self.results.with_suffix(".tmp")
        tmp.write_text(json.dumps({"answered": self.answered, "idle": self.idle}))
        tmp.replace(self.results)

    async def student(self, session: aiohttp.ClientSession, url: str,
                      actions: list[list[str]]) -> None:
        idle = False
        while (state := self.state()) != "stop":
            if state != "on":
                if not idle:
                    idle, self.idle = True, self.idle + 1
                    self.publish()
                await asyncio.sleep(0.02)
                continue
            if idle:
                idle, self.idle = False, self.idle - 1
            for what, notebook in actions:
                async with session.post(url + what, json={"notebook": notebook}) as resp:
                    await resp.read()
                    key = str(resp.status)
                    self.answered[key] = self.answered.get(key, 0) + 1
                self.publish()

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=Names({self.spec["server"]: "127.0.0.1"}),
            ssl=ssl.create_default_context(cafile=self.spec["ca"]))
        async with aiohttp.ClientSession(f"https://{self.spec['server']}", connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=120)) as session:
            await asyncio.gather(*(self.student(session, url, actions)
                                   for url, actions in self.spec["students"]))


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    enter_netns(spec["netns_pid"])
    asyncio.run(Flood(spec).run())


if __name__ == "__main__":
    main()
