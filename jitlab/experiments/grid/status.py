"""Where a grid's runs stand (`jitlab grid status`): each cell's state, read from its run directory, and the time
left at the pace of the cells finished there: their twins' seconds, else each cell's counted work (``grid.progress``).

A cell is, checked in this order: ``other settings`` (its directory holds a run of other settings, which the runner
refuses), ``done`` / ``diverged`` (finished at its last step), ``queued`` (its SLURM job waits for nodes),
``running`` (a live runner holds its lock, or its SLURM job runs), ``failed``, ``stale`` (scored short of its last
step: it is trained on and rescored), ``interrupted`` (a checkpoint and no result: it resumes) or ``not started``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from jitlab.errors import one_line
from jitlab.experiments.grid.progress import cell_time_left, cell_work, cells_work, work_key
from jitlab.experiments.grid.runner import other_settings
from jitlab.experiments.grid.slurm import cell_activity
from jitlab.experiments.grid.spec import Cell
from jitlab.experiments.rundir import FINISHED, cell_dir, clock, is_finished, primary_index, read_result
from jitlab.fitview import FitView

STATES = ("done", "diverged", "queued", "running", "interrupted", "stale", "failed", "not started", "other settings")


@dataclass
class CellStatus:
    cell: Cell
    state: str  # one of STATES
    detail: str
    step: int | None = None  # the step a result was scored at, else the newest checkpoint's
    seconds: float | None = None  # a finished cell's own time here (None when it reused another grid's run)
    left: float = 1.0  # the fraction of the cell's work still to do

    def as_dict(self) -> dict[str, Any]:
        return {"cell": self.cell.id, "state": self.state, "detail": self.detail, "step": self.step,
                "seconds": self.seconds}


def checkpoint_step(directory: Path) -> int | None:
    """The step of the newest readable checkpoint of a cell's training (memory-mapped: no tensor is read)."""
    from jitlab.train.resume import newest_checkpoint

    path, ckpt, _ = newest_checkpoint(directory, directory / "checkpoints")
    return None if path is None else ckpt.get("global_step")


def finished_status(cell: Cell, result: dict[str, Any]) -> CellStatus:
    rows = result.get("rows") or []
    row = rows[primary_index(rows)] if rows else {}
    scored = f"{row.get('metric')} {row['value']:.4g}" if isinstance(row.get("value"), (int, float)) else "no rows"
    twin = result.get("reused_from")
    detail = f"{scored} at step {result.get('step')}" + (f" (the run of {twin})" if twin else "")
    if result["status"] == "diverged":
        detail = one_line(result.get("error") or "diverged", 160)
    return CellStatus(cell, result["status"], detail, result.get("step"),
                      None if twin else result.get("seconds"), left=0.0)


def cell_status(cell: Cell, runs: Path, released: bool = False) -> CellStatus:
    """What ``cell``'s run directory under ``runs`` says of it (nothing is written); ``released``: runs of the
    release's converted weights (`grid run --released`), which a directory of trainings is not, and vice versa."""
    directory = cell_dir(runs, cell)
    other = other_settings(cell, directory, released)
    if other is not None:
        return CellStatus(cell, "other settings", other, left=0.0)
    result = read_result(directory)
    if is_finished(result, cell):
        return finished_status(cell, result)
    target = FitView.of(cell.config).max_steps
    step = checkpoint_step(directory) if directory.is_dir() else None
    at = "no checkpoint yet" if step is None else f"step {step} of {target}"
    left = 1.0 - (step or 0) / target if target else 1.0
    activity = cell_activity(directory)
    status = (result or {}).get("status")
    if activity is not None:
        return CellStatus(cell, activity[0], f"{at}; {activity[1]}", step, left=left)
    if status == "failed":
        error = one_line(result.get("error") or "no error recorded", 160)
        return CellStatus(cell, "failed", f"{error} (runs again)", step, left=left)
    if status == "done":
        return CellStatus(cell, "stale", f"scored at step {result.get('step')} of {target}; trains on and is rescored",
                          step, left=left)
    if step is not None:
        return CellStatus(cell, "interrupted", f"checkpoint at {at}; resumes", step, left=left)
    return CellStatus(cell, "not started", "", left=left)


def seconds_left(statuses: list[CellStatus], work: Callable[[Cell], float] = cell_work) -> tuple[float | None, int]:
    """(seconds of work left, one cell at a time, at the pace of the cells finished here; None when none was
    timed), and how many cells that pace was measured on: a cell takes its timed twins' mean seconds, else its
    counted work at the pace of all timed cells (``progress.cell_time_left``)."""
    cells = [s.cell for s in statuses]
    timed = {i: s.seconds for i, s in enumerate(statuses) if s.state in FINISHED and s.seconds}
    if not timed:
        return None, 0
    keys, left = [work_key(cell) for cell in cells], [s.left for s in statuses]
    return cell_time_left(keys, cells_work(cells, work), timed, left), len(timed)


def state_counts(statuses: list[CellStatus]) -> dict[str, int]:
    """How many cells are in each of STATES (zeros included)."""
    return {state: sum(s.state == state for s in statuses) for state in STATES}


def status_lines(statuses: list[CellStatus], left: float | None, timed: int, jobs: int) -> list[str]:
    """A line per cell (state, cell id, detail), then the counts of each state and the time left on ``jobs`` cells
    at a time (the cells' own times were measured as they ran, so ``jobs`` at once divide the sum)."""
    width = max((len(s.cell.id) for s in statuses), default=4)
    lines = [f"{s.state:<14} {s.cell.id:<{width}}  {s.detail}".rstrip() for s in statuses]
    counts = [f"{n} {state}" for state, n in state_counts(statuses).items() if n]
    pace = ("nothing left to run" if left == 0 else "time left unknown (no cell timed here yet)" if left is None
            else f"~{clock(left / jobs)} left at {jobs} cell(s) at a time ({clock(left)} of cell time at the pace "
                 f"of the {timed} cell(s) finished here: each cell at its twins' time, else by its counted work)")
    lines.append(f"# {len(statuses)} cells: {', '.join(counts) or 'none'}; {pace}")
    return lines
