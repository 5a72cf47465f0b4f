"""README's promise: one command brings up the demo and prints where to open it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_serves_the_demo_course(tmp_path: Path) -> None:
    # scripts/demo runs scripts/setup first (done already by scripts/test), then this.
    port = 18000 + os.getpid() % 1000
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--check",
                             "--port", str(port), "--state", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"demo check: 200 http://127.0.0.1:{port}/nb/demo/" in result.stdout
