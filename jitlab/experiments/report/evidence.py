"""What a verdict weighs: each cell's value over its training seeds, and the margin a difference must exceed.

``cell_stats`` folds a cell's trainings (``CELL``, ``CELL_seed-1``, ...) into one ``Stat``: a diverged training
makes the cell worse than any number (mean = inf), a failed or not-run one is missing evidence. ``Margin``: with
repeated trainings a t test on the relative sds pooled over the rule's cells (``measure_spread``) at ``LEVEL``;
with one training per cell the rule's declared margin (no test, no level), and the verdict says so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from jitlab.experiments.report.collect import primary_frame, to_float

Move = Literal["lower", "tie", "higher"]
# The level of each claim, fixed before any rerun (issue 27): one-sided 2.5% in each direction (two-sided 95%:
# "reproduces" and "does not reproduce" each err at most 2.5% of the time under a null effect), the convention of
# the old 2 standard errors (z = 1.96), with the t quantile on the 2-3 trainings' dof (t(3) = 3.18, not 2).
LEVEL = 0.025


def t_quantile(dof: float, level: float = LEVEL) -> float:
    """The upper ``level`` quantile of Student's t with ``dof`` (possibly fractional) degrees of freedom."""
    from scipy.special import stdtrit  # lazy: scipy.special costs ~0.5 s to import, only reports need it

    return float(stdtrit(dof, 1.0 - level))


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
    cfg: tuple[float, ...] = ()  # the CFG scale of its best point per training, when the grid sweeps CFG

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
    sd = statistics.stdev(finite) if len(finite) >= 2 and len(finite) == len(seen) else math.nan
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
                        paper=to_float(first.get("paper_value")), stale=bool(rows.get("stale", pd.Series([])).any())))
    return out


def _value(row) -> float:
    if row["status"] == "diverged":
        return math.inf
    value = to_float(row["value"])
    return value if row["status"] == "done" and math.isfinite(value) else math.nan


@dataclass(frozen=True)
class Spread:
    """The spread between trainings of a rule's values relative to the mean, pooled over its cells (None: not
    measured)."""

    train: float | None = None
    train_cells: int = 0
    train_dof: int = 0  # sum over the pooled cells of (trainings - 1)


def measure_spread(stats: list[Stat]) -> Spread:
    """sqrt(sum (k - 1) (sd / mean)^2 / sum (k - 1)) over the cells of ``stats`` with >= 2 finite positive values
    (k of them): one training's spread relative to its mean, pooled over the cells a rule reads."""
    squares, dof, used = 0.0, 0, 0
    for s in stats:
        finite = [v for v in s.values if math.isfinite(v) and v > 0]
        if len(finite) >= 2:
            squares += (len(finite) - 1) * (statistics.stdev(finite) / statistics.fmean(finite)) ** 2
            dof += len(finite) - 1
            used += 1
    return Spread(math.sqrt(squares / dof), used, dof) if dof else Spread()


@dataclass(frozen=True)
class Margin:
    """Whether ``lo`` is lower than ``factor`` x ``hi`` by more than chance: a t test, or the declared margin."""

    declared: float
    spread: Spread = Spread()
    level: float = LEVEL

    @property
    def measured(self) -> bool:
        return self.spread.train is not None

    @property
    def dof(self) -> float:
        return float(self.spread.train_dof)

    def quantile(self, tests: int = 1) -> float:
        """t(dof) at the level (divided by ``tests``: Bonferroni over the cells a 'best of' may pick)."""
        return t_quantile(self.dof, self.level / max(tests, 1))

    def threshold(self, lo: Stat, hi: Stat, factor: float = 1.0, tests: int = 1) -> float:
        if not self.measured:
            return self.declared * factor * hi.mean
        s = self.spread.train  # one training's sd relative to its mean
        return self.quantile(tests) * math.sqrt((s * lo.mean) ** 2 / max(lo.n, 1)
                                                + (factor * s * hi.mean) ** 2 / max(hi.n, 1))

    def compare(self, lo: Stat, hi: Stat, factor: float = 1.0, tests: int = 1) -> Move:
        """"lower": lo < factor x hi beyond the margin; "higher": above it beyond the margin; else "tie". ``tests``:
        lo is the best of that many cells, so "lower" is tested at level / tests (Bonferroni: the best of several is
        below by chance more often than one); "higher" says every one of them is above (no correction). A diverged
        lo is never lower (it did not work); a diverged hi is above any number."""
        if lo.mean == math.inf:
            return "higher"
        if hi.mean == math.inf:
            return "lower"
        gap = factor * hi.mean - lo.mean
        return ("lower" if gap > self.threshold(lo, hi, factor, tests) else
                "higher" if -gap > self.threshold(lo, hi, factor) else "tie")

    def describe(self, tests: int = 1) -> str:
        """The margin in words: the test (t, degrees of freedom, level) and the spread it rests on."""
        spread = self.spread
        if self.measured:
            text = (f"one-sided t test at {self.level:.1%}: t({self.dof:.3g}) = {self.quantile():.3g} standard errors "
                    f"of the difference, from the training-seed sd {spread.train:.1%} of the mean pooled over the "
                    f"rule's {spread.train_cells} cell(s) with >= 2 trainings ({spread.train_dof} degrees of freedom"
                    "); sampling seeds not measured")
            if tests > 1:
                text += (f"; the best of {tests} cells is tested at {self.level:.1%} / {tests} (Bonferroni): "
                         f"t = {self.quantile(tests):.3g}")
            return text
        return (f"the rule's declared {self.declared:.0%} (one training per cell: the margin is not measured from "
                f"trainings, no t test)")
