"""The scalars a cell's training logged: ``CELL/lightning_logs/version_*/events.out.tfevents.*``.

Each start of a training (resumed, rerun) writes a new ``version_N``: its points replace every older point at or
after its first step, older points before it are kept (a resumed cell keeps the curve of its first attempt).
"""

from __future__ import annotations

import math
from pathlib import Path

LOG_DIR = "lightning_logs"


def version_dirs(cell_dir: Path) -> list[Path]:
    """``CELL/lightning_logs/version_N`` with an event file, oldest (lowest N) first."""
    found = []
    for path in (Path(cell_dir) / LOG_DIR).glob("version_*"):
        number = path.name.removeprefix("version_")
        if path.is_dir() and number.isdigit() and any(path.glob("events.out.tfevents.*")):
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def log_source(cell_dir: Path, result: dict | None) -> Path:
    """The directory holding a cell's training logs: its own, or, for a cell that reused another grid's identical
    run (``reused_from`` in its result.json, no logs of its own), that run's in the same runs directory.

    ``reused_from`` is the path the runner saw (``RUNS/GRID/SCALE/CELL``); its last three parts are looked up beside
    this cell, so a runs directory that moved (kept under reports/runs) still finds it.
    """
    twin = (result or {}).get("reused_from")
    if not twin or version_dirs(cell_dir) or len(Path(twin).parts) < 3:
        return Path(cell_dir)
    beside = Path(cell_dir).parents[2].joinpath(*Path(twin).parts[-3:])
    return beside if version_dirs(beside) else Path(cell_dir)


def scalars(cell_dir: Path, tag: str) -> list[tuple[int, float]]:
    """The (step, value) points of ``tag`` over the cell's trainings, by step (the newest version wins where
    versions overlap); [] when no version logged it. Non-finite values are kept (a diverging training)."""
    # tensorboard (a dependency) reads its own event files; size_guidance 0 keeps every point, not a sample
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    merged: list[tuple[int, float]] = []
    for version in version_dirs(cell_dir):
        events = EventAccumulator(str(version), size_guidance={SCALARS: 0})
        events.Reload()
        logged = events.Scalars(tag) if tag in events.Tags().get("scalars", []) else []
        points = sorted({int(e.step): float(e.value) for e in logged}.items())  # a step logged twice: the later
        if points:
            merged = [p for p in merged if p[0] < points[0][0]] + points
    return merged


def last_value(points: list[tuple[int, float]]) -> tuple[int, float]:
    """The last logged (step, value); (-1, nan) for no points."""
    return points[-1] if points else (-1, math.nan)
