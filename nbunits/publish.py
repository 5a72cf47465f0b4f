"""Publishing a course's masters: validated, normalized, swapped in whole.

The masters go into a root-owned, world-readable folder (/var/lib/nbunits/courses/
<course>) after nbformat validated and normalized each notebook; invalid ones are
reported and skipped, the others still publish.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .files import exchange
from .notebooks import NotebookError, find_masters, normalize


def check_masters(source: Path) -> dict[str, str]:
    """{notebook: why it is not published} for the invalid masters under source."""
    broken = {}
    for notebook in find_masters(source):
        try:
            normalize((source / notebook).read_bytes(), notebook)
        except NotebookError as exc:
            broken[notebook] = exc.message
        except OSError as exc:
            broken[notebook] = f"{notebook}: {exc.strerror}"
    return broken


def publish(source: Path, target: Path, skip: set[str]) -> list[str]:
    """Copy the course folder (root-owned, world-readable), swapping it in whole.

    Notebooks are written as nbformat normalizes them. Returns the published ones.
    """
    staging = target.with_name(f".{target.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, symlinks=False, ignore=shutil.ignore_patterns(".*"))
    for notebook in skip:
        (staging / notebook).unlink()
    published = list(find_masters(staging))
    for notebook in published:
        path = staging / notebook
        path.write_bytes(normalize(path.read_bytes(), notebook))
    for path in [staging, *staging.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    if target.exists():
        exchange(staging, target)  # launches never see the course folder missing
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    return published
