"""Read a grid's run directories (``RUNS/NAME/SCALE/CELL/result.json``) into one tidy table.

One row per cell, metric and training seed; a training without a value (failed, diverged, not run) keeps one
row with its status, so nothing is dropped silently. ``CELL_seed-K`` holds the cell trained under seed K > 0
(the grid file's ``train_seeds`` and any other on disk): the same ``cell``, ``train_seed`` K. The paper's value
sits only on a cell's Frechet-distance row (the paper's number is a FID, not comparable with our IS).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from jitlab.experiments.grid.spec import Cell, GridSpec
from jitlab.rows import REPORT_FIELDS, is_frechet
from jitlab.experiments.rundir import is_stale, primary_index, read_result

NOT_RUN = "not run"
SEED_SUFFIX = "_seed-"  # CELL_seed-K: the cell trained under training seed K > 0
# the columns every report table has, whatever the grid's axes (empty when the grid lacks the axis)
ALWAYS_AXES = ("setting", "pred", "loss")


@dataclass
class Collected:
    """Everything a report is made of: the spec's cells at one scale and what their run directories hold."""

    spec: GridSpec
    scale: str
    runs: Path
    cells: list[Cell]  # every training: seed 0 of each cell, then its other seeds
    results: dict[str, dict[str, Any] | None]  # cell id (CELL or CELL_seed-K) -> result.json (None: not run yet)
    frame: pd.DataFrame  # tidy: one row per cell, metric and training seed
    stale: list[str] = field(default_factory=list)  # cells run with a config other than the grid file's now
    strays: list[str] = field(default_factory=list)  # run directories of cells the grid no longer has

    @property
    def directory(self) -> Path:
        return self.runs / self.spec.name / self.scale

    @property
    def plain_cells(self) -> list[Cell]:
        """One cell per set of labels (its training seed 0): the cells of the grid's tables."""
        return [cell for cell in self.cells if train_seed(cell) == 0]

    @property
    def train_seeds(self) -> int:
        """The most training seeds any cell has."""
        return max((train_seed(cell) + 1 for cell in self.cells), default=1)


def cell_key(cell: Cell) -> str:
    """The id of a cell's labels (its seed-0 directory): what every training seed of the cell shares."""
    return "_".join(f"{axis}-{value}" for axis, value in cell.labels.items())


def train_seed(cell: Cell) -> int:
    return int(getattr(cell, "train_seed", 0) or 0)


def train_seeds_on_disk(base: Path, keys: set[str]) -> set[tuple[str, int]]:
    """(cell key, K) of every ``KEY_seed-K`` directory (K >= 1) under ``base`` whose key is one of ``keys``."""
    found = set()
    for path in base.iterdir() if base.is_dir() else []:
        key, _, seed = path.name.rpartition(SEED_SUFFIX)
        if path.is_dir() and key in keys and seed.isdigit() and int(seed) >= 1:
            found.add((key, int(seed)))
    return found


def grid_cells(spec: GridSpec, scale: str, base: Path) -> list[Cell]:
    """Every training of every cell to report: the grid file's training seeds, and any other seed on disk;
    ordered cell by cell, each cell's seeds in order."""
    plain = spec.cells(scale, train_seeds=1)
    order = {cell_key(c): i for i, c in enumerate(plain)}
    on_disk = train_seeds_on_disk(base, set(order))
    wanted = spec.train_seeds(scale)
    top = max([wanted, *(seed + 1 for _, seed in on_disk)])
    cells = plain if top == 1 else spec.cells(scale, train_seeds=top)
    cells = [c for c in cells if train_seed(c) < wanted or (cell_key(c), train_seed(c)) in on_disk]
    return sorted(cells, key=lambda c: (order[cell_key(c)], train_seed(c)))


def collect(spec: GridSpec, scale: str, runs: Path) -> Collected:
    runs = Path(runs)
    base = runs / spec.name / scale
    cells = grid_cells(spec, scale, base)
    results = {cell.id: read_result(base / cell.id) for cell in cells}
    stale = [cell.id for cell in cells if is_stale(results[cell.id], cell)]
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
        status = NOT_RUN if result is None else str(result.get("status") or "unknown")
        got = result or {}
        base = {"grid": spec.name, "scale": cell.scale, "cell": cell_key(cell), "train_seed": train_seed(cell),
                **{axis: cell.labels[axis] for axis in axis_names}, **dict.fromkeys(extra_axes), "status": status,
                "stale": cell.id in (stale or []), "train_seconds": to_float(got.get("train_seconds")),
                "seconds": to_float(got.get("seconds")), "finished_at": got.get("finished_at"),
                "error": got.get("error"), "reused_from": got.get("reused_from")}
        # a diverged or failed cell has no value to report, whatever partial rows it kept
        rows = [r for r in got.get("rows") or [] if isinstance(r, dict)] if status == "done" else []
        if not rows:
            records.append({**base, "metric": None, "value": math.nan, "paper_metric": cell.paper_metric,
                            "paper_value": to_float(cell.paper_value), "step": to_float(got.get("step"))})
            continue
        primary = primary_index(rows)
        for i, row in enumerate(rows):
            record = {**base, "metric": row.get("metric"), "value": to_float(row.get("value")),
                      "paper_metric": cell.paper_metric if i == primary else None,
                      "paper_value": to_float(cell.paper_value) if i == primary else math.nan}
            for key in REPORT_FIELDS:
                value = row.get(key)
                record[key] = json.dumps(value) if isinstance(value, (list, tuple)) else value
            records.append(record)
    columns = ["grid", "scale", "cell", "train_seed", *axis_names, *extra_axes, "status", "metric", "value",
               "paper_metric", "paper_value", *REPORT_FIELDS, "train_seconds", "seconds", "finished_at", "stale",
               "reused_from", "error"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in ("value", "paper_value", "train_seconds", "seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def primary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell and training seed: its Frechet distance (or its only row when it has no value), in the
    frame's order; a done cell that measured no Frechet distance keeps its first row (so it is not lost)."""
    frame = frame.reset_index(drop=True)  # positions: the order restored below
    other = ~(frame["metric"].map(is_frechet) | frame["metric"].isna())  # False first: a group's preferred row
    first = frame.loc[other.sort_values(kind="stable").index]
    first = first.drop_duplicates([k for k in ("cell", "train_seed") if k in frame], keep="first")
    return first.sort_index(kind="stable").reset_index(drop=True)


def to_float(value: Any) -> float:
    """float(value), nan for None or a non-number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
