"""A course's update merged into a student's edited copy: nbdime's three-way merge.

The base is the master the copy was made from (kept by copies.py, by source hash),
"local" the student's copy, "remote" the new master. Cells the student added stay
where they were, with the course's new cells after them where both added at the same
place (nbdime's "union" on the cell list); a cell both changed differently is a
conflict, marked inline in its source (nbdime's "inline" strategy, as `nbmerge` does);
outputs are the student's.

The student's copy is theirs, so root never parses it with nbdime: `sandboxed()` runs
`python -m nbunits.helper.merge` in a transient unit (units/merge/merge.properties: a
dynamic user, no network, no files, bounded memory and time), which reads the three
notebooks on stdin and writes the merged one on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import secrets
import sys
from dataclasses import dataclass
from typing import Any

from nbunits.core.data import data_file
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import fill
from nbunits.core.run import CommandError, run

# The sandbox's bounds (units/merge/merge.properties).
MEMORY_MAX = "1G"
RUNTIME_MAX = 60
# nbdime is installed without its web tool's dependencies (jupyter_server, tornado and
# jsonschema's format checkers, which cost every nbformat import 1.7 s): pyproject.toml's
# [tool.nbunits] no-dependencies, installed by scripts/setup (docs/admin.md, "Installing").
NBDIME = "nbdime"
NBDIME_PIN = "nbdime==4.0.4"


class MergeError(NbunitsError):
    pass


@dataclass(frozen=True)
class Merged:
    data: bytes  # the merged notebook, as nbformat writes it
    conflicts: int  # places where both sides changed the same thing differently


def available() -> bool:
    """Whether nbdime is installed (merge_updates needs it)."""
    return importlib.util.find_spec(NBDIME) is not None


def merge(base: bytes, local: bytes, remote: bytes) -> Merged:
    """The three-way merge itself (in the sandbox; and in unit tests)."""
    import nbformat
    from nbdime import prettyprint
    from nbdime.diffing.notebooks import diff_notebooks
    from nbdime.merging.decisions import apply_decisions
    from nbdime.merging.generic import decide_merge_with_diff
    from nbdime.merging.notebooks import notebook_merge_strategies

    try:
        notebooks = [nbformat.reads(data.decode(), as_version=4) for data in (base, local, remote)]
    except (ValueError, UnicodeDecodeError) as exc:
        raise MergeError(Code.MERGE_FAILED, f"not a notebook: {exc}") from exc
    # A conflict in a source is written by nbdime's own renderer, never by `git merge-file`
    # or `diff3 -m` (which nbdime prefers where it finds them, each with its own format).
    prettyprint.DefaultConfig.use_git = prettyprint.DefaultConfig.use_diff = False
    args = argparse.Namespace(merge_strategy="inline", input_strategy=None,
                              output_strategy="use-local", ignore_transients=True,
                              log_level="WARNING")
    strategies = notebook_merge_strategies(args)
    strategies["/cells"] = "union"  # both added cells at one place: both kept, the student's first
    base_nb, local_nb, remote_nb = notebooks
    try:
        decisions = decide_merge_with_diff(
            base_nb, local_nb, remote_nb, diff_notebooks(base_nb, local_nb),
            diff_notebooks(base_nb, remote_nb), strategies)
        merged = apply_decisions(base_nb, decisions)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:  # nbdime's "fail"
        raise MergeError(Code.MERGE_FAILED, f"nbdime could not merge: {exc}") from exc
    _give_ids(merged)
    try:
        nbformat.validate(merged)
    except nbformat.ValidationError as exc:
        raise MergeError(Code.MERGE_FAILED, f"the merge is not a valid notebook: {exc}") from exc
    text: str = nbformat.writes(merged)
    return Merged((text + "\n").encode(), sum(1 for d in decisions if d.conflict))


def _give_ids(notebook: Any) -> None:
    """nbdime leaves a cell's id out where the sides disagree on it; a v4.5 cell has one."""
    seen: set[str] = set()
    for cell in notebook.cells:
        cell_id = cell.get("id")
        while not isinstance(cell_id, str) or cell_id in seen:
            cell_id = secrets.token_hex(4)
        cell["id"] = cell_id
        seen.add(cell_id)
    notebook.nbformat, notebook.nbformat_minor = 4, max(notebook.nbformat_minor, 5)


def properties() -> list[str]:
    """The sandbox's unit settings (units/merge/merge.properties, filled)."""
    text = data_file("units", "merge", "merge.properties").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return fill("\n".join(lines), {"MEMORY_MAX": MEMORY_MAX,
                                   "RUNTIME_MAX": f"{RUNTIME_MAX}s"}).splitlines()


def sandboxed(base: bytes, local: bytes, remote: bytes) -> Merged:
    """merge(), run in a transient unit of its own (see the module's docstring)."""
    request = json.dumps({"base": base.decode(errors="replace"),
                          "local": local.decode(errors="replace"),
                          "remote": remote.decode(errors="replace")})
    argv = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
            *(f"--property={p}" for p in properties()), "--",
            sys.executable, "-m", "nbunits.helper.merge"]
    try:
        out = run(argv, input=request, timeout=RUNTIME_MAX + 30).stdout
        reply = json.loads(out)
        return Merged(reply["merged"].encode(), int(reply["conflicts"]))
    except CommandError as exc:
        raise MergeError(Code.MERGE_FAILED, f"the merge did not finish: {exc.message}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise MergeError(Code.MERGE_FAILED, f"the merge answered nonsense: {exc}") from exc


def main() -> int:
    """In the sandbox: {"base", "local", "remote"} on stdin, {"merged", "conflicts"} or
    {"error"} on stdout."""
    try:
        asked = json.load(sys.stdin)
        merged = merge(*(asked[k].encode() for k in ("base", "local", "remote")))
    except MergeError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    json.dump({"merged": merged.data.decode(), "conflicts": merged.conflicts}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
