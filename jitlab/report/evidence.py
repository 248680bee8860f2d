"""What a verdict weighs: each cell's value over its training seeds, and the margin a difference must exceed.

A cell trained under several seeds has several result directories (``CELL``, ``CELL_seed-1``, ...) with
the same labels; ``cell_stats`` folds them into one ``Stat`` (mean, sd, number of trainings). A diverged
training makes the cell worse than any number (mean = inf); a failed or not-run one is missing evidence.

``Margin`` decides whether a difference counts. With repeated trainings it is measured: the cells'
relative sds pooled over the grid (combined with the sampling-seed spread when measured), and a
difference is real when it exceeds 2 standard errors of the difference. With one training per cell
there is nothing to measure it from, so the rule's declared margin is used, and the verdict says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from jitlab.report.collect import primary_frame

Move = Literal["lower", "tie", "higher"]
Z = 2.0  # a difference is real beyond this many standard errors of the difference


@dataclass(frozen=True)
class Stat:
    """One cell over its training seeds (lower is better)."""

    cell: str
    labels: dict[str, str]
    mean: float  # inf: a training diverged; nan: no training has a value
    sd: float  # sample sd over the trainings (nan with fewer than two finite values)
    n: int  # trainings with evidence (a value, or diverged)
    missing: int = 0  # trainings without a result (failed, not run)
    status: str = "done"  # done | diverged | the status of a cell without evidence
    values: tuple[float, ...] = ()  # every training's value in training-seed order (inf diverged, nan none)
    seeds: tuple[int, ...] = ()
    metric: str | None = None
    space: str | None = None  # the feature space it was scored in
    paper: float = math.nan
    stale: bool = False

    @property
    def known(self) -> bool:
        return not math.isnan(self.mean)


def fmt_sd(sd: float) -> str:
    """An sd to two significant digits (0.76, 2.1, 13), '-' when there is none."""
    if not math.isfinite(sd):
        return "-"
    return f"{sd:.0f}" if abs(sd) >= 10 else f"{sd:.2g}"


def stat(labels: dict[str, str], values: list[float], **extra) -> Stat:
    """A Stat from per-training values (inf for a diverged training, nan for one without a result)."""
    seen = [v for v in values if not math.isnan(v)]
    finite = [v for v in seen if math.isfinite(v)]
    mean = math.inf if len(finite) < len(seen) else (sum(finite) / len(finite) if finite else math.nan)
    sd = pd.Series(finite).std() if len(finite) >= 2 and len(finite) == len(seen) else math.nan
    status = extra.pop("status", None) or ("diverged" if mean == math.inf else "done" if seen else "not run")
    cell = extra.pop("cell", None) or "_".join(f"{k}-{v}" for k, v in labels.items())
    return Stat(cell, dict(labels), mean, float(sd), len(seen), len(values) - len(seen), status, tuple(values),
                **extra)


def cell_stats(frame: pd.DataFrame, axes: list[str]) -> list[Stat]:
    """One Stat per cell (its primary metric over every training seed), in the frame's cell order."""
    if frame.empty:
        return []
    primary = primary_frame(frame)
    if "train_seed" not in primary:
        primary = primary.assign(train_seed=0)
    out = []
    for cell, rows in primary.groupby("cell", sort=False):
        rows = rows.sort_values("train_seed", kind="stable")
        values = [_value(row) for _, row in rows.iterrows()]
        first = rows.iloc[0]
        lacking = [str(s) for s, v in zip(rows["status"], values) if math.isnan(v)]
        metrics = [m for m in rows["metric"] if isinstance(m, str)]
        spaces = [s for s in rows.get("feature_space", pd.Series(dtype=object)) if isinstance(s, str)]
        status = None if len(lacking) < len(values) else lacking[0]
        out.append(stat({axis: str(first[axis]) for axis in axes if axis in rows}, values, cell=str(cell),
                        status=status, seeds=tuple(int(s) for s in rows["train_seed"]),
                        metric=metrics[0] if metrics else None, space=spaces[0] if spaces else None,
                        paper=_float(first.get("paper_value")), stale=bool(rows.get("stale", pd.Series([])).any())))
    return out


