"""A course's update merged into students' edited copies (merge_updates): the decision,
nbdime's merge as nbunits sets it up, and sync on a real folder. The sandbox around
the merge (a transient unit) is tested in tests/integration/test_courses.py."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from pathlib import Path

import nbformat
import pytest

from nbunits.core.errors import Code
from nbunits.helper import merge
from nbunits.helper.copies import (
    Action,
    Copies,
    decide,
    load_manifest,
    marker_path,
    newer,
    sync,
)
from nbunits.helper.notebooks import normalize

REPO = Path(__file__).resolve().parents[2]


def notebook(*cells: tuple[str, str]) -> bytes:
    """(id, source) pairs; a source starting with '#' is a markdown cell."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [(nbformat.v4.new_markdown_cell if source.startswith("#")
                 else nbformat.v4.new_code_cell)(source, id=cid) for cid, source in cells]
    return nbformat.writes(nb).encode()


BASE = notebook(("t", "# Title"), ("a", "x = 1"), ("b", "print(x)"))
# The student changed a cell and added one at the end.
MINE = notebook(("t", "# Title"), ("a", "x = 1  # mine"), ("b", "print(x)"), ("s", "extra = 2"))
# The course changed the title and added a section at the end.
THEIRS = notebook(("t", "# Title, v2"), ("a", "x = 1"), ("b", "print(x)"), ("n", "# New part"))
# The course changed the cell the student changed.
CLASH = notebook(("t", "# Title"), ("a", "x = 2"), ("b", "print(x)"))


def sources(data: bytes) -> list[str]:
    return [c["source"] for c in nbformat.reads(data.decode(), as_version=4).cells]


# --- the decision ---------------------------------------------------------------

@pytest.mark.parametrize("running, notified, tried, action", [
    (False, None, None, Action.MERGE),
    (False, "m2", None, Action.MERGE),  # announced by `course update`: merged at the launch
    (True, None, None, Action.NOTIFY),  # never under a running Jupyter: announced
    (False, "m2", "m2", Action.KEEP),  # a version is merged once
    (False, None, "m2", Action.NOTIFY),  # a merge that failed: announced instead
    (False, "m2", "m1", Action.MERGE),  # a newer version than the one tried
])
def test_decide_merges_an_edited_copy_once_per_version_and_never_under_a_running_jupyter(
        running, notified, tried, action):
    assert decide("m2", "m1", "s", notified, running, merging=True, tried=tried) is action
    # Merging off: as before.
    assert decide("m2", "m1", "s", notified, running, tried=tried) is (
        Action.KEEP if notified == "m2" else Action.NOTIFY)


# --- nbdime's merge, as nbunits sets it up --------------------------------------------

def test_a_clean_merge_keeps_the_students_changes_and_brings_the_courses():
    merged = merge.merge(BASE, MINE, THEIRS)
    assert merged.conflicts == 0
    assert sources(merged.data) == ["# Title, v2", "x = 1  # mine", "print(x)", "extra = 2",
                                    "# New part"]
    nbformat.validate(nbformat.reads(merged.data.decode(), as_version=4))


def test_a_cell_both_changed_is_a_conflict_marked_in_its_source():
    merged = merge.merge(BASE, MINE, CLASH)
    assert merged.conflicts == 1
    assert "<<<<<<< local\nx = 1  # mine\n=======\nx = 2\n>>>>>>> remote" in sources(merged.data)
    cells = nbformat.reads(merged.data.decode(), as_version=4).cells
    assert len({c.id for c in cells}) == len(cells)


def test_the_merge_runs_no_program(monkeypatch):
    """The same conflict marks on every host: nbdime would use git or diff3 where found."""
    from nbdime import prettyprint

    def no_program(*args, **kw):
        raise AssertionError(f"the merge ran a program: {args}")

    monkeypatch.setattr(prettyprint, "external_merge_render", no_program)
    assert "<<<<<<< local\nx = 1  # mine\n=======\nx = 2\n>>>>>>> remote" in sources(
        merge.merge(BASE, MINE, CLASH).data)


def test_what_is_not_a_notebook_is_a_merge_error():
    with pytest.raises(merge.MergeError) as caught:
        merge.merge(BASE, b"{not json", THEIRS)
    assert caught.value.code is Code.MERGE_FAILED


def test_the_pin_is_the_one_setup_installs_and_the_sandbox_is_filled():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["nbunits"]
    assert merge.NBDIME_PIN in declared["no-dependencies"]
    props = merge.properties()
    assert not any(re.search(r"@[A-Z_]+@", p) for p in props), props
    for wanted in ("DynamicUser=yes", "PrivateNetwork=yes", "CapabilityBoundingSet=",
                   f"MemoryMax={merge.MEMORY_MAX}", f"RuntimeMaxSec={merge.RUNTIME_MAX}s"):
        assert wanted in props


# --- sync, on a real folder ----------------------------------------------------------

