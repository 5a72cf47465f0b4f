"""Grading's assembly and scoring (helper/grading.py): the course's tests are put back
in place of whatever the student changed, forged metadata is ignored, and the score
comes from the executed outputs. The run itself: tests/integration/test_grading.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbunits.core.config import Settings
from nbunits.core.names import StudentUnits
from nbunits.helper import grading

code, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
HIDDEN = "assert square(3) == 9"


def graded(cell: Any, **meta: object) -> Any:
    cell.metadata["nbgrader"] = {"grade": False, "locked": False, "solution": False,
                                 "schema_version": 3, **meta}
    return cell


def source() -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        md("# Squares"),
        graded(code("x0 = 1"), locked=True, grade_id="setup"),
        graded(code("def square(x):\n    return x * x"), solution=True, grade_id="square"),
        graded(code(f"assert square(2) == 4\n{HIDDEN}"), grade=True, points=2, grade_id="t1"),
        graded(code("assert square(-1) == 1"), grade=True, points=1, grade_id="t2"),
        graded(md("Why?"), grade=True, solution=True, points=3, grade_id="why"),
    ]
    return nb


def release() -> Any:
    """What the student got: the stub, the hidden test gone."""
    nb = copy.deepcopy(source())
    nb.cells[2].source = "def square(x):\n    raise NotImplementedError()"
    nb.cells[3].source = "assert square(2) == 4"
    return nb


def sources(nb: Any) -> list[str]:
    return [c.source for c in nb.cells]


def test_hidden_tests_are_put_back_and_the_answer_kept() -> None:
    student = release()
    student.cells[2].source = "def square(x):\n    return 4"
    out = grading.assemble(student, source())
    assert HIDDEN in out.cells[3].source
    assert out.cells[2].source == "def square(x):\n    return 4"  # the student's answer


def test_an_edited_test_or_locked_cell_is_restored() -> None:
    student = release()
    student.cells[1].source = "import builtins"
    student.cells[3].source = "pass"
    student.cells[3].metadata["nbgrader"]["points"] = 50
    out = grading.assemble(student, source())
    assert sources(out)[1] == "x0 = 1" and sources(out)[3] == f"assert square(2) == 4\n{HIDDEN}"
    assert out.cells[3].metadata["nbgrader"]["points"] == 2


def test_forged_metadata_is_dropped() -> None:
    student = release()
    student.cells.append(graded(code("pass"), grade=True, points=100, grade_id="mine"))
    student.cells.append(graded(code("pass"), grade=True, points=100, grade_id="t2"))  # twice
    student.cells[2].metadata["nbgrader"].update(grade=True, points=9)  # the answer as a test
    out = grading.assemble(student, source())
    assert "nbgrader" not in out.cells[-2].metadata and "nbgrader" not in out.cells[-1].metadata
    assert out.cells[2].metadata["nbgrader"] == source().cells[2].metadata["nbgrader"]


def test_outputs_are_cleared_before_the_run() -> None:
    student = release()
    student.cells[3].outputs = [nbformat.v4.new_output("stream", text="ok")]
    student.cells[3].execution_count = 3
    out = grading.assemble(student, source())
    assert all(c.outputs == [] and c.execution_count is None
               for c in out.cells if c.cell_type == "code")


def ran(nb: Any, errors: dict[int, tuple[str, str]]) -> Any:
    """`nb` as nbconvert returns it, with an error in the cells of `errors`."""
    done = copy.deepcopy(nb)
    for index, cell in enumerate(done.cells):
        if cell.cell_type == "code":
            cell.execution_count = index + 1
            if index in errors:
                ename, evalue = errors[index]
                cell.outputs = [nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                                       traceback=[])]
    return done


def test_scores_come_from_the_executed_outputs() -> None:
    assembled = grading.assemble(release(), source())
    grade = grading.score(assembled, ran(assembled, {3: ("AssertionError", "x" * 500)}),
                          source(), "hw.ipynb")
    assert (grade.total, grade.max) == (1, 3)
    first, second = grade.tests
    assert (first.grade_id, first.points, first.max, first.passed) == ("t1", 0, 2, False)
    assert first.error == "AssertionError" and len(first.message) == grading.MAX_MESSAGE
    assert (second.points, second.passed, second.error) == (1, True, "")
    # Only autograded tests score: the written answer ("why", 3 points) is not counted.
    assert [t.grade_id for t in grade.tests] == ["t1", "t2"]


def test_a_deleted_test_scores_0_and_counts_in_the_maximum() -> None:
    student = release()
    del student.cells[4]
    assembled = grading.assemble(student, source())
    grade = grading.score(assembled, ran(assembled, {}), source(), "hw.ipynb")
    assert (grade.total, grade.max) == (2, 3)
    assert grade.tests[1].error == "Missing" and not grade.tests[1].passed


def test_a_run_that_does_not_match_what_was_sent_scores_nothing() -> None:
    assembled = grading.assemble(release(), source())
    forged = ran(assembled, {})
    forged.cells[3].source = "pass"  # not the test that was sent
    grade = grading.score(assembled, forged, source(), "hw.ipynb")
    assert grade.tests[0].points == 0 and grade.tests[1].points == 1
    unrun = copy.deepcopy(assembled)  # nothing ran (execution_count None)
    assert grading.score(assembled, unrun, source(), "hw.ipynb").total == 0


def test_results_are_roots_and_forgotten(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    units = StudentUnits("c1", "nb" + "a" * 16)
    assembled = grading.assemble(release(), source())
    grade = grading.score(assembled, ran(assembled, {}), source(), "week 1/hw.ipynb")
    grading.store(settings, units, grade)
    path = settings.grade_file(units, "week 1/hw.ipynb")
    assert path.name == "week%201%2Fhw.ipynb.json"
    assert json.loads(path.read_text())["total"] == 3
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert grading.forget(settings, user=units.user) == 1 and not path.exists()
    grading.store(settings, units, grade)
    assert grading.forget(settings, course="c1") == 1
    assert not settings.course_grades("c1").exists()


@pytest.mark.parametrize("what", ["info", "submit"])
def test_submit_is_a_student_action(what: str) -> None:
    from nbunits.core.protocol import STUDENT_ACTIONS
    assert what in STUDENT_ACTIONS


def test_the_host_wide_cap_refuses_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A submission goes to the gradings' own pool (one per two CPUs) and is refused at
    once when it is full ("try again in a minute", Retry-After), never queued."""
    import asyncio
    from types import SimpleNamespace

    from nbunits.core.errors import NbunitsError
    from nbunits.core.names import user_for
    from nbunits.core.protocol import StudentRequest
    from nbunits.helper import actions, service
    from nbunits.helper.bounds import StudentBounds
    from nbunits.helper.capability import capability
    from nbunits.helper.workers import Workers

    assert [service.gradings_at_once(n) for n in (1, 2, 3, 8)] == [1, 1, 1, 4]
    config = SimpleNamespace(grading_timeout=5)
    monkeypatch.setattr(actions, "asker", lambda settings, request: SimpleNamespace(config=config))
    settings = Settings(state_dir=tmp_path)

    def request(user: str, notebook: str) -> StudentRequest:
        units = StudentUnits("demo", user_for(user))
        return StudentRequest("demo", units.user, capability("s" * 64, units), "submit", notebook)

    async def go() -> None:
        target = "tests.unit.worker_targets:act"
        students = service.StudentActions(StudentBounds(), Workers(settings, 1, target=target),
                                          Workers(settings, 1, target=target))
        try:
            slow = asyncio.create_task(students.act(settings, request("a", "20.ipynb")))
            await asyncio.sleep(0.5)
            started = asyncio.get_running_loop().time()
            with pytest.raises(NbunitsError) as exc:  # another student, at once
                await students.act(settings, request("b", "1.ipynb"))
            assert asyncio.get_running_loop().time() - started < 0.5
            assert exc.value.code == "busy" and exc.value.retry_after
            assert "try again in a minute" in (exc.value.student_hint or "")
            await slow
        finally:
            await students.workers.close()
            await students.gradings.close()

    asyncio.run(go())


