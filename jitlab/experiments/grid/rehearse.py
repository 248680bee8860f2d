"""Rehearsal: every cell of a grid (or one `jitlab fit`) end to end on the real code path, in minutes.

What a user runs on the cluster before committing GPU-weeks: per cell the real `jitlab fit` for ``STEPS`` steps
and a checkpoint, a resume for ``STEPS`` more, the real `jitlab eval` on ``IMAGES`` images per point; then the
real `jitlab report`. It writes under ``rehearsal_dir(RUNS)``, never the real runs, and marks no cell done: each
``result.json`` ends as ``rehearsed``, which the runner never skips and a report never counts.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from jitlab.atomic import write_json
from jitlab.fitview import FitView
from jitlab.experiments.grid.runner import (
    Runner, cell_dir, command_line, finish_cell, fit_args, last_checkpoint, prepare_cell, run_subprocess, thread_env,
)
from jitlab.experiments.grid.spec import Cell
from jitlab.experiments.rundir import read_result

STEPS = 2  # training steps before the checkpoint, and again after resuming from it
IMAGES = 8  # generated images per evaluation point (a Frechet distance needs at least 2)
REHEARSED = "rehearsed"


def rehearsal_dir(runs: Path) -> Path:
    """Where the rehearsal of runs under ``runs`` goes: ``runs/grids`` -> ``runs/rehearsal/grids``."""
    runs = Path(runs)
    return runs.parent / "rehearsal" / runs.name


def fit_overrides(steps: int, config: dict[str, Any]) -> list[str]:
    """`jitlab fit` arguments that stop at ``steps`` with a checkpoint there (a periodic evaluation too)."""
    args = [f"--trainer.max_steps={steps}", f"--checkpoint.every_n_train_steps={STEPS}", "--checkpoint.save_last=true"]
    if evaluates(config):  # the run's own evaluation, shortened
        args += [f"--evaluation.every_n_steps={STEPS}", f"--evaluation.num_images={IMAGES}",
                 f"--evaluation.batch_size={IMAGES}"]
    return args


def evaluates(config: dict[str, Any]) -> bool:
    """The run evaluates itself periodically (``evaluation.every_n_steps`` > 0)."""
    return int((config.get("evaluation") or {}).get("every_n_steps") or 0) > 0


def rehearsal_eval(settings: dict[str, Any]) -> dict[str, Any]:
    """A cell's evaluation on ``IMAGES`` images per point; the metric, reference and sweep unchanged."""
    return {**settings, "num_images": IMAGES, "batch_size": min(int(settings.get("batch_size", IMAGES)), IMAGES)}


def train_and_resume(directory: Path, config: dict[str, Any], runner: Runner, env: dict[str, str],
                     log: Path, base_args: Callable[[], list[str]]) -> tuple[str | None, list[str]]:
    """Train ``STEPS`` steps, then resume to ``2 * STEPS``; an error message (None: both worked) and the commands."""
    from jitlab.train.checkpoint import checkpoint_state  # as the runner: Lightning only when a checkpoint is read

    commands = []
    for stage, steps in (("train", STEPS), ("resume", 2 * STEPS)):
        args = [*base_args(), *fit_overrides(steps, config)]
        commands.append(command_line(args))
        code = runner(args, log, {**env, "PYTHONUNBUFFERED": "1"})
        ckpt = last_checkpoint(directory)
        step = checkpoint_state(ckpt).step if ckpt.exists() else None
        if code != 0 or step != steps:
            return (f"{stage}: `jitlab fit` exited with code {code} and the checkpoint is at step {step}, not {steps}; "
                    f"see {log}"), commands
    return None, commands


def rehearse_cell(cell: Cell, directory: Path, runner: Runner, threads: int | None) -> tuple[str, str]:
    """Train, checkpoint, resume, evaluate one cell afresh in ``directory``: (``rehearsed`` or ``failed``, summary)."""
    started = time.time()
    shutil.rmtree(directory, ignore_errors=True)
    cell = dataclasses.replace(cell, eval=rehearsal_eval(cell.eval))
    prepare_cell(cell, directory)
    env = thread_env(threads)
    error, commands = train_and_resume(directory, cell.config, runner, env, directory / "train.log",
                                       lambda: fit_args(directory))
    if error is not None:
        write_json(directory / "result.json", {"status": "failed", "error": error, "commands": commands})
        return "failed", error
    trained = {**cell.config, "trainer": {**(cell.config.get("trainer") or {}), "max_steps": 2 * STEPS}}
    outcome = finish_cell(dataclasses.replace(cell, config=trained), directory, 0, started, commands, env, runner)
    if outcome.status != "done":
        return "failed", f"eval: {outcome.summary}"
    return REHEARSED, f"train {STEPS}, resume to {2 * STEPS}, {outcome.summary}"


