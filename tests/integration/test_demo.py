"""README's promise: one command brings up the demo and prints where to open it,
however often it is run, and after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, str(REPO / "scripts" / "demo.py")]


def _check(port: int, state: Path) -> str:
    result = subprocess.run([*DEMO, "--check", "--port", str(port), "--state", str(state)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_demo_serves_the_demo_course_again_and_again_and_after_a_crash(tmp_path: Path) -> None:
    # scripts/demo runs scripts/setup first (done already by scripts/test), then this.
    port = 18000 + os.getpid() % 1000
    link = f"http://notebooks.localhost:{port}/nb/demo/"
    assert f"demo check: 200 {link}" in _check(port, tmp_path)
    # Again, on the homes and records the first run kept: the same student's work.
    assert f"demo check: 200 {link}" in _check(port, tmp_path)

    # A demo that is running, then killed without a chance to clean up.
    demo = subprocess.Popen([*DEMO, "--port", str(port), "--state", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 300
        for line in demo.stdout:
            if "nbunits demo is running" in line or time.monotonic() > deadline:
                break
        # Run while it runs: it says so and checks the running one.
        out = _check(port, tmp_path)
        assert "already running" in out and f"demo check: 200 {link}" in out
    finally:
        demo.send_signal(signal.SIGKILL)
        demo.wait()
    # After the crash: the next run cleans up what was left and works.
    out = _check(port, tmp_path)
    assert "cleaning up after a demo" in out and f"demo check: 200 {link}" in out
