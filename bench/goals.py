"""The benchmark's goals, each computed from a run's JSON: the one list of them.

docs/BENCHMARKS.md's goals table is printed from a reference run by
`bench/run --table-from FILE` (never typed), so a goal says here how it is measured
and where its limit is, and every reference run gives each its verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Result = dict[str, Any]


def _get(r: Result, *path: str) -> Any:
    for key in path:
        if not isinstance(r, dict) or key not in r:
            return None
        r = r[key]
    return r


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def _burst(r: Result, n: str) -> float | None:
    """The burst's makespan over its CPU-bound floor (N x CPU s of one start / cores)."""
    burst, cpu = _get(r, "burst", n), _get(r, "cold", "new", "cpu_to_page", "median")
    if burst is None or cpu is None:
        return None
    return _ratio(burst["makespan"], int(n) * cpu / r["machine"]["cores"])


def _added_ms(warm: Any) -> float | None:
    """The warm page's added latency (through nginx vs straight to Jupyter), p50, ms."""
    if warm is None:
        return None
    return (warm["page_nginx"]["median"] - warm["page_direct"]["median"]) * 1000


def _vs_empty(r: Result, *path: str) -> float | None:
    """A scale figure with 100,000 provisioned over the same on the empty host."""
    return _ratio(_get(r, "scale", "after", *path), _get(r, "scale", "before", *path))


@dataclass(frozen=True)
class Goal:
    number: str  # the part of the benchmark it belongs to (1-8)
    text: str
    measure: Callable[[Result], float | None]  # None: not measured in this run
    limit: float
    unit: str = "x"  # "x" (a ratio), "s", "ms", "%", "MB", "" (a count)
    at_most: bool = True  # the value must be <= limit (else >= limit)

    def verdict(self, r: Result) -> tuple[float | None, str]:
        value = self.measure(r)
        if value is None:
            return None, "not measured"
        met = value <= self.limit if self.at_most else value >= self.limit
        return value, "met" if met else "**missed**"

    def show(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.unit == "x":
            return f"{value:.2f}x"
        if self.unit == "%":
            return f"{value:.1f}%"
        if self.unit == "":
            return f"{value:g}"
        return f"{value:.2f} {self.unit}"


GOALS = (
    Goal("1", "cold start, returning student: edX URL -> page, vs the `podman run` floor",
         lambda r: _ratio(_get(r, "cold", "returning", "page", "median"),
                          _get(r, "floor", "ready", "median")), 1.3),
    Goal("1", "cold start, new student (user record + copy) vs the `podman run` floor",
         lambda r: _ratio(_get(r, "cold", "new", "page", "median"),
                          _get(r, "floor", "ready", "median")), 1.3),
    Goal("1", "cold start, new student, vs JupyterHub + SystemdSpawner (same run)",
         lambda r: _ratio(_get(r, "cold", "new", "page", "median"),
                          _get(r, "peer", "ready", "median")), 1.0),
    Goal("3", "warm added latency (nginx + socket + proxyd), notebook page, p50",
         lambda r: _added_ms(_get(r, "warm")), 1.0, "ms"),
    Goal("4", "CPU seconds per new student's start until page 200",
         lambda r: _get(r, "cold", "new", "cpu_to_page", "median"), 0.9, "s"),
    Goal("4", "burst of 50: students not served at the first try",
         lambda r: None if _get(r, "burst", "50") is None else
         50 - r["burst"]["50"]["first_try_ok"], 0, ""),
    Goal("4", "burst of 50: makespan vs the CPU-bound floor", lambda r: _burst(r, "50"), 1.3),
    Goal("5", "idle provisioned student: processes", lambda r: None if _get(r, "cost") is None
         else len(r["cost"]["idle_procs"]), 0, ""),
    Goal("5", "disk per student beyond their files", lambda r: None if _get(r, "cost") is None
         else r["cost"]["disk_beyond_files_kb"] / 1024, 1.0, "MB"),
    Goal("6", "the 150th active student's cold start vs the 1st's (probes)",
         lambda r: _get(r, "density", "probes", "ratio"), 1.2),
    Goal("6", "idle CPU with 150 active students", lambda r: None if _get(r, "density") is None
         else r["density"]["idle_cpu_cores"] * 100, 5.0, "%"),
    Goal("6", "warm added latency with 150 active, notebook page, p50",
         lambda r: _added_ms(_get(r, "density", "warm")), 1.0, "ms"),
    Goal("7", "a new student's first click with 100,000 provisioned vs the empty host",
         lambda r: _vs_empty(r, "first_click", "median"), 1.1),
    Goal("7", "`systemctl daemon-reload` with 100,000 provisioned vs the empty host",
         lambda r: _vs_empty(r, "reload", "median"), 1.2),
    Goal("7", "systemd (PID 1) PSS with 100,000 provisioned vs the empty host",
         lambda r: _vs_empty(r, "pid1", "pss_kb"), 1.2),
    Goal("7", "creating one more student with 100,000 provisioned vs the empty host",
         lambda r: _vs_empty(r, "accounts", "ensure"), 1.5),
)


def goals_table(r: Result) -> str:
    lines = ["| part | goal | limit | this run | verdict |", "| --- | --- | --- | --- | --- |"]
    for goal in GOALS:
        value, verdict = goal.verdict(r)
        limit = ("<= " if goal.at_most else ">= ") + goal.show(goal.limit)
        lines.append(f"| {goal.number} | {goal.text} | {limit} | {goal.show(value)} | {verdict} |")
    return "\n".join(lines)
