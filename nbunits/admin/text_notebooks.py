"""Text notebooks: masters written in Jupytext's formats, published as .ipynb.

A `.md` file in Jupytext's markdown format, or a `.py` file in its percent format, is
a master when its YAML header says so, as `jupytext --to md` (or `--to py:percent`)
writes it: `jupyter: jupytext: text_representation: format_name: markdown` (or
`percent`), within the file's first 64 KiB. Any other `.md` or `.py` file (a
README, a helper module) is a plain file and is published as it is. Publishing
writes `<same name>.ipynb` in the text's place, normalized as any master, and not
the text itself: a student's folder holds one copy of each exercise, as with
nbhosting.

The text is the teacher's, read as root: jupytext only parses it, in the format named
here (never one from a configuration file in the repository, nor from the header:
its pandoc and quarto formats run those programs), from bytes read as masters are
(notebooks.read_plain: no link followed, at most 32 MiB), in a child process with a
CPU time and memory limit. jupytext's reader takes time quadratic in the number of
cells (measured: 240 s for a 1 MiB `.py` of 150,000 `# %%` cells) and its YAML
header may hold aliases that nbformat expands exponentially: either is cut at the
limit and reported, and the rest of the course publishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from nbunits.admin import graded
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import check_notebook
from nbunits.helper.notebooks import MAX_NOTEBOOK_BYTES, NotebookError, normalize, read_plain

# The Jupytext format each extension is read in; anything else is refused.
FORMATS = {".md": "markdown", ".py": "percent"}
CONVERTERS = {".md": "jupytext --to md", ".py": "jupytext --to py:percent"}
HEAD_BYTES = 64 * 1024  # a Jupytext header ends within them
# A conversion's child: CPU seconds, and memory beyond what the publishing process
# has. Measured: 200 cells convert in 0.25 s, 2,000 in 0.85 s, 6,000 in 3.3 s (quadratic).
CPU_SECONDS = 10
MEMORY_BYTES = 1 << 30


def notebook_for(text: str) -> str:
    """week1/loops.md -> week1/loops.ipynb: the notebook a text master is published as."""
    return PurePosixPath(text).with_suffix(".ipynb").as_posix()


def find_text_masters(source: Path) -> dict[str, str]:
    """{text master: the notebook it is published as}, for the `.md` and `.py` files
    (not hidden) whose header makes them Jupytext notebooks, whatever their format."""
    found = {}
    for relative in _candidates(source):
        try:
            head = read_plain(source, relative, head=HEAD_BYTES)
        except (NotebookError, OSError):
            continue  # a link or a special file: reported by publish.find_unpublishable
        if is_text_notebook(head, PurePosixPath(relative).suffix):
            found[relative] = notebook_for(relative)
    return found


def check_text_masters(source: Path) -> dict[str, str]:
    """{text master: why it is not published}: a name that cannot be used, a notebook
    of the same name beside it, another format, or a text jupytext cannot read."""
    found = find_text_masters(source)
    taken = Counter(found.values())
    broken = {}
    for text, notebook in found.items():
        try:
            check_notebook(notebook)
        except NbunitsError as exc:
            broken[text] = f"{text}: published as {notebook}, {exc.message}"
            continue
        try:
            if os.path.lexists(source / notebook):
                raise NotebookError(Code.BROKEN_NOTEBOOK, f"{text}: a text notebook published as "
                                    f"{notebook}, which the repository has already (keep one of them)")
            if taken[notebook] > 1:
                others = sorted(t for t, n in found.items() if n == notebook and t != text)
                raise NotebookError(Code.BROKEN_NOTEBOOK, f"{text}: a text notebook published as "
                                    f"{notebook}, as {', '.join(others)} would be (keep one of them)")
            graded.release(convert(read_plain(source, text), text), notebook)
        except NotebookError as exc:
            broken[text] = exc.message
        except OSError as exc:
            broken[text] = f"{text}: {exc.strerror}"
    return broken


def is_text_notebook(head: bytes, suffix: str) -> bool:
    """Whether a file's first bytes carry Jupytext's header (in any format: another
    format than FORMATS' is refused, and reported, by convert). A header that names
    a text representation but cannot be read counts: convert reports why."""
    text = head.decode("utf-8", errors="replace")
    if suffix not in FORMATS or "text_representation" not in text:
        return False  # the YAML below is read for candidates only
    try:
        metadata = _header(text, suffix)
    except Exception:  # yaml's errors, a header that is not a mapping: convert says which
        return True
    jupytext = metadata.get("jupytext")
    return isinstance(jupytext, dict) and isinstance(jupytext.get("text_representation"), dict)


def convert(data: bytes, text: str) -> bytes:
    """The notebook a text master is published as, normalized (notebooks.normalize),
    made in a child process within CPU_SECONDS and MEMORY_BYTES more memory."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _convert_in_child(write_end, data, text)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            out = pipe.read(2 * MAX_NOTEBOOK_BYTES)  # normalize refuses more than MAX
    except BaseException:  # interrupted: the child is never left running
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == 0 and out.startswith(b"ok\n"):
        return out[3:]
    if code == 1:
        raise NotebookError(Code.BROKEN_NOTEBOOK, out[:2000].decode(errors="replace")
                            or f"{text}: jupytext cannot read it")
    raise NotebookError(Code.BROKEN_NOTEBOOK, f"{text}: jupytext did not read it within {CPU_SECONDS} s "
                        f"of CPU time and {MEMORY_BYTES >> 20} MiB of memory")


def _convert_in_child(pipe: int, data: bytes, text: str) -> NoReturn:
    """Convert, write b"ok\\n" and the notebook, or a reason, to `pipe`, and exit
    (0, or 1 with a reason); killed by the kernel past the limits."""
    code = 1
    try:
        with open(os.devnull, "wb") as null:  # jupytext's and nbformat's warnings
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        _limit(resource.RLIMIT_CPU, CPU_SECONDS)
        _limit(resource.RLIMIT_AS, _address_space() + MEMORY_BYTES)
        warnings.simplefilter("ignore")
        try:
            out, code = b"ok\n" + _convert(data, text), 0
        except NbunitsError as exc:
            out = exc.message.encode()
        except MemoryError:
            out = f"{text}: jupytext needed more than {MEMORY_BYTES >> 20} MiB to read it".encode()
        except Exception as exc:  # jupytext and yaml raise many kinds for many kinds of text
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            out = f"{text}: jupytext cannot read it: {reason}".encode()
        with os.fdopen(pipe, "wb") as f:
            f.write(out)
    finally:
        os._exit(code)


def _convert(data: bytes, text: str) -> bytes:
    import jupytext  # here: the CLI's other commands do without it

    suffix = PurePosixPath(text).suffix
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotebookError(Code.BROKEN_NOTEBOOK, f"{text}: not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from exc
    representation = _header(source, suffix).get("jupytext", {}).get("text_representation", {})
    found = representation.get("format_name") if isinstance(representation, dict) else None
    if found is None:
        raise NotebookError(Code.BROKEN_NOTEBOOK, f"{text}: its Jupytext header names no "
                            "text_representation: format_name")
    if found != FORMATS[suffix]:
        raise NotebookError(Code.BROKEN_NOTEBOOK, f"{text}: a Jupytext notebook in the {found!r} "
                            f"format: nbunits publishes {suffix} text notebooks in the "
                            f"{FORMATS[suffix]} format only ({CONVERTERS[suffix]} converts it)")
    nb = jupytext.reads(source, fmt={"extension": suffix, "format_name": FORMATS[suffix]})
    # A plain notebook: no pairing (a Jupyter with Jupytext would write a paired text
    # beside the student's copy) and ids derived from its path, as normalize does.
    nb.metadata.pop("jupytext", None)
    nb.nbformat, nb.nbformat_minor = 4, 4
    for cell in nb.cells:
        cell.pop("id", None)
    return normalize(json.dumps(nb).encode(), notebook_for(text))


def _header(source: str, suffix: str) -> dict[str, Any]:
    """The metadata of a text's Jupytext header (YAML, read with yaml.safe_load), as
    jupytext reads it; {} when there is none."""
    from jupytext.header import header_to_metadata_and_cell

    prefix = "" if suffix == ".md" else "#"
    metadata = header_to_metadata_and_cell(source.splitlines(), prefix, "", suffix)[0]
    if not isinstance(metadata, dict):
        raise NotebookError(Code.BROKEN_NOTEBOOK, "its Jupytext header is not a mapping")
    return metadata


def _candidates(source: Path) -> Iterator[str]:
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and PurePosixPath(name).suffix in FORMATS:
                yield Path(folder, name).relative_to(source).as_posix()


def _limit(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def _address_space() -> int:
    """This process's virtual memory now: the child starts with the parent's."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    return 0
