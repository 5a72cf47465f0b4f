"""README's promise: one command brings up the demo and prints where to open it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_serves_the_demo_course() -> None:
    # scripts/demo runs scripts/setup first (done already by scripts/test), then this.
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--check",
                             "--port", "18080"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo check: 200 http://127.0.0.1:18080/nb/demo/" in result.stdout