def mark_rehearsed(directory: Path) -> None:
    """result.json of a rehearsed cell: ``done`` becomes ``rehearsed``, the evaluation's rows kept; ``failed`` stays."""
    result = read_result(directory) or {}
    if result.get("status") == "done":
        write_json(directory / "result.json", {**result, "status": REHEARSED, "rehearsal_of_status": "done"})


def rehearse_grid(name: str, scale: str, cells: list[Cell], runs: Path, threads: int | None = None,
                  runner: Runner = run_subprocess, echo: Callable[[str], None] = print) -> int:
    """Rehearse every cell under ``rehearsal_dir(runs)``, then the report; 0 if every stage of every cell worked."""
    target = rehearsal_dir(runs)
    echo(f"jitlab grid: rehearsal of {name} at {scale} scale: {len(cells)} cells under {target} "
         f"({STEPS} steps, a resume to {2 * STEPS}, evaluation on {IMAGES} images per point)")
    failed = []
    for i, cell in enumerate(cells, 1):
        started = time.time()
        status, summary = rehearse_cell(cell, cell_dir(target, cell), runner, threads)
        if status != REHEARSED:
            failed.append(cell.id)
        echo(f"[rehearsal {i}/{len(cells)}] {cell.id}: {status} ({summary}) in {time.time() - started:.0f}s")
    report_log = target / f"{Path(name).stem}-{scale}-report.log"
    report_args = ["report", name, "--scale", scale, "--runs", str(target), "--out", str(target / "reports")]
    code = runner(report_args, report_log, thread_env(threads))
    echo(f"jitlab grid: rehearsal report: {'written to ' + str(target / 'reports') if code == 0 else 'FAILED'} "
         f"(log {report_log})")
    for cell in cells:
        mark_rehearsed(cell_dir(target, cell))
    echo(f"jitlab grid: rehearsal: {len(cells) - len(failed)} of {len(cells)} cells rehearsed"
         + (f"; failed: {', '.join(failed)}" if failed else "") + "; no cell is marked done")
    return 1 if failed or code != 0 else 0


def rehearse_fit(args: list[str], config: dict[str, Any], runner: Runner = run_subprocess,
                 echo: Callable[[str], None] = print) -> int:
    """`jitlab fit ARGS --rehearse` (``config``: ARGS resolved) under ``rehearsal_dir(default_root_dir)``: ``STEPS``
    steps, a checkpoint, a resume, the run's own evaluation if it has one."""
    started = time.time()
    root = Path(FitView.of(config).trainer.get("default_root_dir") or "runs/default")
    directory = rehearsal_dir(root)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    where = [f"--trainer.default_root_dir={directory}", f"--checkpoint.dirpath={directory / 'checkpoints'}"]

    def base() -> list[str]:
        ckpt = last_checkpoint(directory)
        return ["fit", *args, *where, *([f"--ckpt_path={ckpt}"] if ckpt.exists() else [])]

    echo(f"jitlab fit: rehearsal under {directory}: {STEPS} steps, a checkpoint, a resume to {2 * STEPS}")
    error, commands = train_and_resume(directory, config, runner, {}, directory / "train.log", base)
    evaluation = "none: the run has no evaluation (evaluation.every_n_steps = 0)"
    if error is None and evaluates(config):  # one metrics.json per run version
        rows = [r for path in sorted(directory.rglob("metrics.json")) for r in json.loads(path.read_text())["rows"]]
        evaluation = ", ".join(f"{r['metric']} {float(r['value']):.4g} at step {r['step']}" for r in rows) or "none"
        if not rows:
            error = f"evaluation: the periodic evaluation wrote no metrics.json; see {directory / 'train.log'}"
    summary = {"status": "failed" if error else REHEARSED, "error": error, "commands": commands,
               "evaluation": evaluation, "seconds": round(time.time() - started, 1)}
    write_json(directory / "rehearsal.json", summary)
    echo(f"jitlab fit: rehearsal {'FAILED: ' + error if error else 'passed'}; evaluation: {evaluation}; "
         f"{summary['seconds']:.0f}s; record {directory / 'rehearsal.json'}")
    return 1 if error else 0
