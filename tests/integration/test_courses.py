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


def open_as(nb: Nbunits, student: str, notebook: str, query: str = "", course: str = COURSE) -> str:
    """Open an exercise like a browser (following the redirect); the student's user."""
    async def go() -> str:
        async with client(nb) as session:
            if query:
                url = f"/ipythonExercice/{course}/{notebook}/{student}?{query}"
                async with session.get(url, allow_redirects=False) as resp:
                    assert resp.status == 302, await resp.text()
            opened = await open_exercise(session, course, notebook, student)
            assert opened.page_status == 200, opened.page[:300]
            return opened.user
    return asyncio.run(go())


def edit_in_jupyter(nb: Nbunits, student: str, notebook: str, text: str,
                    course: str = COURSE) -> None:
    async def go() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, course, notebook, student)
            await save_notebook(session, opened, text)
    asyncio.run(go())


def stop_jupyter(nb: Nbunits, user: str, course: str = COURSE) -> None:
    nb.box.systemctl("stop", f"nbunits-{course}-proxy@{user}.service",
                     f"nbunits-{course}@{user}.service")


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
    starts = stats.split("starts per day")[1].split("scores")[0]
    assert "none" not in starts, stats
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


MERGING = "gitmerge"


def test_updates_merge_into_edited_copies_where_the_course_says_so(nb: Nbunits):
    """merge_updates: at each student's next launch, the new version is merged into their
    edited copy (nbdime, in a transient unit of its own); with a conflict, the copy stays
    and the merge goes beside it, named in the banner's answer."""
    teacher = Teacher(nb, "merge-repo")
    first = nbformat.v4.new_notebook()
    first.cells = [nbformat.v4.new_markdown_cell("# Exercise"), nbformat.v4.new_code_cell("a = 1")]
    teacher.commit({"a.ipynb": nbformat.writes(first)}, "week 1")
    nb.nbunits("course", "add", MERGING, "--git", teacher.url, "--legacy", "open",
               "--merge-updates")
    try:
        clean, clash = secrets.token_hex(16), secrets.token_hex(16)
        users = {s: open_as(nb, s, "a.ipynb", course=MERGING) for s in (clean, clash)}
        edit_in_jupyter(nb, clean, "a.ipynb", "mine = 1", course=MERGING)  # a cell at the end
        _change_cell(nb, clash, 1, "a = 10")  # the cell the course changes next
        for user in users.values():
            stop_jupyter(nb, user, course=MERGING)
        # The course changes its cell and adds one at the end (the same file, edited).
        first.cells[1].source = "a = 2"
        first.cells.append(nbformat.v4.new_code_cell("b = 2"))
        teacher.commit({"a.ipynb": nbformat.writes(first)}, "week 2")
        nb.nbunits("course", "update", MERGING)
        homes = {s: nb.home / u / MERGING for s, u in users.items()}
        assert all((h / "a.NEW-VERSION.md").exists() for h in homes.values())  # told first
        mine_before = (homes[clash] / "a.ipynb").read_bytes()

        for student in (clean, clash):
            open_as(nb, student, "a.ipynb", course=MERGING)  # the launch merges
        merged = json.loads((homes[clean] / "a.ipynb").read_text())
        assert ["".join(c["source"]) for c in merged["cells"]] == [
            "# Exercise", "a = 2", "mine = 1", "b = 2"]
        assert not (homes[clean] / "a.NEW-VERSION.md").exists()
        # Theirs (their cell is in it), made from the new version: nothing newer to say.
        assert nb.nbunits("student", "show", MERGING, users[clean]).stdout == "a.ipynb\tmodified\n"

        assert (homes[clash] / "a.ipynb").read_bytes() == mine_before  # untouched
        beside = sources(homes[clash] / "a-merged.ipynb")
        assert "<<<<<<< local\na = 10\n=======\na = 2\n>>>>>>> remote" in beside, beside
        assert (homes[clash] / "a-merged.ipynb").stat().st_uid == nb.uid(users[clash])
        assert "`a-merged.ipynb`" in (homes[clash] / "a.NEW-VERSION.md").read_text()
        changes = asyncio.run(_banner(nb, clash))["changes"]
        assert any("a-merged.ipynb" in line for line in changes), changes
        # Each merge ran in its own sandbox (units/merge/merge.properties), not in the helper.
        ran = nb.box.run("journalctl", "--no-pager", "-o", "cat", "-u", "run-*").stdout
        assert ran.count("nbunits: merge a course's update into a student's copy") >= 2, ran[-2000:]
    finally:
        nb.nbunits("course", "remove", MERGING, "--purge", "--yes", check=False)


def _change_cell(nb: Nbunits, student: str, index: int, source: str) -> None:
    async def go() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, MERGING, "a.ipynb", student)
            url = opened.url(f"api/contents/{opened.notebook}")
            async with session.get(url, headers=opened.headers) as resp:
                content = (await resp.json())["content"]
            content["cells"][index]["source"] = source
            async with session.put(url, headers=opened.headers, json={
                    "type": "notebook", "format": "json", "content": content}) as resp:
                assert resp.status == 200, await resp.text()
    asyncio.run(go())


async def _banner(nb: Nbunits, student: str) -> dict:
    """What the Course extension's banner asks: the notebook's state, newer version included."""
    async with client(nb) as session:
        opened = await open_exercise(session, MERGING, "a.ipynb", student)
        info = opened.prefix.replace("/nb/", "/_nbunits/student/", 1) + "info"
        async with session.post(info, json={"notebook": "a.ipynb"}) as resp:
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())


def test_a_course_with_a_long_name_runs_its_students(nb: Nbunits) -> None:
    """A course name may be up to 32 characters; a student's podman runroot (under
    /run/nbunits/podman/) may be at most 50: the course's students still run."""
    nb.add_course("python-for-data-science-2026")

    async def scenario() -> None:
        async with client(nb) as session:
            opened = await open_exercise(session, "python-for-data-science-2026",
                                         "welcome.ipynb", secrets.token_hex(16))
            assert opened.page_status == 200, opened.page[:300]
    asyncio.run(scenario())
