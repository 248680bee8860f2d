"""The Figure 2 report: long CSV, a markdown summary over seeds, and a verdict computed from the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from jitlab.atomic import write_text
from jitlab.experiments.toy.stats import METRICS, fmt, summarise
from jitlab.experiments.toy.verdict import verdict

CSV_COLUMNS = ("D", "pred", "loss", "train_seed", "metric", "value")
PRED_ORDER = ("x", "eps", "v")


def csv_rows(results: Iterable[dict]) -> list[tuple]:
    """One row per (cell, training seed, metric)."""
    rows = []
    for r in results:
        c = r["cell"]
        rows += [(c["D"], c["pred"], c["loss"], c["seed"], m, r["metrics"][m]) for m in METRICS]
    return sorted(rows, key=lambda row: (row[0], PRED_ORDER.index(row[1]), row[3], row[4]))


def write_csv(path: Path, results: Iterable[dict]) -> None:
    lines = [",".join(CSV_COLUMNS)] + [",".join(str(v) for v in row) for row in csv_rows(results)]
    write_text(path, "\n".join(lines) + "\n")


def pivot(stats: dict, dims: list[int], preds: list[str], metric: str) -> list[str]:
    """A markdown table (rows pred, columns D) of ``mean ± sd [min, max] (n)``."""
    lines = ["| pred \\ D | " + " | ".join(str(d) for d in dims) + " |", "|---|" + "---|" * len(dims)]
    for p in preds:
        cells = [f"{s} [{fmt(s.lo)}, {fmt(s.hi)}] ({len(s.values)})"
                 for s in (stats[(d, p, metric)] for d in dims)]
        lines.append(f"| {p}-pred | " + " | ".join(cells) + " |")
    return lines


def markdown(results: list[dict], dims: list[int], preds: list[str], header: list[str], gap: float) -> str:
    stats = summarise(results)
    seeds = {d: sorted({r["cell"]["seed"] for r in results if r["cell"]["D"] == d}) for d in dims}
    seed_note = "; ".join(f"D={d}: {s}" for d, s in seeds.items())
    out = ["# Figure 2 toy: a 2-D spiral embedded in D dimensions", ""] + header + [""]
    out += ["## Verdict (rules fixed before the runs, computed from the numbers below)", ""]
    out += [f"- {line}" for line in verdict(stats, dims, preds, gap)]
    out += ["", "## Chamfer distance to the true spiral (2-D, after P^T; mean ± sd [min, max] (trainings) over "
                f"training seeds, {seed_note})", ""]
    out += pivot(stats, dims, preds, "chamfer")
    out += ["", "## Off-manifold residual ||x - P P^T x|| (mean over points; 0 up to rounding at D=2, where P is "
                "square)", ""]
    out += pivot(stats, dims, preds, "residual")
    return "\n".join(out) + "\n"
