"""Master notebooks and students' copies of them.

Masters live in a root-owned folder per course. A student's copy is written by
root into a home the student controls, so every step walks the tree with
directory file descriptors and O_NOFOLLOW: a symlink planted by the student can
never redirect a write, and an existing copy is never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import nbformat

from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import check_notebook

MAX_NOTEBOOK_BYTES = 32 * 1024 * 1024
# Entries of a student's folder that root looks at when it tidies our links in it.
MAX_SCANNED = 10_000


class NotebookError(NbunitsError):
    pass


def master_path(source: Path, notebook: str) -> Path:
    """The master's path, refusing anything that leaves the course folder."""
    relative = check_notebook(notebook)
    root = source.resolve()
    path = root.joinpath(*relative.parts)
    try:
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise NotebookError(Code.UNKNOWN_NOTEBOOK, f"no notebook {notebook!r} in this course") from None
    if resolved != path or not resolved.is_relative_to(root):
        # A symlink anywhere on the way: refuse rather than reason about where it goes.
        raise NotebookError(Code.BAD_NOTEBOOK, f"notebook path {notebook!r} leaves the course")
    if not resolved.is_file():
        raise NotebookError(Code.UNKNOWN_NOTEBOOK, f"no notebook {notebook!r} in this course")
    return resolved


def read_master(source: Path, notebook: str) -> bytes:
    """The master's bytes, after checking that nbformat accepts them."""
    path = master_path(source, notebook)
    data = path.read_bytes()
    validate(data, notebook)
    return data


def read_plain(source: Path, relative: str, *, head: int = 0) -> bytes:
    """A master's bytes as a repository holds them, before publishing: read without
    following a symbolic link on the way or at the end (a master could be a link to
    /dev/zero or /etc/shadow), from a regular file only, and no more than
    MAX_NOTEBOOK_BYTES of it (a larger file is refused, not read). With `head`, its
    first `head` bytes at most, whatever its size (to tell a text notebook by its header)."""
    parts = PurePosixPath(relative).parts
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(source, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            child = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        file_fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    except OSError as exc:
        why = "a symbolic link (publish the file itself)" if exc.errno in (errno.ELOOP, errno.ENOTDIR) \
            else exc.strerror
        raise NotebookError(Code.BROKEN_NOTEBOOK, f"{relative}: {why}") from exc
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            raise NotebookError(Code.BROKEN_NOTEBOOK, f"{relative}: not a regular file")
        data = f.read(head or MAX_NOTEBOOK_BYTES + 1)
    if not head and len(data) > MAX_NOTEBOOK_BYTES:
        raise NotebookError(Code.BROKEN_NOTEBOOK, f"notebook {relative} is larger than "
                            f"{MAX_NOTEBOOK_BYTES >> 20} MiB")
    return data


def validate(data: bytes, name: str) -> nbformat.NotebookNode:
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise NotebookError(Code.BROKEN_NOTEBOOK, f"notebook {name} is larger than 32 MiB")
    try:
        text = data.decode("utf-8")
        json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both are
        raise NotebookError(Code.BROKEN_NOTEBOOK, f"notebook {name} is not valid JSON: {exc}") from exc
    try:
        nb: nbformat.NotebookNode = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # nbformat raises many kinds for many kinds of breakage
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotebookError(Code.BROKEN_NOTEBOOK,
                            f"notebook {name} is not a valid notebook: {reason}") from exc
    return nb


def find_masters(source: Path) -> Iterator[str]:
    """Relative paths of the .ipynb files under a course folder (no hidden dirs)."""
    for path in sorted(source.rglob("*.ipynb")):
        relative = path.relative_to(source)
        if any(part.startswith(".") for part in relative.parts):
            continue
        yield relative.as_posix()


def install_copy(home: Path, relative: PurePosixPath, data: bytes, uid: int, gid: int) -> bool:
    """Write `data` at home/relative, owned by uid:gid, unless a file is there.

    Returns True if a copy was written. The file appears whole or not at all
    (written to a temporary name, then linked into place, which fails if the
    name exists: a concurrent or earlier copy is never overwritten).
    """
    with _open_dir(home) as home_fd, _make_dirs(home_fd, relative.parts[:-1], uid, gid) as dir_fd:
        name = relative.parts[-1]
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            return False
        except FileNotFoundError:
            pass
        tmp = _write_temp(dir_fd, name, data, uid, gid)
        try:
            try:
                os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)