@pytest.mark.parametrize(("result", "status", "out", "code"), [
    ("timeout", "0", b"", "grading_timeout"),  # the unit's backstop
    ("exit-code", "124", b"", "grading_timeout"),  # `timeout` in the container
    ("exit-code", "125", b"", "grading_failed"),  # podman's own failure: ours
    ("resources", "0", b"", "grading_failed"),
    ("exit-code", "1", b"", "grading_stopped"),  # nbconvert failed: the kernel died
    ("oom-kill", "137", b"", "grading_stopped"),
    ("success", "0", b"not a notebook", "grading_stopped"),
    ("success", "0", None, ""),
])
def test_how_a_run_ended_is_said_to_whom_it_concerns(tmp_path: Path, result: str, status: str,
                                                       out: bytes | None, code: str) -> None:
    from nbunits.core.config import CourseConfig
    from nbunits.core.errors import NbunitsError

    config = CourseConfig(name="c1", source=tmp_path, grading_timeout=7)
    (tmp_path / "out.ipynb").write_bytes(out if out is not None
                                         else nbformat.writes(source()).encode())
    state = {"Result": result, "ExecMainStatus": status}
    if not code:
        assert grading._executed(tmp_path, "u", state, config, "hw.ipynb", "en").cells
        return
    with pytest.raises(NbunitsError) as exc:
        grading._executed(tmp_path, "u", state, config, "hw.ipynb", "fr")
    assert exc.value.code == code
    if code == "grading_timeout":
        assert "plus de 7 s" in exc.value.message
    assert (exc.value.meaning.status is None) == (code == "grading_failed")
