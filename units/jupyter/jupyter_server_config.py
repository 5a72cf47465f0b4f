# Jupyter's own log lines, for the journal, and one start-up cost. Mounted read-only
# into every student's container as ~/.jupyter/jupyter_server_config.py
# (units/course/nbunits-@COURSE@@.service), beside the unit's JSON settings. Three things:
#
# - No capability in a log line. The capability is the student's token and part of
#   Jupyter's base URL, so Jupyter's own lines (the "is running at" URL, every
#   request it logs with its path and query) would carry it into the journal, where
#   whoever reads logs could open the notebook. A filter replaces it with
#   "[capability]", and a link's 64-hex signature someone put in a query with
#   "[redacted]" (docs/security.md, "Logs").
# - A level word, one entry per line. The container's output is the unit's (podman
#   --log-driver=passthrough), in the students' journal namespace at one priority
#   (info): the unit sets SyslogLevelPrefix=no, since a kernel can write to the same
#   stream (as the same user, through /proc/PID/fd) and a "<0>" there was an emergency
#   broadcast to admins' terminals. So Jupyter's lines carry their level as a word,
#   "[W ServerApp] ...", which `nbunits logs --grep` filters on (docs/admin.md, "The
#   journal"); a line of a multi-line message or traceback after the first starts with
#   "[W ServerApp] | ", and every control character is escaped (\n, \x1b), so no
#   text Jupyter logs (a file name, a request's path) starts a line of its own.
#   journald adds the time: the lines carry none.
# - No journal stream in a kernel. Jupyter starts kernels with their stdout and stderr
#   on /dev/null: ipykernel still sends what they print, and what their subprocesses
#   write to file descriptors 1 and 2, to the notebook (it reads its own pipes), but the
#   descriptors it keeps aside (to restore them, to echo when not quiet) are no longer
#   the unit's journal stream, one os.write() away for any code in the kernel (below).
# And more, below: a save over the disk quota says "Disk quota exceeded", Jupyter
# tells systemd when it is ready, and a package a student installs is importable at once.
import logging
import os
import re
import sqlite3
import subprocess
import sys

c = get_config()  # noqa: F821 (Jupyter's config loader defines it)

_CAPABILITY = os.environ.get("JUPYTER_TOKEN", "")
# Any capability-shaped text (nbunits.core.names.CAPABILITY_RE), whoever sent it.
_SHAPE = re.compile(r"[A-Za-z0-9_-]{22}\.[0-9]{1,9}\.[0-9]{1,11}")
# What journald would split a line at (newline, NUL) or a terminal obey: C0 but tab, DEL, C1.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# A 64-hex HMAC: a staff or signed legacy link's signature, in a query Jupyter logs.
_SIGNATURE = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


def _redact(text: str) -> str:
    text = text.replace(_CAPABILITY, "[capability]") if _CAPABILITY else text
    return _SIGNATURE.sub("[redacted]", _SHAPE.sub("[capability]", text))


