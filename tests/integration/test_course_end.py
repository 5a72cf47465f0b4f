"""A course's end, on a real systemd: students save through the whole chain, the admin
exports their work, the course ends, and its timer's service saves and then deletes.
A backup that cannot be written deletes nothing."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest

from nbunits.core.events import Event
from nbunits.core.names import user_for
from testbed.browser import open_exercise, save_notebook

from .conftest import Nbunits, client

COURSE = "ending"
NOTEBOOK = "week1/loops.ipynb"
NBUNITS = "/opt/nbunits/venv/bin/nbunits"
BACKUPS = "/var/lib/nbunits/backups/courses"
# Lists a zip's names and whether any member holds `marker`, in the box.
READ_ZIP = """
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    print(json.dumps({"names": z.namelist(),
                      "texts": {n: z.read(n).decode("utf-8", "replace") for n in z.namelist()}}))
"""


def save_change(nb: Nbunits, course: str, student: str, marker: str) -> str:
    """Open the notebook as the student's browser does and save a change (contents API)."""
    async def go() -> str:
        async with client(nb) as session:
            opened = await open_exercise(session, course, NOTEBOOK, student)
            assert opened.page_status == 200, opened.page[:300]
            await save_notebook(session, opened, marker)
            return opened.user
    return asyncio.run(go())


def journal(nb: Nbunits, *matches: str) -> list[dict[str, str]]:
    out = nb.box.run("journalctl", "--no-pager", "--output=json", *matches).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def read_zip(nb: Nbunits, path: str) -> dict[str, object]:
    return json.loads(nb.box.run("python3", "-c", READ_ZIP, path).stdout)


def end_now(nb: Nbunits, course: str) -> None:
    """retention_days = 0 in the course file, as an admin writes it, then `course end`."""
    path = f"/etc/nbunits/courses/{course}.toml"
    nb.box.write_file(path, nb.box.read_file(path) + "retention_days = 0\n")
    out = nb.nbunits("course", "end", course).stdout
    assert "saved and deleted after" in out, out


@pytest.fixture(scope="module")
def students(nb: Nbunits) -> dict[str, tuple[str, str]]:
    """Two students of the course who saved a change: {id: (user, marker)}; the second
    has a notebook of the demo course too, and a link to a file outside their home."""
    nb.add_course(COURSE)
    found = {}
    for _ in range(2):
        student, marker = secrets.token_hex(16), f"# saved {secrets.token_hex(6)}"
        found[student] = (save_change(nb, COURSE, student, marker), marker)
    second = list(found)[1]
    save_change(nb, "demo", second, "# in demo")
    user = found[second][0]
    # A student's links out of their folder: a file, a folder (never followed).
    nb.box.write_file("/root/outside.txt", "OUTSIDE-SECRET\n")
    for name, target in (("stolen.txt", "/root/outside.txt"), ("root", "/root")):
        nb.box.run("ln", "-s", target, f"/home/{user}/{COURSE}/{name}")
        nb.box.run("chown", "-h", f"{user}:{user}", f"/home/{user}/{COURSE}/{name}")
    return found


def test_exports_hold_the_saved_notebooks_and_no_link_target(
        nb: Nbunits, students: dict[str, tuple[str, str]]) -> None:
    # Bad input: a clear error, nothing written.
    result = nb.box.run(NBUNITS, "course", "export", "no-such-course", "--to", "/root/x",
                        check=False)
    assert result.returncode == 3 and "unknown course" in result.stderr, result.stderr
    user = next(iter(students.values()))[0]
    result = nb.box.run(NBUNITS, "course", "export", COURSE, "--to", f"/home/{user}/out",
                        check=False)
    assert result.returncode == 1 and "in a student's home" in result.stderr, result.stderr
    assert not (nb.home / user / "out").exists()

    out = nb.nbunits("course", "export", COURSE, "--to", "/root/exports").stdout
    assert "2 archive(s)" in out and "running now" in out, out  # their servers run
    assert nb.box.run("stat", "-c", "%U %a", "/root/exports").stdout.split() == ["root", "700"]
    listed = nb.box.run("ls", "-A", "/root/exports").stdout.split()
    assert sorted(listed) == sorted(f"{student}.zip" for student in students)
    for student, (_, marker) in students.items():
        archive = read_zip(nb, f"/root/exports/{student}.zip")
        names, texts = archive["names"], archive["texts"]
        assert isinstance(names, list) and isinstance(texts, dict)
        assert marker in texts[f"{COURSE}/{NOTEBOOK}"]
        assert not any(n.endswith(("stolen.txt", "/root/", "/data/", "helpers.py")) for n in names)
        assert not any("OUTSIDE-SECRET" in text for text in texts.values())
    [event] = journal(nb, f"MESSAGE_ID={Event.EXPORTED.value}", f"COURSE={COURSE}")
    assert event["STUDENTS"] == "2" and int(event["FILES"]) >= 2 and int(event["BYTES"]) > 0
    assert int(event["LINKS_LEFT_OUT"]) >= 2


