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
    "podman: no --init (timeout as the container's PID 1)": _drop("--init"),
    "podman: --log-driver=none": _before_image("--log-driver=none"),
    "podman: --security-opt seccomp=unconfined (informative only)":
        _before_image("--security-opt", "seccomp=unconfined"),
}

UNIT_VARIANTS: dict[str, str] = {
    "baseline (no drop-in)": "",
    # Group lookups through nss-systemd again (no students' nsswitch.conf): free on
    # an empty host, ~0.2 s per start with 100,000 students (docs/BENCHMARKS.md).
    # An empty BindReadOnlyPaths= empties BindPaths= too (one list in systemd).
    "group lookups through nss-systemd": "[Service]\nBindReadOnlyPaths=\nBindPaths=/home/%i\n",
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
    return _with_cpu(_compare(times), cpu)


def _with_cpu(out: dict, cpu: dict[str, list[float]]) -> dict:
    """`out` (from _compare) with each variant's median CPU seconds, and its ratio
    to the first variant's."""
    base_cpu = summary(next(iter(cpu.values())))["median"]
    for name, values in cpu.items():
        out[name]["cpu_median"] = summary(values)["median"]
        out[name]["cpu_vs_baseline"] = ratio(out[name]["cpu_median"], base_cpu)
    return out


def _dropin_starts(bench: Bench, students: list[str], variants: dict[str, str],
                   rounds: int, empty: str) -> tuple[dict[str, list[float]],
                                                     dict[str, list[float]]]:
    """Returning students' cold starts under each drop-in of the container unit, in
    interleaved rounds: (page 200 seconds, the box's CPU seconds) per variant."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    dropin = f"/run/systemd/system/nbunits-{COURSE}@.service.d/zz-bench.conf"
    for _ in range(rounds):
        for name, text in variants.items():
            bench.box.write_file(dropin, text or empty)
            bench.box.systemctl("daemon-reload")
            for student in students:
                c = asyncio.run(parts.one_cold(bench, student, kernel=False))
                parts.stop_student(bench, c.user)
                if c.first_status == 200:  # a start that needed the wake fallback is not comparable
                    times[name].append(c.page)
                    cpu[name].append(c.cpu_to_page)
    bench.box.run("rm", "-f", dropin)
    bench.box.systemctl("daemon-reload")
    return times, cpu


def unit_variants(bench: Bench, students: list[str], rounds: int = 2) -> dict:
    """A returning student's cold start (page 200) under each drop-in, interleaved."""
    times, _ = _dropin_starts(bench, students, UNIT_VARIANTS, rounds, "# baseline\n")
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



# --------------------------------------------------------------- before / after
# What this pass changed on a start, undone by a drop-in so that both are measured in
# one box, interleaved (the machine's load varies by the minute).
BEFORE = "48d5add"  # main before Jupyter's socket was systemd's


def _exec_start(bench: Bench) -> str:
    """The generated unit's ExecStart= (with its continuation lines)."""
    text = bench.box.read_file(f"/run/systemd/generator/nbunits-{COURSE}@.service")
    lines, out = text.splitlines(), []
    start = next(i for i, line in enumerate(lines) if line.startswith("ExecStart="))
    for line in lines[start:]:
        out.append(line)
        if not line.endswith("\\"):
            break
    return "\n".join(out)


def before_dropins(bench: Bench) -> dict[str, str]:
    """Now, and main before this pass as far as a start's cost goes: Jupyter's socket
    folder a 64 KB tmpfs of its own, mounted in PID 1's namespace by nsenter (with the
    chown), bound into the container, unmounted at the stop. Jupyter still answers on
    systemd's socket in both (the socket unit cannot be dropped by a drop-in), so the
    socket unit's own cost is in both: this measures the mount per running student."""
    sock = f"/run/nbunits/jupyter/{COURSE}/%i-folder"
    settings, tokens = f"/run/nbunits/settings/{COURSE}/%i", f"/var/lib/nbunits/tokens/{COURSE}/%i"
    exec_start = _exec_start(bench).replace(
        "--volume ", f"--volume {sock}:/run/jupyter --volume ", 1)
    before = (
        "[Service]\n"
        f"RuntimeDirectory=nbunits/jupyter/{COURSE}/%i-folder\n"
        "ExecStartPre=\n"
        "ExecStartPre=+/usr/bin/nsenter --target=1 --mount -- /bin/sh -c '"
        "mount -t tmpfs -o size=64k,nr_inodes=16,mode=0700,nosuid,nodev,noexec nbunits-jupyter \"$$1\" "
        "&& chown \"$$0\" \"$$1\" && install -m 0400 -o \"$$0\" \"$$2.env\" \"$$3/jupyter.env\" "
        "&& install -m 0400 -o \"$$0\" \"$$2.json\" \"$$3/jupyter.json\"' "
        f"%i {sock} {tokens} {settings}\n"
        "ExecStart=\n" + exec_start + "\n"
        f"ExecStopPost=-+/usr/bin/nsenter --target=1 --mount -- /bin/umount --lazy {sock}\n")
    return {"now (this branch)": "", f"before (main at {BEFORE}: a tmpfs per running student)": before}


def before_after(bench: Bench, n_students: int = 4, rounds: int = 3) -> dict:
    """Returning students' cold starts (page 200): wall and the box's CPU seconds,
    under each drop-in, interleaved."""
    import secrets
    students = []
    for _ in range(n_students):
        c = asyncio.run(parts.one_cold(bench, secrets.token_hex(16), kernel=False))
        parts.stop_student(bench, c.user)
        students.append(parts._student_of(bench, c.user))
    variants = before_dropins(bench)
    times, cpu = _dropin_starts(bench, students, variants, rounds, "# now\n")
    out = _with_cpu(_compare(times), cpu)
    out["dropins"] = variants
    return out
