"""The one place that runs external programs.

Exit codes are always checked; a failure becomes a `CommandError` that names the
command (as something to paste into a shell) and its last line of stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import subprocess
from collections.abc import Sequence

from .errors import NbunitsError

logger = logging.getLogger(__name__)

# A small, predictable environment: no locale surprises, no inherited oddities.
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class CommandError(NbunitsError):
    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__("command_failed",
                         f"{shlex.join(argv)} failed with exit code {returncode}: {last}")


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        env: dict[str, str] | None = None, timeout: float | None = 300
        ) -> subprocess.CompletedProcess[str]:
    logger.debug("running %s", shlex.join(argv))
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                          env={**CLEAN_ENV, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc


def run_shown(argv: Sequence[str], *, timeout: float | None = 3600) -> None:
    """Run a long step with its output (progress) shown to the admin, checking the exit code."""
    logger.debug("running %s", shlex.join(argv))
    proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, env=CLEAN_ENV, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, "(its output is above)")


async def run_async(argv: Sequence[str], *, check: bool = True, timeout: float = 120
                    ) -> tuple[int, str, str]:
    """Run without blocking the event loop; the child is always reaped, even on cancel."""
    logger.debug("running %s", shlex.join(argv))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=CLEAN_ENV)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    code = proc.returncode if proc.returncode is not None else -1
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if check and code != 0:
        raise CommandError(argv, code, stderr)
    return code, stdout, stderr


def is_root() -> bool:
    return os.geteuid() == 0
