"""Course image builds by the builder user: each step a sandboxed transient unit.

Root (the admin's `nbunits course add/update`, `image build --course`) only starts
the steps and reads what they print: nothing of a course's repository runs as root.
A step is images/course-build, run by `systemd-run --wait` as the system user
nbunits-builder with the sandbox and bounds of units/image/builder.properties:
`wheels` (the only step with network, to the package index) and `build` (none).
What a build makes is checked and loaded by root afterwards (image_import.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from nbunits.core.config import Settings, parse_size
from nbunits.core.data import data_dir, data_file
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import fill
from nbunits.core.names import BUILDER_USER, IMAGE_BUILD_UNITS
from nbunits.core.run import CommandError, run, run_streamed
from nbunits.core.systemctl import systemctl

Say = Callable[[str], None]

_RESULT_RE = re.compile(r"Finished with result: (\S+)")
_STATUS_RE = re.compile(r"Main processes terminated with: code=\w+/status=(\S+)")
_SUMMARY = ("Running as unit:", "Finished with result:", "Main processes terminated with:",
            "Service runtime:")
# How often, at most, the disk bound is checked while a step runs (seconds).
DISK_WATCH_INTERVAL = 2.0


class BuildError(NbunitsError):
    pass


def check_builder(settings: Settings) -> None:
    """The builder user exists (`nbunits install` makes it, with its subordinate ids),
    and so does its folder, the builder's own (0700) in a folder of root's."""
    found = run(["getent", "passwd", BUILDER_USER], check=False)
    if found.returncode != 0:
        raise BuildError(Code.IMAGE_BUILD_FAILED, f"there is no user {BUILDER_USER}: course "
                         "images are built by it, never by root",
                         hint="sudo nbunits install (it makes the user)")
    uid, gid = (int(x) for x in found.stdout.split(":")[2:4])
    settings.build_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chown(settings.build_dir, 0, 0)
    os.chmod(settings.build_dir, 0o755)
    home = settings.builder_home
    home.mkdir(mode=0o700, exist_ok=True)
    if os.stat(home, follow_symlinks=False).st_uid != uid:
        os.chown(home, uid, gid, follow_symlinks=False)


def properties(settings: Settings, *, network: bool) -> list[str]:
    """The unit settings of a step (units/image/builder.properties, filled)."""
    text = data_file("units", "image", "builder.properties").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    server = settings.server
    values = {"BUILDER": BUILDER_USER, "HOME": str(settings.builder_home),
              "INPUT": str(settings.build_input), "STATE": str(settings.state_dir),
              "ETC": str(settings.etc_dir), "PRIVATE_NETWORK": "no" if network else "yes",
              "MEMORY_MAX": server.image_build_memory, "RUNTIME_MAX": f"{server.image_build_time}s",
              "FILE_SIZE_MAX": server.image_build_disk}
    return fill("\n".join(lines), values).splitlines()


def command(settings: Settings, step: str, args: list[str], *, network: bool,
            credentials: Mapping[str, Path]) -> list[str]:
    """The systemd-run command of a step."""
    props = properties(settings, network=network)
    props += [f"LoadCredential={name}:{path}" for name, path in credentials.items()]
    return ["systemd-run", "--wait", "--pipe", "--collect", f"--unit={IMAGE_BUILD_UNITS[step]}",
            *(f"--property={p}" for p in props), "--",
            "/bin/bash", str(data_dir() / "images" / "course-build"), step,
            str(settings.build_input), *args]


def run_step(settings: Settings, step: str, args: list[str], say: Say, *, network: bool = False,
             credentials: Mapping[str, Path] | None = None, watch_disk: bool = True) -> None:
    """Run a step as the builder, its output shown to the admin (printable characters
    only: a build prints what the course's repository makes it print). Its disk use
    is watched unless it runs nothing of the course's (loading the base image)."""
    unit = IMAGE_BUILD_UNITS[step]
    summary: dict[str, str] = {}

    def show(line: str) -> None:
        if line.startswith(_SUMMARY):
            for regex, key in ((_RESULT_RE, "result"), (_STATUS_RE, "status")):
                if m := regex.search(line):
                    summary[key] = m[1]
            return
        say(f"  | {printable(line)}")

    limit = parse_size(settings.server.image_build_disk) if watch_disk else 0
    argv = command(settings, step, args, network=network, credentials=credentials or {})
    with DiskWatch(settings.builder_home, limit, unit) as watch:
        try:
            run_streamed(argv, show, timeout=settings.server.image_build_time + 120)
        except CommandError as exc:
            raise BuildError(Code.IMAGE_BUILD_FAILED, reason(settings, summary, watch.tripped, exc)
                             ) from exc
        except BaseException:
            systemctl("stop", unit, check=False)  # an interrupted admin's build ends too
            raise


def reason(settings: Settings, summary: dict[str, str], disk: bool, exc: CommandError) -> str:
    """Why a step failed, in the admin's words: a bound it met, or the telling line."""
    server = settings.server
    if disk:
        return (f"it wrote more than image_build_disk ({server.image_build_disk}) in "
                f"{settings.builder_home}; it was stopped")
    if summary.get("result") == "timeout":
        return f"it took longer than image_build_time ({server.image_build_time} s); it was stopped"
    if summary.get("result") == "oom-kill":
        return f"it used more memory than image_build_memory ({server.image_build_memory})"
    if summary.get("status") == "XFSZ" or "file size limit exceeded" in exc.stderr.lower() \
            or "exit status 153" in exc.stderr:
        return f"it wrote a file larger than image_build_disk ({server.image_build_disk})"
    return why(exc)


def why(exc: CommandError) -> str:
    """The telling line of a failed step: pip's or podman's error, else the last one."""
    lines = [printable(line.strip()) for line in exc.stderr.splitlines()
             if line.strip() and not line.startswith(_SUMMARY)]
    for line in reversed(lines):
        if line.startswith(("ERROR:", "Error:", "error:")) and "exit status" not in line:
            return line
    return lines[-1] if lines else str(exc)


def printable(text: str) -> str:
    """Control characters (terminal escapes among them) shown as \\xNN, never sent."""
    return "".join(c if c.isprintable() or c == "\t" else f"\\x{ord(c):02x}" for c in text)


@contextlib.contextmanager
def lock(settings: Settings) -> Iterator[None]:
    """One build at a time on a host (they share the builder's storage)."""
    settings.build_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(settings.build_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class DiskWatch:
    """Stops a step that writes more than `limit` bytes in `path`, the builder's folder
    (0: not watched).

    LimitFSIZE= bounds each file; this bounds their sum: the folder (its podman
    storage, where a RUN step writes, and its temporary files) measured by du,
    again and again while the step runs (a measure costs ~0.2 s per 25,000 files;
    the next comes after at least 2 s, and 4 times as long as it took). Not the file
    system's free space: other writers there (students, other services) would count."""

    def __init__(self, path: Path, limit: int, unit: str) -> None:
        self.path, self.limit, self.unit = path, limit, unit
        self.tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> DiskWatch:
        if self.limit:
            self._start = used(self.path)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        pause = DISK_WATCH_INTERVAL
        while not self._stop.wait(pause):
            started = time.monotonic()
            if used(self.path) - self._start > self.limit:
                self.tripped = True
                systemctl("kill", "--signal=SIGKILL", self.unit, check=False)
                return
            pause = max(DISK_WATCH_INTERVAL, 4 * (time.monotonic() - started))


def used(path: Path) -> int:
    """Bytes on disk under `path` (du: links not followed, one file system, hard
    links counted once); files vanishing as it counts are no error."""
    out = run(["du", "-sx", "--block-size=1", str(path)], check=False, timeout=600).stdout
    try:
        return int(out.split()[0])
    except (IndexError, ValueError):
        return 0