def make_copies(root: Path) -> Copies:
    for folder in ("masters", "home"):
        (root / folder).mkdir(exist_ok=True)
    return Copies("c1", root / "masters", root / "home", root / "state" / "nbx.json",
                  os.getuid(), os.getgid(), student="s1", versions=root / "versions",
                  merger=merge.merge)


def publish(copies: Copies, data: bytes) -> None:
    (copies.masters / "w").mkdir(exist_ok=True)
    (copies.masters / "w" / "a.ipynb").write_bytes(normalize(data, "w/a.ipynb"))


def copy(copies: Copies, name: str = "a.ipynb") -> Path:
    return copies.home / "c1" / "w" / name


def student_writes(copies: Copies, data: bytes) -> None:
    copy(copies).write_bytes(data)


def test_a_clean_merge_becomes_the_copy(tmp_path):
    copies = make_copies(tmp_path)
    publish(copies, BASE)
    assert sync(copies, running=False).of(Action.INSTALL) == ["w/a.ipynb"]
    assert len(list(copies.versions.iterdir())) == 1  # the base, kept
    student_writes(copies, MINE)
    publish(copies, THEIRS)
    assert sync(copies, running=False).of(Action.MERGED) == ["w/a.ipynb"]
    assert sources(copy(copies).read_bytes())[-2:] == ["extra = 2", "# New part"]
    assert not (copies.home / "c1" / marker_path("w/a.ipynb")).exists()
    assert sync(copies, running=False).done == {}  # recorded as made from the new version
    assert not newer(copies, "w/a.ipynb").newer


def test_a_merge_with_conflicts_goes_beside_the_untouched_copy(tmp_path):
    copies = make_copies(tmp_path)
    publish(copies, BASE)
    sync(copies, running=False)
    student_writes(copies, MINE)
    publish(copies, CLASH)
    assert sync(copies, running=False).of(Action.CONFLICT) == ["w/a.ipynb"]
    assert copy(copies).read_bytes() == MINE  # the student's, byte for byte
    beside = copy(copies, "a-merged.ipynb").read_bytes()
    assert "=======\nx = 2\n>>>>>>> remote" in "\n".join(sources(beside))
    marker = (copies.home / "c1" / marker_path("w/a.ipynb")).read_text()
    assert "`a-merged.ipynb`" in marker
    assert any("a-merged.ipynb" in line for line in newer(copies, "w/a.ipynb").changes)
    assert load_manifest(copies.manifest)["w/a.ipynb"].merged == "w/a-merged.ipynb"
    assert sync(copies, running=False).done == {}  # merged once
    # A newer version: merged again, beside, never over the first merge.
    publish(copies, notebook(("t", "# Title"), ("a", "x = 3"), ("b", "print(x)")))
    assert sync(copies, running=False).of(Action.CONFLICT) == ["w/a.ipynb"]
    assert copy(copies, "a-merged-2.ipynb").exists() and copy(copies).read_bytes() == MINE
    assert copy(copies, "a-merged.ipynb").read_bytes() == beside


def test_a_running_jupyter_is_told_and_merged_at_the_next_launch(tmp_path):
    copies = make_copies(tmp_path)
    publish(copies, BASE)
    sync(copies, running=False)
    student_writes(copies, MINE)
    publish(copies, THEIRS)
    assert sync(copies, running=True).of(Action.NOTIFY) == ["w/a.ipynb"]
    assert copy(copies).read_bytes() == MINE
    assert sync(copies, running=False).of(Action.MERGED) == ["w/a.ipynb"]


@pytest.mark.parametrize("why", ["no base kept", "the merge fails", "garbage copy"])
def test_a_merge_that_cannot_be_done_is_announced_and_changes_nothing(tmp_path, why):
    def failing(*_: bytes) -> merge.Merged:
        raise merge.MergeError(Code.MERGE_FAILED, "the merge did not finish: timeout")

    copies = make_copies(tmp_path)
    publish(copies, BASE)
    sync(copies, running=False)
    if why == "no base kept":
        for kept in copies.versions.iterdir():
            kept.unlink()
    elif why == "the merge fails":
        copies = dataclasses.replace(copies, merger=failing)
    mine = b'{"cells": "garbage' if why == "garbage copy" else MINE
    student_writes(copies, mine)
    publish(copies, THEIRS)
    assert sync(copies, running=False).of(Action.NOTIFY) == ["w/a.ipynb"]
    assert copy(copies).read_bytes() == mine
    assert sorted(p.name for p in copy(copies).parent.iterdir()) == ["a.NEW-VERSION.md", "a.ipynb"]
    assert sync(copies, running=False).done == {}  # tried once, not at every launch


def test_the_manifest_of_an_older_nbunits_still_reads(tmp_path):
    copies = make_copies(tmp_path)
    copies.manifest.parent.mkdir(parents=True)
    copies.manifest.write_text(json.dumps({"version": 1, "notebooks": {
        "w/a.ipynb": {"master": "m1", "notified": None}}}))
    record = load_manifest(copies.manifest)["w/a.ipynb"]
    assert (record.master, record.tried, record.merged) == ("m1", None, None)
