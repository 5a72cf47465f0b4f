"""A student's Jupyter server, started with less CPU; the same server.

The image's `jupyter-notebook` (the unit's command) runs `main()`: Notebook 7's own
entry point, `notebook.app.main`, after two things that change how fast Python gets
there, not what it runs (docs/BENCHMARKS.md, "Jupyter's start, cut"):

- Regular expressions come precompiled. The server's imports and its first page
  compile ~400 of them (JupyterLab's semver grammar, tornado's, packaging's, YAML's,
  Jinja's...), ~40 ms of CPU at every start. The ~340 of them that every start
  compiles are cached: not the URL routes, which start with the base URL, and so
  with the student's capability. At image build, `python3 -m nbunits_start record CACHE` starts
  the server once, serves a notebook page and stores what Python's own regex
  compiler made of each pattern; `main()` puts them into `re`'s own cache, so the
  same `re.compile()` calls find them there. Only the very Python that wrote the
  cache uses it (its version string and sre's magic number are checked); a pattern
  not in it compiles as usual.
- Two packages are imported on first use, which a student's server never makes:
  `requests`, which jupyterlab_server imports for extension listings (fetched only
  when an admin configures listing URLs), and `websocket` (websocket-client), which
  jupyter_server imports for kernels on a remote gateway. Their imports (with
  urllib3, charset_normalizer, idna) are start time for nothing.

Standard library only: it runs in the image's venv before anything else.
"""

from __future__ import annotations

import _sre
import atexit
import importlib.machinery
import importlib.util
import marshal
import os
import re
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

CACHE = os.path.join(sys.prefix, "share", "nbunits", "regex-cache.marshal")
# Set (to a path) by `record`: the server then writes its patterns there at exit.
RECORD_ENV = "NBUNITS_RECORD_REGEXES"
LAZY_MODULES = frozenset({"requests", "websocket"})
# The recorded server's base URL (no real one holds it).
RECORD_BASE = "nbunits-record-base"
# What makes compiled sre code valid: the interpreter build and sre's own version.
STAMP = (sys.version, _sre.MAGIC, _sre.CODESIZE, sys.maxunicode)


def compiled(pattern: str | bytes, flags: int) -> tuple[Any, ...]:
    """What re._compiler.compile() hands to _sre.compile() for this pattern."""
    flags = int(flags)  # re's cache keys hold plain ints, and marshal stores only those
    parsed = re._parser.parse(pattern, flags)
    # Opcodes are int subclasses, which marshal does not store.
    code = [int(word) for word in re._compiler._code(parsed, flags)]
    groupindex = dict(parsed.state.groupdict)
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    return (pattern, flags, flags | parsed.state.flags, code, parsed.state.groups - 1,
            groupindex, tuple(indexgroup))


def _has_record_base(pattern: str | bytes) -> bool:
    if isinstance(pattern, str):
        return RECORD_BASE in pattern
    return RECORD_BASE.encode() in pattern


def write_cache(path: str, keys: Sequence[tuple[str | bytes, int]]) -> int:
    # Not the recorded server's routes: a student's start with the base URL
    # (its capability) in each would never find them.
    entries = [compiled(pattern, flags) for pattern, flags in dict.fromkeys(keys)
               if not _has_record_base(pattern)]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as out:
        marshal.dump((STAMP, entries), out)
    os.replace(path + ".tmp", path)
    return len(entries)


def load_cache(path: str) -> int:
    """Put the cached patterns into re's cache; how many (0 if none fit this Python)."""
    try:
        with open(path, "rb") as cache:
            stamp, entries = marshal.load(cache)
    except (OSError, EOFError, ValueError, TypeError):
        return 0
    if stamp != STAMP:
        return 0
    cache_dict = re._cache
    room = re._MAXCACHE - len(cache_dict)
    for pattern, flags, all_flags, code, groups, groupindex, indexgroup in entries[:room]:
        cache_dict[type(pattern), pattern, flags] = _sre.compile(
            pattern, all_flags, code, groups, groupindex, indexgroup)
    return min(len(entries), max(room, 0))


