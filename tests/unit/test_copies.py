"""Students' copies and master updates: hashing, decisions, sync, reset; a property test."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbunits.admin.cli import build_parser, course_options
from nbunits.admin.publish import check_masters, publish
from nbunits.core.config import Settings
from nbunits.helper.copies import (
    Action,
    Copies,
    decide,
    load_manifest,
    marker_path,
    reset,
    sync,
)
from nbunits.helper.notebooks import normalize, source_hash
from nbunits.helper.service import handle_request


def notebook(*sources: str, outputs: list | None = None) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(sources[0])]
    for source in sources[1:]:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = outputs or []
        nb.cells.append(cell)
    return nbformat.writes(nb).encode()


def make_copies(root: Path) -> Copies:
    masters, home = root / "masters", root / "home"
    masters.mkdir(), home.mkdir()
    return Copies("c1", masters, home, root / "state" / "nbx.json", os.getuid(), os.getgid(),
                  student="s1")


def put_master(copies: Copies, name: str, data: bytes) -> None:
    path = copies.masters / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(normalize(data, name))


def copy_of(copies: Copies, name: str) -> Path:
    return copies.home / "c1" / name


def edit(path: Path, text: str) -> None:
    nb = json.loads(path.read_text())
    nb["cells"].append({"cell_type": "code", "source": text, "metadata": {}, "outputs": [],
                        "execution_count": None, "id": os.urandom(4).hex()})
    path.write_text(json.dumps(nb))


def run_cells(path: Path) -> None:
    """What running a notebook does: outputs and counts change, sources do not."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["execution_count"] = 7
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "out\n"}]
    path.write_text(json.dumps(nb))


# --- hashing and normalizing -------------------------------------------------

def test_source_hash_ignores_outputs_ids_and_counts_but_not_sources():
    plain = notebook("# T", "x = 1")
    ran = notebook("# T", "x = 1", outputs=[nbformat.v4.new_output("stream", text="1")])
    assert source_hash(plain) == source_hash(ran)
    assert source_hash(plain) != source_hash(notebook("# T", "x = 2"))
    assert source_hash(plain) != source_hash(notebook("# T", "x = 1", "y"))
    assert source_hash(b"{broken").startswith("raw:")


def test_normalize_upgrades_the_minor_and_adds_stable_cell_ids():
    old = {"nbformat": 4, "nbformat_minor": 2, "metadata": {},
           "cells": [{"cell_type": "code", "source": "1", "metadata": {}, "outputs": [],
                      "execution_count": None}]}
    data = json.dumps(old).encode()
    first, again = normalize(data, "w/a.ipynb"), normalize(data, "w/a.ipynb")
    assert first == again
    nb = json.loads(first)
    assert nb["nbformat_minor"] == nbformat.v4.nbformat_minor
    assert isinstance(nb["cells"][0]["id"], str)
    nbformat.validate(nbformat.reads(first.decode(), as_version=4))


# --- decisions ----------------------------------------------------------------

@pytest.mark.parametrize("master, record, copy, notified, running, action", [
    ("m2", None, None, None, False, Action.INSTALL),
    ("m2", "m1", None, None, True, Action.INSTALL),  # a new file is never open in a tab
    ("m2", "m1", "m2", None, False, Action.UP_TO_DATE),
    ("m2", None, "s", None, False, Action.ADOPT),
    ("m2", "m1", "m1", None, False, Action.FOLLOW),
    ("m2", "m1", "m1", None, True, Action.DEFER),
    ("m2", "m1", "s", None, False, Action.NOTIFY),
    ("m2", "m1", "s", "m2", False, Action.KEEP),  # told once per master version
    ("m1", "m1", "s", None, False, Action.KEEP),  # modified, nothing new
])
def test_decide(master, record, copy, notified, running, action):
    assert decide(master, record, copy, notified, running) is action


# --- sync and reset on a real folder -------------------------------------------

