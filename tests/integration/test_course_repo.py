"""A course is a whole repository with its own environment.

A teacher's git repository (file://) with a unicode-named folder and notebook, a
text notebook (Jupytext markdown, published as .ipynb), a helper module, a data
folder holding a 500 MB file and a requirements.txt naming a real package from
PyPI (served to the box by a local index: the box has no internet; /etc/pip.conf
names it, as an admin would). A student's kernel, started in the notebook's own
folder, imports the package and the helper and reads the data; the text notebook
is a notebook of its cells for the student, and its text is not in their folder;
the data costs the student no copy; an update and a reset keep the rules; a
broken requirement fails the build and keeps the old image; an image that is not
in the store is refused, and a student whose server cannot start is told so.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.browser import Opened, execute, open_exercise

from .conftest import SHARED_IN_BOX, Nbunits, client
from .test_courses import Teacher, master

COURSE = "repo"
IMAGE = f"localhost/nbunits/course-{COURSE}:latest"
NOTEBOOK = "Leçon 1/café.ipynb"
PACKAGE = "tabulate==0.9.0"  # pure Python, one small wheel
WHEELS = Path("/var/cache/nbunits/test-wheels")
BIG = 500 * 1024 * 1024
TEXT_NOTEBOOK = "Leçon 1/tours.md"  # Jupytext's markdown format: published as tours.ipynb
TEXT = """---
jupyter:
  jupytext:
    text_representation:
      extension: .md
      format_name: markdown
  kernelspec:
    display_name: Python 3
    language: python
    name: python3
---

# Tours

