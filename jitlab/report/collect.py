"""Read a grid's run directories (``RUNS/NAME/SCALE/CELL/result.json``) into one tidy table.

One row per cell and metric (a cell with an FD and an IS has two rows); a cell without a value
(failed, diverged, not run yet) keeps one row with its status and an empty value, so nothing is
dropped silently. The paper's value sits only on the Frechet-distance row of a cell (the paper's
number is a FID; putting it beside our IS would compare different things).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from jitlab.grid.spec import Cell, GridSpec

NOT_RUN = "not run"
# the columns every report table has, whatever the grid's axes (empty when the grid lacks the axis)
ALWAYS_AXES = ("setting", "pred", "loss")
ROW_FIELDS = ("n_samples", "seed", "step", "sampler", "steps", "nfe", "cfg_scale", "cfg_interval", "ema",
              "feature_space", "feature_accuracy")


def is_frechet(metric: Any) -> bool:
    """FID-50K, FD-ref-500, ...: the Frechet distances (lower is better)."""
    return isinstance(metric, str) and metric.startswith(("FID", "FD"))


@dataclass
class Collected:
    """Everything a report is made of: the spec's cells at one scale and what their run directories hold."""

    spec: GridSpec
    scale: str
    runs: Path
    cells: list[Cell]
    results: dict[str, dict[str, Any] | None]  # cell id -> result.json (None: not run yet)
    frame: pd.DataFrame  # tidy: one row per cell and metric
    stale: list[str] = field(default_factory=list)  # cells run with a config other than the grid file's now
    strays: list[str] = field(default_factory=list)  # run directories of cells the grid no longer has

    @property
    def directory(self) -> Path:
        return self.runs / self.spec.name / self.scale

    @property
    def n_results(self) -> int:
        return sum(r is not None for r in self.results.values())


def read_result(directory: Path) -> dict[str, Any] | None:
    """result.json of a cell directory; None when absent or unreadable (a cell still running has none)."""
    path = directory / "result.json"
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def collect(spec: GridSpec, scale: str, runs: Path) -> Collected:
    cells = spec.cells(scale)
    runs = Path(runs)
    base = runs / spec.name / scale
    results = {cell.id: read_result(base / cell.id) for cell in cells}
    stale = [cell.id for cell in cells
             if results[cell.id] is not None and results[cell.id].get("config_hash") not in (None, cell.config_hash)]
    known = {cell.id for cell in cells}
    strays = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in known) if base.is_dir() else []
    frame = tidy_frame(spec, cells, results, stale)
    return Collected(spec, scale, runs, cells, results, frame, stale, strays)


def tidy_frame(spec: GridSpec, cells: list[Cell], results: dict[str, dict | None],
               stale: list[str] | None = None) -> pd.DataFrame:
    axis_names = [axis.name for axis in spec.axes]
    extra_axes = [a for a in ALWAYS_AXES if a not in axis_names]
    records = []
    for cell in cells:
        result = results.get(cell.id)
        base: dict[str, Any] = {"grid": spec.name, "scale": cell.scale, "cell": cell.id}
        base.update({axis: cell.labels[axis] for axis in axis_names})
        base.update({axis: None for axis in extra_axes})
        status = NOT_RUN if result is None else str(result.get("status") or "unknown")
        base.update(status=status, stale=cell.id in (stale or []),
                    train_seconds=_number(result, "train_seconds"), seconds=_number(result, "seconds"),
                    finished_at=(result or {}).get("finished_at"), error=(result or {}).get("error"),
                    reused_from=(result or {}).get("reused_from"))
        rows = [r for r in (result or {}).get("rows") or [] if isinstance(r, dict)]
        if status != "done":
            rows = []  # a diverged or failed cell has no value to report, whatever partial rows it kept
        if not rows:
            records.append({**base, "metric": None, "value": math.nan, "paper_metric": cell.paper_metric,
                            "paper_value": _nan(cell.paper_value),
                            "step": _number(result, "step")})
            continue
        primary = primary_index(rows)
        for i, row in enumerate(rows):
            record = {**base, "metric": row.get("metric"), "value": _float(row.get("value")),
                      "paper_metric": cell.paper_metric if i == primary else None,
                      "paper_value": _nan(cell.paper_value) if i == primary else math.nan}
            for key in ROW_FIELDS:
                value = row.get(key)
                record[key] = json.dumps(value) if isinstance(value, (list, tuple)) else value
            records.append(record)
    columns = ["grid", "scale", "cell", *axis_names, *extra_axes, "status", "metric", "value", "paper_metric",
               "paper_value", *ROW_FIELDS, "train_seconds", "seconds", "finished_at", "stale", "reused_from", "error"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in ("value", "paper_value", "train_seconds", "seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def primary_index(rows: list[dict]) -> int:
    """The row a cell is judged by: its (first) Frechet distance, else its first row."""
    for i, row in enumerate(rows):
        if is_frechet(row.get("metric")):
            return i
    return 0


def primary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: its Frechet distance (or its only row when it has no value), in cell order."""
    keep = frame["metric"].map(is_frechet) | frame["metric"].isna()
    primary = frame[keep].drop_duplicates("cell", keep="first")
    # a done cell that measured no Frechet distance keeps its first row (so it is not lost)
    missing = frame[~frame["cell"].isin(primary["cell"])].drop_duplicates("cell", keep="first")
    out = pd.concat([primary, missing]) if len(missing) else primary
    order = {cell: i for i, cell in enumerate(dict.fromkeys(frame["cell"]))}
    return out.sort_values("cell", key=lambda s: s.map(order)).reset_index(drop=True)


def _number(result: dict | None, key: str) -> float | None:
    if result is None:
        return None
    return _float(result.get(key))


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)
