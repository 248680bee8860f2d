"""The Figure 2 report: long CSV, a markdown summary over seeds, and a verdict computed from the numbers."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Iterable

from jitlab.atomic import write_text

METRICS = ("chamfer", "residual")
CSV_COLUMNS = ("D", "pred", "loss", "seed", "metric", "value")
PRED_ORDER = ("x", "eps", "v")

# The verdict's rules, fixed before looking at any result:
FAR = 3.0  # "far below / far larger": the means differ by at least 3x AND the seed ranges do not overlap
CLOSE = 2.0  # "close": the largest mean Chamfer is within 2x of the smallest
RECOVERED_FRACTION = 0.1  # a cell "recovers the spiral" if its mean Chamfer is below 1/10 of the gap between arms


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (readers never see half a file)."""
    write_text(path, text)


def csv_rows(results: Iterable[dict]) -> list[tuple]:
    """One row per (cell, seed, metric)."""
    rows = []
    for r in results:
        c = r["cell"]
        rows += [(c["D"], c["pred"], c["loss"], c["seed"], m, r["metrics"][m]) for m in METRICS]
    return sorted(rows, key=lambda row: (row[0], PRED_ORDER.index(row[1]), row[3], row[4]))


def write_csv(path: Path, results: Iterable[dict]) -> None:
    lines = [",".join(CSV_COLUMNS)] + [",".join(str(v) for v in row) for row in csv_rows(results)]
    atomic_write(path, "\n".join(lines) + "\n")


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


def far_apart(low: Stat, high: Stat) -> bool:
    """``high`` is far above ``low``: a FAR-fold gap in the means and no overlap of the seed ranges."""
    return high.mean >= FAR * low.mean and high.lo > low.hi


def verdict(stats: dict, dims: list[int], preds: list[str], gap: float) -> list[str]:
    """Plain-language findings, each computed from the numbers with the fixed rules above."""
    lines: list[str] = []
    threshold = RECOVERED_FRACTION * gap
    recovered = {(d, p): stats[(d, p, "chamfer")].mean < threshold for d in dims for p in preds}
    hi_d, lo_d = max(dims), min(dims)
    if {"x", "eps", "v"} <= set(preds):
        x_c, x_r = stats[(hi_d, "x", "chamfer")], stats[(hi_d, "x", "residual")]
        others = ["eps", "v"]
        below = {p: far_apart(x_c, stats[(hi_d, p, "chamfer")]) for p in others}
        larger = {p: far_apart(x_r, stats[(hi_d, p, "residual")]) for p in others}
        ratios = ", ".join(f"{p} {fmt(stats[(hi_d, p, 'chamfer')].mean)} "
                           f"({stats[(hi_d, p, 'chamfer')].mean / x_c.mean:.3g}x)" for p in others)
        lines.append(f"**D={hi_d}, distance**: x-pred's Chamfer {fmt(x_c.mean)} vs {ratios}: x-pred is "
                     + ("far below both (YES)." if all(below.values()) else
                        "NOT far below " + " and ".join(p for p in others if not below[p]) + "."))
        rratios = ", ".join(f"{p} {fmt(stats[(hi_d, p, 'residual')].mean)}" for p in others)
        lines.append(f"**D={hi_d}, off-manifold residual**: x-pred {fmt(x_r.mean)} vs {rratios}: "
                     + ("eps- and v-pred's residuals are far larger (YES)." if all(larger.values()) else
                        "NOT far larger for " + " and ".join(p for p in others if not larger[p]) + "."))
        lo = [stats[(lo_d, p, "chamfer")] for p in preds]
        spread = max(s.mean for s in lo) / min(s.mean for s in lo)
        values = ", ".join(f"{p} {fmt(s.mean)}" for p, s in zip(preds, lo))
        close = spread <= CLOSE
        lines.append(f"**D={lo_d}**: Chamfer {values}; the largest is {spread:.2g}x the smallest: the three are "
                     + ("close (YES)." if close else f"NOT close (more than {CLOSE:g}x apart)."))
        high_fails = [f"x-pred is not far below {p}" for p in others if not below[p]]
        high_fails += [f"{p}-pred's residual is not far larger" for p in others if not larger[p]]
        high_fails += [] if recovered[(hi_d, "x")] else ["x-pred does not recover the spiral"]
        high_fails += [f"{p}-pred still recovers the spiral" for p in others if recovered[(hi_d, p)]]
        low_fails = [] if close else [f"the three are {spread:.2g}x apart"]
        low_fails += [f"{p}-pred does not recover the spiral" for p in preds if not recovered[(lo_d, p)]]
        high = (f"at D={hi_d} only x-prediction recovers the spiral, as in the paper" if not high_fails else
                f"at D={hi_d} it does NOT hold: " + "; ".join(high_fails))
        low = (f"at D={lo_d} all three work and are close, as in the paper" if not low_fails else
               f"at D={lo_d} it does NOT hold: " + "; ".join(low_fails))
        overall = f"**Overall** (the paper's Figure 2 claim): {high}; {low}."
    else:
        overall = "The D-comparison needs all of x, eps and v in --preds; only the tables are given."
    for d in dims:
        ok = [p for p in preds if recovered[(d, p)]]
        bad = [p for p in preds if not recovered[(d, p)]]
        lines.append(f"D={d}: recovers the spiral (mean Chamfer < {fmt(threshold)}, a tenth of the arm gap): "
                     f"{', '.join(ok) or 'none'}" + (f"; fails: {', '.join(bad)}." if bad else "."))
    return lines + [overall]


def pivot(stats: dict, dims: list[int], preds: list[str], metric: str) -> list[str]:
    """A markdown table (rows pred, columns D) of ``mean ± sd [min, max]``."""
    lines = ["| pred \\ D | " + " | ".join(str(d) for d in dims) + " |", "|---|" + "---|" * len(dims)]
    for p in preds:
        cells = [f"{stats[(d, p, metric)]} [{fmt(stats[(d, p, metric)].lo)}, {fmt(stats[(d, p, metric)].hi)}]"
                 for d in dims]
        lines.append(f"| {p}-pred | " + " | ".join(cells) + " |")
    return lines


def markdown(results: list[dict], dims: list[int], preds: list[str], header: list[str], gap: float) -> str:
    stats = summarise(results)
    seeds = sorted({r["cell"]["seed"] for r in results})
    out = ["# Figure 2 toy: a 2-D spiral embedded in D dimensions", ""] + header + [""]
    out += ["## Verdict (computed from the numbers below)", ""] + [f"- {line}" for line in verdict(stats, dims, preds, gap)]
    out += ["", f"## Chamfer distance to the true spiral (2-D, after P^T; mean ± sd [min, max] over seeds {seeds})", ""]
    out += pivot(stats, dims, preds, "chamfer")
    out += ["", "## Off-manifold residual ||x - P P^T x|| (mean over points; 0 up to rounding at D=2, where P is square)",
            ""]
    out += pivot(stats, dims, preds, "residual")
    return "\n".join(out) + "\n"
