"""Root's own files: the one atomic write, the atomic swap of two folders, and the
one template fill (unit files and nginx's configuration are rendered with it).

Students' files are written elsewhere (notebooks.py: dir fds, O_NOFOLLOW); these
helpers are for paths that only root controls (/etc/nbunits, /var/lib/nbunits,
nginx's snippets).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

from nbunits.core.errors import Code, NbunitsError

AT_FDCWD, RENAME_EXCHANGE = -100, 2


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644, *,
                 group: int | None = None, unless_same: bool = False) -> bool:
    """Replace `path` so that readers see the old or the new content, never half.

    The temporary file gets its mode (and group) before it is renamed in place.
    With `unless_same`, an unchanged file is left alone. Returns whether it wrote.
    """
    raw = data.encode() if isinstance(data, str) else data
    if unless_same:
        try:
            if path.read_bytes() == raw:
                return False
        except FileNotFoundError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            os.fchmod(f.fileno(), mode)
            if group is not None:
                os.fchown(f.fileno(), -1, group)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); two renames where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS):
        raise OSError(err, os.strerror(err), str(b))
    aside = b.with_name(f".{b.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    b.rename(aside)
    a.rename(b)
    aside.rename(a)


PLACEHOLDER_RE = re.compile(r"@([A-Z][A-Z0-9_]*)@")


class TemplateError(NbunitsError):
    pass


def fill(text: str, values: dict[str, str]) -> str:
    """Replace each @NAME@; a placeholder left without a value is an error, not a
    unit file that systemd would half understand."""
    def value(m: re.Match[str]) -> str:
        if m[1] not in values:
            raise TemplateError(Code.BAD_TEMPLATE, f"no value for the placeholder @{m[1]}@",
                                hint="a template and the code that fills it disagree")
        return values[m[1]]

    return PLACEHOLDER_RE.sub(value, text)
