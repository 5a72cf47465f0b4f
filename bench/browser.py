"""The click to the first output in a real browser (Chromium, headless), with the
notebook's kernel started ahead and without, interleaved in one run.

The box's nginx also gets a TLS site (a test CA that this Chromium trusts, as the
integration tests do), reached from here through a forwarder. Each round, for the
demo course (kernel_ahead on) and its copy without (ahead.WITHOUT): a new student,
in a fresh browser context (nothing cached: a first visit), opens the course's link;
the time until the notebook's second code cell can be clicked (the page usable), and
until that cell's output (`6 * 7` -> 42) shows, run with Shift+Enter as a student
does. Jupyter queues a cell run before its kernel is ready, so the output comes once
the kernel is there and has run it.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from testbed.deploy import SHARED_IN_BOX, VENV, reach
from testbed.sites import CHROMIUM, browser_home
from testbed.tls import TestCA

from .ahead import WITHOUT
from .box import COURSE, NOTEBOOK, SERVER, Bench
from .parts import stop_student
from .stats import summary


def browser_runs(bench: Bench, n: int) -> dict:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        return {"error": f"{CHROMIUM} missing (scripts/setup installs it)"}
    ca = TestCA(bench.shared / "tls")
    pair = ca.issue(SERVER)
    bench.box.run(str(VENV / "bin" / "nbunits"), "install", "--server-name", SERVER,
                  "--listen", f"unix:{SHARED_IN_BOX}/nginx.sock", "--tls-listen", "443",
                  "--tls-cert", f"{SHARED_IN_BOX}/tls/{pair.cert.name}",
                  "--tls-key", f"{SHARED_IN_BOX}/tls/{pair.key.name}")
    if WITHOUT not in bench.nbunits("course", "list"):
        bench.nbunits("course", "add", WITHOUT, "--dir", "/opt/nbunits/src/examples/demo",
                      "--legacy", "open", "--no-kernel-ahead")
    site = reach(bench.box, bench.shared, ca, SERVER)
    times: dict[str, dict[str, list[float]]] = {
        key: {"page": [], "output": []} for key in ("ahead", "without")}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), env=browser_home(ca.cert, bench.work / "chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", f"--host-resolver-rules={site.names.chromium_rules()}"])
        try:
            for _ in range(n):
                for course, key in ((COURSE, "ahead"), (WITHOUT, "without")):
                    page, output, user = one_click(browser, course)
                    times[key]["page"].append(page)
                    times[key]["output"].append(output)
                    stop_student(bench, user, course)
        finally:
            browser.close()
    return {key: {what: summary(values) for what, values in kinds.items()}
            for key, kinds in times.items()}


def one_click(browser, course: str) -> tuple[float, float, str]:
    """A new student's click: (seconds to a usable page, to the cell's output, user)."""
    context = browser.new_context(viewport={"width": 1280, "height": 960})
    try:
        tab = context.new_page()
        t0 = time.monotonic()
        tab.goto(f"https://{SERVER}/ipythonExercice/{course}/{NOTEBOOK}/{secrets.token_hex(16)}",
                 timeout=120_000)
        cell = tab.locator(".jp-CodeCell").nth(1)
        cell.locator(".cm-content").click(timeout=120_000)
        page = time.monotonic() - t0
        tab.keyboard.press("Shift+Enter")
        tab.locator(".jp-OutputArea-output").filter(has_text="42").first.wait_for(
            timeout=120_000)
        output = time.monotonic() - t0
        user = Path(tab.url.split("/nb/", 1)[1]).parts[1]
        return page, output, user
    finally:
        context.close()
