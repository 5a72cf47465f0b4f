"""Grading a student's submission (issue 28, the LMS's half): "submit" from the Course
menu, POSTed as the extension does, through nginx. The student's SAVED copy runs in a
fresh container of the course's image (units/course/nbunits-@COURSE@-grade@.service),
with the course's own tests put back (hidden ones included), no network, and a time
bound; the student's running kernel is left as it is. The assembly and the scoring
themselves: tests/unit/test_grading.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import time
from typing import Any

import aiohttp
import nbformat
import pytest

from nbunits.core.events import Event
from testbed.browser import Opened, execute, open_exercise, start_kernel

from .conftest import Nbunits, client
from .test_courses import Teacher
from .test_graded import graded

COURSE = "grading"
TIMEOUT = 12  # the course's grading_timeout, seconds
LISTENER = 8765  # a port on the box's loopback
CORRECT = "def square(x):\n    return x * x"
ONLY_THE_VISIBLE_TEST = "def square(x):\n    return 4"  # passes square(2) == 4 only


def homework() -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    code, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    nb.cells = [
        md("# Squares"),
        graded(code("def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"),
               solution=True, grade_id="square"),
        graded(code("assert square(2) == 4\n### BEGIN HIDDEN TESTS\nassert square(3) == 9\n"
                    "### END HIDDEN TESTS"), grade=True, points=2, grade_id="test_square"),
        graded(code("assert square(-2) == 4"), grade=True, points=1, grade_id="test_negative"),
    ]
    return nbformat.writes(nb)


@pytest.fixture(scope="module")
def course(nb: Nbunits):
    teacher = Teacher(nb, "grading-repo")
    teacher.commit({"hw.ipynb": homework(), "plain.ipynb": nbformat.writes(nbformat.v4.new_notebook())},
                   "week 1")
    nb.nbunits("course", "add", COURSE, "--git", teacher.url, "--branch", "main",
               "--legacy", "open", "--grading-timeout", str(TIMEOUT),
               "--network", "slirp4netns")  # the students' servers have a network; gradings none
    yield teacher
    plan = nb.nbunits("course", "remove", COURSE, "--purge", "--yes").stdout
    assert f"/var/lib/nbunits/grades/{COURSE}" in plan, plan
    assert nb.box.run("test", "-e", f"/var/lib/nbunits/grades/{COURSE}", check=False).returncode == 1


def saved(nb: Nbunits, user: str, change: Any) -> None:
    """The student's copy, changed by `change(cells)` and saved (as Jupyter saves it)."""
    path = nb.home / user / COURSE / "hw.ipynb"
    copy = nbformat.read(path, 4)
    change(copy.cells)
    nbformat.write(copy, path)
    os.chown(path, nb.uid(user), nb.uid(user))


def solve(code: str) -> Any:
    def change(cells: list[Any]) -> None:
        cells[1].source = code
    return change


async def submit(session: aiohttp.ClientSession, opened: Opened,
                 notebook: str = "hw.ipynb") -> tuple[int, dict[str, Any]]:
    api = opened.prefix.replace("/nb/", "/_nbunits/student/", 1)
    async with session.post(api + "submit", json={"notebook": notebook},
                            headers={"Accept-Language": "en"}) as resp:
        return resp.status, await resp.json()


def scores(answer: dict[str, Any]) -> dict[str, float]:
    return {t["grade_id"]: t["points"] for t in answer["grade"]["tests"]}


def student(nb: Nbunits, go: Any) -> Any:
    async def run() -> Any:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, "hw.ipynb", secrets.token_hex(16))
            assert opened.page_status == 200, opened.page[:300]
            return await go(session, opened)
    return asyncio.run(run())


def test_a_correct_solution_scores_full_and_the_students_kernel_keeps_its_state(
        nb: Nbunits, course: Teacher) -> None:
    async def go(session: aiohttp.ClientSession, opened: Opened) -> tuple[Opened, Any, str, Any]:
        kernel = await start_kernel(session, opened)
        await execute(session, opened, kernel, "kept = 'still here'\nkept")
        saved(nb, opened.user, solve(CORRECT))
        answer = await submit(session, opened)
        after = await execute(session, opened, kernel, "kept")
        plain = await submit(session, opened, "plain.ipynb")
        return opened, answer, after, plain

    opened, (status, answer), after, plain = student(nb, go)
    assert status == 200, answer
    assert (answer["grade"]["total"], answer["grade"]["max"]) == (3, 3), answer
    assert all(t["passed"] for t in answer["grade"]["tests"]), answer
    assert after == "'still here'", "the student's own kernel keeps its variables"
    assert plain[0] == 409 and "not graded" in plain[1]["message"], plain
    # The result, root's only; a journal event with the score.
    where = f"/var/lib/nbunits/grades/{COURSE}/{opened.user}"
    modes = nb.box.run("stat", "-c", "%a %U", where, f"{where}/hw.ipynb.json").stdout.split("\n")
    assert modes[:2] == ["700 root", "600 root"], modes
    stored = json.loads(nb.box.read_file(f"{where}/hw.ipynb.json"))
    assert (stored["total"], stored["max"], stored["notebook"]) == (3, 3, "hw.ipynb"), stored
    events = nb.box.run("journalctl", "--no-pager", "--output=json",
                        f"MESSAGE_ID={Event.GRADED.value}", f"STUDENT={opened.user}").stdout
    assert [json.loads(e)["SCORE"] for e in events.splitlines()] == ["3"], events
    metrics = nb.nbunits("metrics").stdout
    assert f'nbunits_gradings_total{{course="{COURSE}"}} 1.0' in metrics, metrics