def test_unmodified_copies_follow_modified_ones_stay_and_are_told(tmp_path):
    copies = make_copies(tmp_path)
    put_master(copies, "a.ipynb", notebook("# A", "v = 1"))
    put_master(copies, "w/b.ipynb", notebook("# B", "v = 1"))
    report = sync(copies, running=False)
    assert sorted(report.of(Action.INSTALL)) == ["a.ipynb", "w/b.ipynb"]
    assert copy_of(copies, "a.ipynb").stat().st_uid == os.getuid()

    edit(copy_of(copies, "w/b.ipynb"), "mine = 1")
    run_cells(copy_of(copies, "a.ipynb"))  # outputs only: still unmodified
    put_master(copies, "a.ipynb", notebook("# A", "v = 2"))
    put_master(copies, "w/b.ipynb", notebook("# B", "v = 2"))
    put_master(copies, "new.ipynb", notebook("# N"))
    report = sync(copies, running=False)
    assert report.of(Action.FOLLOW) == ["a.ipynb"]
    assert report.of(Action.NOTIFY) == ["w/b.ipynb"]
    assert report.of(Action.INSTALL) == ["new.ipynb"]
    assert "v = 2" in copy_of(copies, "a.ipynb").read_text()
    assert "mine = 1" in copy_of(copies, "w/b.ipynb").read_text()
    marker = copies.home / "c1" / marker_path("w/b.ipynb")
    assert marker.name == "b.NEW-VERSION.md"
    assert "/ipythonExercice/c1/w/b.ipynb/s1?reset=1" in marker.read_text()

    assert sync(copies, running=False).done == {}  # told once, nothing else to do


def test_a_running_jupyter_defers_the_update_to_the_next_launch(tmp_path):
    copies = make_copies(tmp_path)
    put_master(copies, "a.ipynb", notebook("# A", "v = 1"))
    sync(copies, running=False)
    put_master(copies, "a.ipynb", notebook("# A", "v = 2"))
    assert sync(copies, running=True).of(Action.DEFER) == ["a.ipynb"]
    assert "v = 1" in copy_of(copies, "a.ipynb").read_text()
    assert sync(copies, running=False).of(Action.FOLLOW) == ["a.ipynb"]
    assert "v = 2" in copy_of(copies, "a.ipynb").read_text()


def test_removed_masters_leave_copies_alone(tmp_path):
    copies = make_copies(tmp_path)
    put_master(copies, "a.ipynb", notebook("# A"))
    sync(copies, running=False)
    (copies.masters / "a.ipynb").unlink()
    sync(copies, running=False)
    assert copy_of(copies, "a.ipynb").exists()


def test_reset_keeps_the_old_copy_beside_a_fresh_one(tmp_path):
    copies = make_copies(tmp_path)
    put_master(copies, "w/a.ipynb", notebook("# A", "v = 1"))
    sync(copies, running=False)
    edit(copy_of(copies, "w/a.ipynb"), "mine = 1")
    put_master(copies, "w/a.ipynb", notebook("# A", "v = 2"))
    sync(copies, running=False)
    now = datetime(2026, 11, 25, 23, 15, 2)
    assert reset(copies, "w/a.ipynb", now) == "w/a-20261125-231502.ipynb"
    assert reset(copies, "w/a.ipynb", now) is None  # already the master: nothing to keep
    edit(copy_of(copies, "w/a.ipynb"), "again")
    assert reset(copies, "w/a.ipynb", now) == "w/a-20261125-231502-2.ipynb"
    assert "mine = 1" in copy_of(copies, "w/a-20261125-231502.ipynb").read_text()
    assert "v = 2" in copy_of(copies, "w/a.ipynb").read_text()
    assert not (copies.home / "c1" / marker_path("w/a.ipynb")).exists()
    assert load_manifest(copies.manifest)["w/a.ipynb"].master == \
        source_hash((copies.masters / "w/a.ipynb").read_bytes())


def test_a_folder_emptied_of_notebooks_then_given_one_again_can_be_reset(tmp_path):
    # Found by the property below: the emptied folder became a link into the course.
    copies = make_copies(tmp_path)
    put_master(copies, "w/b.ipynb", notebook("# B"))
    (copies.masters / "w/b.ipynb").unlink()
    sync(copies, running=False)
    assert (copies.home / "c1" / "w").is_symlink()  # a folder of data: linked
    put_master(copies, "w/b.ipynb", notebook("# B", "v = 2"))
    assert reset(copies, "w/b.ipynb", datetime(2026, 1, 1)) is None
    assert not (copies.home / "c1" / "w").is_symlink()
    assert "v = 2" in copy_of(copies, "w/b.ipynb").read_text()


