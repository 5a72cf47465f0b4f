"""Graded notebooks: nbgrader's format, published as nbgrader's release version.

A course marks graded cells as nbgrader does (its cell metadata, `metadata.nbgrader`:
solution, grade, locked, task, grade_id, points, schema_version 3; solution regions
between lines holding `BEGIN SOLUTION` and `END SOLUTION`, hidden tests between
`BEGIN HIDDEN TESTS` and `END HIDDEN TESTS`, a task's marking scheme between `BEGIN
MARK SCHEME` and `END MARK SCHEME`, after any comment mark: `### BEGIN SOLUTION`,
`%%% BEGIN SOLUTION`). A notebook with any of them is published as what nbgrader's
`generate_assignment` makes of it (release()), and only that reaches the published
course, students' copies and the versions kept for merges; the source stays root's
(Settings.course_sources). A notebook with neither metadata nor markers is left as
it is (release() returns None): published byte for byte as before.

Not nbgrader's own preprocessors: `import nbgrader.preprocessors` runs nbgrader's
`__init__`, which loads its Jupyter server extensions (jupyter_server, tornado,
notebook, SQLAlchemy and alembic for its database, nbconvert, nbclient): a server
stack in root's admin venv for a text transformation of a few dozen lines, and the
very dependencies [tool.nbunits] no-dependencies keeps out for nbdime. So the steps
of generate_assignment that make the release are redone here, with nbgrader 0.9's
markers, stubs and checks (its preprocessors named at each step): LockCells,
ClearSolutions, ClearOutput, CheckCellMetadata, ClearHiddenTests, ClearMarkScheme,
ComputeChecksums. Not done: IncludeHeaderFooter and InstantiateTests (nbgrader
options that a course configures in nbgrader_config.py, which nbunits does not read).
One thing more than nbgrader: attachments a cleared markdown cell no longer shows are
dropped (an image of the answer would otherwise stay in the cell).
A region in a cell without the metadata it needs is refused, as nbgrader's
enforce_metadata (its default) refuses it: publishing it would show the solution.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from nbunits.core.errors import Code
from nbunits.helper.notebooks import NotebookError, normalize, validate

SOLUTION = ("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_TESTS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
MARK_SCHEME = ("BEGIN MARK SCHEME", "END MARK SCHEME")
MARKERS = (*SOLUTION, *HIDDEN_TESTS, *MARK_SCHEME)
# ClearSolutions.code_stub and .text_stub: nbgrader's defaults, by kernel language.
CODE_STUBS = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
    "R": "# YOUR CODE HERE\nfail()",
    "matlab": "% YOUR CODE HERE\nerror('No Answer Given!')",
    "octave": "% YOUR CODE HERE\nerror('No Answer Given!')",
    "sas": "/* YOUR CODE HERE */\n %notImplemented;",
    "java": "// YOUR CODE HERE",
}
TEXT_STUB = "YOUR ANSWER HERE"
# nbgrader's database in a course's folder: the hidden tests (its SaveCells stores grade
# cells before ClearHiddenTests) and students' grades. Never published.
GRADEBOOK = "gradebook.db"
SCHEMA_VERSION = 3
# nbgrader's cell metadata schema, version 3 (nbgrader/nbgraderformat/v3.json): each
# key's type; grade, locked and solution are required, no other key is allowed.
KEYS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,), "grade": (bool,), "locked": (bool,), "solution": (bool,),
    "task": (bool,), "grade_id": (str,), "points": (int, float), "checksum": (str,),
    "cell_type": (str,)}
REQUIRED = ("grade", "locked", "solution")
GRADE_ID = re.compile(r"[a-zA-Z0-9_\-]*")


def is_graded(nb: Any) -> bool:
    """Whether nbgrader's metadata or markers are anywhere in the notebook."""
    return any("nbgrader" in cell.get("metadata", {}) or any(
        marker in line for line in _source(cell).split("\n") for marker in MARKERS)
        for cell in nb.cells)