def test_changing_or_deleting_a_test_cannot_raise_a_score(nb: Nbunits, course: Teacher) -> None:
    def passes(cells: list[Any]) -> None:  # the visible test made to pass, whatever
        cells[1].source = ONLY_THE_VISIBLE_TEST
        cells[2].source = "pass"
        cells[3].source = "pass"

    def deleted(cells: list[Any]) -> None:
        cells[1].source = CORRECT
        del cells[3]

    async def go(session: aiohttp.ClientSession, opened: Opened) -> list[Any]:
        answers = []
        for change in (solve(ONLY_THE_VISIBLE_TEST), passes, deleted):
            saved(nb, opened.user, change)
            answers.append(await submit(session, opened))
        return answers

    (s1, only_visible), (s2, edited), (s3, without) = student(nb, go)
    assert s1 == s2 == s3 == 200, (only_visible, edited, without)
    # The hidden test was put back: square(3) == 9 fails.
    assert scores(only_visible) == {"test_square": 0, "test_negative": 1}, only_visible
    failed = only_visible["grade"]["tests"][0]
    assert (failed["passed"], failed["error"]) == (False, "AssertionError"), failed
    # Tests replaced by `pass`: the course's own ran instead; the score is unchanged.
    assert scores(edited) == scores(only_visible), edited
    # A deleted test: its points are lost, and it still counts in the maximum.
    assert scores(without) == {"test_square": 2, "test_negative": 0}, without
    assert (without["grade"]["total"], without["grade"]["max"]) == (2, 3), without


def test_an_endless_loop_is_stopped_and_the_network_is_out_of_reach(
        nb: Nbunits, course: Teacher) -> None:
    # A listener on the box's own loopback: what a grading on the host's network would reach.
    nb.box.run("systemd-run", "--unit=grading-listener", "python3", "-m", "http.server",
               "--bind", "127.0.0.1", str(LISTENER))
    network = ("def square(x):\n    import socket\n"
               f"    socket.create_connection(('127.0.0.1', {LISTENER}), timeout=3).close()\n"
               "    return x * x")

    async def go(session: aiohttp.ClientSession, opened: Opened
                 ) -> tuple[Any, float, Any, Any, str]:
        saved(nb, opened.user, solve("while True:\n    pass"))
        start = time.monotonic()
        looped = await submit(session, opened)
        took = time.monotonic() - start
        saved(nb, opened.user, solve(network))
        networked = await submit(session, opened)
        saved(nb, opened.user, solve("import os\nos._exit(3)"))  # the kernel dies
        return looped, took, networked, await submit(session, opened), opened.user

    (status, looped), took, (s2, networked), (s3, died), user = student(nb, go)
    nb.box.run("systemctl", "stop", "grading-listener.service", check=False)
    assert s3 == 422 and "stopped before its end" in died["message"], died
    assert status == 422 and f"ran for more than {TIMEOUT} s" in looped["message"], looped
    assert took < TIMEOUT + 30, f"stopped after {took:.0f} s"
    assert s2 == 200 and networked["grade"]["total"] == 0, networked["grade"]
    # No network at all, whatever the course's network: not even the host's loopback.
    assert all(t["error"] in ("OSError", "ConnectionRefusedError", "TimeoutError")
               for t in networked["grade"]["tests"]), networked["grade"]
    # The student's results go with them (and the course's with it: the fixture's purge).
    results = f"/var/lib/nbunits/grades/{COURSE}/{user}"
    assert nb.box.run("test", "-e", f"{results}/hw.ipynb.json", check=False).returncode == 0
    nb.nbunits("student", "delete", user, "--yes")
    assert nb.box.run("test", "-e", results, check=False).returncode == 1


def test_course_stats_count_each_students_current_score_with_their_median(
        nb: Nbunits, course: Teacher) -> None:
    # The oracle: what the gradings stored, read here on their own (a file per student).
    files = nb.box.run("sh", "-c", f"ls /var/lib/nbunits/grades/{COURSE}/*/hw.ipynb.json",
                       check=False).stdout.split()
    totals = sorted(json.loads(nb.box.read_file(path))["total"] for path in files)
    if not totals:  # this test alone: one grading first
        test_a_correct_solution_scores_full_and_the_students_kernel_keeps_its_state(nb, course)
        totals = [3.0]
    stats = json.loads(nb.nbunits("course", "stats", COURSE, "--json").stdout)
    assert stats["scores"] == {"hw.ipynb": {
        "count": len(totals), "median": statistics.median(totals), "maximum": 3,
        "median_percent": round(100 * statistics.median(totals) / 3, 1)}}, stats["scores"]
    text = nb.nbunits("course", "stats", COURSE).stdout
    assert f"hw.ipynb  {len(totals)} student(s), median {statistics.median(totals):g}/3" in text
