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
# tells systemd when it is ready, a package a student installs is importable at once,
# and "Download my work" (the Course menu) gets the student's course folder as a zip.
import asyncio
import errno
import logging
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import typing
import zipfile

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


def server_extension(name: str, load: typing.Callable | None = None,
                     start: typing.Callable | None = None) -> None:
    """A server extension made here (no package to install in course images): `load`
    runs as Jupyter loads it, `start` (async) once Jupyter listens."""
    import types

    module = types.ModuleType(name)
    module.__dict__.update(
        _jupyter_server_extension_points=lambda: [{"module": name}],
        _load_jupyter_server_extension=load or (lambda serverapp: None))
    if start is not None:
        module._start_jupyter_server_extension = start
    sys.modules[name] = module
    c.ServerApp.jpserver_extensions.update({name: True})


def ready_extension() -> None:
    async def start(serverapp: object) -> None:
        _sd_notify(b"READY=1\nSTATUS=Jupyter answers")

    server_extension("nbunits_ready", start=start)


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


# "Download my work" (the Course menu, images/extension): <base URL>nbunits/download
# answers a zip of the student's course folder (Jupyter's root_dir, ~/<course> on the
# host), named <course>-my-work-<date>.zip (docs/admin.md, "What students do inside
# their notebook"). Here rather than in the image: a course's own image has it too.
# It runs as Jupyter does, as the student, behind the same capability (nginx checks
# it, Jupyter takes it as the token). The folder is read as nbunits' admin export
# reads it (nbunits/admin/export.py): directory file descriptors and O_NOFOLLOW,
# folders and regular files only. No symlink is followed or stored: the links into
# the published course (notebooks.link_tree) are the course's, not the student's
# work, and one a student made (to /etc/passwd, to another folder) is not followed
# either. Jupyter's checkpoints (.ipynb_checkpoints) are left out. The archive
# streams: zip's data descriptors need no seek, so it is never whole in memory or on
# disk, and a browser that stops reading stops the walk.
DOWNLOAD_PATH = "nbunits/download"
DOWNLOAD_MAX_DEPTH = 256  # deeper folders are an error, not a recursion without end
_DOWNLOAD_SKIPPED = frozenset({".ipynb_checkpoints"})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_BASE_URL_COURSE = re.compile(r"/nb/([a-z0-9][a-z0-9_-]{0,31})/.*")


def download_name(base_url: str, today: str) -> tuple[str, str]:
    """(the course's name, the archive's file name) from Jupyter's base URL,
    /nb/<course>/<user>/<capability>/; "work" outside nbunits."""
    match = _BASE_URL_COURSE.fullmatch(base_url)
    course = match.group(1) if match else "work"
    return course, f"{course}-my-work-{today}.zip"


def zip_folder(root: str, top: str, out: typing.IO[bytes]) -> dict[str, int]:
    """Write a zip of the folder root, under top/, to out (which need not seek);
    what was stored and left out."""

    counts = {"files": 0, "bytes": 0, "folders": 0, "links": 0, "other": 0, "unreadable": 0}
    fd = os.open(root, _DIR_FLAGS)
    try:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            _zip_add_folder(archive, fd, top, counts, 0)
    finally:
        os.close(fd)
    return counts


def _zip_add_folder(archive: zipfile.ZipFile, dir_fd: int, path: str,
                    counts: dict[str, int], depth: int) -> None:

    if depth > DOWNLOAD_MAX_DEPTH:
        raise OSError(f"{path}: folders deeper than {DOWNLOAD_MAX_DEPTH}")
    archive.writestr(_zip_info(path + "/", os.fstat(dir_fd)), b"")
    counts["folders"] += 1
    with os.scandir(dir_fd) as scan:
        entries = sorted((entry.name, entry.stat(follow_symlinks=False)) for entry in scan)
    for name, st in entries:
        inner = f"{path}/{name.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')}"
        if stat.S_ISLNK(st.st_mode):
            counts["links"] += 1
        elif stat.S_ISDIR(st.st_mode) and name in _DOWNLOAD_SKIPPED:
            continue
        elif stat.S_ISDIR(st.st_mode):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except PermissionError:  # a folder the student made unreadable (chmod 000)
                counts["unreadable"] += 1
                continue
            try:
                _zip_add_folder(archive, child, inner, counts, depth + 1)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            _zip_add_file(archive, dir_fd, name, inner, counts)
        else:
            counts["other"] += 1  # a socket, a fifo: nothing to keep


