"""When a student's page says their server stops (images/extension/src/stops.ts): the
TypeScript module, transpiled by the extension build's own TypeScript and run under
node, in one node process for all the calls of a test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STOPS = REPO / "images" / "extension" / "src" / "stops.ts"
MIN = 60_000
HOUR = 60 * MIN

Js = Callable[..., list[Any]]


def typescript() -> Path | None:
    """The TypeScript that images/extension/build installed (its npm cache)."""
    for cache in (os.environ.get("NBUNITS_CACHE_DIR"), "/var/cache/nbunits"):
        module = Path(cache or "/nonexistent") / "extension" / "work" / "node_modules" / "typescript"
        if module.is_dir():
            return module
    return None


@pytest.fixture(scope="module")
def js(tmp_path_factory: pytest.TempPathFactory) -> Js:
    node, ts = shutil.which("node"), typescript()
    if node is None or ts is None:
        pytest.skip("needs node and the Course extension's build cache (images/extension/build)")
    out = tmp_path_factory.mktemp("stops") / "stops.cjs"
    subprocess.run([node, "-e", """
        const ts = require(process.argv[1]), fs = require('fs');
        const js = ts.transpileModule(fs.readFileSync(process.argv[2], 'utf8'), {compilerOptions:
            {module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2018, strict: true}});
        fs.writeFileSync(process.argv[3], js.outputText);
        """, str(ts), str(STOPS), str(out)], check=True)

    def call(*calls: tuple[Any, ...]) -> list[Any]:
        """[stops.NAME(*ARGS) for NAME, *ARGS in calls], as JSON."""
        script = ("const m = require(process.argv[1]); const calls = JSON.parse(process.argv[2]);"
                  "process.stdout.write(JSON.stringify(calls.map(([f, ...a]) => m[f](...a))));")
        done = subprocess.run([node, "-e", script, str(out), json.dumps(calls)],
                              check=True, capture_output=True, text=True)
        return list(json.loads(done.stdout))
    return call


def course(lifetime: int = 8 * 3600, idle: int = 3600, kernel_idle: int = 1800,
           warning: int = 300) -> dict[str, int]:
    return {"maxLifetime": lifetime, "idleTimeout": idle, "kernelIdleTimeout": kernel_idle,
            "warning": warning}


def server(last: int, *kernels: tuple[int, bool], started: int = 0) -> dict[str, Any]:
    return {"started": started, "lastActivity": last,
            "kernels": [{"lastActivity": at, "busy": busy} for at, busy in kernels]}


def test_the_lifetime_ends_its_cap_after_the_start(js: Js) -> None:
    assert js(("lifetimeStop", course(lifetime=3600), server(0, started=5_000)),
              ("lifetimeStop", course(lifetime=0), server(0))) == [5_000 + HOUR, None]


def test_jupyter_stops_at_its_first_check_past_the_idle_timeout(js: Js) -> None:
    assert js(
        ("idleStop", course(idle=30), server(10_000)),  # quiet from 10 s: 40 s, checked at 60 s
        ("idleStop", course(idle=3600), server(100_000)),  # 3700 s: the check at 62 min
        # Exactly on a check: Jupyter wants more than the timeout, so the next one.
        ("idleStop", course(idle=60), server(0)),
        ("idleStop", course(idle=30), server(0, started=7_000)),  # checks count from the start
        ("idleStop", course(idle=0), server(0)),  # no idle stop
    ) == [MIN, 62 * MIN, 2 * MIN, 7_000 + MIN, None]


def test_kernels_are_culled_first_and_a_busy_one_never(js: Js) -> None:
    assert js(
        # The idle timeout is the later: culled at 15 s, quiet until 17 s.
        ("idleStop", course(idle=12, kernel_idle=10), server(5_000, (5_000, False))),
        # The kernel's cull is the later (a cull is no activity): 105 s, checked at 120 s.
        ("idleStop", course(idle=10, kernel_idle=100), server(5_000, (5_000, False))),
        ("idleStop", course(idle=10, kernel_idle=100), server(5_000, (5_000, False), (0, True))),
        ("idleStop", course(idle=10, kernel_idle=0), server(5_000, (5_000, False))),
    ) == [MIN, 2 * MIN, None, None]


def test_the_earlier_stop_is_the_next_and_its_banner_comes_first(js: Js) -> None:
    short_life, long_life = course(lifetime=600, idle=3600), course(lifetime=8 * 3600)
    assert js(("nextStop", short_life, server(0)), ("nextStop", long_life, server(0)),
              ("nextStop", course(lifetime=0, idle=0), server(0))) == [
        {"reason": "lifetime", "at": 600_000, "warnAt": 400_000},  # a third of 10 minutes
        {"reason": "idle", "at": 61 * MIN, "warnAt": 56 * MIN},  # the course's 5 minutes
        None]


def test_the_banner_comes_the_course_s_warning_ahead_shorter_for_short_timeouts(js: Js) -> None:
    assert js(("lead", course(), "lifetime"), ("lead", course(), "idle"),
              ("lead", course(lifetime=60), "lifetime"), ("lead", course(idle=30), "idle"),
              ("lead", course(warning=0), "idle")) == [300_000, 300_000, 20_000, 10_000, 0]
    stop = {"reason": "idle", "at": 100_000, "warnAt": 90_000}
    assert js(("warning", course(), stop, 89_999), ("warning", course(), stop, 90_000),
              ("warning", course(warning=0), stop, 99_000), ("warning", course(), None, 0)
              ) == [False, True, False, False]


def test_the_page_lets_go_of_its_server_just_before_the_lifetime_ends(js: Js) -> None:
    # `timeout` started with the container, before Jupyter's `started`: some seconds early.
    assert js(("letGoAt", course(), 8 * HOUR), ("letGoAt", course(lifetime=60), 60_000),
              ("letGoAt", course(lifetime=30), 30_000)) == [8 * HOUR - 10_000, 50_000, 25_000]


def test_the_page_looks_again_at_the_banner_then_every_few_seconds(js: Js) -> None:
    far = {"reason": "lifetime", "at": 10 * HOUR, "warnAt": 9 * HOUR}
    soon = {"reason": "idle", "at": 100_000, "warnAt": 90_000}
    assert js(("nextPoll", course(), None, 0), ("nextPoll", course(), far, 0),
              ("nextPoll", course(), soon, 80_000), ("nextPoll", course(), soon, 89_500),
              ("nextPoll", course(), soon, 95_000), ("nextPoll", course(idle=30), soon, 95_000)
              ) == [60_000, 60_000, 10_000, 2_000, 15_000, 2_000]


def test_what_the_page_says(js: Js) -> None:
    assert js(*(("duration", ms) for ms in (1_000, 40_000, 5 * MIN, HOUR, 67 * MIN, 90 * MIN,
                                            8 * HOUR))) == [
        "1 second", "40 seconds", "5 minutes", "1 hour", "67 minutes", "1.5 hours", "8 hours"]
    life = {"reason": "lifetime", "at": 8 * HOUR, "warnAt": 8 * HOUR - 5 * MIN}
    idle = {"reason": "idle", "at": 2 * HOUR, "warnAt": 2 * HOUR - 5 * MIN}
    before_life, before_idle, after_life, after_idle = js(
        ("warningText", course(), life, 8 * HOUR - 4 * MIN),
        ("warningText", course(), idle, 2 * HOUR - 4 * MIN),
        ("stoppedText", course(), "lifetime"), ("stoppedText", course(), "idle"))
    assert "stops in 4 minutes" in before_life and "at most 8 hours" in before_life
    assert "work is saved" in before_idle and "activity" in before_idle
    assert "time limit of 8 hours" in after_life and "idle for more than 1 hour" in after_idle
    assert all("Reload the page" in text for text in (after_life, after_idle))
