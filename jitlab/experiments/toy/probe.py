"""The training length of the Figure 2 grid, fixed by a convergence criterion before any cell is trained.

The probe trains the D=2 x-pred cell (seed 0) at a constant lr, records its training loss at every step and stops
where the loss has stopped improving: after each window of ``WINDOW`` steps, if the window's mean loss is not lower
than the previous window's by more than ``MIN_IMPROVEMENT`` (a fraction), the length is the steps trained so far;
``MAX_STEPS`` caps it. Every cell then trains for that many steps with the usual (cosine) schedule. The criterion
reads only the probe's loss, never a Chamfer distance or any other cell: the answer cannot choose the length.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from typing import Sequence

import lightning as L

from jitlab.experiments.toy.cell import Cell, Settings, fit

# The constants of the criterion, fixed before the runs:
WINDOW = 500  # steps per window: the per-step loss of the probe cell varies by ~6.5% (sd/mean, measured at a
# constant lr), so a 500-step mean has a standard error of ~0.3% and a difference of two ~0.4%: a 2% drop is
# about 5 standard errors, a real improvement rather than the noise of the t and eps draws.
MIN_IMPROVEMENT = 0.02  # "stopped improving": the last window's mean is not 2% below the previous window's
MAX_STEPS = 5000  # the cap, from the budget: make fig2's probe + 24 trainings at the cap fit 30 minutes on 2 cores.
# Measured seconds per step with 2 one-thread workers: ~14 ms at D <= 16, ~29 ms at D = 512 on an idle machine (the
# 36 x 2,000-step run of 4989060 took 11m05s), 23.5 and 34.6 ms on a shared one (load 7.5); at 5,000 steps that is
# 5000 x (15 x 14 + 9 x 29) ms / 2 workers + the probe (~7-24 ms a step alone) ~ 20-21 min idle, ~30 min shared.
PROBE_SCHEDULE = "constant"  # a decaying lr would flatten the loss by the schedule, not by convergence
SAMPLING_FIELDS = ("samples", "sample_steps", "method")  # settings the probe does not depend on


def probe_cell(loss: str) -> Cell:
    """The cell whose loss fixes the length: D=2, x-prediction, seed 0 (every space should learn D=2)."""
    return Cell(D=2, pred="x", loss=loss, seed=0)


def window_means(losses: Sequence[float], window: int) -> list[float]:
    """Mean loss of each complete window of ``window`` steps."""
    return [statistics.fmean(losses[i:i + window]) for i in range(0, len(losses) - window + 1, window)]


def plateau_step(losses: Sequence[float], window: int = WINDOW, fraction: float = MIN_IMPROVEMENT) -> int | None:
    """The first window end ``k * window`` (k >= 2) where the mean loss of window k is not below
    ``(1 - fraction)`` times that of window k - 1; None if the loss still improves at every window."""
    means = window_means(losses, window)
    for k in range(1, len(means)):
        if means[k] > (1 - fraction) * means[k - 1]:
            return (k + 1) * window
    return None


class LossPlateau(L.Callback):
    """Records the training loss of every step and stops the fit where ``plateau_step`` fires.

    Hand-written because Lightning's EarlyStopping compares a logged metric with its best value by an absolute
    ``min_delta`` at epoch or validation ends; this criterion is relative and over windows of steps.
    """

    def __init__(self, window: int, fraction: float):
        self.window, self.fraction = window, fraction
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        if len(self.losses) % self.window == 0 and plateau_step(self.losses, self.window, self.fraction):
            trainer.should_stop = True


def probe_key(loss: str, settings: Settings, window: int, fraction: float, max_steps: int) -> dict:
    """Everything the probe's answer depends on (a cached probe is reused only if this matches)."""
    training = {k: v for k, v in asdict(settings).items() if k not in SAMPLING_FIELDS}
    training.update(steps=max_steps, schedule=PROBE_SCHEDULE)
    return {"cell": asdict(probe_cell(loss)), "settings": training, "window": window, "fraction": fraction}


def run_probe(loss: str, settings: Settings, window: int = WINDOW, fraction: float = MIN_IMPROVEMENT,
              max_steps: int = MAX_STEPS) -> dict:
    """Train the probe cell and return a JSON-ready result: its chosen length, its loss curve, its key."""
    start = time.perf_counter()
    plateau = LossPlateau(window, fraction)
    fit(probe_cell(loss), settings, schedule=PROBE_SCHEDULE, max_steps=max_steps, callbacks=[plateau])
    stop = plateau_step(plateau.losses, window, fraction)
    return {
        "probe": probe_key(loss, settings, window, fraction, max_steps),
        "steps": stop or len(plateau.losses),
        "converged": stop is not None,
        "max_steps": max_steps,
        "window_means": [round(m, 5) for m in window_means(plateau.losses, window)],
        "seconds": round(time.perf_counter() - start, 2),
    }


def describe(probe: dict, schedule: str) -> str:
    """The probe's curve and answer in one markdown paragraph (``schedule``: the cells' lr schedule)."""
    key, means = probe["probe"], probe["window_means"]
    w = key["window"]
    curve = ", ".join(f"{(i + 1) * w}: {m:.4g}" for i, m in enumerate(means))
    answer = (f"the loss stopped improving at {probe['steps']} steps" if probe["converged"] else
              f"the loss still improved at the cap, so the length is the cap, {probe['steps']} steps (NOT "
              "converged by the criterion)")
    return (f"Training length (`--steps auto`, fixed by a rule before the runs): a probe trains D=2 x-pred, "
            f"{key['cell']['loss']}-loss, seed 0, at a {key['settings']['schedule']} lr {key['settings']['lr']:g}, "
            f"recording its training loss at every step; mean loss of each {w}-step window (window end: mean) "
            f"{curve}. Rule: stop after the first window whose mean is not lower than the previous window's by "
            f"more than {key['fraction']:.0%}; cap {probe['max_steps']} steps. Result: {answer} "
            f"({probe['seconds']:.0f} s); every cell trains for that many steps with the {schedule} schedule.")