def _zip_add_file(archive: zipfile.ZipFile, dir_fd: int, name: str, inner: str,
                  counts: dict[str, int]) -> None:

    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        counts["unreadable"] += 1
        return
    except OSError as exc:  # ELOOP: replaced by a symlink since it was listed
        if exc.errno != errno.ELOOP:
            raise
        counts["links"] += 1
        return
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):  # replaced since it was listed
            counts["other"] += 1
            return
        with archive.open(_zip_info(inner, st), "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    counts["files"] += 1
    counts["bytes"] += st.st_size


def _zip_info(inner: str, st: os.stat_result) -> zipfile.ZipInfo:

    info = zipfile.ZipInfo(inner, date_time=time.localtime(max(st.st_mtime, 315532800))[:6])
    info.external_attr = (st.st_mode & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


class ArchivePipe:
    """What zipfile writes, handed to the event loop in chunks (the walk runs in a
    thread). write() waits while the browser is behind: a few chunks at most are
    held. Once the request is over (`gone`), the next write ends the walk."""

    CHUNK = 256 * 1024

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: "asyncio.Queue[object]"
                 ) -> None:

        self.loop, self.queue, self.buffer = loop, queue, bytearray()
        self.gone = threading.Event()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= self.CHUNK:
            self.send(bytes(self.buffer))
            self.buffer.clear()
        return len(data)

    def flush(self) -> None:
        pass

    def send(self, item: object) -> None:

        if self.gone.is_set():
            raise BrokenPipeError("the download was abandoned")
        asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop).result()

    def produce(self, root: str, top: str) -> None:
        """The walk, in its thread: chunks, then None (done) or the exception."""
        try:
            counts = zip_folder(root, top, self)
            self.send(bytes(self.buffer))
            self.send(counts)
            self.send(None)
        except BaseException as exc:  # noqa: BLE001 (the handler raises it again)
            if not self.gone.is_set():
                self.send(exc)


def download_extension() -> None:
    """The handler of "Download my work", as a server extension made here."""
    from concurrent.futures import ThreadPoolExecutor

    from jupyter_server.auth.decorator import authorized
    from jupyter_server.base.handlers import JupyterHandler
    from jupyter_server.utils import url_path_join
    from tornado import web
    from tornado.iostream import StreamClosedError

    # Two walks at once per server, at most; a third download waits for one to end.
    walkers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nbunits-download")

    class DownloadHandler(JupyterHandler):
        auth_resource = "contents"

        @web.authenticated
        @authorized
        async def get(self) -> None:
            course, name = download_name(self.base_url, time.strftime("%Y-%m-%d"))
            loop = asyncio.get_running_loop()
            pipe = ArchivePipe(loop, asyncio.Queue(maxsize=4))
            walk = loop.run_in_executor(walkers, pipe.produce,
                                        self.contents_manager.root_dir, course)
            try:
                await self._stream(pipe, name)
            except StreamClosedError:
                self.log.info("download %s: the browser stopped reading", name)
            except Exception as exc:
                if not self._headers_written:
                    raise  # Jupyter's error page (500)
                # Half an archive, ended as if whole, would be saved as if whole: the
                # connection is cut instead, and the browser says the download failed.
                self.log.error("download %s failed: %s", name, exc,
                               exc_info=not isinstance(exc, OSError))
                self.request.connection.close()
            finally:
                pipe.gone.set()
                while not walk.done():  # unblock the walk's last write, if any
                    while not pipe.queue.empty():
                        pipe.queue.get_nowait()
                    await asyncio.wait({walk}, timeout=0.05)

        async def _stream(self, pipe: ArchivePipe, name: str) -> None:
            while (item := await pipe.queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, dict):
                    self.log.info("download %s: %s", name, item)
                    continue
                if not self._headers_written:
                    self.set_header("Content-Type", "application/zip")
                    self.set_header("Content-Disposition", f'attachment; filename="{name}"')
                    self.set_header("Cache-Control", "no-store")
                self.write(item)
                await self.flush()

    def load(serverapp: "typing.Any") -> None:
        route = url_path_join(serverapp.web_app.settings["base_url"], DOWNLOAD_PATH)
        serverapp.web_app.add_handlers(".*$", [(route, DownloadHandler)])

    server_extension("nbunits_download", load=load)