def release(data: bytes, name: str) -> bytes | None:
    """The release version of a notebook (normalized, as notebooks.normalize writes
    it), or None when it has no nbgrader metadata nor markers. NotebookError
    (broken_notebook) says what nbgrader would refuse in it."""
    nb = validate(data, name)
    if not is_graded(nb):
        return None
    check(nb, name)
    language = nb.metadata.get("kernelspec", {}).get("language", "python")
    if language not in CODE_STUBS:
        raise NotebookError(Code.BROKEN_NOTEBOOK, f"{name}: a graded notebook in {language!r}, "
                            f"for which nbgrader has no code stub (it knows "
                            f"{', '.join(sorted(CODE_STUBS))})")
    for index, cell in enumerate(nb.cells, 1):
        where = f"{name}, cell {index}"
        if "nbgrader" in cell.metadata:  # as nbgrader's autograder will want it
            cell.metadata["nbgrader"].setdefault("schema_version", SCHEMA_VERSION)
        _lock(cell)
        _clear_solution(cell, CODE_STUBS[language], where)
        _clear_output(cell)
        _remove_region(cell, HIDDEN_TESTS, _meta(cell).get("grade", False), "autograder tests", where)
        _remove_region(cell, MARK_SCHEME, _meta(cell).get("task", False), "manually graded task", where)
        _checksum(cell)
        _drop_unused_attachments(cell)
    nb.metadata.pop("celltoolbar", None)
    return normalize(json.dumps(nb).encode(), name)


def check(nb: Any, name: str) -> None:
    """nbgrader's CheckCellMetadata: each cell's metadata by its schema and rules,
    and grade ids unique."""
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells, 1):
        if "nbgrader" not in cell.get("metadata", {}):
            continue
        where = f"{name}, cell {index}"
        meta = cell.metadata["nbgrader"]
        _check_cell(cell, meta, where)
        if meta["grade"] or meta["solution"] or meta["locked"]:
            if meta["grade_id"] in seen:
                raise _broken(where, f"grade_id {meta['grade_id']!r} is used twice in the notebook")
            seen.add(meta["grade_id"])


def _check_cell(cell: Any, meta: Any, where: str) -> None:
    if not isinstance(meta, dict):
        raise _broken(where, "its metadata.nbgrader is not a mapping")
    version = meta.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise _broken(where, f"nbgrader metadata of schema version {version!r} (nbgrader 0.6 "
                      f"and later write {SCHEMA_VERSION}: `nbgrader update` upgrades a notebook)")
    _check_schema(meta, where)
    grade, solution, locked, task = (meta.get(k, False) for k in ("grade", "solution", "locked", "task"))
    if (grade or solution or locked) and not meta.get("grade_id"):
        raise _broken(where, "a grade, solution or read-only cell without a grade_id")
    if grade and "points" not in meta:
        raise _broken(where, f"grade cell {meta['grade_id']!r} has no points")
    if task and cell.cell_type != "markdown":
        raise _broken(where, "a task cell must be a markdown cell")
    if not task and cell.cell_type == "markdown" and grade != solution:
        raise _broken(where, "a markdown cell that is graded must be a solution cell, and the "
                      "other way round (nbgrader: \"Manually graded answer\")")


def _check_schema(meta: dict[str, Any], where: str) -> None:
    """What nbgrader's JSON schema (v3.json) says, with jsonschema's strictness."""
    unknown = sorted(set(meta) - set(KEYS))
    if unknown:
        raise _broken(where, f"unknown key(s) {', '.join(map(repr, unknown))} in metadata.nbgrader "
                      f"(nbgrader knows {', '.join(KEYS)})")
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise _broken(where, f"metadata.nbgrader has no {', '.join(missing)}")
    for key, value in meta.items():
        # A JSON true is no number, and 1 is no boolean.
        if not isinstance(value, KEYS[key]) or (isinstance(value, bool) and bool not in KEYS[key]):
            raise _broken(where, f"metadata.nbgrader.{key} is {json.dumps(value)}, not "
                          f"{' or '.join(t.__name__ for t in KEYS[key])}")
    if not GRADE_ID.fullmatch(meta.get("grade_id", "")):
        raise _broken(where, f"grade_id {meta['grade_id']!r} has characters nbgrader refuses "
                      "(letters, digits, _ and - only)")
    if meta.get("points", 0) < 0:
        raise _broken(where, f"points {meta['points']} is negative")
    if meta.get("cell_type", "code") not in ("raw", "code", "markdown") \
            or len(meta.get("checksum", "x" * 32)) != 32:
        raise _broken(where, "a cell_type or checksum that nbgrader would not have written")


