"""Summaries of the Figure 2 results over training seeds: one ``Stat`` per (D, pred, metric)."""

from __future__ import annotations

import statistics
from typing import Iterable

METRICS = ("chamfer", "residual")


class Stat:
    """Mean, sample standard deviation, min and max of one metric over seeds."""

    def __init__(self, values: list[float]):
        self.values = values
        self.mean = statistics.fmean(values)
        self.sd = statistics.stdev(values) if len(values) > 1 else 0.0
        self.lo, self.hi = min(values), max(values)

    def __str__(self) -> str:
        return f"{fmt(self.mean)} ± {self.sd:.2g}"


def fmt(v: float) -> str:
    """3 significant digits, plain notation where it stays short."""
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def summarise(results: Iterable[dict]) -> dict[tuple[int, str, str], Stat]:
    """(D, pred, metric) -> Stat over seeds."""
    groups: dict[tuple[int, str, str], list[float]] = {}
    for r in results:
        for m in METRICS:
            groups.setdefault((r["cell"]["D"], r["cell"]["pred"], m), []).append(r["metrics"][m])
    return {key: Stat(values) for key, values in groups.items()}
