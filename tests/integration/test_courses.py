"""Teachers publish and update courses; no student ever loses an edit.

A course from a local git repository (file://, no network) on the real box: add with a
broken notebook skipped, students' copies following updates (at once when their
Jupyter is stopped, at the next launch when it runs), modified copies kept and
announced, reset by URL and by the CLI, usage, and removal that keeps students' work.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path

import nbformat
import pytest

from nbunits.core.names import user_for
from testbed.browser import open_exercise, save_notebook

from .conftest import SHARED_IN_BOX, Nbunits, client

COURSE = "gitcourse"


def master(*code: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Exercise")]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in code]
    return nbformat.writes(nb)


class Teacher:
    """A teacher's git repository, on the host, seen by the box through the shared bind."""

    def __init__(self, nb: Nbunits, name: str = "teacher-repo") -> None:
        self.repo = nb.shared / name
        self.url = f"file://{SHARED_IN_BOX}/{name}"
        self.git("init", "--quiet", "--initial-branch=main", str(self.repo), cwd=Path("/"))

    def git(self, *args: str, cwd: Path | None = None) -> None:
        subprocess.run(["git", "-c", "user.name=Teacher", "-c", "user.email=t@example.org", *args],
                       cwd=cwd or self.repo, check=True, capture_output=True)

    def commit(self, files: dict[str, str], message: str) -> None:
        for name, text in files.items():
            path = self.repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", message)


def open_as(nb: Nbunits, student: str, notebook: str, query: str = "") -> str:
    """Open an exercise like a browser (following the redirect); the student's user."""
    async def go() -> str:
        async with client(nb) as session:
            if query:
                url = f"/ipythonExercice/{COURSE}/{notebook}/{student}?{query}"
                async with session.get(url, allow_redirects=False) as resp:
                    assert resp.status == 302, await resp.text()
            opened = await open_exercise(session, COURSE, notebook, student)
            assert opened.page_status == 200, opened.page[:300]
            return opened.user
    return asyncio.run(go())


def edit_in_jupyter(nb: Nbunits, student: str, notebook: str, text: str) -> None:
    async def go() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, notebook, student)
            await save_notebook(session, opened, text)
    asyncio.run(go())


def stop_jupyter(nb: Nbunits, user: str) -> None:
    nb.box.systemctl("stop", f"nbunits-{COURSE}-proxy@{user}.service",
                     f"nbunits-{COURSE}@{user}.service")


def sources(path: Path) -> str:
    return "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])


@pytest.fixture(scope="module")
def teacher(nb: Nbunits):
    teacher = Teacher(nb)
    teacher.commit({"a.ipynb": master("a = 1"), "week1/b.ipynb": master("b = 1"),
                    "broken.ipynb": '{"cells": [ oops'}, "week 1")
    added = nb.nbunits("course", "add", COURSE, "--git", teacher.url, "--branch", "main",
                       "--memory-max", "512M", "--legacy", "open")
    assert "skipped: notebook broken.ipynb is not valid JSON" in added.stdout, added.stdout
    assert "2 notebook(s) and 0 other file(s) published, 1 skipped" in added.stdout, added.stdout
    yield teacher
    nb.nbunits("course", "remove", COURSE, "--purge", "--yes", check=False)


