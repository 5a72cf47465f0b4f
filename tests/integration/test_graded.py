"""Graded notebooks (issue 28): students never see solutions or hidden tests.

A course whose repository has a notebook with nbgrader's cell metadata: a solution
region, a hidden test, a written answer, each carrying a random token. The student
gets the release version (nbgrader's stubs), and the tokens are nowhere the student
can read: not in their copy (Jupyter's contents API), not in a page they share, not through their kernel in
their container (their copy, the course folder's read-only mount, all of /home/student,
/var/lib, /tmp, /run), not on the host as their own user (the root-only source, the
git checkout). Root keeps the source, 0600 in 0700 folders, for grading; `course
remove --purge` deletes it. The conversion itself: tests/unit/test_graded.py.
"""

from __future__ import annotations

import ast
import asyncio
import secrets

import nbformat
import pytest

from testbed.browser import Opened, execute, open_exercise, start_kernel

from .conftest import Nbunits, client
from .test_courses import Teacher, master

COURSE = "graded"
SOLUTION, HIDDEN, ANSWER = (f"{kind}-{secrets.token_hex(8)}" for kind in ("sol", "hid", "ans"))
SOURCE = f"/var/lib/nbunits/sources/{COURSE}/hw.ipynb"
CHECKOUT = f"/var/lib/nbunits/git/{COURSE}/hw.ipynb"


def graded(cell: nbformat.NotebookNode, **nbgrader: object) -> nbformat.NotebookNode:
    cell.metadata["nbgrader"] = {"grade": False, "locked": False, "solution": False,
                                 "schema_version": 3, **nbgrader}
    return cell


def homework(duplicate: bool = False) -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    code, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    nb.cells = [
        md("# Squares"),
        graded(code(f"def square(x):\n    ### BEGIN SOLUTION\n    return x * x  # {SOLUTION}\n"
                    "    ### END SOLUTION"), solution=True, grade_id="square"),
        graded(code(f"assert square(2) == 4\n### BEGIN HIDDEN TESTS\nassert square(3) == 9  # {HIDDEN}\n"
                    "### END HIDDEN TESTS"), grade=True, points=2,
               grade_id="square" if duplicate else "test_square"),
        graded(md(f"Because {ANSWER}."), grade=True, solution=True, points=1, grade_id="why"),
    ]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text=f"{SOLUTION}\n")]
    return nbformat.writes(nb)


@pytest.fixture(scope="module")
def course(nb: Nbunits):
    teacher = Teacher(nb, "graded-repo")
    teacher.commit({"hw.ipynb": homework(), "broken.ipynb": homework(duplicate=True),
                    "intro.ipynb": master("print('hi')")}, "week 1")
    added = nb.nbunits("course", "add", COURSE, "--git", teacher.url, "--branch", "main",
                       "--legacy", "open", "--merge-updates")
    assert ("skipped: broken.ipynb, cell 3: nbgrader metadata: grade_id 'square' is used twice"
            in added.stdout), added.stdout
    assert "2 notebook(s) and 0 other file(s) published, 1 skipped" in added.stdout, added.stdout
    assert f"1 graded notebook(s) published as release versions; their sources in " \
           f"/var/lib/nbunits/sources/{COURSE} (root's only)" in added.stdout, added.stdout
    yield teacher
    nb.nbunits("course", "remove", COURSE, "--purge", "--yes", check=False)


# In the student's kernel: every file it can read where a course's files could be. The
# tokens are given reversed: the probe's own text (in the kernel's history) holds none.
PROBE = """\
import os
tokens, found, read = [t[::-1] for t in {tokens!r}], [], 0
for top in ("/home/student", "/var/lib", "/tmp", "/var/tmp", "/run"):
    for folder, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as f:
                    data = f.read(8 << 20)
            except OSError:
                continue
            read += 1
            found += [(path, t) for t in tokens if t.encode() in data]
with open("/home/student/course/hw.ipynb") as f:
    mounted = f.read()
(found, read, os.path.exists("/var/lib/nbunits"), os.path.exists({source!r}),
 "raise NotImplementedError()" in mounted, "YOUR ANSWER HERE" in mounted)
"""


