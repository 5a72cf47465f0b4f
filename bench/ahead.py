"""The click to the first cell's output, with the notebook's kernel started ahead
(the course setting kernel_ahead, on by default) and without, interleaved in one run,
next to the bare `podman run` of the same container.

Each round: a new student of the demo course (kernel ahead), a new student of a copy
of it with `kernel_ahead = false`, one floor start; then each of those students again
once stopped (returning). A student's click is what the bench's browser does
(parts.one_cold): the edX link, its redirect, the notebook page, then the notebook's
kernel as JupyterLab asks for it (its path's session if there is one, else a new
session) and `1+1` run over the kernel's websocket. The bench loads no JavaScript: a
browser asks for the kernel later than this client does (once JupyterLab's code has
loaded and run), so a kernel started ahead gains more in a browser than here.
"""

from __future__ import annotations

import asyncio
import secrets

from .box import COURSE, Bench
from .parts import _student_of, floor_runs, one_cold, stop_student
from .stats import summary

WITHOUT = "noahead"


def ahead_runs(bench: Bench, n: int, floor_user: str) -> dict:
    bench.nbunits("course", "add", WITHOUT, "--dir", "/opt/nbunits/src/examples/demo",
                  "--legacy", "open", "--no-kernel-ahead")
    times: dict[str, dict[str, list[float]]] = {
        f"{kind}_{course}": {"page": [], "output": []}
        for kind in ("new", "returning") for course in ("ahead", "without")}
    floor: list[float] = []
    students: list[tuple[str, str]] = []
    for _ in range(n):
        for course, key in ((COURSE, "ahead"), (WITHOUT, "without")):
            c = asyncio.run(one_cold(bench, secrets.token_hex(16), course=course))
            times[f"new_{key}"]["page"].append(c.page)
            times[f"new_{key}"]["output"].append(c.executed)
            stop_student(bench, c.user, course)
            students.append((course, c.user))
        floor += floor_runs(bench, floor_user, 1)["ready"]
    for course, user in students:
        key = "ahead" if course == COURSE else "without"
        c = asyncio.run(one_cold(bench, _student_of(bench, user), course=course))
        times[f"returning_{key}"]["page"].append(c.page)
        times[f"returning_{key}"]["output"].append(c.executed)
        stop_student(bench, user, course)
    return {"floor_ready": summary(floor),
            **{key: {what: summary(values) for what, values in kinds.items()}
               for key, kinds in times.items()}}
