"""README's setup on a bare Debian 12 machine (issue 27): `.ci/run` must pass on a
machine with nothing installed beyond the base system, and on one where it ran before.

A fresh debootstrap minbase root of bookworm (testbed/bare.py: no Python, no
compiler, no podman), this checkout's files copied in as a clone has them, and in
it, under systemd-nspawn, what .ci/run does before the integration tests:
scripts/setup (Debian packages, the product venv, the test venv, the image),
scripts/lint, the unit tests; then scripts/setup again, as on a machine where it
ran before. A step missing from scripts/setup fails here, not on a newcomer's
machine. The integration tests themselves are the rest of this suite, on this machine.
It runs beside them: the session starts it first (conftest.py, `bare_machine`), since
it mostly waits on apt and pip, and this test waits for its outcome.

It borrows this machine's apt and pip caches and its image store (testbed/bare.py):
a run downloads only what changed, and images/build finds the image up to date.
NBUNITS_SKIP_BARE=1 skips it (a developer's quick run); scripts/test runs it.
"""

from __future__ import annotations

import os

import pytest

from testbed import bare

pytestmark = [pytest.mark.bare, pytest.mark.skipif(
    os.environ.get("NBUNITS_SKIP_BARE") == "1",
    reason="NBUNITS_SKIP_BARE=1: the bare Debian 12 machine is skipped")]


def test_setup_lint_and_unit_tests_pass_on_a_bare_debian_12(
        bare_machine: bare.Background | None) -> None:
    assert bare_machine is not None  # started with the session (conftest.py)
    outcome = bare_machine.wait()
    if outcome.error is not None:
        raise outcome.error
    assert outcome.before is not None
    assert outcome.before.returncode == 0 and outcome.before.stdout == "", outcome.before.stdout
    if outcome.failed is not None:
        name, result = outcome.failed
        pytest.fail(f"{name} failed on a bare Debian 12 (exit {result.returncode}):\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    print(f"on a bare Debian 12: {outcome.took}")
    # The second run installed nothing: every step it has was there.
    assert outcome.last is not None and len(outcome.took) == len(bare.STEPS)
    assert "apt-get install" not in outcome.last.stdout \
        and "image up to date" in outcome.last.stdout, outcome.last.stdout[-2000:]