def record_patterns(path: str) -> None:
    """Note every pattern compiled from now on; write the cache at exit."""
    keys: list[tuple[str | bytes, int]] = []
    original = re._compile

    def _compile(pattern: Any, flags: Any) -> re.Pattern[Any]:
        compiled_pattern = original(pattern, flags)
        if isinstance(pattern, (str, bytes)) and not flags & re.DEBUG:
            keys.append((pattern, int(flags)))
        return compiled_pattern

    re._compile = _compile
    atexit.register(lambda: write_cache(path, keys))


class _LazyFinder:
    """Finds LAZY_MODULES as usual, but executes them on first attribute access
    (a sys.meta_path finder; importlib.abc is not imported for its base class)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in LAZY_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def main() -> int:
    record = os.environ.pop(RECORD_ENV, "")
    if record:
        record_patterns(record)
    else:
        load_cache(CACHE)
    sys.meta_path.insert(0, _LazyFinder())
    from notebook.app import main as notebook_main

    return notebook_main()


# What a student's first click asks of the server: the notebook page, then what the
# page's scripts fetch first.
RECORD_PATHS = ("notebooks/start.ipynb", "tree", "api/contents/start.ipynb?content=1",
                "api/kernelspecs", "api/sessions", "api/me", "lab/api/settings",
                "lab/api/translations/en")


def record(cache: str) -> None:
    """Start the server as a student's unit would, serve RECORD_PATHS, write the cache."""
    # Imported here: a student's start needs none of these.
    import http.client
    import signal
    import socket
    import subprocess
    import tempfile
    import time

    class UnixConnection(http.client.HTTPConnection):
        def __init__(self, path: str) -> None:
            super().__init__("localhost", timeout=60)
            self.unix_path = path

        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.unix_path)

    token = "nbunits-record"
    with tempfile.TemporaryDirectory() as tmp:
        work, sock = os.path.join(tmp, "work"), os.path.join(tmp, "jupyter.sock")
        os.mkdir(work)
        with open(os.path.join(work, "start.ipynb"), "w") as nb:
            nb.write('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
        env = dict(os.environ, HOME=tmp, JUPYTER_RUNTIME_DIR=os.path.join(tmp, "runtime"),
                   **{RECORD_ENV: cache})
        server = subprocess.Popen(
            [sys.executable, "-c", "import sys, nbunits_start; sys.exit(nbunits_start.main())",
             "--no-browser", "--allow-root", f"--ServerApp.sock={sock}",
             f"--ServerApp.root_dir={work}", f"--IdentityProvider.token={token}",
             f"--ServerApp.base_url=/{RECORD_BASE}/"],
            env=env, cwd=tmp)
        try:
            deadline = time.monotonic() + 120
            while not os.path.exists(sock):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("nbunits_start record: the server did not start")
                time.sleep(0.05)
            for path in RECORD_PATHS:
                conn = UnixConnection(sock)
                conn.request("GET", f"/{RECORD_BASE}/{path}", headers={"Authorization": f"token {token}"})
                status = conn.getresponse().status
                conn.close()
                if path == RECORD_PATHS[0] and status != 200:
                    raise SystemExit(f"nbunits_start record: /{path} answered {status}")
        finally:
            server.send_signal(signal.SIGTERM)
            if server.wait(60) != 0:
                raise SystemExit(f"nbunits_start record: the server exited {server.returncode}")
    if load_cache(cache) == 0:
        raise SystemExit(f"nbunits_start record: {cache} holds no pattern")


if __name__ == "__main__":
    if sys.argv[1:2] != ["record"] or len(sys.argv) != 3:
        raise SystemExit("usage: python3 -m nbunits_start record CACHE")
    record(sys.argv[2])