def test_the_student_gets_the_release_and_reads_no_solution_nor_hidden_test(
        nb: Nbunits, course: Teacher) -> None:
    async def go() -> tuple[Opened, dict, str, str]:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, "hw.ipynb", secrets.token_hex(16))
            assert opened.page_status == 200, opened.page[:300]
            async with session.get(opened.url("api/contents/hw.ipynb"),
                                   headers=opened.headers) as resp:
                assert resp.status == 200, await resp.text()
                copy = await resp.json()
            # A static version shared, and the notebook reset to the course's.
            api = opened.prefix.replace("/nb/", "/_nbunits/student/", 1)
            async with session.post(api + "share", json={"notebook": "hw.ipynb"}) as resp:
                assert resp.status == 200, await resp.text()
                shared = (await resp.json())["url"]
            async with session.get(shared) as resp:
                page = await resp.text()
                assert resp.status == 200 and "YOUR ANSWER HERE" in page, page[:500]
            async with session.post(api + "reset", json={"notebook": "hw.ipynb"}) as resp:
                assert resp.status == 200, await resp.text()
            kernel = await start_kernel(session, opened)
            probe = PROBE.format(tokens=[t[::-1] for t in (SOLUTION, HIDDEN, ANSWER)], source=SOURCE)
            return opened, copy, page, await execute(session, opened, kernel, probe)

    opened, copy, page, probed = asyncio.run(go())
    found, read, var_lib_nbunits, source, stub, answer = ast.literal_eval(probed)
    assert found == [], f"the student's kernel read solutions or hidden tests: {found}"
    assert read > 100, f"the probe read only {read} files"
    assert not var_lib_nbunits and not source, "no /var/lib/nbunits in the container"
    assert stub and answer, "the course folder's mount holds the release version"
    assert opened.page_status == 200 and opened.page.count(SOLUTION) == 0
    assert not any(token in page for token in (SOLUTION, HIDDEN, ANSWER)), "the shared page"
    cells = [c["source"] for c in copy["content"]["cells"]]
    assert cells[1] == "def square(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()", cells
    assert cells[2] == "assert square(2) == 4" and cells[3] == "YOUR ANSWER HERE", cells
    assert copy["content"]["cells"][1]["outputs"] == []
    # On the host, as the student's own user: the source and the checkout are root's only.
    for path in (SOURCE, CHECKOUT, f"/var/lib/nbunits/sources/{COURSE}"):
        refused = nb.box.run("cat", path, user=opened.user, check=False)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, (path, refused)
    # Nor anywhere else nbunits keeps the course (published, versions for merges, copies):
    # only in the root-only source and checkout.
    leaks = nb.box.run("grep", "-rlE", f"{SOLUTION}|{HIDDEN}|{ANSWER}", "/var/lib/nbunits",
                       f"/home/{opened.user}", check=False).stdout.split()
    assert sorted(leaks) == [CHECKOUT.replace("hw", "broken"), CHECKOUT, SOURCE], leaks


def test_root_keeps_the_source_for_grading_and_purge_deletes_it(nb: Nbunits, course: Teacher) -> None:
    source = nb.box.read_file(SOURCE)
    assert all(token in source for token in (SOLUTION, HIDDEN, ANSWER))
    modes = nb.box.run("stat", "-c", "%a %U %n", "/var/lib/nbunits/sources",
                       f"/var/lib/nbunits/sources/{COURSE}", SOURCE,
                       "/var/lib/nbunits/git").stdout.splitlines()
    assert modes == ["700 root /var/lib/nbunits/sources", f"700 root /var/lib/nbunits/sources/{COURSE}",
                     f"600 root {SOURCE}", "700 root /var/lib/nbunits/git"], modes
    plan = nb.nbunits("course", "remove", COURSE, "--purge", "--yes").stdout
    assert f"/var/lib/nbunits/sources/{COURSE}" in plan, plan
    assert nb.box.run("test", "-e", f"/var/lib/nbunits/sources/{COURSE}", check=False).returncode == 1
