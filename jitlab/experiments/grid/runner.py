"""Run the cells of a grid: train each through `jitlab fit` (or convert the authors' released weights into it:
``jitlab.experiments.grid.converted``), evaluate it with `jitlab eval`, record it.

One directory per cell (``RUNS/NAME/SCALE/CELL``)::

    config.yaml      the resolved `jitlab fit` config (what `--dry_run` prints)
    cell.json        grid, scale, labels, config hash, evaluation settings, the paper's value
    checkpoints/     last.ckpt (every `checkpoint.every_n_train_steps` and the last step), from which a cell resumes
    metrics.json     every point `jitlab eval` measured
    result.json      the cell's outcome: status done | failed | diverged, the best point's metrics
    train.log, eval.log, runner.lock (who runs the cell now: host, pid, SLURM job id)

Re-running is always safe: a cell with a result (done or diverged) of its settings, scored at its
``max_steps``, is skipped (``rundir.is_finished``); a failed cell is tried again, an interrupted cell
resumes from its ``last.ckpt``; every file is written atomically. A directory holding a run of other
settings (``--set``, the grid file) is refused before anything runs, with the differences named.
A cell another live runner or its trainer holds is skipped; SIGINT / SIGTERM / SIGHUP to the runner stop
its cells cleanly, and a trainer whose runner is killed (``kill -9``) is stopped by the kernel (with its
checkpoint) and holds the cell's lock until it has ended.
Each cell is a subprocess of the same CLI a user types, so a crash or a NaN in one cell cannot take
the grid down, and its memory is returned when it ends.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from jitlab.atomic import write_json, write_text
from jitlab.errors import ConfigError
from jitlab.fitview import FitView
from jitlab.experiments.grid.processes import CHILDREN, STOP_SIGNALS, forward_signals
from jitlab.experiments.grid.progress import Progress
from jitlab.experiments.grid.spec import Cell
from jitlab.lock import CellLock
from jitlab.core.settings import EvalSettings
from jitlab.identity import setting_differences
from jitlab.experiments.rundir import best_rows, cell_dir, is_finished, read_result


# -- the commands of one cell ------------------------------------------------------------------

def last_checkpoint(directory: Path) -> Path:
    """Where a cell's training keeps its newest state (what it resumes from)."""
    return directory / "checkpoints" / "last.ckpt"


def final_checkpoint(directory: Path) -> Path:
    """The checkpoint a cell is scored on: of its ``last*.ckpt`` the one at the highest step, read by step, never
    by name (a run of an older jitlab may have left ``last-v1.ckpt`` beside a stale ``last.ckpt``)."""
    from jitlab.train.checkpoint import checkpoint_step

    found = [(checkpoint_step(p), p) for p in sorted(last_checkpoint(directory).parent.glob("last*.ckpt"))]
    found = [(step, p) for step, p in found if step is not None]
    return max(found, key=lambda item: item[0])[1] if found else last_checkpoint(directory)


def fit_args(directory: Path, extra: list[str] | None = None) -> list[str]:
    """The `jitlab fit` arguments of a cell: ``--ckpt_path auto`` resumes its newest checkpoint when it has one."""
    return ["fit", "--config", str(directory / "config.yaml"), f"--trainer.default_root_dir={directory}",
            f"--checkpoint.dirpath={directory / 'checkpoints'}", "--checkpoint.save_last=true", "--ckpt_path=auto",
            *(extra or [])]


def eval_args(directory: Path, settings: dict[str, Any], write: bool = True) -> list[str]:
    """The `jitlab eval` arguments of a cell: the grid's ``eval`` section, checked (``EvalSettings``), as the JSON
    file ``directory/eval-settings.json`` (``write`` False: not written, e.g. for a dry run).

    Each point's images are kept as shards under ``eval-shards/`` while it runs, so a requeued evaluation resumes.
    """
    checked = EvalSettings.from_dict(settings, where=f"the eval settings of {directory}")
    path = directory / "eval-settings.json"
    if write and not _holds(path, checked):  # every task of a SLURM job calls this: write only what changed
        checked.dump(path)
    return ["eval", str(final_checkpoint(directory)), "--settings", str(path),
            "--out", str(directory / "metrics.json"), "--shards", str(directory / "eval-shards")]


def _holds(path: Path, settings: EvalSettings) -> bool:
    try:
        return EvalSettings.load(path) == settings
    except ConfigError:  # absent or unreadable
        return False


def command_line(args: list[str]) -> str:
    return "jitlab " + shlex.join(args)


# -- running -------------------------------------------------------------------------------------

@dataclass
class CellOutcome:
    cell: Cell
    status: str  # done | diverged | failed | skipped
    seconds: float
    summary: str


