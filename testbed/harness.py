"""A throwaway, real systemd for integration tests and demos.

`SystemdBox` boots ``systemd-nspawn -b`` over an overlay whose lower layer is this
machine's own root (so every installed package is there) and whose upper layer lives on
a tmpfs (so every write is thrown away). Commands are run *as systemd units* inside it,
which is what production does, and which keeps the container's seccomp filter and
cgroups in force.

    with SystemdBox("demo", binds=[Bind(Path("/srv/code"), "/srv/code", readonly=True)]) as box:
        box.run("useradd", "-m", "stud1")                      # entering the block boots it
        print(box.run("podman", "--version", user="stud1").stdout)
    # leaving it powers the box off and throws everything away

What the box sees of the machine: its root filesystem only (overlayfs takes no submounts,
so anything mounted below / on the machine must be given as a `Bind`), as it was when
read: a file the machine later replaces (by rename) may look stale inside. So bind the
code under test and whatever podman writes (/home, the image store) from the machine.
A Bind is the machine's own directory: do not bind it below /tmp or /var/tmp in the box.

Layout of a box's workdir (default /var/tmp/nbunits-harness/NAME, never under /tmp):

    nspawn.log     what systemd-nspawn and the container's console printed
    state.json     PIDs (with start times), so that `reap` can clean up after a crash
    fs/            a tmpfs holding upper/ work/ merged/ of the overlay

Safety rules this module keeps (see shared/LAB.md, "A real systemd to test against"):

* systemd only ever runs inside nspawn on the overlay, never on the machine's own root.
  The container gets its own tmpfs on /tmp, so the machine's /tmp is never touched.
* processes are only ever ended by the PIDs this module started (checked against their
  start time so that a recycled PID is never hit), never by name.
* nothing is deleted recursively: the tmpfs is unmounted and then only the files this
  module created are removed, so a failed unmount can never turn into deleting through
  the overlay into the machine's root.
* each box gets its own cgroup (nbunits-harness/NAME) so that two boxes never share the
  cgroup tree that nspawn would otherwise create at the root (``/payload``).

Before boot, in the upper layer: noisy units are masked (`MASKED_UNITS`); nginx's default
site is removed by an overlay whiteout (so a box with ``private_network=False`` does not
take port 80 from the machine; tests bring their own nginx config); a tmpfiles.d entry
makes /dev/net/tun 0666 (rootless podman's slirp4netns needs it); /etc/hostname is the box's
name (else the machine's own /etc/hostname wins over nspawn's --machine).

In a test session ($NBUNITS_TEST_SESSION: tests/integration/conftest.py), each box's
journal, nginx logs and secrets are kept before it shuts down or loses power
(`power_cut`), for the log-leak test (testbed/handed.py).

CLI: ``python3 testbed/harness.py shell|selftest|reap`` (also ``python3 -m testbed.harness``).
"""

from __future__ import annotations

import argparse
import atexit
import fnmatch
import itertools
import json
import logging
import os
import re
import secrets
import select
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Bind", "BoxCommandError", "BoxError", "SystemdBox", "MASKED_UNITS"]

log = logging.getLogger("nbunits.harness")

DEFAULT_BASE = Path("/var/tmp/nbunits-harness")

#: Units masked (symlinked to /dev/null) before boot. Shell-style patterns are expanded
#: against the unit files installed on this machine.
MASKED_UNITS: tuple[str, ...] = (
    "postgresql*",
    "apt-daily*",
    "man-db.timer",
    "e2scrub_all.timer",
    "dpkg-db-backup.timer",
    "console-getty.service",
    "podman-auto-update.*",
    "podman-restart.service",
    "podman.service",
    "podman.socket",
    # Ages files in /tmp and /var/tmp 15 min after boot: through a Bind, that would reach
    # the machine's own files.
    "systemd-tmpfiles-clean.timer",
)

