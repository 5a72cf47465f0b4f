"""Experiments on the cold path: the same measurement with one thing changed.

`bench/run --variants` runs, in one box and interleaved (so that machine noise hits
every variant alike):

* floor variants: the unit's `podman run` by hand, with flags or image config changed;
* unit variants: a returning student's cold start through the whole chain, with a
  drop-in on the course's container unit (what the lead would change in units/).

Each variant is given as a function of the unit's podman argv (floor), or as the
text of a drop-in (unit). Results are medians with N, and the ratio to the
baseline measured in the same interleaved loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from . import parts
from .box import COURSE, SHARED_IN_BOX, Bench
from .stats import ratio, summary

Argv = list[str]
EXT_OFF = f"{SHARED_IN_BOX}/ext-off.json"
CFG_DIR = "/opt/jupyter/etc/jupyter/jupyter_server_config.d"


def _drop(flag: str) -> Callable[[Argv], Argv]:
    return lambda argv: [a for a in argv if a != flag]


def _before_image(*flags: str) -> Callable[[Argv], Argv]:
    def change(argv: Argv) -> Argv:
        i = next(i for i, a in enumerate(argv) if a.startswith("localhost/"))
        return argv[:i] + list(flags) + argv[i:]
    return change


FLOOR_VARIANTS: dict[str, Callable[[Argv], Argv]] = {
    "baseline (the unit's flags)": lambda argv: argv,
    "image config: terminals off too (informative: a product choice)": _before_image(
        "--volume", f"{EXT_OFF}:{CFG_DIR}/jupyter_server_terminals.json:ro"),
    "podman: no --init (the image's ENTRYPOINT is tini already)": _drop("--init"),
    "podman: --log-driver=none": _before_image("--log-driver=none"),
    "podman: --security-opt seccomp=unconfined (informative only)":
        _before_image("--security-opt", "seccomp=unconfined"),
}

# The gate polls every 5 ms since this was measured; the variant is the old 20 ms.
GATE_SLOW = ("ExecStartPost=\n"
             "ExecStartPost=/opt/nbunits/venv/bin/python3 -c \"import nbunits.ready as r; "
             "r.POLL_SECONDS = 0.02; r.main()\" /run/nbunits/jupyter/demo/%i/jupyter.sock\n")

UNIT_VARIANTS: dict[str, str] = {
    "baseline (no drop-in)": "",
    "readiness gate polls every 20 ms instead of 5 ms": "[Service]\n" + GATE_SLOW,
}


def _write_configs(bench: Bench) -> None:
    bench.shared.joinpath("ext-off.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_server_terminals": False}}}))


def floor_variants(bench: Bench, user: str, n: int, rounds: int = 3) -> dict:
    """Each variant n times, in `rounds` interleaved rounds."""
    _write_configs(bench)
    times: dict[str, list[float]] = {k: [] for k in FLOOR_VARIANTS}
    cpu: dict[str, list[float]] = {k: [] for k in FLOOR_VARIANTS}
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        for name, change in FLOOR_VARIANTS.items():
            result = parts.floor_runs(bench, user, per_round, change=change)
            times[name] += result["ready"]
            cpu[name].append(result["cpu_per_start"])
    out = _compare(times)
    base_cpu = summary(next(iter(cpu.values())))["median"]
    for name, values in cpu.items():
        out[name]["cpu_median"] = summary(values)["median"]
        out[name]["cpu_vs_baseline"] = ratio(out[name]["cpu_median"], base_cpu)
    return out


def unit_variants(bench: Bench, students: list[str], rounds: int = 2) -> dict:
    """A returning student's cold start (page 200) under each drop-in, interleaved."""
    times: dict[str, list[float]] = {k: [] for k in UNIT_VARIANTS}
    dropin = f"/run/systemd/system/nbunits-{COURSE}@.service.d/zz-bench.conf"
    for _ in range(rounds):
        for name, text in UNIT_VARIANTS.items():
            bench.box.write_file(dropin, text or "# baseline\n")
            bench.box.systemctl("daemon-reload")
            for student in students:
                c = asyncio.run(parts.one_cold(bench, student, kernel=False))
                parts.stop_student(bench, c.user)
                if c.first_status == 200:  # a start that needed the wake fallback is not comparable
                    times[name].append(c.page)
    bench.box.run("rm", "-f", dropin)
    bench.box.systemctl("daemon-reload")
    return _compare(times)


def _compare(times: dict[str, list[float]]) -> dict:
    base = summary(next(iter(times.values())))
    out = {}
    for name, values in times.items():
        s = summary(values)
        s["vs_baseline"] = ratio(s["median"], base["median"])
        s["delta_ms"] = (s["median"] - base["median"]) * 1000
        out[name] = s
    return out