def test_sync_does_not_follow_a_students_symlink(tmp_path):
    copies = make_copies(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (copies.home / "c1").mkdir()
    (copies.home / "c1" / "w").symlink_to(outside)
    put_master(copies, "w/a.ipynb", notebook("# A"))
    sync(copies, running=False)  # reported in the journal, skipped
    assert list(outside.iterdir()) == []


# --- the property: no edit lost, unmodified copies follow -------------------------

NAMES = ["a.ipynb", "w/b.ipynb", "c.ipynb"]
OPS = st.one_of(
    st.tuples(st.just("master"), st.sampled_from(NAMES)),
    st.tuples(st.just("remove_master"), st.sampled_from(NAMES)),
    st.tuples(st.just("student_edit"), st.sampled_from(NAMES)),
    st.tuples(st.just("student_runs"), st.sampled_from(NAMES)),
    st.tuples(st.just("update"), st.booleans()),
    st.tuples(st.just("reset"), st.sampled_from(NAMES)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=25))
def test_no_student_edit_is_ever_lost(ops):
    with tempfile.TemporaryDirectory() as tmp:
        copies = make_copies(Path(tmp))
        version: dict[str, str] = {}  # master notebook -> its current unique text
        edits: list[str] = []  # every text a student ever typed
        pristine: dict[str, bool] = {}  # copy -> never edited since copied/followed/reset
        for counter, (op, arg) in enumerate(ops):
            if op == "master":
                version[arg] = f"master {arg} v{counter}"
                put_master(copies, arg, notebook(f"# {arg}", version[arg]))
            elif op == "remove_master" and arg in version:
                del version[arg]
                (copies.masters / arg).unlink()
            elif op in ("student_edit", "student_runs") and copy_of(copies, arg).exists():
                if op == "student_edit":
                    edits.append(f"student edit {counter}")
                    edit(copy_of(copies, arg), edits[-1])
                    pristine[arg] = False
                else:
                    run_cells(copy_of(copies, arg))
            elif op == "update":
                running = arg
                sync(copies, running=running)
                for name, text in version.items():
                    if name not in pristine:
                        pristine[name] = True  # copied now
                    if pristine[name] and not running:
                        assert text in copy_of(copies, name).read_text(), \
                            "an unmodified copy did not follow its master"
            elif op == "reset" and arg in version:
                reset(copies, arg, datetime(2026, 1, 1, 0, 0, counter % 60))
                pristine[arg] = True

            everything = "".join(p.read_text() for p in (copies.home / "c1").rglob("*.ipynb")) \
                if (copies.home / "c1").exists() else ""
            for text in edits:
                assert text in everything, f"lost {text!r} after {op} {arg}"
            for name, clean in pristine.items():
                if not clean:  # a modified copy is never replaced (only a reset moves it aside)
                    assert copy_of(copies, name).exists()


# --- publishing and the CLI's course options ---------------------------------------

def test_publish_reports_invalid_masters_by_path_and_publishes_the_rest(tmp_path):
    source, target = tmp_path / "src", tmp_path / "published"
    (source / "w").mkdir(parents=True)
    (source / "w" / "ok.ipynb").write_text(json.dumps(
        {"nbformat": 4, "nbformat_minor": 2, "metadata": {},
         "cells": [{"cell_type": "markdown", "source": "# hi", "metadata": {}}]}))
    (source / "bad.ipynb").write_text('{"cells": 3}')
    (source / ".git").mkdir()
    broken = check_masters(source)
    assert list(broken) == ["bad.ipynb"] and "bad.ipynb is not a valid notebook" in broken["bad.ipynb"]
    assert publish(source, target, skip=set(broken)) == ["w/ok.ipynb"]
    nb = json.loads((target / "w" / "ok.ipynb").read_text())
    assert nb["nbformat_minor"] == nbformat.v4.nbformat_minor and nb["cells"][0]["id"]
    assert not (target / ".git").exists() and not (target / "bad.ipynb").exists()


def test_course_options_come_from_the_course_settings():
    args = build_parser().parse_args(["course", "add", "c1", "--git", "file:///r", "--branch", "main",
                                      "--memory-max", "2G", "--kernel-idle-timeout", "60",
                                      "--network", "slirp4netns"])
    assert course_options(args) == {"memory_max": "2G", "kernel_idle_timeout": 60,
                                    "network": "slirp4netns"}


def test_the_helper_refuses_a_malformed_reset_before_doing_anything():
    reply = asyncio.run(handle_request(Settings(etc_dir=Path("/nonexistent")), {
        "action": "open", "course": "demo", "student": "s1", "notebook": "a.ipynb",
        "reset": "1"}))  # the protocol's reset is a JSON boolean
    assert reply["ok"] is False and reply["code"] == "bad_request"


def test_republishing_swaps_the_course_folder_whole(tmp_path):
    source, target = tmp_path / "src", tmp_path / "published"
    source.mkdir()
    (source / "a.ipynb").write_bytes(notebook("# A"))
    publish(source, target, skip=set())
    (source / "a.ipynb").unlink()
    (source / "b.ipynb").write_bytes(notebook("# B"))
    assert publish(source, target, skip=set()) == ["b.ipynb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["published", "src"]


def _nb(code: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    return nbformat.writes(nb)


def test_a_course_is_published_whole_in_place_and_unchanged_files_are_not_rewritten(tmp_path):
    from nbunits.admin.publish import check_masters, publish
    source, target = tmp_path / "src", tmp_path / "published"
    (source / "data").mkdir(parents=True)
    (source / "data" / "big.bin").write_bytes(b"x" * 1000)
    (source / "helpers.py").write_text("X = 1\n")
    (source / "Leçon").mkdir()
    (source / "Leçon" / "café.ipynb").write_text(_nb("1"))
    (source / " bad.ipynb").write_text(_nb("1"))
    (source / "link").symlink_to("/etc/passwd")
    broken = check_masters(source)
    assert set(broken) == {" bad.ipynb", "link"}
    assert publish(source, target, set(broken)) == ["Leçon/café.ipynb"]
    assert (target / "data" / "big.bin").is_file() and not (target / "link").exists()
    inode, root = (target / "data" / "big.bin").stat().st_ino, target.stat().st_ino
    (source / "helpers.py").unlink()
    (source / "new.txt").write_text("new")
    publish(source, target, set())
    assert (target / "data" / "big.bin").stat().st_ino == inode, "unchanged: not rewritten"
    assert target.stat().st_ino == root, "updated in place: containers mount it"
    assert not (target / "helpers.py").exists() and (target / "new.txt").read_text() == "new"


def test_students_folders_link_the_course_files_and_keep_theirs(tmp_path):
    from pathlib import PurePosixPath

    from nbunits.helper.notebooks import link_tree
    tree, home = tmp_path / "tree", tmp_path / "home"
    for path in ("data/a.csv", "helpers.py", "w1/b.ipynb", "w1/w.csv", "w1/sub/c.csv"):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text("x")
    home.mkdir()
    (home / "c" / "w1").mkdir(parents=True)
    (home / "c" / "w1" / "w.csv").write_text("mine")  # the student's: kept
    mounted = PurePosixPath("/home/student/course")
    uid, gid = os.getuid(), os.getgid()
    assert link_tree(home, "c", tree, mounted, uid, gid) == 3
    assert os.readlink(home / "c" / "data") == "/home/student/course/data"
    assert os.readlink(home / "c" / "w1" / "sub") == "/home/student/course/w1/sub"
    assert (home / "c" / "w1" / "w.csv").read_text() == "mine"
    assert not (home / "c" / "w1" / "b.ipynb").exists(), "notebooks are copies, not links"
    # The course changes: a notebook in data/ (the link becomes a folder), helpers gone.
    (tree / "data" / "d.ipynb").write_text("x")
    (tree / "helpers.py").unlink()
    link_tree(home, "c", tree, mounted, uid, gid)
    assert (home / "c" / "data").is_dir() and not (home / "c" / "data").is_symlink()
    assert os.readlink(home / "c" / "data" / "a.csv") == "/home/student/course/data/a.csv"
    assert not os.path.lexists(home / "c" / "helpers.py")


def test_tidying_a_students_folder_looks_at_a_bounded_number_of_its_entries(tmp_path, monkeypatch):
    """A reset (and a launch) tidies our stale links in the student's course folder:
    it reads at most MAX_SCANNED of its entries, however many files the student made."""
    from pathlib import PurePosixPath

    from nbunits.helper import notebooks
    tree, home = tmp_path / "tree", tmp_path / "home"
    tree.mkdir()
    (tree / "a.ipynb").write_text("x")
    folder = home / "c"
    folder.mkdir(parents=True)
    for i in range(1000):  # our links to files that left the course: stale
        os.symlink(f"/home/student/course/gone{i}.csv", folder / f"gone{i}.csv")
    monkeypatch.setattr(notebooks, "MAX_SCANNED", 100)
    notebooks.link_tree(home, "c", tree, PurePosixPath("/home/student/course"),
                        os.getuid(), os.getgid())
    left = len(os.listdir(folder))
    assert 900 <= left < 1000, left  # some tidied, never more than the bound looked at
    monkeypatch.setattr(notebooks, "MAX_SCANNED", 10_000)
    notebooks.link_tree(home, "c", tree, PurePosixPath("/home/student/course"),
                        os.getuid(), os.getgid())
    assert os.listdir(folder) == []