Runner = Callable[[list[str], Path, dict[str, str]], int]
Convert = Callable[[Cell, Path, Runner], CellOutcome]  # (cell, its directory, runner) -> outcome, the lock held


def run_subprocess(args: list[str], log: Path, env: dict[str, str]) -> int:
    """Run `python -m jitlab.commands.cli ARGS`, appending its output to ``log`` (a signal to the runner reaches it)."""
    with open(log, "a") as out:
        out.write(f"\n$ {command_line(args)}\n")
        out.flush()
        return CHILDREN.call([sys.executable, "-m", "jitlab.commands.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, **env})


def thread_env(threads: int | None) -> dict[str, str]:
    """The environment that caps a subprocess's math-library threads (nothing when ``threads`` is not set)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}


def prepare_cell(cell: Cell, directory: Path, weights: dict[str, Any] | None = None) -> None:
    """Write config.yaml and cell.json; a directory holding a different cell's config is refused. ``weights``: the
    release's file a converted cell's weights are (``jitlab.experiments.grid.converted``), None for a training."""
    directory.mkdir(parents=True, exist_ok=True)
    other = other_settings(cell, directory, released=weights is not None)
    if other is not None:
        raise ConfigError(str(directory), other)
    write_text(directory / "config.yaml", yaml.safe_dump(cell.config, sort_keys=False))
    write_json(directory / "cell.json", cell_meta(cell) | ({"weights": weights} if weights else {}))


def other_settings(cell: Cell, directory: Path, released: bool = False) -> str | None:
    """None when ``directory`` is empty or holds this cell's run (trained, or converted when ``released``); else a
    message naming what differs (the grid file, --set, or trained against converted weights): such a run is never
    reported, skipped or resumed as this cell's."""
    try:
        old = json.loads((directory / "cell.json").read_text())
    except (OSError, ValueError):
        return None
    if bool(old.get("weights")) != released:
        status = (read_result(directory) or {}).get("status") or "unfinished"
        held = "the release's weights, converted (--released)" if old.get("weights") else "a training of the cell"
        return f"holds {held}, {status}; trained and converted weights are never mixed: pass --runs DIR for the other"
    if old.get("config_hash") == cell.config_hash:
        return None
    try:
        config = yaml.safe_load((directory / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        config = None
    plain = json.loads(json.dumps({"config": cell.config, "eval": cell.eval}, default=str))
    changes = setting_differences({"config": config or {}, "eval": old.get("eval")}, plain)
    status = (read_result(directory) or {}).get("status") or "unfinished"
    listed = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
    return (f"holds a run of other settings, {status} ({listed or 'config hash ' + str(old.get('config_hash'))}); "
            "it is not this cell's result: move it away, or pass --runs DIR to start a fresh set of runs")


def check_settings(cells: list[Cell], runs: Path, released: bool = False) -> None:
    """Before anything runs: every cell directory holds this cell's settings or nothing (one error otherwise)."""
    for cell in cells:
        message = other_settings(cell, cell_dir(runs, cell), released)
        if message is not None:
            raise ConfigError(str(cell_dir(runs, cell)), message)


def cell_meta(cell: Cell) -> dict[str, Any]:
    return {"grid": cell.grid, "scale": cell.scale, "cell": cell.id, "labels": cell.labels,
            "train_seed": cell.train_seed, "config_hash": cell.config_hash, "eval": cell.eval,
            "paper_value": cell.paper_value, "paper_metric": cell.paper_metric}


def run_cell(cell: Cell, directory: Path, threads: int | None = None, fit_extra: list[str] | None = None,
             runner: Runner = run_subprocess, convert: Convert | None = None) -> CellOutcome:
    """Train (or resume), evaluate and record one cell; returns its outcome. ``convert``: instead of training,
    what gives the cell its (released) weights, evaluates and records it (``jitlab.experiments.grid.converted``).

    One runner per cell: the cell's lock (``runner.lock``) is held throughout, and names the cell's running
    subprocess too; a cell another live runner (or its trainer) holds is skipped, one whose holder is gone is
    taken over.
    """
    previous = read_result(directory)
    if is_finished(previous, cell):
        return CellOutcome(cell, "skipped", 0.0, f"{previous['status']} earlier at step {previous.get('step')}")
    if CHILDREN.stopping:
        return CellOutcome(cell, "interrupted", 0.0, "not started: the grid was stopped")
    lock = CellLock(directory)
    if not lock.acquire():
        return CellOutcome(cell, "skipped", 0.0, lock.busy_message())
    try:
        previous = read_result(directory)  # the runner that held the lock until now may have finished it
        if is_finished(previous, cell):
            return CellOutcome(cell, "skipped", 0.0, f"{previous['status']} by another runner")
        with CHILDREN.watched(lock.add_child, lock.drop_child):  # the lock lives as long as the trainer does
            if convert is not None:
                return convert(cell, directory, runner)
            return _run_held_cell(cell, directory, threads, fit_extra, runner)
    finally:
        lock.release()


def _run_held_cell(cell: Cell, directory: Path, threads: int | None, fit_extra: list[str] | None,
                   runner: Runner) -> CellOutcome:
    started = time.time()
    prepare_cell(cell, directory)
    twin = find_twin(directory.parents[2], cell, directory)
    if twin is not None:  # the same config and evaluation already ran for another grid: reuse, don't rerun
        reused = {**(read_result(twin) or {}), **cell_meta(cell), "reused_from": str(twin)}
        write_json(directory / "result.json", reused)
        return CellOutcome(cell, reused["status"], 0.0, f"same run as {twin}")
    env = thread_env(threads)
    train_args = fit_args(directory, fit_extra)
    code = runner(train_args, directory / "train.log", {**env, "PYTHONUNBUFFERED": "1"})
    if code != 0 and interrupted(code):  # stopped by a signal after saving last.ckpt: no result; resumes next time
        return CellOutcome(cell, "interrupted", round(time.time() - started, 1), f"stopped (exit {code}); resumes")
    return finish_cell(cell, directory, code, started, [command_line(train_args)], env, runner)


def interrupted(code: int) -> bool:
    """An exit code of a process stopped by SIGINT / SIGTERM / SIGHUP (its own 128 + n, or killed by it), or any
    exit once the runner itself is stopping."""
    return CHILDREN.stopping or code in {128 + s for s in STOP_SIGNALS} | {-s for s in STOP_SIGNALS}


def find_twin(runs: Path, cell: Cell, directory: Path) -> Path | None:
    """A finished cell of any grid at the same scale with the identical config and evaluation."""
    for meta_path in sorted(Path(runs).glob(f"*/{cell.scale}/*/cell.json")):
        other, meta = meta_path.parent, json.loads(meta_path.read_text())
        if other == directory or "reused_from" in (read_result(other) or {"reused_from": 0}) or meta.get("weights"):
            continue  # a reuse, or the release's weights: no training of this config
        if meta.get("config_hash") == cell.config_hash:
            if is_finished(read_result(other), cell):
                return other
    return None


def finish_cell(cell: Cell, directory: Path, train_code: int, started: float, commands: list[str],
                env: dict[str, str], runner: Runner, settings: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None) -> CellOutcome:
    """After training: check the checkpoint, evaluate (``settings``, else the cell's eval), write result.json
    (with ``extra``, and the machine it ran on: a training is not bit-identical across CPUs)."""
    from jitlab.experiments.bench.machine import machine_facts  # here: it imports torch

    machine = {**machine_facts({}), "torch threads": env.get("OMP_NUM_THREADS", "all cores")}  # the cell's, not ours
    result: dict[str, Any] = {**cell_meta(cell), "rows": [], "error": None, "commands": commands, "machine": machine,
                              "train_seconds": round(time.time() - started, 1), **(extra or {})}
    ckpt = final_checkpoint(directory)
    if train_code != 0 or not ckpt.exists():
        return record(cell, directory, result, "failed", started,
                       f"training exited with code {train_code}; see {directory / 'train.log'}")
    from jitlab.train.checkpoint import checkpoint_state  # here: it imports Lightning, which `grid list` needs not

    step, finite, train_seconds = checkpoint_state(ckpt)
    result["step"] = step  # the step it is scored at: done only at the step its training ends at
    target = FitView.of(cell.config).max_steps
    if train_seconds is not None:  # a resumed cell: this attempt's wall time would miss the earlier ones
        result["train_seconds"] = round(train_seconds, 1)
    if not finite:
        return record(cell, directory, result, "diverged", started, f"non-finite weights at step {step}")
    if target is not None and step != target:
        return record(cell, directory, result, "failed", started, f"{ckpt} is at step {step}, not the "
                       f"trainer.max_steps {target} of the cell; see {directory / 'train.log'} (a rerun resumes it)")
    e_args = eval_args(directory, cell.eval if settings is None else settings)
    result["commands"].append(command_line(e_args))
    code = runner(e_args, directory / "eval.log", env)
    if code != 0 and interrupted(code):
        return CellOutcome(cell, "interrupted", round(time.time() - started, 1), "evaluation stopped; resumes")
    if code != 0 or not (directory / "metrics.json").exists():
        return record(cell, directory, result, "failed", started,
                       f"evaluation exited with code {code}; see {directory / 'eval.log'}")
    rows = [r for r in best_rows(directory / "metrics.json") if r.get("step") == step]
    result["rows"] = rows
    if not rows or any(not math.isfinite(float(r["value"])) for r in rows):
        return record(cell, directory, result, "diverged", started, "non-finite metric")
    return record(cell, directory, result, "done", started, None)


def record(cell: Cell, directory: Path, result: dict, status: str, started: float, error: str | None) -> CellOutcome:
    result.update(status=status, error=error, seconds=round(time.time() - started, 1),
                  finished_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    write_json(directory / "result.json", result)
    if status == "done":
        summary = ", ".join(f"{r['metric']} {float(r['value']):.4g}" for r in result["rows"])
    else:
        summary = error or status
    return CellOutcome(cell, status, result["seconds"], summary)


def reference_key(cell: Cell) -> tuple[str, int] | None:
    """(kind, resolution) of the reference classifier a refnet-scored cell on embedded data needs, else None."""
    fit = FitView.of(cell.config)
    if cell.eval.get("features", "refnet") == "refnet" and "Embedded" in fit.data_class:
        scored_at = cell.eval.get("score_resolution")  # samples resized to one resolution before the features
        return str(fit.data.get("kind", "shapes")), int(scored_at or fit.data.get("resolution", 64))
    return None


class References:
    """The reference classifiers a grid's unfinished cells need: each trained once (then cached), on the cells' cores.

    Cells do not need a classifier until their evaluation, so the classifiers train first in core slots shared
    with the cells' trainings (instead of all cores waiting for the slowest classifier), and an evaluation waits
    for its classifier. ``threads``: torch threads per classifier (one slot's share of the cores).
    """

    def __init__(self, cells: list[Cell], runs: Path, threads: int, echo: Callable[[str], None] = print):
        self.threads = threads
        self.echo = echo
        unfinished = [c for c in cells if not is_finished(read_result(cell_dir(runs, c)), c)]
        self.keys = list(dict.fromkeys(k for k in map(reference_key, unfinished) if k is not None))
        self.ready = {key: threading.Event() for key in self.keys}
        self.failed: set[tuple[str, int]] = set()

    def start(self, slots: threading.Semaphore) -> None:
        """Start each training as soon as it gets a slot (in order; returns once every one has started)."""
        for key in self.keys:
            slots.acquire()
            threading.Thread(target=self._train, args=(key, slots), daemon=True).start()

    def _train(self, key: tuple[str, int], slots: threading.Semaphore) -> None:
        kind, resolution = key
        try:
            self.echo(f"jitlab grid: reference classifier for {kind} at {resolution}px (the shipped one, digest "
                      "checked; else trained once and cached)")
            code = CHILDREN.call([sys.executable, "-m", "jitlab.commands.cli", "train-ref", "--kind", kind,
                                  "--resolution", str(resolution), "--threads", str(self.threads), "--if_missing"])
            if code != 0:
                self.failed.add(key)
        finally:
            slots.release()
            self.ready[key].set()

    def wait(self, cell: Cell) -> str | None:
        """Block until the cell's classifier is ready; an error message if it failed to train."""
        key = reference_key(cell)
        if key is None or key not in self.ready:
            return None
        self.ready[key].wait()
        return f"training the reference classifier for {key[0]}-{key[1]} failed" if key in self.failed else None


def run_local(cells: list[Cell], runs: Path, jobs: int = 1, threads: int | None = None,
              fit_extra: list[str] | None = None, runner: Runner = run_subprocess,
              echo: Callable[[str], None] = print, references: References | None = None,
              convert: Convert | None = None) -> list[CellOutcome]:
    """Run cells ``jobs`` at a time; print a progress line per finished cell (i of N, elapsed, the time left by
    each cell's counted work: ``progress.Progress``).

    At most ``jobs`` processes (cell trainings, evaluations, reference classifiers) run at once. ``convert``:
    the cells get their weights from it instead of a training (``run_cell``).
    """
    check_settings(cells, runs, released=convert is not None)
    progress, lock = Progress(cells, jobs), threading.Lock()
    outcomes: list[CellOutcome] = []
    slots = threading.Semaphore(max(jobs, 1))

    def gated(cell: Cell) -> Runner:
        def call(args: list[str], log: Path, env: dict[str, str]) -> int:
            if references is not None and args[:1] == ["eval"]:
                error = references.wait(cell)
                if error is not None:
                    with open(log, "a") as out:
                        out.write(f"\njitlab grid: {error}\n")
                    return 1
            with slots:
                return runner(args, log, env)
        return call

    def one(cell: Cell) -> CellOutcome:
        outcome = run_cell(cell, cell_dir(runs, cell), threads, fit_extra, gated(cell), convert)
        with lock:
            outcomes.append(outcome)
            echo(progress.line(cell, outcome.status, outcome.summary, outcome.seconds))
        return outcome

    with forward_signals():  # SIGINT / SIGTERM: the running cells stop (saving last.ckpt), no new one starts
        if references is not None:
            references.start(slots)
        if jobs <= 1:
            for cell in cells:
                one(cell)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                list(pool.map(one, cells))
    return outcomes
