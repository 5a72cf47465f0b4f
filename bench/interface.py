"""A student's server start in each interface (the course setting `interface`).

    .venv/bin/python -m bench.interface [N]     (as root; ~1.5 min for N=7)

Boots the bench's box with the demo course (Notebook 7) and the same notebooks as a
course whose interface is `lab` (JupyterLab), then, interleaved so that machine noise
hits both alike, N cold starts of a returning student in each: the time from the link
to its redirect (a client that is not a browser gets it once Jupyter answers: the
server's start) and to the notebook page's 200 (the interface's page, rendered).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time

from .box import COURSE, NOTEBOOK, Bench, booted
from .stats import summary

LAB = "lab"


async def launch(bench: Bench, course: str, student: str) -> tuple[str, float, float]:
    """(the student's user, seconds to the redirect, seconds to the page's 200)."""
    async with bench.session() as session:
        t0 = time.monotonic()
        async with session.get(f"/ipythonExercice/{course}/{NOTEBOOK}/{student}",
                               allow_redirects=False) as resp:
            assert resp.status == 302, resp.status
            location = resp.headers["Location"]
        up = time.monotonic() - t0
        async with session.get(location) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        return location.split("/")[3], up, time.monotonic() - t0


def stop(bench: Bench, course: str, user: str) -> None:
    bench.box.systemctl("stop", f"nbunits-{course}-proxy@{user}.service",
                        f"nbunits-{course}@{user}.service")


def measure(bench: Bench, n: int) -> dict[str, dict[str, list[float]]]:
    bench.nbunits("course", "add", LAB, "--dir", "/opt/nbunits/src/examples/demo",
                  "--legacy", "open", "--interface", LAB)
    students = {COURSE: secrets.token_hex(16), LAB: secrets.token_hex(16)}
    for course, student in students.items():  # the first click (user, copy): not counted
        stop(bench, course, asyncio.run(launch(bench, course, student))[0])
    runs: dict[str, dict[str, list[float]]] = {c: {"up": [], "page": []} for c in students}
    for _ in range(n):
        for course, student in students.items():
            user, up, page = asyncio.run(launch(bench, course, student))
            runs[course]["up"].append(up)
            runs[course]["page"].append(page)
            stop(bench, course, user)
            time.sleep(2)  # the stop's own work out of the next start
    return runs


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with booted("nbunits-bench-interface") as bench:
        runs = measure(bench, n)
    for course, name in ((COURSE, "Notebook 7"), (LAB, "JupyterLab")):
        up, page = summary(runs[course]["up"]), summary(runs[course]["page"])
        print(f"{name}: server up median {up['median']:.3f} s (min {up['min']:.3f}, "
              f"max {max(runs[course]['up']):.3f}), page 200 median {page['median']:.3f} s, "
              f"N={up['n']:.0f}")


if __name__ == "__main__":
    main()