def link_tree(home: Path, folder: str, tree: Path, mounted: PurePosixPath,
              uid: int, gid: int) -> int:
    """Make the course's other files appear in the student's course folder home/folder.

    `tree` is the published course, which the student's container mounts read-only
    at `mounted` (links point there: they dangle outside the container, and root
    never follows them). A folder with notebooks somewhere below is a real folder here
    (it holds the student's copies); anything else (a data file, a module, a folder
    of data) is a symlink into `tree`: read-only, and no per-student copy. So
    `data/grades.csv` and `import helpers` work from a notebook's own folder.
    What the student put in the way is never touched; our links to files that left
    the course are removed. Returns how many links were made.
    """
    below = {PurePosixPath(m).parents[i].parts for m in find_masters(tree)
             for i in range(len(PurePosixPath(m).parts) - 1)}
    with _open_dir(home) as home_fd, _make_dirs(home_fd, (folder,), uid, gid) as fd:
        return _link_dir(fd, tree, mounted, (), below, uid, gid)


def _link_dir(dir_fd: int, tree: Path, mounted: PurePosixPath, rel: tuple[str, ...],
              below: set[tuple[str, ...]], uid: int, gid: int) -> int:
    made = 0
    names = set()
    with os.scandir(tree.joinpath(*rel)) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") or entry.is_symlink() or (
                    name.endswith(".ipynb") and entry.is_file()):
                continue  # hidden, or a notebook: its copy is copies.py's
            names.add(name)
            target = str(mounted.joinpath(*rel, name))
            current = _lstat(dir_fd, name)
            ours = current is not None and stat.S_ISLNK(current.st_mode) \
                and os.readlink(name, dir_fd=dir_fd) == target
            if entry.is_dir() and (rel + (name,) in below or (
                    current is not None and stat.S_ISDIR(current.st_mode))):
                if ours:  # a folder of data that now holds a notebook
                    os.unlink(name, dir_fd=dir_fd)
                    current = None
                if current is None or stat.S_ISDIR(current.st_mode):
                    with _make_dirs(dir_fd, (name,), uid, gid) as child:
                        made += _link_dir(child, tree, mounted, rel + (name,), below, uid, gid)
            elif current is None:
                with contextlib.suppress(FileExistsError):  # the student was quicker
                    os.symlink(target, name, dir_fd=dir_fd)
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
                    made += 1
    _unlink_stale(dir_fd, str(mounted.joinpath(*rel)) + "/", names)
    return made


def _unlink_stale(dir_fd: int, prefix: str, names: set[str]) -> None:
    """Remove our links to files that left the course, looking at the first
    MAX_SCANNED entries of the folder only: the folder is the student's, and a
    million files of theirs must not make root read a million names at every launch
    and reset (measured: 2 s of CPU and 100 MB per reset). A stale link past them
    stays: it dangles, harmless, until the student removes it."""
    with os.scandir(dir_fd) as entries:
        for entry in itertools.islice(entries, MAX_SCANNED):
            # d_type says symlink or not: no stat for the student's own files.
            if entry.name not in names and entry.is_symlink() \
                    and os.readlink(entry.name, dir_fd=dir_fd) == prefix + entry.name:
                os.unlink(entry.name, dir_fd=dir_fd)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def normalize(data: bytes, name: str) -> bytes:
    """The master as nbformat writes it: current v4 minor, every cell with an id.

    Missing ids are derived from the path and the cell's position, so publishing
    the same notebook twice gives the same bytes.
    """
    nb = validate(data, name)
    nb.nbformat, nb.nbformat_minor = 4, nbformat.v4.nbformat_minor
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or cell_id in seen:
            cell_id = hashlib.blake2b(f"{name}:{index}".encode(), digest_size=4).hexdigest()
            cell["id"] = cell_id
        seen.add(cell_id)
    nbformat.validate(nb)
    text: str = nbformat.writes(nb)
    return (text + "\n").encode()


def source_hash(data: bytes) -> str:
    """What the student wrote, hashed: cell types and sources; outputs, counts, ids ignored.

    A copy whose bytes are not a notebook hashes to something no notebook hashes to,
    so it always counts as modified.
    """
    try:
        cells = json.loads(data)["cells"]
        parts = [[c["cell_type"], _text(c.get("source", ""))] for c in cells]
    except (ValueError, KeyError, TypeError):
        return "raw:" + hashlib.sha256(data).hexdigest()
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _text(source: object) -> str:
    if isinstance(source, list):
        return "".join(str(s) for s in source)
    return str(source)


