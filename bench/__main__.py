"""nbunits benchmark: one command, one table (and a JSON file).

    bench/run [--n 10] [--bursts 25,50] [--density 150] [--scale 100000] [--peer-n 10]
              [--skip PART,...]

Boots the real-systemd harness (testbed/harness.py), installs this checkout's nbunits
and the demo course with the shared image, and measures side by side, in one run:
cold start vs the podman-run floor, warm latency through nginx vs straight to
Jupyter, bursts, the cost of a student, density (many active students), scale (a
whole MOOC provisioned), and JupyterHub + SystemdSpawner.
Parts: cold, floor, warm, cost, burst, density, peer, scale.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import ahead, browser, density, memory, parts, peer, profile, scale, variants
from .box import booted
from .goals import goals_table
from .stats import ratio, summary

RESULTS = Path(__file__).with_name("results")
PARTS = ("cold", "floor", "warm", "cost", "burst", "density", "peer", "scale")
# A reference run (kept in bench/results/, its tables printed into docs/BENCHMARKS.md)
# measures nbunits, the podman floor and the JupyterHub peer in the same run.
REFERENCE_PARTS = ("cold", "floor", "peer")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
BLOCK_START = "<!-- generated: bench/run --table-from "
BLOCK_END = "<!-- end of generated table -->"


def commit() -> dict:
    """The code measured: the checkout's commit, and whether it had changes."""
    repo = Path(__file__).resolve().parents[1]
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=False,
                                     capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain",
                                                                  "--untracked-files=no"))}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), "?")
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    podman = subprocess.run(["podman", "--version"], check=False, capture_output=True, text=True).stdout.strip()
    osrel = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines()
                 if "=" in line)
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "cpu": cpu, "cores": os.cpu_count(), "mem_gb": round(int(mem) / 2**20, 1),
            "kernel": platform.release(), "os": osrel.get("PRETTY_NAME", "?").strip('"'),
            "podman": podman, "loadavg_at_start": os.getloadavg(),
            "cpu_per_wakeup_ms": cpu_per_wakeup()}


def cpu_per_wakeup(n: int = 15, sleep: float = 1.0) -> float:
    """The CPU a process is charged for waking from a 1 s sleep and doing next to nothing
    (median of n, ms, from the scheduler's own count): on some machines (virtual ones)
    it is milliseconds, and then an idle host's CPU is its wake-ups times this."""
    def runtime() -> int:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[0])
    costs = []
    for _ in range(n):
        before = runtime()
        time.sleep(sleep)
        costs.append(runtime() - before)
    return round(summary([c / 1e6 for c in costs])["median"], 3)


def run(args: argparse.Namespace) -> dict:
    want = [p for p in PARTS if p not in args.skip]
    out: dict = {"machine": machine(), "code": commit(), "reference": args.reference,
                 "args": {"n": args.n, "bursts": args.bursts, "density": args.density,
                          "scale": args.scale, "peer_n": args.peer_n, "skip": args.skip}}
    started = time.monotonic()
    try:
        _run_parts(args, want, out, started)
    except Exception:  # noqa: BLE001 -- keep what was measured; say what broke
        out["error"] = traceback.format_exc()[-3000:]
        print(out["error"], file=sys.stderr)
    out["seconds"] = time.monotonic() - started
    return out


