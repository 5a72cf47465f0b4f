"""Medians, p95 and the one-line summaries the table prints."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (with N=10, that is the maximum)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return {"n": 0, "median": float("nan"), "p95": float("nan"), "min": float("nan")}
    return {"n": len(values), "median": statistics.median(values), "p95": p95(values),
            "min": min(values)}


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")
