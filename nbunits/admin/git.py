"""git: a course's root-owned checkout under /var/lib/nbunits/git/<course>, cloned then fetched."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from nbunits.core.run import run, run_shown

Say = Callable[[str], None]


def fetch(checkout: Path, url: str, branch: str, say: Say) -> Path:
    """Clone `url` (shallow) into `checkout`, or fetch and reset it if it is a clone of it.

    The checkouts' folder is root's only (0700), made so at every fetch: a checkout
    holds what only publishing may turn into students' files (the source versions of
    graded notebooks: admin/graded.py)."""
    checkout.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(checkout.parent, 0o700)
    if (checkout / ".git").is_dir() and remote(checkout) == url:
        say(f"fetching {url} {branch or '(default branch)'}")
        run_shown(["git", "-C", str(checkout), "fetch", "--progress", "--depth=1", "origin",
                   branch or "HEAD"])
        run(["git", "-C", str(checkout), "reset", "--quiet", "--hard", "FETCH_HEAD"])
        run(["git", "-C", str(checkout), "clean", "--quiet", "-ffdx"])
    else:
        say(f"cloning {url} {branch or '(default branch)'} into {checkout}")
        shutil.rmtree(checkout, ignore_errors=True)
        run_shown(["git", "clone", "--progress", "--depth=1",
                   *(["--branch", branch] if branch else []), "--", url, str(checkout)])
    head = run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"]).stdout.strip()
    say(f"at {head}")
    return checkout


def remote(checkout: Path) -> str:
    return run(["git", "-C", str(checkout), "remote", "get-url", "origin"],
               check=False).stdout.strip()