class RedactCapability(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _redact(message) != message:
            record.msg, record.args = _redact(message), None
        # A traceback quotes paths too (the formatter then uses this text as it is).
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact(record.exc_text)
        if record.stack_info:
            record.stack_info = _redact(record.stack_info)
        return True


def _visible(match: re.Match) -> str:
    return {"\n": "\\n", "\r": "\\r"}.get(match.group(), f"\\x{ord(match.group()):02x}")


class LevelWordFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = f"[{record.levelname[:1]} {record.name}] "
        # A traceback spans lines: each is an entry of its own, marked as a continuation.
        lines = super().format(record).split("\n")
        return "\n".join(head + ("| " if n else "") + _CONTROL.sub(_visible, line)
                         for n, line in enumerate(lines))


def level_word_formatter(**options: str) -> logging.Formatter:
    # dictConfig passes traitlets' own formatter options (class, format, datefmt).
    return LevelWordFormatter("%(message)s")


# Merged into traitlets' default logging configuration (its one "console" handler)
# of every application: the server, and the extensions that log on their own
# (JupyterNotebookApp, LabApp).
c.Application.logging_config = {
    "formatters": {"console": {"()": level_word_formatter}},
    "filters": {"nbunits_redact": {"()": RedactCapability}},
    "handlers": {"console": {"filters": ["nbunits_redact"]}},
}


def kernels_output_to_null() -> None:
    """Kernels start with stdout and stderr on /dev/null (jupyter_client passes the
    provisioner's arguments to Popen). ipykernel (quiet, its default) copied nothing
    to them; but it kept them open, and a kernel found the journal stream among its
    own file descriptors."""
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    launch = LocalProvisioner.launch_kernel

    async def launch_kernel(self, cmd, **kwargs):  # noqa: ANN001, ANN003, ANN202
        kwargs.update(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return await launch(self, cmd, **kwargs)

    LocalProvisioner.launch_kernel = launch_kernel


if "jupyter_server" in sys.modules:  # Jupyter reads this file; tests/unit do too, without it
    kernels_output_to_null()


# - Not the classic Notebook's configuration shim. notebook_shim's server extension
#   maps `NotebookApp.*` settings (jupyter_notebook_config files of Notebook 6) onto
#   the server, and to list them it imports IPython into the server: ~50 ms of CPU
#   at every start (docs/BENCHMARKS.md). nbunits configures Jupyter by ServerApp
#   settings only; Notebook 7 itself (its pages, JupyterLab's) does not use the
#   extension, only the shim's config mixin, which stays.
c.ServerApp.jpserver_extensions.update({"notebook_shim": False})

# - Fewer wake-ups of an idle server. Jupyter checks that each kernel process is
#   alive every `time_to_dead` seconds (3 by default): with a kernel open, that check
#   was nearly all an idle server did, ~13 ms of CPU a minute, 2 s a minute with 150
#   students active (docs/BENCHMARKS.md). Every 10 s, a kernel that died (killed at
#   the course's memory limit) is restarted at most 10 s later.
c.KernelRestarter.time_to_dead = 10.0


def quota_clear_contents() -> type:
    """Jupyter's default contents manager, but a save over the course's disk quota
    (docs/admin.md, "Disk quotas") fails with the file system's own "Disk quota exceeded":
    before writing the notebook, Jupyter signs it in its trust database (in the
    same home, so over the same quota), and that failure ("database is locked")
    would otherwise be all the student reads. The notebook is then saved unsigned,
    if it fits at all."""
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

    class QuotaClearContents(AsyncLargeFileManager):
        def check_and_sign(self, nb, path="", **options):  # noqa: ANN001, ANN003, ANN201
            try:
                super().check_and_sign(nb, path, **options)
            except sqlite3.Error as exc:
                self.log.warning("notebook %s not signed: %s", path, exc)

    return QuotaClearContents


if "jupyter_server" in sys.modules:  # Jupyter reads this file; tests/unit do too, without it
    c.ServerApp.contents_manager_class = quota_clear_contents()


# Readiness, said by Jupyter itself. The unit is "activating" until READY=1 (the
# proxy's first connection must not be refused: systemd-socket-proxyd does not
# retry), and podman passes systemd's notify socket into the container
# (--sdnotify=container). Jupyter binds its socket in its event loop's first
# callbacks; extensions' start hooks run right after, so one sends READY=1. The
# variable is dropped then: kernels (students' code) do not inherit it.
def _sd_notify(message: bytes) -> None:
    path = os.environ.pop("NOTIFY_SOCKET", "")
    if not path:
        return
    import socket
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message)


def ready_extension() -> None:
    """A server extension made here (no package to install in course images)."""
    import types

    module = types.ModuleType("nbunits_ready")

    async def start(serverapp: object) -> None:
        _sd_notify(b"READY=1\nSTATUS=Jupyter answers")

    module.__dict__.update(
        _jupyter_server_extension_points=lambda: [{"module": "nbunits_ready"}],
        _load_jupyter_server_extension=lambda serverapp: None,
        _start_jupyter_server_extension=start)
    sys.modules["nbunits_ready"] = module
    c.ServerApp.jpserver_extensions.update({"nbunits_ready": True})


if "jupyter_server" in sys.modules and os.environ.get("NOTIFY_SOCKET"):
    ready_extension()


# The socket Jupyter answers on is systemd's (nbunits-COURSE-jupyter@.socket), made
# before the container starts and passed in by podman (LISTEN_FDS=1: file
# descriptor 3, a listening AF_UNIX socket). Jupyter binds --ServerApp.sock itself
# otherwise; here that path only names the socket in its lines. The container then
# needs no writable folder of the host (docs/security.md, "Container settings"). Kernels do not inherit
# the variables or the descriptor.
SD_LISTEN_FDS_START = 3


def listen_on_systemd_socket() -> None:
    import socket

    from jupyter_server.serverapp import ServerApp

    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    listener = socket.socket(fileno=SD_LISTEN_FDS_START)
    if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
        raise RuntimeError(f"file descriptor {SD_LISTEN_FDS_START} is not a stream unix socket")
    listener.set_inheritable(False)
    listener.setblocking(False)

    def bind_systemd_socket(self: ServerApp) -> bool:
        self.http_server.add_socket(listener)
        return True

    ServerApp._bind_http_server_unix = bind_systemd_socket


if "jupyter_server" in sys.modules and os.environ.get("LISTEN_FDS") == "1":
    listen_on_systemd_socket()


# A student's own packages, importable at once. `pip install` (or `%pip install` in a
# cell) puts them in the user site-packages of the container's home (PIP_USER=1 in
# the unit), which outlives every stop. Python puts that folder on a kernel's sys.path
# only if it exists when the kernel starts: the first package a student installed was
# not found ("No module named ...") until they restarted the kernel. Made here, before
# any kernel starts (three empty folders; nothing over a full quota: pip says why).
def make_user_site() -> None:
    import site

    if site.ENABLE_USER_SITE:
        try:
            os.makedirs(site.getusersitepackages(), exist_ok=True)
        except OSError:
            pass


if "jupyter_server" in sys.modules:
    make_user_site()
