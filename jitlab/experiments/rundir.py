"""The run-directory format: what a finished grid cell leaves on disk, and how it is read back.

The grid writes run directories, the reports read them; both import this module instead of each other. One
directory per cell, ``RUNS/NAME/SCALE/CELL``::

    result.json           the cell's outcome: status (done | failed | diverged), the best point's rows
    metrics.json          every point `jitlab eval` measured and the one it named best (lowest Frechet distance)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jitlab.fitview import FitView
from jitlab.rows import Point, is_frechet

if TYPE_CHECKING:
    from jitlab.experiments.grid.spec import Cell

FINISHED = ("done", "diverged")  # a cell with one of these results (of its settings: is_finished) is not run again


def cell_dir(runs: Path, cell: Cell) -> Path:
    return Path(runs) / cell.grid / cell.scale / cell.id


def is_finished(result: dict[str, Any] | None, cell: Cell) -> bool:
    """The one test of "this cell needs no more work" (runner, SLURM, preflight): its result is done or diverged,
    of this cell's ``config_hash``, and a done one was scored at the step its training ends at (``max_steps``)."""
    if result is None or result.get("status") not in FINISHED or result.get("config_hash") != cell.config_hash:
        return False
    return not short_of_target(result, cell.config)


def is_stale(result: dict[str, Any] | None, cell: Cell) -> bool:
    """What a report flags: a result of other settings than the grid file's now, or one scored short of its
    training's last step; results that predate the recorded hash or step are not judged by them."""
    if result is None:
        return False
    if result.get("config_hash") not in (None, cell.config_hash):
        return True
    return result.get("step") is not None and short_of_target(result, cell.config)


def short_of_target(result: dict[str, Any], config: dict[str, Any]) -> bool:
    """A done result scored at another step than its training ends at (the checkpoint of an interruption)."""
    target = FitView.of(config).max_steps
    return result.get("status") == "done" and target is not None and result.get("step") != target


def read_result(directory: Path) -> dict[str, Any] | None:
    """result.json of a cell directory; None when absent, unreadable or not a JSON object."""
    try:
        payload = json.loads((Path(directory) / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def best_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of a metrics.json's best point: its Frechet distance and any other metric measured with it."""
    payload = json.loads(Path(path).read_text())
    best = payload.get("best")
    return [] if best is None else [r for r in payload["rows"] if Point.of(r) == Point.of(best)]


def primary_index(rows: list[dict]) -> int:
    """The row of a point a cell is judged by: its (first) Frechet distance, else its first row."""
    return next((i for i, row in enumerate(rows) if is_frechet(row.get("metric"))), 0)


def stats_name(row: dict) -> str | None:
    """The file name of the reference statistics a row was scored against (it carries the classifier's key and
    weights digest, so it identifies them wherever the cache is), or None."""
    return Path(row["reference"]).name if row.get("reference") else None


def clock(seconds: float) -> str:
    """A duration as ``12m05s``, or ``3h07m`` from an hour on (rounded to the second)."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
