"""units/bin/started-event.sh: the "started" event without Python (its fields)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nbunits.core.events import Event

SCRIPT = Path(__file__).parents[2] / "units" / "bin" / "started-event.sh"


def test_the_script_sends_the_events_own_fields(tmp_path: Path) -> None:
    # logger replaced by cat: what journald would get, one FIELD=value a line.
    script = tmp_path / "started.sh"
    script.write_text(SCRIPT.read_text().replace(
        "exec /usr/bin/nsenter --mount=/proc/1/ns/mnt /usr/bin/logger --journald", "cat"))
    env = {**os.environ, "MAINPID": str(os.getpid())}
    out = subprocess.run(["sh", str(script), "demo", "nbabc"], env=env, check=True,
                         capture_output=True, text=True).stdout
    entry = dict(line.split("=", 1) for line in out.splitlines())
    assert entry["MESSAGE_ID"] == Event.STARTED.value
    assert entry["NBUNITS_EVENT"] == Event.STARTED.name.lower()
    assert (entry["COURSE"], entry["STUDENT"]) == ("demo", "nbabc")
    assert entry["MESSAGE"] == "nbabc's Jupyter for course demo answers"
    assert 0 < float(entry["READY_SECONDS"]) < 24 * 3600  # since this process began
    env["MAINPID"] = ""
    out = subprocess.run(["sh", str(script), "demo", "nbabc"], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert "READY_SECONDS" not in out and "STUDENT=nbabc" in out