#: Files removed (by an overlay whiteout) before boot.
REMOVED_FILES: tuple[str, ...] = ("/etc/nginx/sites-enabled/default",)

#: Files written in the upper layer before boot.
EXTRA_FILES: Mapping[str, str] = {
    "/etc/tmpfiles.d/nbunits-harness.conf": (
        "# nbunits test harness: rootless podman's slirp4netns needs the tun device\n"
        "z /dev/net/tun 0666 - - -\n"
    ),
}

_UNIT_DIRS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))

# Mounted over by nspawn/systemd inside the box: a file written there before boot is hidden.
_HIDDEN_BEFORE_BOOT = ("/tmp", "/run", "/dev", "/proc", "/sys")

# Environment of every process this module starts: nothing of the caller's leaks in.
_CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "TERM": "dumb",  # also keeps ANSI colours out of nspawn.log
}

_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")

# Put the shell in the box's own cgroups (`echo 0 > cgroup.procs` moves the writer), then
# become systemd-nspawn. Arguments: the cgroup.procs files, "--", the nspawn command.
_ENTER_CGROUPS_AND_EXEC = (
    'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"'
)
enter_cgroups_and_exec = _ENTER_CGROUPS_AND_EXEC  # also for testbed/bare.py


class BoxError(RuntimeError):
    """The box could not be set up, booted or torn down."""


class BoxCommandError(subprocess.CalledProcessError):
    """A command run in the box exited non-zero."""

    def __init__(self, returncode: int, cmd: Sequence[str], output: str, stderr: str,
                 user: str | None = None) -> None:
        super().__init__(returncode, list(cmd), output, stderr)
        self.user = user

    def __str__(self) -> str:
        who = f" as {self.user}" if self.user else ""
        err = (self.stderr or "").strip()[-2000:] or "(no stderr)"
        return f"{' '.join(self.cmd)!r}{who} exited {self.returncode} in the box: {err}"


@dataclass(frozen=True)
class Bind:
    """A host path bind-mounted into the box (``--bind`` / ``--bind-ro``)."""

    host: Path
    container: str
    readonly: bool = False

    def nspawn_flag(self) -> str:
        host = str(Path(self.host).resolve())
        for path in (host, self.container):
            if ":" in path or not path.startswith("/"):
                raise ValueError(f"bind paths must be absolute and without ':': {path!r}")
        return f"--bind{'-ro' if self.readonly else ''}={host}:{self.container}"