if "jupyter_server" in sys.modules:
    download_extension()


# The interface's language (docs/admin.md, "Languages"). nbunits-helper puts the
# student's (their LMS's locale, else their browser's, else the course's) in
# NBUNITS_JUPYTER_LOCALE (the unit's env file). It becomes the default of JupyterLab's
# language setting (@jupyterlab/translation-extension:plugin, shared by Notebook 7)
# through JupyterLab's own settings overrides, in a folder of this container's /tmp:
# a student's own choice (Settings > Language, kept in their home) still wins.
# English is JupyterLab's own default: nothing to override.
LAB_SETTINGS = "/tmp/nbunits-lab-settings"


def language_overrides(locale: str) -> None:
    if not re.fullmatch(r"[a-z]{2,3}_[A-Z]{2}", locale):
        return
    os.makedirs(LAB_SETTINGS, mode=0o700, exist_ok=True)
    with open(os.path.join(LAB_SETTINGS, "overrides.json"), "w") as overrides:
        overrides.write('{"@jupyterlab/translation-extension:plugin": {"locale": "%s"}}\n' % locale)
    c.LabApp.app_settings_dir = LAB_SETTINGS
    c.JupyterNotebookApp.app_settings_dir = LAB_SETTINGS


if "jupyter_server" in sys.modules:
    language_overrides(os.environ.get("NBUNITS_JUPYTER_LOCALE", ""))


# The kernel of the notebook a student opens, started with the server (issue 31):
# the browser asks for it only once JupyterLab's code has loaded, and a kernel
# started then made the first cell's output wait for the whole start. nbunits-helper
# names the notebook of the launch that starts the server in NBUNITS_OPEN_NOTEBOOK
# (the unit's env file); once Jupyter answers, a session for that path is made with
# the notebook's own kernel. JupyterLab (Notebook 7 too) opens a notebook by looking
# for a session of its path first, and connects to that kernel instead of starting
# one. A notebook whose kernel is not in the image, or that cannot be read, gets none
# (the browser starts one, as before). A kernel nobody connects to is culled like any
# idle one (kernel_idle_timeout).
def kernel_ahead(path: str) -> None:
    import asyncio
    import json

    def kernel_of(serverapp: "typing.Any") -> str:
        full = os.path.join(serverapp.root_dir, path)
        with open(full, "rb") as notebook:
            data = json.loads(notebook.read(MAX_AHEAD_BYTES + 1))
        spec = data.get("metadata", {}).get("kernelspec", {}) if isinstance(data, dict) else {}
        name = spec.get("name") if isinstance(spec, dict) else None
        return name if isinstance(name, str) and name else serverapp.kernel_manager.default_kernel_name

    async def ahead(serverapp: "typing.Any") -> None:
        try:
            name = kernel_of(serverapp)
            if name not in serverapp.kernel_spec_manager.find_kernel_specs():
                serverapp.log.info("no kernel ahead for %s: no kernel %r here", path, name)
                return
            await serverapp.session_manager.create_session(
                path=path, name=os.path.basename(path), type="notebook", kernel_name=name)
        except Exception as exc:  # the notebook's own kernel start is then the browser's
            serverapp.log.warning("no kernel ahead for %s: %r", path, exc)

    async def start(serverapp: "typing.Any") -> None:
        task = asyncio.get_running_loop().create_task(ahead(serverapp))
        tasks.add(task)
        # A notebook that asks for its session while the kernel ahead is starting
        # (POST api/sessions: Jupyter checks session_exists first) waits for it, and
        # gets it: never a second kernel for the same notebook beside it.
        manager = serverapp.session_manager
        exists = manager.session_exists

        async def session_exists(path: str) -> bool:
            if path == ahead_path and not task.done():
                await asyncio.wait({task})
            return bool(await exists(path=path))

        manager.session_exists = session_exists

    ahead_path = path
    tasks: set = set()  # a reference to the task until the server ends
    server_extension("nbunits_kernel_ahead", start=start)


# Notebooks larger than this (their outputs) are not read for their kernel's name.
MAX_AHEAD_BYTES = 10 * 1024 * 1024

if "jupyter_server" in sys.modules and os.environ.get("NBUNITS_OPEN_NOTEBOOK"):
    kernel_ahead(os.environ.pop("NBUNITS_OPEN_NOTEBOOK"))