```python
from helpers import mean
mean([2, 4])
```
"""


def local_index(nb: Nbunits) -> None:
    """A PEP 503 index of one real wheel, served in the box; pip.conf points there."""
    if not list(WHEELS.glob("tabulate-0.9.0-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "-d", str(WHEELS), PACKAGE], check=True)
    folder = nb.shared / "index" / "simple" / "tabulate"
    folder.mkdir(parents=True, exist_ok=True)
    for wheel in WHEELS.glob("tabulate-0.9.0-*.whl"):
        (folder / wheel.name).write_bytes(wheel.read_bytes())
    nb.box.run("systemd-run", "--unit=nbunits-test-index", "/usr/bin/python3", "-m",
               "http.server", "8765", "--bind", "127.0.0.1", "--directory",
               f"{SHARED_IN_BOX}/index")
    nb.box.write_file("/etc/pip.conf", "[global]\nindex-url = http://127.0.0.1:8765/simple/\n")


def image_id(nb: Nbunits, image: str) -> str:
    return nb.box.run("podman", "--root", "/var/lib/nbunits/images", "--runroot",
                      "/run/nbunits/image-build", "--storage-driver", "overlay",
                      "image", "inspect", "--format", "{{.Id}}", image).stdout.strip()


@pytest.fixture(scope="module")
def teacher(nb: Nbunits):
    local_index(nb)
    teacher = Teacher(nb, "repo-with-data")
    teacher.commit({NOTEBOOK: master("from helpers import mean"),
                    "intro.ipynb": master("print('hi')"),
                    TEXT_NOTEBOOK: TEXT,
                    "Leçon 1/helpers.py": "def mean(xs):\n    return sum(xs) / len(xs)\n",
                    "Leçon 1/data/grades.csv": "name,grade\nada,18\n",
                    # A new spec each run: the build really runs.
                    "requirements.txt": f"# {secrets.token_hex(4)}\ntabulate\n"}, "week 1")
    with (teacher.repo / "Leçon 1" / "data" / "big.bin").open("wb") as f:
        f.truncate(BIG)  # sparse here; git stores it packed, the box gets it whole
    teacher.git("add", "--all")
    teacher.git("commit", "--quiet", "-m", "big data")
    added = nb.nbunits("course", "add", COURSE, "--git", teacher.url, "--branch", "main",
                       "--legacy", "open")
    assert f"building image {IMAGE}" in added.stdout and "built image" in added.stdout, \
        added.stdout
    assert "3 notebook(s) (1 from text notebooks) and 4 other file(s) published" in added.stdout, \
        added.stdout
    assert f"{TEXT_NOTEBOOK}: a text notebook (Jupytext), published as Leçon 1/tours.ipynb" \
        in added.stdout, added.stdout
    yield teacher
    nb.nbunits("course", "remove", COURSE, "--purge", "--yes", check=False)
    nb.box.systemctl("stop", "nbunits-test-index.service", check=False)


async def run_in_folder(session, opened: Opened, folder: str, code: str) -> str:
    """Start a kernel where Jupyter starts a notebook's: in the notebook's folder."""
    async with session.post(f"{opened.prefix}api/kernels", headers=opened.headers,
                            json={"name": "python3", "path": folder}) as resp:
        assert resp.status == 201, await resp.text()
        kernel = (await resp.json())["id"]
    return await execute(session, opened, kernel, code, timeout=120)


def test_a_student_has_the_data_modules_and_packages_of_the_repository(nb: Nbunits, teacher):
    assert f'image = "{IMAGE}"' in nb.nbunits("course", "show", COURSE).stdout
    student = secrets.token_hex(16)

    async def go() -> tuple[Opened, str, str]:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, NOTEBOOK, student)
            assert opened.page_status == 200, opened.page[:300]
            out = await run_in_folder(session, opened, "Leçon 1", (
                "import helpers, tabulate\n"
                "rows = open('data/grades.csv').read().splitlines()\n"
                "(helpers.mean([1, 3]), rows[1], tabulate.__version__)"))
            refused = await run_in_folder(session, opened, "Leçon 1", (
                "try:\n    open('data/mine.csv', 'w')\nexcept OSError as e:\n"
                "    r = e.strerror\nr"))
            return opened, out, refused

    opened, out, refused = asyncio.run(go())
    assert out == "(2.0, 'ada,18', '0.9.0')", out
    assert refused == "'Read-only file system'", refused

    home = nb.home / opened.user / COURSE
    assert (home / NOTEBOOK).is_file() and not (home / NOTEBOOK).is_symlink()
    assert (home / "Leçon 1" / "data").is_symlink() and (home / "Leçon 1" / "helpers.py").is_symlink()
    # The whole course folder of a student: the copies and a few links, no data.
    used = int(subprocess.run(["du", "-s", "--block-size=1", str(home)], check=True,
                              capture_output=True, text=True).stdout.split()[0])
    print(f"disk used by one student's course folder, with {BIG >> 20} MB of course data: "
          f"{used} bytes")
    assert used < 1024 * 1024, used


def test_a_text_notebook_is_a_notebook_for_the_student(nb: Nbunits, teacher):
    notebook = "Leçon 1/tours.ipynb"
    shown = nb.nbunits("course", "show", COURSE).stdout
    assert f"#   {notebook}\n" in shown and "text notebook" in shown, shown
    student = secrets.token_hex(16)

    async def go() -> tuple[Opened, str]:
        async with client(nb) as session:
            opened = await open_exercise(session, COURSE, notebook, student)
            assert opened.page_status == 200, opened.page[:300]
            async with session.get(opened.url(f"api/contents/{notebook}"),
                                   headers=opened.headers) as resp:
                assert resp.status == 200, await resp.text()
                cells = [(c["cell_type"], c["source"]) for c in (await resp.json())["content"]["cells"]]
            assert cells == [("markdown", "# Tours"), ("code", "from helpers import mean\nmean([2, 4])")], \
                cells
            return opened, await run_in_folder(session, opened, "Leçon 1", cells[1][1])

    opened, out = asyncio.run(go())
    assert out == "3.0", out
    home = nb.home / opened.user / COURSE / "Leçon 1"
    assert (home / "tours.ipynb").is_file() and not (home / "tours.ipynb").is_symlink()
    assert not (home / "tours.md").exists() and not (home / "tours.md").is_symlink(), \
        "the text is not published: one copy of the exercise"


def test_update_and_reset_of_a_unicode_notebook_keep_the_rules(nb: Nbunits, teacher):
    student = secrets.token_hex(16)

    async def open_it(query: str = "") -> Opened:
        async with client(nb) as session:
            if query:
                url = f"/ipythonExercice/{COURSE}/{NOTEBOOK}/{student}?{query}"
                async with session.get(url, allow_redirects=False) as resp:
                    assert resp.status == 302, await resp.text()
            return await open_exercise(session, COURSE, NOTEBOOK, student)

    opened = asyncio.run(open_it())
    home = nb.home / opened.user / COURSE
    nb.box.systemctl("stop", f"nbunits-{COURSE}-proxy@{opened.user}.service",
                     f"nbunits-{COURSE}@{opened.user}.service")
    copy = home / NOTEBOOK
    copy.write_text(copy.read_text().replace("from helpers import mean", "# my answer"))

    teacher.commit({NOTEBOOK: master("from helpers import mean, median"),
                    "Leçon 1/notes.txt": "new\n"}, "week 2")
    updated = nb.nbunits("course", "update", COURSE)
    assert f"image {IMAGE} is up to date" in updated.stdout, updated.stdout
    assert "# my answer" in copy.read_text(), "an edited copy is never replaced"
    assert (home / "Leçon 1" / "café.NEW-VERSION.md").exists()
    assert (home / "Leçon 1" / "notes.txt").is_symlink(), "new files appear"

    asyncio.run(open_it("reset=1"))
    kept = list((home / "Leçon 1").glob("café-*.ipynb"))
    assert len(kept) == 1 and "# my answer" in kept[0].read_text()
    assert "median" in copy.read_text()


def test_a_broken_requirement_keeps_the_previous_image(nb: Nbunits, teacher):
    before = image_id(nb, IMAGE)
    spec = (teacher.repo / "requirements.txt").read_text()
    teacher.commit({"requirements.txt": "tabulate\nnbunits-no-such-package==9.9\n"}, "oops")
    failed = nb.nbunits("course", "update", COURSE, check=False)
    assert failed.returncode != 0
    assert f"the image of course {COURSE} did not build" in failed.stderr, failed.stderr
    assert "nbunits-no-such-package" in failed.stdout + failed.stderr
    assert image_id(nb, IMAGE) == before
    assert "oops" not in nb.box.read_file(f"/var/lib/nbunits/courses/{COURSE}/requirements.txt") \
        and "nbunits-no-such-package" not in nb.box.read_file(
            f"/var/lib/nbunits/courses/{COURSE}/requirements.txt"), "the course is unchanged"
    teacher.commit({"requirements.txt": spec}, "fixed")
    assert "is up to date" in nb.nbunits("course", "update", COURSE).stdout


def test_an_image_that_is_not_in_the_store_is_refused_and_a_server_that_cannot_start_says_so(
        nb: Nbunits):
    shown = nb.nbunits("course", "show", "demo").stdout
    refused = nb.nbunits("course", "update", "demo", "--image", "localhost/nbunits/nope:1",
                         check=False)
    assert refused.returncode != 0 and "is not in the image store" in refused.stderr, refused
    assert nb.nbunits("course", "show", "demo").stdout == shown, "the old settings are kept"

    # An image removed behind nbunits' back: the student is told plainly at once, the
    # admin sees why in the journal.
    nb.add_course("noimage", image="localhost/nbunits/gone:latest")
    student = secrets.token_hex(16)

    async def go() -> tuple[int, str]:
        async with client(nb) as session:
            async with session.get(f"/ipythonExercice/noimage/welcome.ipynb/{student}",
                                   headers={"Accept": "text/html"},
                                   allow_redirects=False) as resp:
                return resp.status, await resp.text()

    try:
        status, text = asyncio.run(go())
        assert status == 500 and "could not start" in text, (status, text)
        assert "store" not in text, "no admin detail for students"
        journal = nb.box.run("journalctl", "--no-pager", "-o", "cat",
                             "-u", "nbunits-helper.service").stdout
        assert "image localhost/nbunits/gone:latest is not in" in journal, journal[-2000:]
    finally:
        nb.nbunits("course", "remove", "noimage", "--purge", check=False)


def test_the_demo_course_shows_a_data_file_a_helper_module_and_a_plot(nb: Nbunits):
    async def go() -> str:
        async with client(nb) as session:
            opened = await open_exercise(session, "demo", "data-and-plots.ipynb",
                                         secrets.token_hex(16))
            return await run_in_folder(session, opened, "", (
                "import helpers\nrows = helpers.read_table('data/temperatures.csv')\n"
                "svg = helpers.LinePlot('t').add('Paris', [r['month'] for r in rows], "
                "[r['paris'] for r in rows])._repr_svg_()\n(rows[0]['paris'], '<polyline' in svg)"))
    assert asyncio.run(go()) == "(5.0, True)"
