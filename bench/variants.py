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
# What issue 11's fourth pass changed on a start, undone by drop-ins so that both are
# measured in one box, interleaved (the machine's load varies by the minute).
BEFORE = "123fa09"  # main before that pass
OLD = f"{SHARED_IN_BOX}/before"


def _old_files(bench: Bench) -> None:
    """The readiness gate and its events module as they were."""
    package = bench.shared / "before" / "nbunits_before"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for name, path in (("ready.py", "nbunits/ready.py"), ("events.py", "nbunits/events.py")):
        (package / name).write_text(_git_show(path))
    for path in bench.shared.joinpath("before").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    bench.shared.joinpath("before").chmod(0o755)


def _git_show(path: str) -> str:
    import subprocess
    from pathlib import Path
    return subprocess.run(["git", "show", f"{BEFORE}:{path}"], check=True, capture_output=True,
                          text=True, cwd=Path(__file__).parents[1]).stdout


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
    """Now, and main before the fourth pass: three ExecStartPre= (the socket folder's
    mount and `chown USER:`, the home's mkdir), the token by LoadCredential=, conmon's
    READY=1 at the container's start and then the Python readiness gate, group
    lookups through nss-systemd. (The image is this checkout's in both.)"""
    _old_files(bench)
    exec_start = _exec_start(bench)
    podman = exec_start[exec_start.index("/usr/bin/podman "):]
    sock = f"/run/nbunits/jupyter/{COURSE}/%i"
    before = (
        "[Service]\nBindReadOnlyPaths=\nBindPaths=/home/%i\nEnvironment=PYTHONPATH=" + OLD + "\nExecStartPre=\n"
        f"ExecStartPre=+/usr/bin/nsenter --target=1 --mount -- /bin/mount -t tmpfs "
        f"-o size=64k,nr_inodes=16,mode=0700,nosuid,nodev,noexec nbunits-jupyter {sock}\n"
        f"ExecStartPre=+/usr/bin/nsenter --target=1 --mount -- /bin/chown %i: {sock}\n"
        f"ExecStartPre=/bin/mkdir -p -m 0700 ${{HOME}}/.nbunits/{COURSE}/home\n"
        f"LoadCredential=jupyter.env:/var/lib/nbunits/tokens/{COURSE}/%i.env\n"
        f"LoadCredential=jupyter.json:/var/lib/nbunits/tokens/{COURSE}/%i.json\n"
        "ExecStart=\nExecStart=" + podman.replace("--sdnotify=container", "--sdnotify=conmon")
        .replace(f"/run/nbunits/settings/{COURSE}/%i/", "%d/")
        + "\nExecStartPost=\n"
        f"ExecStartPost=/opt/nbunits/venv/bin/python3 -m nbunits_before.ready {sock}/jupyter.sock\n")
    return {"now (this branch)": "", f"before (main at {BEFORE})": before}


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
