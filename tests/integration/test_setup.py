"""README's setup on a bare Debian 12 machine (issue 27): `.ci/run` must pass on a
machine with nothing installed beyond the base system, and on one where it ran before.

A fresh debootstrap minbase root of bookworm (testbed/bare.py: no Python, no
compiler, no podman), this checkout's files copied in as a clone has them, and in
it, under systemd-nspawn, what .ci/run does before the integration tests:
scripts/setup (Debian packages, the product venv, the test venv, the image),
scripts/lint, the unit tests; then scripts/setup again, as on a machine where it
ran before. A step missing from scripts/setup fails here, not on a newcomer's
machine. The integration tests themselves are the rest of this suite, on this machine.

It borrows this machine's apt and pip caches and its image store (testbed/bare.py):
a run downloads only what changed, and images/build finds the image up to date.
NBUNITS_SKIP_BARE=1 skips it (a developer's quick run); scripts/test runs it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import bare

from .conftest import REPO

pytestmark = [pytest.mark.bare, pytest.mark.skipif(
    os.environ.get("NBUNITS_SKIP_BARE") == "1",
    reason="NBUNITS_SKIP_BARE=1: the bare Debian 12 machine is skipped")]

STEPS = (("scripts/setup", ["bash", "scripts/setup"]),
         ("scripts/lint", ["bash", "scripts/lint"]),
         ("unit tests", [".venv/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "tests/unit"]),
         ("scripts/setup, again", ["bash", "scripts/setup"]))


@pytest.fixture
def root() -> Iterator[Path]:
    work = Path(f"/var/tmp/nbunits-bare-{os.getpid()}")
    bare.remove(work)
    try:
        yield bare.make_root(work, REPO)
    finally:
        bare.remove(work)


def test_setup_lint_and_unit_tests_pass_on_a_bare_debian_12(root: Path) -> None:
    bare_before = bare.run(root, ["sh", "-c", "command -v python3 gcc podman nginx || true"])
    assert bare_before.returncode == 0 and bare_before.stdout == "", bare_before.stdout
    took = {}
    for name, argv in STEPS:
        started = time.monotonic()
        result = bare.run(root, argv, binds=bare.caches())
        took[name] = round(time.monotonic() - started, 1)
        assert result.returncode == 0, \
            f"{name} failed on a bare Debian 12 (exit {result.returncode}):\n" \
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    print(f"on a bare Debian 12: {took}")
    # The second run installed nothing: every step it has was there.
    assert "apt-get install" not in result.stdout and "image up to date" in result.stdout, \
        result.stdout[-2000:]
