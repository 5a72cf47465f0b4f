"""The one place that runs external programs.

Exit codes are always checked; a failure (an exit code, a timeout, a program
that is not installed) becomes a `CommandError` that names the command (as
something to paste into a shell) and its last line of stderr. It is for admins
and the journal: the helper never passes one on to a student's page.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Sequence

from nbunits.core.errors import Code, NbunitsError

logger = logging.getLogger(__name__)

# run_streamed shows a longer line in pieces of this many characters.
MAX_LINE = 8192
# A small, predictable environment: no locale surprises, no inherited oddities.
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class CommandError(NbunitsError):
    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, *,
                 code: Code = Code.COMMAND_FAILED, why: str = "") -> None:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(code, f"{shlex.join(argv)} "
                         f"{why or f'failed with exit code {returncode}'}: {last}".rstrip(": "))


def _not_run(argv: Sequence[str], exc: OSError | subprocess.TimeoutExpired) -> CommandError:
    if isinstance(exc, subprocess.TimeoutExpired):
        return CommandError(argv, -1, "", code=Code.COMMAND_TIMEOUT,
                            why=f"did not finish within {exc.timeout:g} s")
    return CommandError(argv, -1, exc.strerror or str(exc), code=Code.COMMAND_MISSING,
                        why="could not be started")


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        env: dict[str, str] | None = None, timeout: float | None = 300
        ) -> subprocess.CompletedProcess[str]:
    logger.debug("running %s", shlex.join(argv))
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              env={**CLEAN_ENV, **(env or {})}, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _not_run(argv, exc) from exc
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc


def run_shown(argv: Sequence[str], *, timeout: float | None = 3600) -> None:
    """Run a long step with its output (progress) shown to the admin, checking the exit code."""
    logger.debug("running %s", shlex.join(argv))
    try:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, env=CLEAN_ENV,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _not_run(argv, exc) from exc
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, "(its output is above)")


def run_streamed(argv: Sequence[str], show: Callable[[str], None], *,
                 timeout: float = 3600) -> None:
    """Run a long step, each line of its output (stdout and stderr) shown as it comes;
    on failure the CommandError carries the last lines, for the reason."""
    logger.debug("running %s", shlex.join(argv))
    tail: collections.deque[str] = collections.deque(maxlen=20)
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=CLEAN_ENV, text=True,
                                errors="replace")
    except OSError as exc:
        raise _not_run(argv, exc) from exc
    try:
        out = proc.stdout
        assert out is not None
        # A line is read MAX_LINE characters at a time: a program that prints without
        # end-of-line (a course's build does what its repository says) costs no memory.
        for line in iter(lambda: out.readline(MAX_LINE), ""):
            line = line.rstrip("\n")
            tail.append(line)
            show(line)
        code = proc.wait(timeout=timeout)
    except BaseException as exc:
        proc.kill()
        proc.wait()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise _not_run(argv, exc) from exc
        raise
    if code != 0:
        raise CommandError(argv, code, "\n".join(tail))


async def run_async(argv: Sequence[str], *, check: bool = True, timeout: float = 120
                    ) -> tuple[int, str, str]:
    """Run without blocking the event loop; the child is always reaped, even on cancel."""
    logger.debug("running %s", shlex.join(argv))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=CLEAN_ENV)
    except OSError as exc:
        raise _not_run(argv, exc) from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException as exc:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if isinstance(exc, TimeoutError):
            raise _not_run(argv, subprocess.TimeoutExpired(list(argv), timeout)) from exc
        raise
    code = proc.returncode if proc.returncode is not None else -1
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if check and code != 0:
        raise CommandError(argv, code, stderr)
    return code, stdout, stderr


def is_root() -> bool:
    return os.geteuid() == 0


async def start_child(argv: Sequence[str]) -> asyncio.subprocess.Process:
    """A long-lived child of ours that speaks over its stdin and stdout (stderr, its
    logs: the caller's); it inherits the caller's environment (the journal's)."""
    logger.debug("starting %s", shlex.join(argv))
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    except OSError as exc:
        raise _not_run(argv, exc) from exc


async def end_child(proc: asyncio.subprocess.Process) -> None:
    """Kill a child of start_child() and reap it (at once: it may be stuck)."""
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