def test_the_timer_saves_then_deletes_an_ended_courses_students(
        nb: Nbunits, students: dict[str, tuple[str, str]]) -> None:
    # Installed, enabled and valid, as the other units (test_installation.py).
    assert nb.box.systemctl("is-enabled", "nbunits-course-end.timer").stdout.strip() == "enabled"
    verify = nb.box.run("systemd-analyze", "verify", "/etc/systemd/system/nbunits-course-end.timer",
                        "/etc/systemd/system/nbunits-course-end.service", check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    users = [user for user, _ in students.values()]
    only, both = users
    end_now(nb, COURSE)
    dry = nb.nbunits("course", "expire", "--dry-run").stdout
    assert all(user in dry for user in users) and "dry run" in dry, dry
    assert set(users) <= nb.users()

    nb.box.systemctl("start", "nbunits-course-end.service")  # a oneshot: waits for it
    assert nb.show("nbunits-course-end.service", "Result")["Result"] == "success"
    # The student of this course only: gone whole, as `student delete` does.
    assert only not in nb.users() and not (nb.home / only).exists()
    # The other keeps their user and their demo course; this course's folder is gone.
    assert both in nb.users() and (nb.home / both / "demo").is_dir()
    assert not (nb.home / both / COURSE).exists()
    assert not [u for u in nb.student_units() if f"nbunits-{COURSE}@" in u]
    # The backup: an archive per student with their saved change.
    [folder] = nb.box.run("ls", BACKUPS).stdout.split()
    assert folder.startswith(f"{COURSE}-")
    for student, (_, marker) in students.items():
        texts = read_zip(nb, f"{BACKUPS}/{folder}/{student}.zip")["texts"]
        assert isinstance(texts, dict) and marker in texts[f"{COURSE}/{NOTEBOOK}"]
    index = json.loads(nb.box.run("cat", f"{BACKUPS}/{folder}/index.json").stdout)
    assert {(e["user"], e["id"], e["archive"]) for e in index} == {
        (user, student, f"{student}.zip") for student, (user, _) in students.items()}
    deleted = journal(nb, f"MESSAGE_ID={Event.DELETED.value}", f"COURSE={COURSE}")
    assert {e["STUDENT"] for e in deleted} == set(users)
    assert all(e["BACKUP"] == f"{BACKUPS}/{folder}" for e in deleted)
    exported = journal(nb, f"MESSAGE_ID={Event.EXPORTED.value}", f"COURSE={COURSE}")
    assert [e["STUDENTS"] for e in exported if e["DIR"] == f"{BACKUPS}/{folder}"] == ["2"]
    # Students by their user only: no LMS id in the timer's lines or the events.
    logged = nb.box.run("journalctl", "--no-pager", "-o", "verbose",
                        "-u", "nbunits-course-end.service").stdout
    logged += json.dumps(deleted)
    assert only in logged and not any(student in logged for student in students)

    async def launch() -> int:
        async with client(nb) as session, session.get(
                f"/ipythonExercice/{COURSE}/{NOTEBOOK}/{next(iter(students))}",
                allow_redirects=False) as resp:
            return resp.status
    assert asyncio.run(launch()) == 410  # no launch makes the course again
    assert only not in nb.users()


def test_a_backup_that_cannot_be_written_deletes_nothing(nb: Nbunits) -> None:
    course, student = "ending-full", secrets.token_hex(16)
    nb.add_course(course)
    user = save_change(nb, course, student, "# kept")
    end_now(nb, course)
    # The backup folder full: a small file system, filled.
    nb.box.run("mkdir", "-p", BACKUPS)
    nb.box.run("mount", "-t", "tmpfs", "-o", "size=256k", "full", BACKUPS)
    try:
        nb.box.run("dd", "if=/dev/zero", f"of={BACKUPS}/filler", "bs=4k", check=False)
        result = nb.box.systemctl("start", "nbunits-course-end.service", check=False)
        assert user in nb.users() and (nb.home / user / course / NOTEBOOK).is_file()
        assert result.returncode != 0  # the service failed: systemctl --failed shows it
        assert nb.box.run("ls", "-A", BACKUPS).stdout.split() == ["filler"]
        assert not journal(nb, f"MESSAGE_ID={Event.DELETED.value}", f"COURSE={course}")
        failed = journal(nb, f"MESSAGE_ID={Event.FAILED.value}", f"COURSE={course}")
        assert any("nothing deleted" in e["MESSAGE"] for e in failed), failed
    finally:
        nb.box.run("umount", BACKUPS)
        nb.box.systemctl("reset-failed", "nbunits-course-end.service", check=False)
    assert user_for(student) == user
