"""Graded notebooks (nbgrader's cell metadata): published as nbgrader's release version,
the source kept root's only, broken metadata reported and skipped. The integration
side, as a student in a real container: tests/integration/test_graded.py.

data/graded-source.ipynb has one cell of each of nbgrader's kinds; data/graded-release-
nbgrader.ipynb is what nbgrader 0.9.6's own preprocessors made of it (GenerateAssignment's
list, less IncludeHeaderFooter, InstantiateTests and SaveCells: nbgrader's database)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import nbformat
import pytest

from nbunits.admin import graded
from nbunits.admin.publish import check_masters, publish
from nbunits.core.errors import NbunitsError
from nbunits.helper.notebooks import normalize

DATA = Path(__file__).parent / "data"
SECRETS = ("SOLUTION-SECRET", "SOLUTION-OUTPUT", "WHOLE-CELL-SECRET", "HIDDEN-SECRET", "BOTH-SECRET",
           "PROSE-SECRET", "MD-WHOLE-SECRET", "MARK-SECRET")


def source() -> bytes:
    return (DATA / "graded-source.ipynb").read_bytes()


def test_the_release_is_nbgraders_own_byte_for_byte():
    ours = graded.release(normalize(source(), "hw.ipynb"), "hw.ipynb")
    theirs = normalize((DATA / "graded-release-nbgrader.ipynb").read_bytes(), "hw.ipynb")
    assert ours == theirs
    for secret in SECRETS:
        assert secret in source().decode() and secret not in ours.decode()


def test_the_stubs_and_locks_are_nbgraders_defaults():
    cells = json.loads(graded.release(source(), "hw.ipynb"))["cells"]
    by_id = {c["metadata"].get("nbgrader", {}).get("grade_id"): c for c in cells}
    assert "".join(by_id["square"]["source"]) == (
        'def square(x):\n    """x times x"""\n    # YOUR CODE HERE\n    raise NotImplementedError()')
    assert "".join(by_id["cube"]["source"]) == "# YOUR CODE HERE\nraise NotImplementedError()"
    assert "".join(by_id["why2"]["source"]) == "YOUR ANSWER HERE"
    assert "".join(by_id["test_square"]["source"]) == "assert square(2) == 4\nprint('ok')"
    assert by_id["test_square"]["metadata"]["editable"] is False
    assert by_id["square"]["metadata"]["deletable"] is False
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
               for c in cells if c["cell_type"] == "code")


def test_another_kernel_language_gets_its_stub():
    nb = json.loads(source())
    nb["metadata"]["kernelspec"] = {"name": "ir", "language": "R", "display_name": "R"}
    cells = json.loads(graded.release(json.dumps(nb).encode(), "hw.ipynb"))["cells"]
    assert "".join(cells[3]["source"]) == "# YOUR CODE HERE\nfail()"
    nb["metadata"]["kernelspec"]["language"] = "cobol"
    with pytest.raises(NbunitsError, match="'cobol', for which nbgrader has no code stub"):
        graded.release(json.dumps(nb).encode(), "hw.ipynb")


def _nb(*cells: nbformat.NotebookNode) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nbformat.writes(nb).encode()


def _cell(source: str, markdown: bool = False, **nbgrader: object) -> nbformat.NotebookNode:
    cell = (nbformat.v4.new_markdown_cell if markdown else nbformat.v4.new_code_cell)(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"grade": False, "locked": False, "solution": False,
                                     "schema_version": 3, **nbgrader}
    return cell


def test_a_notebook_without_nbgrader_is_published_as_before(tmp_path):
    """Neither metadata nor markers: the bytes publishing wrote before graded.py."""
    data = _nb(_cell("print('BEGIN')"), _cell("# SOLUTION? no", markdown=True))
    assert graded.release(data, "a.ipynb") is None
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.ipynb").write_bytes(data)
    publish(tmp_path / "src", tmp_path / "out", set(), keep=tmp_path / "sources" / "c")
    assert (tmp_path / "out" / "a.ipynb").read_bytes() == normalize(data, "a.ipynb")
    assert not (tmp_path / "sources" / "c").exists()


BROKEN = {
    "twice.ipynb": (_nb(_cell("x = 1", solution=True, grade_id="q1"),
                        _cell("assert x", grade=True, points=1, grade_id="q1")),
                    "grade_id 'q1' is used twice"),
    "open.ipynb": (_nb(_cell("### BEGIN SOLUTION\nx = 1  # SECRET", solution=True, grade_id="q1")),
                   "a solution region that never ends"),
    "pointless.ipynb": (_nb(_cell("assert x", grade=True, grade_id="t1")),
                        "grade cell 't1' has no points"),
    "unmarked.ipynb": (_nb(_cell("### BEGIN SOLUTION\nx = 1  # SECRET\n### END SOLUTION")),
                       "a solution region in a cell that is not a solution cell"),
    "hidden.ipynb": (_nb(_cell("### BEGIN HIDDEN TESTS\nassert x  # SECRET\n### END HIDDEN TESTS",
                               locked=True, grade_id="s")),
                     "a BEGIN HIDDEN TESTS region in a cell that is not a autograder tests cell"),
    "nested.ipynb": (_nb(_cell("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
                               solution=True, grade_id="s")),
                     "a BEGIN SOLUTION inside a solution region"),
    "no-id.ipynb": (_nb(_cell("x = 1", solution=True)), "without a grade_id"),
    "bad-key.ipynb": (_nb(_cell("x = 1", solution=True, grade_id="s", secret=True)),
                      "unknown key(s) 'secret' in metadata.nbgrader"),
    "old.ipynb": (_nb(_cell("x = 1", solution=True, grade_id="s", schema_version=1)),
                  "schema version 1"),
    "md.ipynb": (_nb(_cell("answer here", markdown=True, solution=True, grade_id="s")),
                 "a markdown cell that is graded must be a solution cell"),
    "yes.ipynb": (_nb(_cell("x = 1", solution=1, grade_id="s")),
                  "metadata.nbgrader.solution is 1, not bool"),
    "id.ipynb": (_nb(_cell("x = 1", solution=True, grade_id="q 1")), "grade_id 'q 1' has characters"),
    "task.ipynb": (_nb(_cell("x = 1", task=True, points=1, grade_id="s")),
                   "a task cell must be a markdown cell"),
    "points.ipynb": (_nb(_cell("x", grade=True, points="many", grade_id="s")),
                     "metadata.nbgrader.points is \"many\", not int or float"),
}


def test_broken_nbgrader_metadata_is_reported_and_skipped_and_the_rest_publishes(tmp_path):
    src, out, keep = tmp_path / "src", tmp_path / "out", tmp_path / "sources" / "c"
    src.mkdir()
    for name, (data, _) in BROKEN.items():
        (src / name).write_bytes(data)
    (src / "good.ipynb").write_bytes(source())
    (src / "ps1").mkdir()
    (src / "ps1" / "gradebook.db").write_bytes(b"SQLite format 3\0 assert square(7) == 49")
    broken = check_masters(src)
    assert broken.pop("ps1/gradebook.db") == ("ps1/gradebook.db: nbgrader's gradebook (its hidden "
                                              "tests, students' grades) is never published")
    assert set(broken) == set(BROKEN)
    for name, (_, why) in BROKEN.items():
        assert broken[name].startswith(f"{name}, cell ") and why in broken[name], broken[name]
    assert publish(src, out, set(broken) | {"ps1/gradebook.db"}, keep=keep) == ["good.ipynb"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["good.ipynb", "ps1"]
    assert "SECRET" not in (out / "good.ipynb").read_text()


def test_the_source_is_kept_root_only_and_follows_the_course(tmp_path):
    src, out, keep = tmp_path / "src", tmp_path / "out", tmp_path / "sources" / "c"
    (src / "week1").mkdir(parents=True)
    (src / "week1" / "hw.ipynb").write_bytes(source())
    (src / "notes.ipynb").write_bytes(_nb(_cell("1 + 1")))
    assert publish(src, out, set(), keep=keep) == ["notes.ipynb", "week1/hw.ipynb"]
    kept = keep / "week1" / "hw.ipynb"
    assert kept.read_bytes() == normalize(source(), "week1/hw.ipynb")
    assert (out / "week1" / "hw.ipynb").read_bytes() == graded.release(source(), "week1/hw.ipynb")
    assert sorted(p.relative_to(keep).as_posix() for p in keep.rglob("*")) == ["week1", "week1/hw.ipynb"]
    for path in (keep.parent, keep, keep / "week1"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    for path in [out, *out.rglob("*")]:
        assert "SECRET" not in (path.read_text() if path.is_file() else ""), path
        assert path.stat().st_mode & 0o004, f"{path}: the published course stays world-readable"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sources", "src"], "nothing left over"
    # No longer graded: its source goes.
    (src / "week1" / "hw.ipynb").write_bytes(_nb(_cell("1 + 2")))
    publish(src, out, set(), keep=keep)
    assert not keep.exists() and sorted(p.name for p in keep.parent.iterdir()) == []


def test_a_text_notebook_with_nbgrader_metadata_is_published_as_its_release(tmp_path):
    import jupytext

    from nbunits.admin.text_notebooks import check_text_masters, convert
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.cells = [_cell("def square(x):\n    ### BEGIN SOLUTION\n    return x * x  # TEXT-SECRET\n"
                      "    ### END SOLUTION", solution=True, grade_id="sq")]
    text = jupytext.writes(nb, fmt="py:percent")
    src, out, keep = tmp_path / "src", tmp_path / "out", tmp_path / "keep"
    src.mkdir()
    (src / "hw.py").write_text(text)
    assert "TEXT-SECRET" in convert(text.encode(), "hw.py").decode()
    assert check_text_masters(src) == {} and check_masters(src) == {}
    publish(src, out, set(), keep=keep)
    assert "raise NotImplementedError()" in (out / "hw.ipynb").read_text()
    assert "TEXT-SECRET" not in (out / "hw.ipynb").read_text() and not (out / "hw.py").exists()
    assert "TEXT-SECRET" in (keep / "hw.ipynb").read_text()
    (src / "hw.py").write_text(text.replace('"grade_id": "sq"', '"grade_id": ""'))
    assert "without a grade_id" in check_masters(src)["hw.py"]


def test_a_course_image_builds_without_graded_notebooks_in_its_context(tmp_path):
    """A Containerfile's COPY . would put them in the image every student runs."""
    import jupytext

    from nbunits.admin import course_image
    repo, context = tmp_path / "repo", tmp_path / "context"
    (repo / "week1").mkdir(parents=True)
    context.mkdir()
    (repo / "week1" / "hw.ipynb").write_bytes(source())
    (repo / "marked.ipynb").write_bytes(_nb(_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")))
    nb = nbformat.reads(source().decode(), as_version=4)
    (repo / "hw2.py").write_text(jupytext.writes(nb, fmt="py:percent"))
    (repo / "plain.ipynb").write_bytes(_nb(_cell("1 + 1")))
    (repo / "helpers.py").write_text("# BEGIN SOLUTION is just words in a module\n")
    (repo / "Containerfile").write_text("ARG BASE\nFROM $BASE\nCOPY . /course\n")
    (repo / "week1" / "gradebook.db").write_bytes(b"SQLite format 3\0")
    left = course_image.copy_plain(repo, context, 1 << 24)
    assert sorted(left) == ["hw2.py", "marked.ipynb", "week1/gradebook.db", "week1/hw.ipynb"]
    assert sorted(p.relative_to(context).as_posix() for p in context.rglob("*")) == [
        "Containerfile", "helpers.py", "plain.ipynb", "week1"]


def test_an_origin_folder_others_can_list_is_told_apart():
    """course add --dir FOLDER with graded notebooks warns when every user may read it."""
    import os
    import shutil
    import tempfile

    from nbunits.admin.courses import open_to_others
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp and / let others in
    try:
        os.chmod(folder, 0o755)
        assert open_to_others(folder)
        os.chmod(folder, 0o750)
        assert not open_to_others(folder)
        os.chmod(folder, 0o755)
        (folder / "inner").mkdir(mode=0o755)
        os.chmod(folder, 0o710)  # others cannot get through it
        assert not open_to_others(folder / "inner")
    finally:
        shutil.rmtree(folder)


def test_an_image_attached_to_a_written_answer_goes_with_it():
    png = {"image/png": "iVBORw0KGgo="}
    answer = _cell("![the answer](attachment:answer.png)", markdown=True, grade=True, solution=True,
                   points=1, grade_id="why")
    answer.attachments = {"answer.png": png}
    task = _cell("![the plot](attachment:plot.png)\n### BEGIN MARK SCHEME\n![](attachment:marks.png)\n"
                 "### END MARK SCHEME", markdown=True, task=True, points=1, grade_id="task")
    task.attachments = {"plot.png": png, "marks.png": png}
    cells = json.loads(graded.release(_nb(answer, task), "a.ipynb"))["cells"]
    assert "attachments" not in cells[0] and cells[0]["source"] == ["YOUR ANSWER HERE"]
    assert list(cells[1]["attachments"]) == ["plot.png"]


def test_a_stray_end_line_goes_and_a_missing_schema_version_is_written():
    """As nbgrader: an END line outside a region is dropped; its autograder wants version 3."""
    cell = _cell("x = 1\n### END SOLUTION\n### END HIDDEN TESTS", grade=True, points=1, grade_id="t")
    del cell.metadata["nbgrader"]["schema_version"]
    out = json.loads(graded.release(_nb(cell), "a.ipynb"))["cells"][0]
    assert out["source"] == ["x = 1"] and out["metadata"]["nbgrader"]["schema_version"] == 3


def test_course_check_says_what_would_publish_and_exits_1_when_something_is_skipped(tmp_path, capsys):
    from nbunits.admin import cli
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "hw.ipynb").write_bytes(source())
    (tmp_path / "notes.ipynb").write_bytes(_nb(_cell("1 + 1")))
    cli.main(["course", "check", str(tmp_path)])
    out = capsys.readouterr().out
    assert out == ("  notes.ipynb\n  w/hw.ipynb: graded (nbgrader), published as its release version\n"
                   f"{tmp_path}: 2 notebook(s) would be published (1 graded)\n")
    (tmp_path / "twice.ipynb").write_bytes(BROKEN["twice.ipynb"][0])
    with pytest.raises(SystemExit) as exited:
        cli.main(["course", "check", str(tmp_path)])
    assert exited.value.code == 1
    assert "  skipped: twice.ipynb, cell 2: nbgrader metadata: grade_id 'q1' is used twice" \
        in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.ipynb", "twice.ipynb", "w"], \
        "nothing written"