def _value(row) -> float:
    if row["status"] == "diverged":
        return math.inf
    value = _float(row["value"])
    return value if row["status"] == "done" and math.isfinite(value) else math.nan


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def pooled_rel_sd(groups: list[list[float]]) -> tuple[float | None, int]:
    """sqrt(sum (k - 1) (sd / mean)^2 / sum (k - 1)) over the groups with >= 2 finite positive values: the
    spread of one value relative to its mean, pooled over cells; None when no group has two values."""
    squares, dof, used = 0.0, 0, 0
    for group in groups:
        finite = [v for v in group if math.isfinite(v) and v > 0]
        if len(finite) < 2:
            continue
        series = pd.Series(finite)
        squares += (len(finite) - 1) * float(series.std() / series.mean()) ** 2
        dof += len(finite) - 1
        used += 1
    return (math.sqrt(squares / dof), used) if dof else (None, 0)


@dataclass(frozen=True)
class Spread:
    """The measured spreads of a grid's values, relative to the mean (None: not measured)."""

    train: float | None = None  # between trainings (training seeds), pooled over cells
    train_cells: int = 0
    sampling: float | None = None  # between sampling seeds of one checkpoint (`jitlab grid seeds`)
    sampling_cells: int = 0
    sampling_source: str = ""


def measure_spread(stats: list[Stat], sampling: pd.DataFrame | None = None, source: str = "") -> Spread:
    """The training-seed spread of ``stats`` and the sampling-seed spread of ``sampling`` (cell, value rows)."""
    train, train_cells = pooled_rel_sd([list(s.values) for s in stats])
    samp, samp_cells = (None, 0)
    if sampling is not None and not sampling.empty:
        samp, samp_cells = pooled_rel_sd([list(g["value"]) for _, g in sampling.groupby("cell", sort=False)])
    return Spread(train, train_cells, samp, samp_cells, source if samp is not None else "")


@dataclass(frozen=True)
class Margin:
    """Whether ``lo`` is lower than ``factor`` x ``hi`` by more than chance: measured or declared."""

    declared: float
    spread: Spread = Spread()

    @property
    def measured(self) -> bool:
        return self.spread.train is not None

    @property
    def rel_sd(self) -> float:
        """One training's sd relative to its mean: training-seed and sampling-seed spread in quadrature."""
        return math.hypot(self.spread.train or 0.0, self.spread.sampling or 0.0)

    def threshold(self, lo: Stat, hi: Stat, factor: float = 1.0) -> float:
        if not self.measured:
            return self.declared * factor * hi.mean
        s = self.rel_sd
        return Z * math.sqrt((s * lo.mean) ** 2 / max(lo.n, 1) + (factor * s * hi.mean) ** 2 / max(hi.n, 1))

    def compare(self, lo: Stat, hi: Stat, factor: float = 1.0) -> Move:
        """"lower": lo < factor x hi beyond the margin; "higher": above it beyond the margin; else "tie".

        A diverged lo is never lower (it did not work); a diverged hi is above any number."""
        if lo.mean == math.inf:
            return "higher"
        if hi.mean == math.inf:
            return "lower"
        gap = factor * hi.mean - lo.mean
        limit = self.threshold(lo, hi, factor)
        return "lower" if gap > limit else "higher" if -gap > limit else "tie"

    def describe(self) -> str:
        spread = self.spread
        sampling = (f"sampling-seed sd {spread.sampling:.1%} ({spread.sampling_cells} cell(s), "
                    f"{spread.sampling_source})" if spread.sampling is not None else None)
        if self.measured:
            text = (f"{Z:g} standard errors of the difference from the measured spread: training-seed sd "
                    f"{spread.train:.1%} of the mean, pooled over {spread.train_cells} cell(s) with >= 2 trainings")
            return text + (f", combined with the {sampling}" if sampling else "; sampling seeds not measured")
        text = (f"the rule's declared {self.declared:.0%} (one training per cell: the margin is not measured from "
                f"trainings")
        return text + (f"; for scale, {sampling} alone)" if sampling else ")")