@dataclass(frozen=True)
class _Proc:
    """A process identified by PID *and* start time, so a recycled PID is never signalled."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> _Proc | None:
        start = _start_time(pid)
        return cls(pid, start) if start is not None else None

    def alive(self) -> bool:
        """True while it runs (a zombie counts as gone)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return fields[0] != "Z" and int(fields[19]) == self.start

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def _start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _wait_gone(procs: Sequence[_Proc], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(p.alive() for p in procs):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _resolve_in_root(root: Path, path: str) -> Path:
    """Map an absolute path as seen inside the box to a host path under `root`.

    Symlinks are followed the way the box would follow them (an absolute target restarts
    at `root`, ``..`` never climbs above it), like openat2(RESOLVE_IN_ROOT). Without this,
    a symlink such as /var/run -> /run would make a write land on the machine itself.
    """
    if not path.startswith("/"):
        raise ValueError(f"path in the box must be absolute: {path!r}")
    todo = [part for part in reversed(path.split("/")) if part not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise BoxError(f"too many levels of symlinks in {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
            continue
        done.append(part)
    return root.joinpath(*done)


def _is_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _mounted(path: Path) -> bool:
    """Whether something is mounted at or below `path` (in this mount namespace)."""
    target = str(path)
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            mount_point = line.split()[4].replace("\\040", " ")
            if _is_under(mount_point, target):
                return True
    return False


def _cgroup_roots() -> list[Path]:
    """The hierarchies systemd-nspawn uses: cgroup v2 alone, or hybrid's name=systemd + unified."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base]
    return [root for root in (base / "systemd", base / "unified") if (root / "cgroup.procs").exists()]


cgroup_roots = _cgroup_roots  # also for testbed/bare.py


class SystemdBox:
    """A throwaway systemd (PID 1 of an nspawn container) over an overlay of the machine's root.

    Attributes valid after `boot()`: `leader_pid` (the container's PID 1, seen from the host),
    `nspawn_pid`, `boot_seconds`. `log_path` is nspawn's output (kept on failure, and kept
    after shutdown if NBUNITS_HARNESS_KEEP=1 is set).
    """

    def __init__(self, name: str, binds: Sequence[Bind] = (), private_network: bool = True,
                 workdir: Path | None = None, disk: Path | None = None,
                 network_namespace: Path | None = None) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"box name must be a hostname label (letters, digits, '-'): {name!r}")
        self.name = name
        self.binds = tuple(binds)
        self.private_network = private_network
        # A network namespace made by the caller (/run/netns/NAME), shared by several
        # boxes: their nginx and services talk over real sockets (testbed/netns.py).
        self.network_namespace = network_namespace
        self.workdir = Path(workdir) if workdir is not None else DEFAULT_BASE / name
        # With a disk, the overlay's upper layer lives there (not on the tmpfs) and outlives
        # the box: a new box on the same disk is the same machine after a reboot.
        self.disk = Path(disk) if disk is not None else None
        self.log_path = self.workdir / "nspawn.log"
        self.leader_pid: int = 0
        self.nspawn_pid: int = 0
        self.boot_seconds: float = 0.0
        self._fs = self.workdir / "fs"
        self._merged = self._fs / "merged"
        self._state_path = self.workdir / "state.json"
        self._leader: _Proc | None = None
        self._nspawn: _Proc | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._units = itertools.count(1)
        for bind in self.binds:
            bind.nspawn_flag()  # validate early

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SystemdBox:
        self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def booted(self) -> bool:
        return self._leader is not None and self._leader.alive()

    def nspawn_command(self) -> list[str]:
        """The exact systemd-nspawn command line used by `boot()`."""
        cmd = [
            "systemd-nspawn",
            f"--directory={self._merged}",
            "--boot",
            f"--machine={self.name}",
            "--register=no",          # no machined outside
            "--keep-unit",            # no systemd outside to make a scope
            "--link-journal=no",      # journal stays inside the throwaway fs
            "--notify-ready=yes",     # READY=1 once the box's systemd finished booting
            "--console=read-only",    # boot messages go to nspawn.log, whatever our stdin is
            # @keyring, else crun: "create keyring: Operation not permitted". bpf, else the
            # box's systemd cannot load its IP firewall (IPAddressDeny=: "the local system
            # does not support BPF/cgroup firewalling") and ignores it, as a host without
            # cgroup v2's BPF would; with it, the box enforces it as a production host does.
            # pidfd_getfd, which nspawn refuses (EPERM) and a host does not: a test's kernel
            # takes Jupyter's stderr with it, as a hostile one could on a host.
            "--system-call-filter=@keyring bpf pidfd_getfd",
        ]
        if self.network_namespace is not None:
            cmd.append(f"--network-namespace-path={self.network_namespace}")
        elif self.private_network:
            cmd.append("--private-network")
        cmd.extend(bind.nspawn_flag() for bind in self.binds)
        return cmd

    def boot(self, timeout: float = 60) -> None:
        """Boot and return once systemd reports `running` (or `degraded`: failed units are logged).

        A no-op if the box is already booted (``with SystemdBox(...) as box:`` boots it).
        """
        if self.booted:
            return
        if os.geteuid() != 0:
            raise BoxError("booting a SystemdBox needs root")
        if shutil.which("systemd-nspawn") is None:
            raise BoxError("systemd-nspawn is missing (apt-get install systemd-container)")
        started = time.monotonic()
        deadline = started + timeout
        try:
            self._prepare()
            self._spawn_and_wait_ready(deadline)
            self._wait_system_running(deadline)
        except BaseException as exc:
            tail = self.log_tail()
            self.shutdown(keep_log=True)
            if isinstance(exc, BoxError):
                raise BoxError(f"{exc}\n--- {self.log_path} (last lines) ---\n{tail}") from None
            raise
        self.boot_seconds = time.monotonic() - started
        log.info("box %s booted in %.2fs (leader PID %d)", self.name, self.boot_seconds, self.leader_pid)

    def shutdown(self, timeout: float = 30, *, keep_log: bool = False) -> None:
        """Power off, then kill by PID what survived, unmount, and remove the workdir. Idempotent."""
        atexit.unregister(self.shutdown)
        if not self._prepared:
            return
        self._save_for_session()
        self._stop_processes(timeout)
        self._clean_up(keep_log=keep_log or os.environ.get("NBUNITS_HARNESS_KEEP") == "1")

    def power_cut(self) -> None:
        """Every process of the box at once (SIGKILL to its PID 1), then the rest of a
        shutdown: a host that loses power. Its logs are kept first (see below)."""
        self._save_for_session()
        if self._leader is not None:
            self._leader.signal(signal.SIGKILL)
        self.shutdown()

    def _save_for_session(self) -> None:
        """In a test session (testbed/handed.py), keep the box's logs and secrets before
        it goes: every box's logs are checked for leaks at the session's end."""
        if not self.booted or not os.environ.get("NBUNITS_TEST_SESSION"):
            return
        from testbed.handed import save_box  # the tests' own: aiohttp and nbunits' paths

        try:
            save_box(self)
        except Exception:  # the box must go all the same; the leak test then sees less
            log.exception("box %s: could not keep its logs for the session", self.name)

    @classmethod
    def reap(cls, workdir: Path) -> None:
        """Clean up a box left behind by a crashed run (its PIDs are read from state.json)."""
        workdir = Path(workdir)
        try:
            name = json.loads((workdir / "state.json").read_text())["name"]
        except (FileNotFoundError, ValueError, KeyError):
            name = workdir.name
        box = cls(name, workdir=workdir)
        box._leader, box._nspawn = box._read_state()
        box._prepared = True
        box.shutdown()

    # ------------------------------------------------------------------ running things

    def run(self, *argv: str, check: bool = True, timeout: float = 120, user: str | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None,
            properties: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the box as a transient systemd service and wait for it.

        ``systemd-run --wait --pipe``: stdin/stdout/stderr are this call's; the result carries
        the service's exit status. `user` sets ``User=``; `env` and `properties` (``"Key=value"``
        unit settings) are passed as ``--setenv``/``--property``. On timeout the unit is killed
        and `subprocess.TimeoutExpired` is raised; with `check`, a non-zero exit raises
        `BoxCommandError` naming the command and its stderr.
        """
        if not argv:
            raise ValueError("run() needs a command")
        unit = f"nbunits-harness-run-{next(self._units)}-{secrets.token_hex(3)}.service"
        # A description of its own: systemd's "Started UNIT - DESCRIPTION" line would
        # otherwise quote the command line (the log-leak test reads every line).
        cmd = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", f"--unit={unit}",
               "--description=a command of the test harness"]
        if user is not None:
            cmd.append(f"--uid={user}")
        cmd += [f"--setenv={key}={value}" for key, value in (env or {}).items()]
        cmd += [f"--property={prop}" for prop in properties]
        cmd += ["--", *argv]
        try:
            result = self.nsenter(*cmd, check=False, timeout=timeout, input=input)
        except subprocess.TimeoutExpired:
            self.nsenter("systemctl", "kill", "--signal=SIGKILL", unit, check=False, timeout=30)
            self.nsenter("systemctl", "stop", unit, check=False, timeout=30)
            raise subprocess.TimeoutExpired(list(argv), timeout) from None
        if check and result.returncode != 0:
            raise BoxCommandError(result.returncode, argv, result.stdout, result.stderr, user)
        return result

    def nsenter(self, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None,
                env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` directly in the box's namespaces (NOT as a unit: no seccomp filter, no
        cgroup of the box). For the rare things that must not be a unit; prefer `run()`."""
        if not self.booted:
            raise BoxError(f"box {self.name} is not booted")
        cmd = ["nsenter", f"--target={self.leader_pid}", "--all", "--", *argv]
        result = subprocess.run(
            cmd, input=input, stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True, text=True, errors="replace", timeout=timeout,
            env={**_CLEAN_ENV, **(env or {})}, cwd="/",
        )
        if check and result.returncode != 0:
            raise BoxCommandError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def systemctl(self, *args: str, check: bool = True,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``systemctl ARGS`` against the box's systemd (run by nsenter: systemctl is only a client)."""
        return self.nsenter("systemctl", *args, check=check, timeout=timeout)

    def failed_units(self) -> list[str]:
        out = self.systemctl("list-units", "--failed", "--no-legend", "--plain", check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def journal(self, *units: str, lines: int = 200) -> str:
        """The box's journal (of `units`, or all of it), last `lines` lines, for debugging:
        the system journal and every namespace's (students' units log to their own)."""
        args = ["journalctl", "--namespace=*", "--no-pager", "--no-hostname", f"--lines={lines}"]
        args += [f"--unit={unit}" for unit in units]
        return self.nsenter(*args, check=False).stdout

    # ------------------------------------------------------------------ files

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file (owned by root) at `path` as the box sees it; parents are created.

        Works before boot (into the overlay, e.g. unit files to enable at boot) and after.
        Before boot, paths that the box mounts over (/tmp, /run, ...) and bind targets are
        refused, since the file would be hidden.
        """
        target = self._host_path(path, for_write=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def read_file(self, path: str) -> str:
        """Read a file at `path` as the box sees it."""
        return self._host_path(path, for_write=False).read_text()

    def written(self) -> set[str]:
        """Every path written in the box's own root since it was made, as the box names
        it (its overlay's upper layer: binds and the tmpfs on /tmp and /run are not in it)."""
        upper = (self.disk if self.disk is not None else self._fs) / "upper"
        return {"/" + str(path.relative_to(upper)) for path in upper.rglob("*")}

    def _host_path(self, path: str, *, for_write: bool) -> Path:
        if self.booted:
            return _resolve_in_root(Path(f"/proc/{self.leader_pid}/root"), path)
        if for_write:
            hidden = [*_HIDDEN_BEFORE_BOOT, *(bind.container for bind in self.binds)]
            if any(_is_under(os.path.normpath(path), prefix) for prefix in hidden):
                raise BoxError(f"{path!r} is mounted over at boot: write it after boot()")
        self._prepare()
        return _resolve_in_root(self._merged, path)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join([line for line in text.replace("\r", "").splitlines() if line.strip()][-lines:])

    # ------------------------------------------------------------------ internals

    def _prepare(self) -> None:
        """Mount the tmpfs and the overlay, and lay the pre-boot files in the upper layer."""
        if self._prepared:
            return
        if os.geteuid() != 0:
            raise BoxError("a SystemdBox needs root")
        if self._state_path.exists() or _mounted(self.workdir):
            self._reap_stale()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fs.mkdir(exist_ok=True)
        self._prepared = True  # from here on, shutdown() has something to undo
        atexit.register(self.shutdown)
        self._save_state()
        _run_host(["mount", "-t", "tmpfs", "-o", "mode=0755", f"nbunits-harness-{self.name}", str(self._fs)])
        layers = self.disk if self.disk is not None else self._fs
        upper, work = layers / "upper", layers / "work"
        first_boot = not upper.exists()
        for directory in (upper, work, self._merged):
            directory.mkdir(parents=True, exist_ok=directory != self._merged)
        if first_boot:
            self._lay_upper(upper)
        _run_host(["mount", "-t", "overlay", "-o", f"lowerdir=/,upperdir={upper},workdir={work}",
                   f"nbunits-harness-{self.name}", str(self._merged)])

    def _lay_upper(self, upper: Path) -> None:
        installed = {unit.name for d in _UNIT_DIRS if d.is_dir() for unit in d.iterdir()}
        masked: set[str] = set()
        for pattern in MASKED_UNITS:
            if any(c in pattern for c in "*?["):
                masked.update(fnmatch.filter(installed, pattern))
            else:
                masked.add(pattern)
        unit_dir = _mkdirs_like_lower(upper, "/etc/systemd/system")
        for unit in sorted(masked):
            (unit_dir / unit).symlink_to("/dev/null")
        for path in REMOVED_FILES:
            if os.path.lexists(path):
                whiteout = _mkdirs_like_lower(upper, os.path.dirname(path)) / os.path.basename(path)
                os.mknod(whiteout, stat.S_IFCHR | 0o600, os.makedev(0, 0))  # overlayfs whiteout
        for path, text in {**EXTRA_FILES, "/etc/hostname": f"{self.name}\n"}.items():
            (_mkdirs_like_lower(upper, os.path.dirname(path)) / os.path.basename(path)).write_text(text)
        log.debug("box %s: masked %s", self.name, ", ".join(sorted(masked)))

    def _spawn_and_wait_ready(self, deadline: float) -> None:
        cgroup_procs = []
        for root in _cgroup_roots():
            cgroup = root / "nbunits-harness" / self.name
            cgroup.mkdir(parents=True, exist_ok=True)
            cgroup_procs.append(str(cgroup / "cgroup.procs"))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        address = f"\0nbunits-harness/{self.name}/{secrets.token_hex(8)}"  # abstract: no file
        notify.bind(address)
        try:
            with open(self.log_path, "wb") as logfile:
                self._popen = subprocess.Popen(
                    ["/bin/sh", "-c", _ENTER_CGROUPS_AND_EXEC, "sh", *cgroup_procs, "--",
                     *self.nspawn_command()],
                    stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, cwd="/",
                    env={**_CLEAN_ENV, "NOTIFY_SOCKET": "@" + address[1:]},
                    start_new_session=True,  # a Ctrl-C at the terminal must not hit it
                )
            self._nspawn = _Proc.of(self._popen.pid)
            self.nspawn_pid = self._popen.pid
            self._save_state()
            ready = False
            while not (ready and self._leader):
                if self._popen.poll() is not None:
                    raise BoxError(f"systemd-nspawn exited with {self._popen.returncode} during boot")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BoxError("timed out waiting for the box's systemd to be ready")
                if not select.select([notify], [], [], min(remaining, 0.2))[0]:
                    continue
                for line in notify.recv(4096).decode(errors="replace").splitlines():
                    key, _, value = line.partition("=")
                    if key == "X_NSPAWN_LEADER_PID":
                        self._adopt_leader(int(value))
                    elif key == "READY" and value == "1":
                        ready = True
        finally:
            notify.close()

    def _adopt_leader(self, pid: int) -> None:
        leader = _Proc.of(pid)
        if leader is None or _ns_pid(pid) != 1:
            raise BoxError(f"PID {pid} announced by nspawn is not the container's PID 1")
        self._leader, self.leader_pid = leader, pid
        self._save_state()

    def _wait_system_running(self, deadline: float) -> None:
        remaining = max(deadline - time.monotonic(), 1)
        try:
            result = self.systemctl("is-system-running", "--wait", check=False, timeout=remaining)
        except subprocess.TimeoutExpired:
            raise BoxError(f"systemd did not finish booting within {remaining:.0f}s more") from None
        state = result.stdout.strip()
        if state == "degraded":
            failed = self.systemctl("--failed", "--no-pager", check=False).stdout
            log.warning("box %s booted degraded; failed units:\n%s", self.name, failed)
        elif state != "running":
            raise BoxError(f"box {self.name} did not reach running/degraded: {state!r}")

    def _stop_processes(self, timeout: float) -> None:
        if self._leader is None and self._nspawn is not None:  # boot failed before nspawn told us
            for pid in _children(self._nspawn.pid):
                if _ns_pid(pid) == 1:
                    self._leader = _Proc.of(pid)
        procs = [p for p in (self._leader, self._nspawn) if p is not None]
        if self._leader is not None and self._leader.alive():
            self._leader.signal(signal.SIGRTMIN + 4)  # systemd: start poweroff.target
        elif self._nspawn is not None:
            self._nspawn.signal(signal.SIGTERM)  # nspawn then stops its container
        if not _wait_gone(procs, timeout):
            log.warning("box %s did not power off within %ss: killing its PIDs", self.name, timeout)
            # SIGKILL to a PID namespace's init kills every process in that namespace.
            for proc in procs:
                proc.signal(signal.SIGKILL)
            if not _wait_gone(procs, 10):
                raise BoxError(f"box {self.name}: PIDs {[p.pid for p in procs]} survived SIGKILL")
        if self._popen is not None:
            self._popen.wait()  # reap our child
            self._popen = None
        self._leader = self._nspawn = None

    def _clean_up(self, keep_log: bool) -> None:
        self._unmount()
        self._remove_cgroups()
        self._remove_files(keep_log)
        self._prepared = False

    def _reap_stale(self) -> None:
        """A previous box of this name left state behind: clean it if its processes are gone."""
        alive = [p.pid for p in self._read_state() if p is not None and p.alive()]
        if alive:  # not ours to stop: leave it alone and say so
            raise BoxError(
                f"box {self.name} seems to be running already (PIDs {alive}, workdir {self.workdir}); "
                f"shut it down, or: python3 testbed/harness.py reap {self.workdir}")
        log.warning("box %s: cleaning up what a previous run left in %s", self.name, self.workdir)
        self._clean_up(keep_log=False)

    def _unmount(self) -> None:
        for mount_point in (self._merged, self._fs):
            for attempt in range(50):
                if not os.path.ismount(mount_point):
                    break
                flags = ["--lazy"] if attempt == 49 else []
                if subprocess.run(["umount", *flags, str(mount_point)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
        if _mounted(self._fs):
            raise BoxError(f"could not unmount everything under {self._fs}; left it in place")

    def _remove_cgroups(self) -> None:
        for root in _cgroup_roots():
            top = root / "nbunits-harness" / self.name
            if not top.is_dir():
                continue
            # rmdir depth-first: a cgroup directory can only be removed when empty of children.
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda entry: -entry[0].count("/")):
                try:
                    os.rmdir(dirpath)
                except OSError as err:
                    log.warning("box %s: cannot remove cgroup %s: %s", self.name, dirpath, err)
            try:
                os.rmdir(root / "nbunits-harness")
            except OSError:
                pass  # another box still uses it

    def _remove_files(self, keep_log: bool) -> None:
        if _mounted(self._fs):
            return  # never delete anything while the overlay (= the machine's root) may be under it
        for path in (self._state_path, *([] if keep_log else [self.log_path])):
            path.unlink(missing_ok=True)
        for directory in (self._fs, self.workdir):
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                if directory == self.workdir and keep_log:
                    log.info("box %s: log kept at %s", self.name, self.log_path)
                else:
                    log.warning("box %s: left %s in place (not empty)", self.name, directory)

    def _save_state(self) -> None:
        state = {
            "name": self.name,
            "nspawn": [self._nspawn.pid, self._nspawn.start] if self._nspawn else None,
            "leader": [self._leader.pid, self._leader.start] if self._leader else None,
        }
        self._state_path.write_text(json.dumps(state))

    def _read_state(self) -> tuple[_Proc | None, _Proc | None]:
        """(leader, nspawn) as recorded in state.json."""
        try:
            state = json.loads(self._state_path.read_text())
        except (FileNotFoundError, ValueError):
            return None, None
        leader, nspawn = state.get("leader"), state.get("nspawn")
        return (_Proc(*leader) if leader else None), (_Proc(*nspawn) if nspawn else None)


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return children


def _ns_pid(pid: int) -> int | None:
    """The PID of `pid` in its innermost PID namespace."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except OSError:
        pass
    return None


def _mkdirs_like_lower(upper: Path, path: str) -> Path:
    """Create `path` in the upper layer, each directory with the mode and owner of the
    machine's own one: overlayfs shows the upper directory's attributes."""
    current = upper
    lower = Path("/")
    for part in Path(path).relative_to("/").parts:
        current, lower = current / part, lower / part
        if not current.exists():
            current.mkdir()
            if lower.is_dir():
                st = lower.stat()
                os.chown(current, st.st_uid, st.st_gid)
                os.chmod(current, stat.S_IMODE(st.st_mode))
    return current


def _run_host(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, env=_CLEAN_ENV)
    if result.returncode != 0:
        raise BoxError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")


# ---------------------------------------------------------------------- CLI


def _parse_bind(text: str) -> Bind:
    host, _, rest = text.partition(":")
    container, _, flag = rest.partition(":")
    if not host or flag not in ("", "ro", "rw"):
        raise argparse.ArgumentTypeError(f"expected HOST[:CONTAINER[:ro]], got {text!r}")
    return Bind(Path(host), container or host, readonly=flag == "ro")


def _selftest(boots: int) -> int:
    times = []
    for i in range(boots):
        with SystemdBox(f"selftest-{os.getpid()}") as box:
            times.append(box.boot_seconds)
            assert box.run("id", "-u", user="nobody").stdout.strip() == "65534"
            assert box.run("stat", "-c", "%a", "/dev/net/tun").stdout.strip() == "666"
            print(f"boot {i + 1}: {box.boot_seconds:.2f}s, state "
                  f"{box.systemctl('is-system-running', check=False).stdout.strip()}")
    print(f"median boot of {boots}: {statistics.median(times):.2f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    shell = sub.add_parser("shell", help="boot a box and open a root shell in it (as a unit)")
    shell.add_argument("--name", default="shell")
    shell.add_argument("--bind", type=_parse_bind, action="append", default=[],
                       metavar="HOST[:CONTAINER[:ro]]")
    shell.add_argument("--host-network", action="store_true", help="share the machine's network")
    selftest = sub.add_parser("selftest", help="boot a few boxes, check them, print boot times")
    selftest.add_argument("--boots", type=int, default=3)
    reap = sub.add_parser("reap", help="clean up a box a crashed run left behind")
    reap.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.command == "selftest":
        return _selftest(args.boots)
    if args.command == "reap":
        SystemdBox.reap(args.workdir)
        return 0
    with SystemdBox(args.name, binds=args.bind, private_network=not args.host_network) as box:
        print(f"box {box.name} up in {box.boot_seconds:.2f}s, leader PID {box.leader_pid}, "
              f"log {box.log_path}; exit the shell to throw it away")
        term = os.environ.get("TERM", "xterm")
        return subprocess.call(
            ["nsenter", f"--target={box.leader_pid}", "--all", "--", "systemd-run", "--pty", "--wait",
             "--quiet", "--collect", "--uid=root", f"--setenv=TERM={term}", "--", "/bin/bash", "-l"],
            env={**_CLEAN_ENV, "TERM": term}, cwd="/",
        )


if __name__ == "__main__":
    sys.exit(main())