def _lock(cell: Any) -> None:
    """LockCells with its defaults: solution and grade cells cannot be deleted; grade
    cells that are not solutions, and locked cells, cannot be edited either."""
    meta = _meta(cell)
    if meta.get("solution"):
        cell.metadata["deletable"] = False
    elif meta.get("grade") or meta.get("locked"):
        cell.metadata["deletable"] = False
        cell.metadata["editable"] = False


def _clear_solution(cell: Any, code_stub: str, where: str) -> None:
    """ClearSolutions: each solution region becomes the stub, indented as its
    BEGIN line; a solution cell without a region becomes the stub whole."""
    stub = code_stub if cell.cell_type == "code" else TEXT_STUB
    lines, kept, inside, replaced = _source(cell).split("\n"), [], False, False
    for line in lines:
        if SOLUTION[0] in line:
            if inside:
                raise _broken(where, f"a {SOLUTION[0]} inside a solution region")
            inside = replaced = True
            indent = line[:len(line) - len(line.lstrip())]
            kept += [indent + s for s in stub.split("\n")]
        elif SOLUTION[1] in line:
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise _broken(where, f"a solution region that never ends (no {SOLUTION[1]} line)")
    solution = _meta(cell).get("solution", False)
    if replaced and not solution:
        raise _broken(where, "a solution region in a cell that is not a solution cell "
                      "(metadata.nbgrader.solution = true)")
    cell.source = stub if solution and not replaced else "\n".join(kept)


def _remove_region(cell: Any, markers: tuple[str, str], allowed: bool, kind: str, where: str) -> None:
    """ClearHiddenTests, ClearMarkScheme: the region's lines, markers included, go."""
    kept, inside, removed = [], False, False
    for line in _source(cell).split("\n"):
        if markers[0] in line:
            if inside:
                raise _broken(where, f"a {markers[0]} inside another")
            inside = removed = True
        elif markers[1] in line:
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise _broken(where, f"a {markers[0]} region that never ends (no {markers[1]} line)")
    if removed and not allowed:
        raise _broken(where, f"a {markers[0]} region in a cell that is not a {kind} cell")
    cell.source = "\n".join(kept)  # a stray END line goes too, as with nbgrader


def _clear_output(cell: Any) -> None:
    """ClearOutput (nbconvert's ClearOutputPreprocessor): every code cell's outputs."""
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
        for key in ("collapsed", "scrolled"):
            cell.metadata.pop(key, None)


def _checksum(cell: Any) -> None:
    """ComputeChecksums, as nbgrader.utils.compute_checksum: what nbgrader's autograder
    compares to tell an untouched answer."""
    meta = _meta(cell)
    grade, solution = bool(meta.get("grade")), bool(meta.get("solution"))
    locked = not solution and (grade or bool(meta.get("locked")))
    if not (grade or solution or locked):
        return
    m = hashlib.md5(usedforsecurity=False)
    for part in (_source(cell), cell.cell_type, str(grade), str(solution), str(locked),
                 meta["grade_id"], *([str(float(meta["points"]))] if grade else [])):
        m.update(part.encode())
    meta["checksum"], meta["cell_type"] = m.hexdigest(), cell.cell_type


def _drop_unused_attachments(cell: Any) -> None:
    """A markdown cell's attachments that its source no longer shows (an image in a
    written answer or a marking scheme) go with the text that showed them: nbgrader
    keeps them (its ClearMarkScheme refuses them instead, its ClearSolutions not)."""
    attachments = cell.get("attachments")
    if attachments:
        source = _source(cell)
        for name in [n for n in attachments if f"attachment:{n}" not in source]:
            del attachments[name]
        if not attachments:
            del cell["attachments"]


def _meta(cell: Any) -> Any:
    return cell.get("metadata", {}).get("nbgrader", {})


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _broken(where: str, why: str) -> NotebookError:
    return NotebookError(Code.BROKEN_NOTEBOOK, f"{where}: nbgrader metadata: {why}")