def _run_parts(args: argparse.Namespace, want: list[str], out: dict, started: float) -> None:
    with booted(f"nbunits-bench-{os.getpid()}") as bench:
        say = lambda text: print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)
        say("box up, nbunits installed")
        warmup = asyncio.run(parts.one_cold(bench, os.urandom(16).hex()))  # page cache, not counted
        parts.stop_student(bench, warmup.user)
        known = [parts._student_of(bench, warmup.user)]
        if "cold" in want or "floor" in want:
            say(f"cold starts: {args.n} new students, then the same again once stopped, "
                f"each followed by a floor start")
            cold, floor = parts.cold_runs(bench, args.n,
                                          warmup.user if "floor" in want else None)
            known += [parts._student_of(bench, c.user) for c in cold["new"]]
            out["cold"] = {kind: {"redirect": summary([c.redirect for c in runs]),
                                  "page": summary([c.page for c in runs]),
                                  "executed": summary([c.executed for c in runs]),
                                  "cpu_to_page": summary([c.cpu_to_page for c in runs]),
                                  "first_try_not_200": [c.first_status for c in runs
                                                        if c.first_status != 200]}
                           for kind, runs in cold.items()}
            out["breakdown"] = {kind: parts.breakdown(bench, runs) for kind, runs in cold.items()}
        if "floor" in want:  # measured inside cold_runs, interleaved with returning starts
            out["floor"] = {"ready": summary(floor["ready"]),
                            "podman_run_returned": summary(floor["podman_run_returned"]),
                            "cpu_per_start": summary(floor["cpu"])["median"],
                            "argv": floor.get("argv")}
        if "warm" in want:
            say("warm: page and REST through nginx vs straight to Jupyter")
            warm = asyncio.run(parts.warm(bench, args.warm_n))
            out["warm"] = {k: summary(v) for k, v in warm.items()}
        if "cost" in want:
            say("cost of a student")
            out["cost"] = parts.cost(bench)
        if args.profile:
            say(f"profile: where {args.profile} new students' starts spend CPU (perf)")
            out["profile"] = profile.profile(bench, args.profile)
            say(f"profile: where a burst of {args.profile_burst} new students spends CPU (perf)")
            out["profile_burst"] = profile.profile(bench, args.profile_burst, burst=True)
        if "burst" in want:
            out["burst"], out["burst_at_once"] = {}, {}
            for n in args.bursts:
                for key, slots in (("burst", 0), ("burst_at_once", n)):
                    if slots and not args.burst_at_once:
                        continue
                    # "at once": the helper's start slots lifted (as before they existed)
                    parts.set_server(bench, concurrent_starts=slots)
                    parts.settle(bench)
                    say(f"burst of {n}" + (" (all started at once)" if slots else ""))
                    result = asyncio.run(parts.burst(bench, n))
                    result["summary"] = summary(result.pop("times"))
                    out[key][str(n)] = result
            parts.set_server(bench, concurrent_starts=0)
            parts.stop_all(bench)
        if "density" in want:
            say(f"density: {args.density} students active at once, idle kernels, open tabs"
                + (f", {args.density_pause:g} s apart" if args.density_pause else ""))
            out["density"] = density.density(bench, args.density, args.warm_n,
                                             pause=args.density_pause,
                                             probes=args.density_probes)
        if "peer" in want:
            say(f"peer: JupyterHub + SystemdSpawner, {args.peer_n} new users")
            result = peer.peer_runs(bench, args.peer_n)
            out["peer"] = {k: (summary(v) if isinstance(v, list) else v) for k, v in result.items()}
        if args.variants:
            say("variants: floor with flags / image config changed")
            out["floor_variants"] = variants.floor_variants(bench, warmup.user, args.variants_n)
            say("variants: cold start through the chain with unit drop-ins")
            students = known[1:1 + max(1, args.variants_n // 4)] or known
            out["unit_variants"] = variants.unit_variants(bench, students)
        if args.ahead:
            parts.settle(bench)
            say(f"kernel ahead: {args.ahead} rounds of new students with it, without it, "
                "and a floor start; then each student again")
            out["ahead"] = ahead.ahead_runs(bench, args.ahead, warmup.user)
        if args.memory:
            parts.settle(bench)
            say(f"memory: {args.memory} students active at once, each with an idle kernel")
            out["memory"] = memory.memory_runs(bench, args.memory)
        if args.browser:
            parts.settle(bench)
            say(f"browser: {args.browser} rounds of a new student's click in Chromium, kernel "
                "ahead and without")
            out["browser"] = browser.browser_runs(bench, args.browser)
        if args.before_after:
            parts.settle(bench)
            say("before/after: this branch's start vs main's, by drop-ins, interleaved")
            out["before_after"] = variants.before_after(bench)
        if "scale" in want:
            waited = parts.settle(bench)
            say(f"scale: the empty host (settled for {waited:.0f} s), then {args.scale} "
                "provisioned students")
            out["scale"] = scale.scale(bench, args.scale)
        out["failed_units"] = bench.box.failed_units()
        out["machine"]["loadavg_at_end"] = os.getloadavg()
        say("done; powering the box off")


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def sec(s: dict) -> str:
    return f"{s['median']:.2f} s / {s['p95']:.2f} s (N={s['n']})"


def render(r: dict, source: str) -> str:
    """What docs/BENCHMARKS.md shows of a run: its table and the goals' verdicts."""
    code = r.get("code", {})
    where = (f"code at {code['commit'][:12]}{' (with local changes)' if code.get('dirty') else ''}"
             if code.get("commit") else "code not recorded")
    return "\n".join([f"Run `{source}`, {where}.", "", table(r), "", "Goals, from this run:", "",
                      goals_table(r)])


def update_docs(docs: Path = DOCS) -> list[str]:
    """Reprint every generated block of docs/BENCHMARKS.md from the JSON it names;
    returns the files read."""
    text, out, read = docs.read_text(), [], []
    while BLOCK_START in text:
        before, _, rest = text.partition(BLOCK_START)
        source, _, rest = rest.partition(" -->")
        _, _, after = rest.partition(BLOCK_END)
        block = render(json.loads((docs.parents[1] / source).read_text()), source)
        out += [before, f"{BLOCK_START}{source} -->\n", block, "\n", BLOCK_END]
        read.append(source)
        text = after
    docs.write_text("".join(out) + text)
    return read


def table(r: dict) -> str:
    m = r["machine"]
    header = (f"nbunits benchmark, {m['date']}: {m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB, "
              f"{m['os']}, kernel {m['kernel']}, {m['podman']}; "
              f"load average at start {m['loadavg_at_start'][0]:.2f}, at end "
              f"{m.get('loadavg_at_end', [float('nan')])[0]:.2f}")
    lines = [header, "", "| measure | median / p95 (N) | vs baseline |", "| --- | --- | --- |"]
    row = lambda a, b, c="": lines.append(f"| {a} | {b} | {c} |")
    floor = r.get("floor", {}).get("ready")
    if "cold" in r:
        for kind, label in (("returning", "returning student (container stopped)"),
                            ("new", "new student (user record + copy)")):
            c = r["cold"][kind]
            vs = f"{ratio(c['page']['median'], floor['median']):.2f}x floor" if floor else ""
            row(f"1. cold, {label}: edX URL -> page 200", sec(c["page"]), vs)
            row(f"1. cold, {label}: edX URL -> `1+1` executed", sec(c["executed"]))
            row(f"   CPU seconds used by the box until page 200 ({kind})", sec(c["cpu_to_page"]))
    if floor:
        row("2. floor: `podman run` (same flags, by hand) -> /api/status 200, interleaved with 1.",
            sec(floor))
        row("   of which `podman run -d` returned", sec(r["floor"]["podman_run_returned"]))
        row("   CPU seconds per floor start", f"{r['floor']['cpu_per_start']:.2f} s")
    if "warm" in r:
        w = r["warm"]
        for what in ("page", "rest"):
            via, direct = w[f"{what}_nginx"], w[f"{what}_direct"]
            name = "notebook page" if what == "page" else "REST GET api/contents"
            row(f"3. warm {name}: nginx + socket + proxyd -> Jupyter",
                f"{ms(via['median'])} / {ms(via['p95'])} (N={via['n']})",
                f"+{(via['median'] - direct['median']) * 1000:.2f} ms p50 vs straight to the "
                f"Jupyter socket ({ms(direct['median'])} / {ms(direct['p95'])})")
    if "burst" in r:
        cpu_one = r.get("cold", {}).get("new", {}).get("cpu_to_page", {}).get("median")
        bursts = [(n, b, "") for n, b in r["burst"].items()] + [
            (n, b, ", all started at once") for n, b in r.get("burst_at_once", {}).items()]
        for n, b, how in bursts:
            s = b["summary"]
            bound = int(n) * cpu_one / m["cores"] if cpu_one else float("nan")
            row(f"4. burst of {n} new students at once{how}",
                f"{b['ok']}/{n} ok ({b['first_try_ok']}/{n} at the first try); makespan "
                f"{b['makespan']:.1f} s; per student {s['median']:.1f} s / {s['p95']:.1f} s",
                f"CPU-bound floor {bound:.1f} s ({n} x {cpu_one:.2f} CPU s / {m['cores']}): "
                f"{ratio(b['makespan'], bound):.2f}x; CPU used by the box {b['cpu']:.0f} s, "
                f"by the whole machine {b.get('host_busy', float('nan')):.0f} s; starts "
                f"restarted by systemd {b.get('restarted', '?')} (notify messages lost "
                f"{b.get('lost_notify', '?')})")
    if "cost" in r:
        c = r["cost"]
        row("5. idle provisioned student: processes / PSS",
            f"{len(c['idle_procs'])} / {c['idle_pss_kb'] / 1024:.1f} MB", ", ".join(c["idle_procs"]))
        row("5. active student: PSS of server (all the student's processes)",
            f"{c['server_pss_kb'] / 1024:.0f} MB", ", ".join(c["server_procs"]))
        row("5. active student: PSS of server + one idle kernel",
            f"{c['server_kernel_pss_kb'] / 1024:.0f} MB")
        row("5. disk per student beyond their files (home minus course dir)",
            f"{c['disk_beyond_files_kb']} KB",
            f"their files {c['disk_own_files_kb']} KB; runtime tmpfs {c['runtime_tmpfs_kb']} KB")
    for key, what in (("profile", "one after the other"), ("profile_burst", "all at once")):
        if key in r:
            pr = r[key]
            row(f"8. CPU per new student's start, {pr['n']} {what}, page 200 + 2 s "
                f"(perf at {profile.FREQ} Hz)", f"{pr['cpu_per_start_sampled']:.2f} s sampled",
                f"{pr['cpu_per_start_cpuacct']:.2f} s by the box's cpuacct")
            for comm, seconds in pr["per_comm"].items():
                row(f"   {comm}", f"{seconds:.3f} s")
    if "density" in r:
        d = r["density"]
        n = d["n"]
        apart = f" ({d['pause']:g} s apart)" if d.get("pause") else " (back to back)"
        series = d.get("series", d)  # results written before the probes had it at the top
        if "probes" in d:
            first, last = d["probes"]["first"], d["probes"]["last"]
            row(f"6. density: cold start of the {n}th active student vs the 1st (probes, "
                f"each on a quiet box)", f"{sec(last)} vs {sec(first)}",
                f"{d['probes']['ratio']:.2f}x")
        row(f"6. density: the series, {len(series['cold'])} students one after the other"
            f"{apart}: the last's cold start vs the first's",
            f"{series['last']:.2f} s vs {series['first']:.2f} s; last tenth "
            f"{sec(series['last_tenth'])}",
            f"{ratio(series['last'], series['first']):.2f}x (last/first tenth "
            f"{ratio(series['last_tenth']['median'], series['first_tenth']['median']):.2f}x); "
            f"starts restarted by systemd {d.get('restarted', '?')} (notify messages lost "
            f"{d.get('lost_notify', '?')})")
        row(f"6. density: idle CPU with {n} active students (idle kernels, open tabs)",
            f"{d['idle_cpu_cores'] * 100:.1f}% of a core",
            f"over {d['idle_seconds']:.0f} s; servers running then: "
            f"{d.get('running_at_measure', '?')}")
        programs = d.get("idle_cpu_by_program", {})
        if programs:
            row("   of which, by program: CPU seconds (wake-ups, processes)",
                ", ".join(f"{c} {v['cpu']:.2f}" + (f" ({v['wakeups']}, {v['processes']})"
                                                    if "wakeups" in v else "")
                          for c, v in programs.items()),
                f"a wake-up costs {m['cpu_per_wakeup_ms']:.2f} ms of CPU on this machine "
                "(a sleeping loop, same run)" if "cpu_per_wakeup_ms" in m else "")
        for what in ("page", "rest"):
            via, direct = d["warm"][f"{what}_nginx"], d["warm"][f"{what}_direct"]
            row(f"6. density: warm {what} with {n} active",
                f"{ms(via['median'])} / {ms(via['p95'])} (N={via['n']})",
                f"+{(via['median'] - direct['median']) * 1000:.2f} ms p50 vs straight to Jupyter")
        pss = d["pss_kb_per_student"]
        row("6. density: memory (PSS) per active student (server + idle kernel)",
            f"{pss['median'] / 1024:.0f} MB median (N={pss['n']})",
            f"all {n}: {d['pss_kb_total'] / 2**20:.1f} GB")
    if "scale" in r:
        s = r["scale"]
        b, a, n = s["before"], s["after"], s["n"]
        prov = s["provision"]
        row(f"7. scale: {n} students provisioned (batch, nbunits' own functions)",
            f"{s['provision_seconds']:.0f} s ({prov['uid_collisions_refused']} uid collisions "
            "refused)", f"units loaded: {b['loaded_units']} before, {a['loaded_units']} after; "
            f"then sync {s.get('sync_seconds', float('nan')):.0f} s and settle "
            f"{s.get('settle_seconds', float('nan')):.0f} s before measuring")
        row("7. `systemctl daemon-reload`", sec(a["reload"]),
            f"empty host {sec(b['reload'])}: {ratio(a['reload']['median'], b['reload']['median']):.2f}x")
        row("7. systemd (PID 1) PSS", f"{a['pid1']['pss_kb'] / 1024:.1f} MB",
            f"empty host {b['pid1']['pss_kb'] / 1024:.1f} MB: "
            f"{ratio(a['pid1']['pss_kb'], b['pid1']['pss_kb']):.2f}x")
        row("7. creating one more student (users.ensure)",
            f"{a['accounts']['ensure'] * 1000:.1f} ms (N=20)",
            f"empty host {b['accounts']['ensure'] * 1000:.1f} ms: "
            f"{ratio(a['accounts']['ensure'], b['accounts']['ensure']):.2f}x")
        la, lb = a["accounts"]["lookups"], b["accounts"]["lookups"]
        row("7. user lookup getpwnam / getpwuid (nss-systemd)",
            f"{la['getpwnam'] * 1e6:.0f} / {la['getpwuid'] * 1e6:.0f} µs (N={la['n']})",
            f"empty host {lb['getpwnam'] * 1e6:.0f} / {lb['getpwuid'] * 1e6:.0f} µs (N={lb['n']})")
        for key, what in (("first_click", "edX URL -> page 200"),
                          ("first_click_302", "edX URL -> 302 (dispatcher + helper)"),
                          ("first_click_cpu", "CPU seconds used by the box until page 200")):
            if key in a:
                row(f"7. a new student's first click: {what}", sec(a[key]),
                    f"empty host {sec(b[key])}: {ratio(a[key]['median'], b[key]['median']):.2f}x")
        # The same clicks with one of this changes undone, right after.
        for variant, undone in (
                ("after_without_initgroups_line",
                 "without nbunits' initgroups: line (as before this change)"),
                ("after_with_group_lookups_of_before",
                 "with the group lookups of before (chown USER:, podman's libsubid "
                 "through nss-systemd)")):
            w = s.get(variant)
            for key, what in (("first_click", "edX URL -> page 200"),
                              ("first_click_cpu", "CPU seconds used by the box until page 200")):
                if w:
                    row(f"7. ... the same {undone}: {what}", sec(w[key]),
                        f"now {sec(a[key])}: {ratio(w[key]['median'], a[key]['median']):.2f}x; "
                        f"empty host {ratio(w[key]['median'], b[key]['median']):.2f}x")
        if "loadavg" in a:
            row("7. machine load average during those clicks",
                f"{a['loadavg'][0]:.1f} (100,000 provisioned)", f"empty host {b['loadavg'][0]:.1f}")
        row("7. a provisioned, unloaded student's bookmarked /nb/ link -> page 200 (wake)",
            sec(s["wake_by_bookmark"]))
    if "peer" in r:
        p = r["peer"]
        if "error" in p:
            row("7. JupyterHub + SystemdSpawner", "failed", p["error"][:200].replace("\n", " "))
        else:
            ours = r.get("cold", {}).get("new", {}).get("page")
            vs = f"nbunits/peer {ratio(ours['median'], p['ready']['median']):.2f}" if ours else ""
            row("7. JupyterHub + SystemdSpawner, new user: create -> server /api/status 200",
                sec(p["ready"]), vs)
            if "output" in p:
                ours = r.get("ahead", {}).get("new_ahead", {}).get("output") or \
                    r.get("cold", {}).get("new", {}).get("executed")
                vs = f"nbunits/peer {ratio(ours['median'], p['output']['median']):.2f}" \
                    if ours else ""
                row("7. ... then the notebook's page, a new session's kernel, `1+1` output",
                    f"page {sec(p['page'])}; output {sec(p['output'])}", vs)
    if "breakdown" in r:
        for kind, phases in r["breakdown"].items():
            if not phases:  # runs before the journal namespaces were read (2026-12-07)
                lines += ["", f"Where a cold start's time goes ({kind} student): not in this "
                          "run (its journal marks were not found)"]
                continue
            lines += ["", f"Where a cold start's time goes ({kind} student, from the journal):", "",
                      "| phase | median | p95 | N |", "| --- | --- | --- | --- |"]
            for phase, s in phases.items():
                lines.append(f"| {phase} | {ms(s['median'])} | {ms(s['p95'])} | {s['n']} |")
    for key, title in (("floor_variants", "Floor variants (podman run by hand -> /api/status 200)"),
                       ("unit_variants", "Unit variants (returning student, edX URL -> page 200)"),
                       ("before_after", "Before/after (returning student, edX URL -> page 200)")):
        if key in r:
            r[key].pop("dropins", None)
            lines += ["", title + ", interleaved in one run:", "",
                      "| variant | median | p95 | N | vs baseline | CPU s per start (vs baseline) |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for name, s in r[key].items():
                cpu = (f"{s['cpu_median']:.2f} ({s['cpu_vs_baseline']:.2f}x)"
                       if "cpu_median" in s else "")
                lines.append(f"| {name} | {ms(s['median'])} | {ms(s['p95'])} | {s['n']} | "
                             f"{s['vs_baseline']:.2f}x ({s['delta_ms']:+.0f} ms) | {cpu} |")
    if "memory" in r:
        lines += ["", *memory.table(r["memory"])]
    if "ahead" in r:
        lines += ["", "The click to the first output, kernel ahead or not, interleaved in one run "
                  "(floor: the bare `podman run` -> /api/status 200, "
                  f"{sec(r['ahead']['floor_ready'])}):", "",
                  "| student | course setting | edX URL -> page 200 | -> `1+1` output | "
                  "page / floor | output / floor | output vs without |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        floor_s = r["ahead"]["floor_ready"]["median"]
        for kind in ("new", "returning"):
            without = r["ahead"][f"{kind}_without"]["output"]["median"]
            for key, label in (("ahead", "kernel_ahead"), ("without", "no kernel_ahead")):
                a = r["ahead"][f"{kind}_{key}"]
                lines.append(f"| {kind} | {label} | {sec(a['page'])} | {sec(a['output'])} | "
                             f"{ratio(a['page']['median'], floor_s):.2f}x | "
                             f"{ratio(a['output']['median'], floor_s):.2f}x | "
                             f"{ratio(a['output']['median'], without):.2f}x |")
    if "browser" in r and "error" not in r["browser"]:
        b = r["browser"]
        lines += ["", "A new student's click in Chromium (fresh browser context), interleaved:", "",
                  "| course setting | edX URL -> notebook usable | -> `6 * 7` output | "
                  "output vs without |", "| --- | --- | --- | --- |"]
        for key, label in (("ahead", "kernel_ahead"), ("without", "no kernel_ahead")):
            lines.append(f"| {label} | {sec(b[key]['page'])} | {sec(b[key]['output'])} | "
                         f"{ratio(b[key]['output']['median'], b['without']['output']['median']):.2f}x |")
    if r.get("failed_units"):
        lines += ["", f"failed units at the end: {', '.join(r['failed_units'])}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="cold starts and floor runs [10]")
    parser.add_argument("--warm-n", type=int, default=300)
    parser.add_argument("--bursts", default="25,50", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--scale", type=int, default=100000,
                        help="students provisioned for the scale part [100000]")
    parser.add_argument("--density", type=int, default=150,
                        help="students active at once for the density part [150]")
    parser.add_argument("--density-probes", type=int, default=9, metavar="N",
                        help="probes of the first and of the last student's cold start [9]")
    parser.add_argument("--density-pause", type=float, default=0, metavar="S",
                        help="seconds between two students' arrivals in the density part "
                             "[0: each opens once the one before has its kernel]")
    parser.add_argument("--peer-n", type=int, default=10)
    parser.add_argument("--skip", default="", type=lambda s: [x for x in s.split(",") if x])
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile N new students' starts by program (perf)")
    parser.add_argument("--profile-burst", type=int, default=25, metavar="N",
                        help="with --profile, also profile a burst of N new students [25]")
    parser.add_argument("--variants", action="store_true",
                        help="also measure cold-path variants (podman flags, image config, drop-ins)")
    parser.add_argument("--variants-n", type=int, default=9, help="runs per variant [9]")
    parser.add_argument("--ahead", type=int, default=0, metavar="N",
                        help="N rounds: click to first output with the kernel started ahead, "
                             "without, and the floor, interleaved (bench/ahead.py) [0: not run]")
    parser.add_argument("--memory", type=int, default=0, metavar="N",
                        help="N students active at once: each process's PSS and private "
                             "memory (bench/memory.py) [0: not run]")
    parser.add_argument("--browser", type=int, default=0, metavar="N",
                        help="N rounds: a new student's click to the first output in Chromium, "
                             "kernel ahead and without (bench/browser.py) [0: not run]")
    parser.add_argument("--before-after", action="store_true",
                        help="also measure this branch's start against main's (drop-ins)")
    parser.add_argument("--burst-at-once", action="store_true",
                        help="after each burst, the same with the helper's start slots "
                             "lifted (concurrent_starts=N), to compare")
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--reference", action="store_true",
                        help="a reference run: nbunits, the floor and the peer measured together, "
                             "its JSON kept in bench/results/reference-<date>.json (committed)")
    parser.add_argument("--table-from", type=Path,
                        help="print the table and the goals of an earlier run's JSON")
    parser.add_argument("--update-docs", action="store_true",
                        help="reprint docs/BENCHMARKS.md's generated tables from their JSON")
    args = parser.parse_args(argv)
    if args.table_from:
        print(render(json.loads(args.table_from.read_text()), str(args.table_from)))
        return 0
    if args.update_docs:
        print("\n".join(f"{DOCS}: table from {source}" for source in update_docs()))
        return 0
    if args.reference and set(REFERENCE_PARTS) & set(args.skip):
        sys.exit(f"a reference run measures {', '.join(REFERENCE_PARTS)} together: "
                 "do not skip them")
    if os.geteuid() != 0:
        sys.exit("bench/run needs root (it boots a systemd container)")
    result = run(args)
    name = "reference" if args.reference else "bench"
    path = args.json or RESULTS / f"{name}-{result['machine']['date'].replace(':', '')}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print()
    print(render(result, str(path)))
    print(f"\nJSON: {path}")
    if args.reference:
        print("Keep it: git add it, then add a block for it to docs/BENCHMARKS.md and run "
              "bench/run --update-docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