def test_updates_follow_unmodified_copies_and_never_touch_edited_ones(nb: Nbunits, teacher):
    shown = nb.nbunits("course", "show", COURSE).stdout
    assert 'memory_max = "512M"' in shown and teacher.url in shown
    published = json.loads(nb.box.read_file(f"/var/lib/nbunits/courses/{COURSE}/a.ipynb"))
    assert published["nbformat_minor"] == nbformat.v4.nbformat_minor
    assert all(cell.get("id") for cell in published["cells"])

    stopped, running = secrets.token_hex(16), secrets.token_hex(16)
    user = open_as(nb, stopped, "a.ipynb")
    home = nb.home / user / COURSE
    assert (home / "week1" / "b.ipynb").exists(), "every notebook of the course is copied"
    edit_in_jupyter(nb, stopped, "week1/b.ipynb", "# my answer")
    stop_jupyter(nb, user)
    other = open_as(nb, running, "a.ipynb")  # stays running through the update

    teacher.commit({"a.ipynb": master("a = 2"), "week1/b.ipynb": master("b = 2"),
                    "c.ipynb": master("c = 1")}, "week 2")
    updated = nb.nbunits("course", "update", COURSE).stdout
    assert "running student(s) get the update at their next launch" in updated, updated

    # The stopped student: updated now. Unmodified follows, edited stays and is announced.
    assert "a = 2" in sources(home / "a.ipynb")
    assert "# my answer" in sources(home / "week1" / "b.ipynb")
    assert "b = 2" not in sources(home / "week1" / "b.ipynb")
    marker = (home / "week1" / "b.NEW-VERSION.md").read_text()
    assert f"/ipythonExercice/{COURSE}/week1/b.ipynb/{stopped}?reset=1" in marker
    assert (home / "c.ipynb").stat().st_uid == nb.uid(user), "new notebooks appear"
    state = nb.nbunits("student", "show", COURSE, user).stdout
    assert "week1/b.ipynb\tmodified, newer master available" in state, state

    # The running student: nothing replaced under an open tab; done at the next launch.
    other_home = nb.home / other / COURSE
    assert "a = 1" in sources(other_home / "a.ipynb")
    assert "at the next launch" in nb.nbunits("student", "show", COURSE, other).stdout
    stop_jupyter(nb, other)
    open_as(nb, running, "week1/b.ipynb")
    assert "a = 2" in sources(other_home / "a.ipynb")
    assert (other_home / "c.ipynb").exists()


def test_reset_by_url_and_by_cli_keeps_the_old_copy(nb: Nbunits, teacher):
    student = secrets.token_hex(16)
    user = open_as(nb, student, "a.ipynb")
    home = nb.home / user / COURSE
    edit_in_jupyter(nb, student, "a.ipynb", "# mine, by URL")

    open_as(nb, student, "a.ipynb", query="reset=1")
    kept = list(home.glob("a-*.ipynb"))
    assert len(kept) == 1 and "# mine, by URL" in sources(kept[0])
    assert "# mine" not in sources(home / "a.ipynb")

    edit_in_jupyter(nb, student, "week1/b.ipynb", "# mine, by CLI")
    out = nb.nbunits("student", "reset", COURSE, student, "week1/b.ipynb").stdout
    assert "the old copy is kept as" in out, out
    kept = list((home / "week1").glob("b-*.ipynb"))
    assert len(kept) == 1 and "# mine, by CLI" in sources(kept[0])
    assert kept[0].stat().st_uid == nb.uid(user)
    text = nb.nbunits("student", "show", COURSE, user, kept[0].relative_to(home).as_posix()).stdout
    assert "# mine, by CLI" in text


def test_stats_and_list(nb: Nbunits, teacher):
    stats = nb.nbunits("course", "stats", COURSE).stdout
    assert "students provisioned: " in stats and "running now:" in stats
    assert "none" not in stats.split("starts per day")[1], stats
    listed = nb.nbunits("course", "list").stdout
    assert any(line.startswith(f"{COURSE}\t3 notebook(s)") for line in listed.splitlines()), listed


def test_remove_keeps_student_work_and_says_so(nb: Nbunits, teacher):
    name = "gone-course"
    nb.nbunits("course", "add", name, "--git", teacher.url, "--legacy", "open")
    student = secrets.token_hex(16)

    async def go() -> str:
        async with client(nb) as session, session.get(
                f"/ipythonExercice/{name}/a.ipynb/{student}", allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
        return user_for(student)

    user = asyncio.run(go())
    out = nb.nbunits("course", "remove", name, "--yes").stdout
    assert "are kept" in out and "--purge" in out, out
    assert (nb.home / user / name / "a.ipynb").exists()
    assert name not in nb.nbunits("course", "list").stdout
    assert not [u for u in nb.student_units() if u.startswith(f"nbunits-{name}@")]
