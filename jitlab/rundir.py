"""The run-directory format: what a finished grid cell leaves on disk, and how it is read back.

The experiments layer's one shared format: the grid (``jitlab.grid``) writes run directories, the
reports (``jitlab.report``) read them, and both import this module instead of each other. One
directory per cell, ``RUNS/NAME/SCALE/CELL``::

    result.json           the cell's outcome: status (done | failed | diverged), the best point's rows
    metrics.json          every point `jitlab eval` measured and the one it named best (lowest Frechet distance)
    metrics-seedK.json    the same evaluation under sampling seed K (`jitlab grid seeds`)

A cell that reused another grid's identical run records ``reused_from``: its checkpoint and seed
evaluations are in that directory. Durations in progress lines and reports are printed by ``clock``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jitlab.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from jitlab.grid.spec import Cell

FINISHED = ("done", "diverged")  # a cell with one of these results is not run again
# the settings that make two rows of a metrics.json one sweep point (its FD, its IS, ...)
POINT_KEYS = ("ema", "cfg_scale", "cfg_interval", "sampler", "steps", "seed", "n_samples", "step")


def cell_dir(runs: Path, cell: Cell) -> Path:
    return Path(runs) / cell.grid / cell.scale / cell.id


def read_result(directory: Path) -> dict[str, Any] | None:
    """result.json of a cell directory; None when absent or unreadable (a cell still running has none; a
    hand-edited file that is no JSON object is not trusted)."""
    try:
        payload = json.loads((Path(directory) / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


# -- the rows of an evaluation ------------------------------------------------------------------

def is_frechet(metric: Any) -> bool:
    """FID-50K, FD-ref-500, ...: the Frechet distances (lower is better)."""
    return isinstance(metric, str) and metric.startswith(("FID", "FD"))


def best_point(path: Path) -> dict[str, Any] | None:
    """The row `jitlab eval` named best in a metrics.json (metric, value, reference statistics, ...), or None."""
    return json.loads(Path(path).read_text()).get("best")


def best_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of a metrics.json's best point: its Frechet distance and any other metric measured with it."""
    payload = json.loads(Path(path).read_text())
    best = payload.get("best")
    if best is None:
        return []
    return [r for r in payload["rows"] if all(r.get(k) == best.get(k) for k in POINT_KEYS)]


def primary_index(rows: list[dict]) -> int:
    """The row of a point a cell is judged by: its (first) Frechet distance, else its first row."""
    for i, row in enumerate(rows):
        if is_frechet(row.get("metric")):
            return i
    return 0


def stats_name(row: dict) -> str | None:
    """The name of the reference statistics a metric row was scored against: it carries the classifier's key and
    weights digest, so it identifies them wherever the cache folder is (None when the row names none)."""
    return Path(row["reference"]).name if row.get("reference") else None


# -- evaluations under other sampling seeds (`jitlab grid seeds`) ---------------------------------

def seed_metrics_path(directory: Path, seed: int) -> Path:
    """Where the evaluation under ``seed`` goes; seed 0 is the grid's own ``metrics.json``."""
    return directory / ("metrics.json" if seed == 0 else f"metrics-seed{seed}.json")


def source_directory(directory: Path) -> Path | None:
    """The directory holding the cell's checkpoint (another grid's, for a reused run); None if not done."""
    result = read_result(directory)
    if result is None or result.get("status") != "done":
        return None
    return Path(result["reused_from"]) if "reused_from" in result else directory


def seeds_on_disk(cells: list[Cell], runs: Path) -> list[int]:
    """0 and every other seed some done cell of these has been evaluated under."""
    found = set()
    for cell in cells:
        src = source_directory(cell_dir(runs, cell))
        for path in src.glob("metrics-seed*.json") if src is not None else []:
            found.add(int(path.stem.removeprefix("metrics-seed")))
    return [0, *sorted(found - {0})]


def collect_seeds(cells: list[Cell], runs: Path, seeds: list[int]) -> pd.DataFrame:
    """One row per done cell and seed with a written evaluation: grid, scale, cell, seed, metric, value.

    Every seed of a cell must have been scored against the same reference statistics as its seed 0 (the same
    reference classifier's features): a seed scored in another feature space would show as spread.
    """
    import pandas as pd  # here for start-up time: the runner and `jitlab grid` import this module, pandas takes a second

    rows = []
    for cell in cells:
        src = source_directory(cell_dir(runs, cell))
        first = None
        for seed in seeds if src is not None else []:
            path = seed_metrics_path(src, seed)
            best = best_point(path) if path.exists() else None
            if best is None:
                continue
            first = first or best
            if (stats_name(best), best["metric"]) != (stats_name(first), first["metric"]):
                raise ConfigError(str(path), f"scored {best['metric']} against {best.get('reference')}, but seed "
                                             f"{first.get('seed')} {first['metric']} against {first.get('reference')} "
                                             "(another reference classifier or metric); delete it to evaluate it again")
            rows.append({"grid": cell.grid, "scale": cell.scale, "cell": cell.id, "seed": seed,
                         "metric": best["metric"], "value": float(best["value"])})
    return pd.DataFrame(rows, columns=["grid", "scale", "cell", "seed", "metric", "value"])


def spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the seeds' mean, sample sd and (max - min) / mean, for cells with at least two seeds."""
    stats = frame.groupby("cell", sort=False)["value"].agg(["count", "mean", "std", "min", "max"])
    stats = stats[stats["count"] >= 2]
    stats["rel_sd"] = stats["std"] / stats["mean"]
    stats["rel_range"] = (stats["max"] - stats["min"]) / stats["mean"]
    return stats


# -- durations ------------------------------------------------------------------------------------

def clock(seconds: float) -> str:
    """A duration as ``12m05s``, or ``3h07m`` from an hour on (rounded to the second)."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
