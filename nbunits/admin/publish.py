"""Publishing a course: the whole repository, notebooks validated and normalized.

Everything in the course's repository but hidden files, symbolic links and
special files (devices, FIFOs) goes into a root-owned, world-readable folder,
/var/lib/nbunits/courses/<course>, which every student's container mounts read-only
(at /home/student/course); students' course folders hold their own copies of the
notebooks and symlinks to the rest (notebooks.link_tree). Invalid notebooks, and
notebooks whose names cannot be used, are reported and skipped: the others still
publish. A text notebook (text_notebooks.py: Jupytext's markdown or percent format) is
published as the .ipynb of its name, and its text is not.

The folder is updated in place, file by file (each file is renamed into place
whole), never swapped: running containers mount it, and a swapped-out folder
would vanish under them. Files that did not change are hard links to the
published ones while staged, so a large data file is neither copied nor
rewritten by an update. The staging folder is inside a root-only (0700) one: it holds
the source versions of graded notebooks until their release versions replace them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from nbunits.admin import graded
from nbunits.admin.text_notebooks import check_text_masters, convert, find_text_masters
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import check_notebook
from nbunits.helper.notebooks import NotebookError, find_masters, normalize, read_plain


def check_masters(source: Path) -> dict[str, str]:
    """{path: why it is not published} for the masters (and other files) that cannot be.

    A master is read without following links, from a regular file only, and only up
    to the notebook size limit (notebooks.read_plain): a master that is a link to
    /dev/zero or /etc/shadow is reported, never read."""
    broken = {}
    for notebook in find_masters(source):
        try:
            check_notebook(notebook)
            graded.release(normalize(read_plain(source, notebook), notebook), notebook)
        except NbunitsError as exc:  # InvalidName, NotebookError
            broken[notebook] = exc.message
        except OSError as exc:
            broken[notebook] = f"{notebook}: {exc.strerror}"
    broken.update(check_text_masters(source))
    broken.update(find_unpublishable(source))
    return broken


def check_folder(source: Path) -> tuple[dict[str, str], dict[str, bool]]:
    """What publishing `source` would do, publishing nothing: ({path: why it is
    skipped}, {notebook it publishes: whether as a release version (graded.py)})."""
    broken = check_masters(source)
    texts = {t: n for t, n in find_text_masters(source).items() if t not in broken}
    published: dict[str, bool] = {}
    for notebook in find_masters(source):
        if notebook not in broken:
            data = normalize(read_plain(source, notebook), notebook)
            published[notebook] = graded.release(data, notebook) is not None
    for text, notebook in texts.items():
        data = convert(read_plain(source, text), text)
        published[notebook] = graded.release(data, notebook) is not None
    return broken, dict(sorted(published.items()))


def find_unpublishable(source: Path) -> dict[str, str]:
    """Symbolic links (never followed: one could name /etc/shadow), special files
    (a FIFO or a device would block or never end a copy) and nbgrader's gradebooks
    in the repository."""
    found = {}
    for folder, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in [*dirs, *files]:
            path = Path(folder, name)
            relative = path.relative_to(source).as_posix()
            if name.startswith("."):
                continue
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                found[relative] = f"{relative}: a symbolic link (publish the file itself)"
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                found[relative] = f"{relative}: not a regular file (a FIFO, a device...)"
            elif name == graded.GRADEBOOK and stat.S_ISREG(mode):
                found[relative] = (f"{relative}: nbgrader's gradebook (its hidden tests, students' "
                                   "grades) is never published")
    return dict(sorted(found.items()))


def publish(source: Path, target: Path, skip: set[str], keep: Path | None = None) -> list[str]:
    """Publish `source` (a checkout) into `target`: all but `skip`, text notebooks as
    notebooks, graded notebooks as their release versions (their source versions
    kept in `keep`, root's only). Returns the published notebooks."""
    private = target.with_name(f".{target.name}.new")
    shutil.rmtree(private, ignore_errors=True)
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)  # whatever the umask: only root goes in
    staging = private / "tree"

    def stage(src: str, dst: str) -> None:
        """Hard-link what did not change (not notebooks: they are rewritten below)."""
        old = target / Path(dst).relative_to(staging)
        with _open_plain(src) as f:
            s = os.fstat(f.fileno())
            try:
                o = os.lstat(old)
                if (not dst.endswith(".ipynb") and stat.S_ISREG(o.st_mode)
                        and o.st_size == s.st_size and o.st_mtime_ns == s.st_mtime_ns):
                    os.link(old, dst)
                    return
            except FileNotFoundError:
                pass
            with open(dst, "xb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        os.utime(dst, ns=(s.st_atime_ns, s.st_mtime_ns))

    def ignored(folder: str, names: list[str]) -> set[str]:
        """Hidden files, symbolic links, and anything but folders and regular files."""
        return {n for n in names if n.startswith(".") or not (
            stat.S_ISDIR(mode := os.lstat(os.path.join(folder, n)).st_mode) or stat.S_ISREG(mode))}

    shutil.copytree(source, staging, symlinks=True, ignore=ignored, copy_function=stage)
    for notebook in skip:
        (staging / notebook).unlink(missing_ok=True)
    for text, notebook in find_text_masters(staging).items():
        with open(staging / notebook, "xb") as out:  # a name clash is in `skip`
            out.write(convert(read_plain(staging, text), text))
        (staging / text).unlink()
    published = list(find_masters(staging))
    sources = {}
    for notebook in published:
        path = staging / notebook
        data = normalize(path.read_bytes(), notebook)
        released = graded.release(data, notebook)
        if released is not None:
            sources[notebook] = data
        path.write_bytes(data if released is None else released)
    for path in [staging, *staging.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    target.mkdir(mode=0o755, exist_ok=True)
    os.chmod(target, 0o755)
    if keep is not None:  # first: a release is never out without its source kept
        keep_sources(keep, sources)
    update_in_place(staging, target)
    shutil.rmtree(private)
    return published


def keep_sources(keep: Path, sources: dict[str, bytes]) -> None:
    """The source versions of the graded notebooks, root's only (folders 0700, files
    0600), for grading: `keep` holds these and nothing else after it (no folder at
    all without any)."""
    staging, old = keep.with_name(f".{keep.name}.new"), keep.with_name(f".{keep.name}.old")
    if not sources:
        shutil.rmtree(keep, ignore_errors=True)
        return
    keep.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keep.parent, 0o700)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    for notebook, data in sources.items():
        path = staging / notebook
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    for path in [staging, *staging.rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    shutil.rmtree(old, ignore_errors=True)
    if keep.exists():
        os.rename(keep, old)
    os.rename(staging, keep)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _open_plain(path: str) -> Iterator[IO[bytes]]:
    """A repository's file, opened without following a link; a regular file only."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotebookError(Code.BROKEN_NOTEBOOK, f"{path}: not a regular file")
        yield f


def update_in_place(new: Path, current: Path) -> None:
    """Make `current` hold what `new` holds: each changed file renamed into place
    whole (a launch reads the old master or the new one), then what went removed."""
    wanted = {Path(folder, name).relative_to(new)
              for folder, dirs, files in os.walk(new) for name in [*dirs, *files]}
    for folder, dirs, files in os.walk(new):
        rel = Path(folder).relative_to(new)
        here = current / rel
        for name in dirs:
            _replace_if_not(here / name, stat.S_ISDIR)
            if not (here / name).exists():
                os.mkdir(here / name, 0o755)
        for name in files:
            _replace_if_not(here / name, stat.S_ISREG)
            src, dst = Path(folder, name), here / name
            try:
                if os.lstat(dst).st_ino == os.lstat(src).st_ino:
                    continue  # a hard link to itself: unchanged
            except FileNotFoundError:
                pass
            os.replace(src, dst)
    for folder, dirs, files in os.walk(current, topdown=False):
        rel = Path(folder).relative_to(current)
        for name in [*files, *dirs]:
            if rel / name not in wanted:
                _remove(Path(folder, name))


def _replace_if_not(path: Path, kind: Callable[[int], bool]) -> None:
    """Remove what is at `path` if it is not of the kind about to be put there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not kind(mode):
        _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()

