"""The progress line of a grid run: i of N, elapsed, and the time left weighed by each cell's counted work.

Cells of one grid differ in cost (Table 2's 16x16/p2 cells train 64 tokens where the others train 16: about 4x),
so the time left is not the mean cell time times the cells left. A cell whose twins (its other seeds, or other
losses and predictions of one network: one ``work_key``) were timed takes their mean seconds; another one takes its
counted work (`jitlab grid plan`'s training and evaluation FLOPs) at the pace of all timed cells. The twins come
first because the FLOPs miss what does not scale with them: a p2 cell counts 4x a p4 cell's work and took 2.5-3x its
seconds on a 2-core CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

from jitlab.experiments.grid.spec import Cell
from jitlab.experiments.rundir import clock


def default_jobs(scale: str) -> int:
    """Cells a local run trains at a time unless told: one per CPU core at mini scale (a cell uses one), else 1."""
    return (os.cpu_count() or 1) if scale == "mini" else 1


def cell_work(cell: Cell) -> float:
    """The cell's training and evaluation FLOPs as `jitlab grid plan` counts them (NaN: not countable)."""
    from jitlab.experiments.grid.plan import cell_cost

    try:
        cost = cell_cost(cell, 1.0, 1.0)  # at 1 TFLOP/s the hours are proportional to the FLOPs
    except Exception:  # noqa: BLE001  (a backbone the meta device cannot build: the mean of the others stands in)
        return math.nan
    return (cost.train_gpu_hours + cost.eval_gpu_hours) * 3600e12


def work_key(cell: Cell) -> str:
    """What a cell's work depends on (the network, trainer, data and evaluation): seeds of one cell share it."""
    config = cell.config
    return json.dumps([(config.get("model") or {}).get("net"), config.get("trainer"), config.get("data"), cell.eval],
                      sort_keys=True, default=str)


def cells_work(cells: list[Cell], work: Callable[[Cell], float] = cell_work) -> list[float]:
    """Each cell's work, counted once per ``work_key``; an uncountable cell weighs the mean of the others."""
    keys = [work_key(cell) for cell in cells]
    counted: dict[str, float] = {}
    for key, cell in zip(keys, cells):
        if key not in counted:
            counted[key] = work(cell)
    known = [w for w in counted.values() if not math.isnan(w)]
    fill = sum(known) / len(known) if known else 1.0
    return [fill if math.isnan(counted[key]) else counted[key] for key in keys]


def cell_time_left(keys: list[str], work: list[float], timed: dict[int, float], left: list[float]) -> float:
    """Seconds of cell time still to do: cell ``i`` has ``left[i]`` of its work to do and weighs ``work[i]``;
    ``timed`` maps the cells timed so far (at least one) to their seconds. See the module's docstring."""
    rate = sum(timed.values()) / sum(work[i] for i in timed)  # seconds per unit of work
    twins: dict[str, list[float]] = {}
    for i, seconds in timed.items():
        twins.setdefault(keys[i], []).append(seconds)
    return sum(fraction * (sum(twins[key]) / len(twins[key]) if key in twins else rate * w)
               for key, w, fraction in zip(keys, work, left))


class Progress:
    """One line per finished cell; the estimate of the time left on ``jobs`` parallel processes."""

    def __init__(self, cells: list[Cell], jobs: int, work: Callable[[Cell], float] = cell_work):
        self.work, self.keys = cells_work(cells, work), [work_key(cell) for cell in cells]
        self.index = {id(cell): i for i, cell in enumerate(cells)}
        self.jobs, self.started = max(jobs, 1), time.time()
        self.finished: set[int] = set()
        self.timed: dict[int, float] = {}

    def line(self, cell: Cell, status: str, summary: str, seconds: float) -> str:
        """Record ``cell`` finished (``seconds`` of its own; a skipped cell took none) and say where the run is."""
        i = self.index[id(cell)]
        self.finished.add(i)
        if status != "skipped":
            self.timed[i] = seconds
        left = [0.0 if j in self.finished else 1.0 for j in range(len(self.work))]
        if len(self.finished) == len(self.work):
            pace = "nothing left"
        elif not self.timed:  # only skipped cells so far: no pace to go by
            pace = "time left unknown until a cell is timed"
        else:
            pace = f"~{clock(cell_time_left(self.keys, self.work, self.timed, left) / self.jobs)} left"
        return (f"[cell {len(self.finished)}/{len(self.work)}] {cell.grid} {cell.scale} {cell.id}: {status} "
                f"({summary}) | elapsed {clock(time.time() - self.started)}, {pace}")