MAX_TITLE = 200  # characters of a notebook's title shown to an author
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def title(data: bytes) -> str:
    """A notebook's first markdown heading ("# Loops" -> "Loops"), "" if none."""
    try:
        cells = json.loads(data)["cells"]
        sources = [_text(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    for source in sources:
        found = _HEADING.search(source)
        if found:
            return " ".join(found.group(1).split())[:MAX_TITLE]
    return ""


def as_text(data: bytes) -> str:
    """A read-only plain-text view of a notebook (for staff): sources and text outputs."""
    try:
        cells = json.loads(data)["cells"]
    except (ValueError, KeyError, TypeError):
        return data.decode("utf-8", errors="replace")
    lines = []
    for index, cell in enumerate(cells, 1):
        lines.append(f"--- [{index}] {cell.get('cell_type', '?')} ---")
        lines.append(_text(cell.get("source", "")).rstrip("\n"))
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain") \
                or "\n".join(output.get("traceback", []))
            if text:
                lines.append("  >> " + _text(text).rstrip("\n").replace("\n", "\n  >> "))
    return "\n".join(lines) + "\n"


def read_copy(home: Path, relative: PurePosixPath) -> bytes | None:
    """A student's copy (None if missing), read without following their symlinks."""
    try:
        with _open_dir(home) as home_fd, _walk_dirs(home_fd, relative.parts[:-1]) as dir_fd:
            fd = os.open(relative.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink where the copy should be
        raise NotebookError(Code.BAD_HOME, f"cannot read {relative} in the student's home: "
                                        f"{exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotebookError(Code.BAD_HOME, f"{relative} in the student's home is not a file")
        return f.read(MAX_NOTEBOOK_BYTES + 1)


def replace_copy(home: Path, relative: PurePosixPath, data: bytes, uid: int, gid: int,
                 keep_as: str | None = None) -> None:
    """Atomically put `data` at home/relative (a reader sees the old or the new file whole).

    With `keep_as`, the old file is first linked under that name in the same folder
    (never over an existing file), so nothing the student wrote is ever deleted.
    """
    with _open_dir(home) as home_fd, _make_dirs(home_fd, relative.parts[:-1], uid, gid) as dir_fd:
        name = relative.parts[-1]
        tmp = _write_temp(dir_fd, name, data, uid, gid)
        try:
            if keep_as is not None:
                os.link(name, keep_as, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)


def exists(home: Path, relative: PurePosixPath) -> bool:
    try:
        with _open_dir(home) as home_fd, _walk_dirs(home_fd, relative.parts[:-1]) as dir_fd:
            os.stat(relative.parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            return True
    except (FileNotFoundError, NotebookError):
        return False


def modified(home: Path, relative: PurePosixPath) -> float | None:
    """When the student last saved a file (None if missing), its own symlinks not followed."""
    try:
        with _open_dir(home) as home_fd, _walk_dirs(home_fd, relative.parts[:-1]) as dir_fd:
            return os.stat(relative.parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mtime
    except (FileNotFoundError, NotebookError):
        return None


def remove_file(home: Path, relative: PurePosixPath) -> None:
    """Remove a file nbunits wrote (a marker), never following symlinks; missing is fine."""
    with contextlib.suppress(FileNotFoundError, NotebookError), _open_dir(home) as home_fd, \
            _walk_dirs(home_fd, relative.parts[:-1]) as dir_fd:
        if stat.S_ISREG(os.stat(relative.parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode):
            os.unlink(relative.parts[-1], dir_fd=dir_fd)


def _write_temp(dir_fd: int, name: str, data: bytes, uid: int, gid: int) -> str:
    tmp = f".{name}.nbunits-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fchown(f.fileno(), uid, gid)
        os.fsync(f.fileno())
    return tmp


@contextlib.contextmanager
def _walk_dirs(parent_fd: int, parts: tuple[str, ...]) -> Iterator[int]:
    """Open existing directory parts below parent_fd, never following symlinks."""
    fd = os.dup(parent_fd)
    try:
        for part in parts:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except FileNotFoundError:
                raise  # nothing there yet: callers treat it as "no copy"
            except OSError as exc:
                raise NotebookError(Code.BAD_HOME,
                                    f"cannot use {part!r} in the student's home: {exc.strerror}") from exc
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _open_dir(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _make_dirs(parent_fd: int, parts: tuple[str, ...], uid: int, gid: int) -> Iterator[int]:
    """Open (creating as uid:gid where missing) the directory parts below parent_fd."""
    fd = os.dup(parent_fd)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                os.chown(part, uid, gid, dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                pass
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except OSError as exc:
                raise NotebookError(Code.BAD_HOME,
                                    f"cannot use {part!r} in the student's home: {exc.strerror}") from exc
            if stat.S_ISDIR(os.fstat(child).st_mode) is False:
                os.close(child)
                raise NotebookError(Code.BAD_HOME, f"{part!r} in the student's home is not a folder")
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)
