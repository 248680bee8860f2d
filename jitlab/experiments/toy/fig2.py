"""`jitlab fig2`: the toy experiment of Figure 2 (paper.md section 5) as a grid of JiTModule trainings.

D in {2, 8, 16, 512} x pred in {x, eps, v} x training seeds (3 at the lowest and highest D, 1 between them by
default), one loss space (v by default). The training length is chosen first by a convergence probe
(``--steps auto``, see ``jitlab.experiments.toy.probe``) or given (``--steps N``). Each finished training, and the probe, is
cached as ``<cache>/<name>.json`` (with its settings) and skipped on a re-run unless ``--force`` or the settings
changed. Writes ``<out>/fig2.csv``, ``fig2.md`` and ``fig2.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import shlex
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import torch

from jitlab.atomic import write_text
from jitlab.core.data.toy import arm_gap, spiral_points
from jitlab.experiments.rundir import clock
from jitlab.experiments.toy import probe as length_probe
from jitlab.experiments.toy.cell import TRUE_SEED, Cell, Settings, quiet, train_cell
from jitlab.experiments.toy.header import header_lines
from jitlab.experiments.toy.plot import write_png
from jitlab.experiments.toy.report import markdown, write_csv
from jitlab.experiments.toy.stats import summarise

DEFAULT_DIMS = [2, 8, 16, 512]
DEFAULT_PREDS = ["x", "eps", "v"]


def settings_of(args: argparse.Namespace, steps: int) -> Settings:
    return Settings(steps=steps, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, mu=args.mu,
                    sigma=args.sigma, noise=args.noise, samples=args.samples, sample_steps=args.sample_steps)


def seeds_at(d: int, args: argparse.Namespace) -> int:
    """The claims are at the lowest and highest D: ``--seeds`` there, ``--seeds-mid`` between."""
    return args.seeds if d in (min(args.dims), max(args.dims)) else args.seeds_mid


def grid_cells(args: argparse.Namespace) -> list[Cell]:
    """Every training of the grid, the largest D first (the longest trainings start first)."""
    return [Cell(d, p, args.loss, s) for d in sorted(args.dims, reverse=True) for p in args.preds
            for s in range(seeds_at(d, args))]


def load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cached(path: Path, cell: Cell, settings: Settings) -> dict | None:
    """The stored result of ``cell`` if it was made with the same settings, else None."""
    result = load_json(path)
    ok = result is not None and result.get("cell") == asdict(cell) and result.get("settings") == asdict(settings)
    return result if ok else None


def training_length(args: argparse.Namespace) -> tuple[int, dict | None]:
    """The steps of every training: ``--steps N``, or the probe's answer (cached like a cell)."""
    if args.steps != "auto":
        return args.steps, None
    base = settings_of(args, length_probe.MAX_STEPS)
    rule = (length_probe.WINDOW, length_probe.MIN_IMPROVEMENT, length_probe.MAX_STEPS)
    key = length_probe.probe_key(args.loss, base, *rule)
    path = args.cache / f"probe-{length_probe.probe_cell(args.loss).name}.json"
    hit = None if args.force else load_json(path)
    if hit is not None and hit.get("probe") == key:
        print(f"fig2: length probe cached in {path}: {hit['steps']} steps", flush=True)
        return hit["steps"], hit
    print(f"fig2: length probe (D=2 x-pred, seed 0, constant lr, at most {length_probe.MAX_STEPS} steps) ...",
          flush=True)
    with in_process(args.threads):
        result = length_probe.run_probe(args.loss, base, *rule)
    write_text(path, json.dumps(result))
    state = "converged" if result["converged"] else "NOT converged, the cap"
    print(f"fig2: length probe: {result['steps']} steps ({state}; {result['seconds']:.1f} s)", flush=True)
    return result["steps"], result


def cost(cell: Cell, settings: Settings) -> float:
    """Relative compute of one training: the MLP's weight count (input D + 64 time features, output D)."""
    h = settings.hidden
    return (cell.D + 64) * h + (settings.layers - 2) * h * h + h * cell.D


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    quiet()


@contextmanager
def in_process(threads: int) -> Iterator[None]:
    """Train in this process with ``threads`` threads, quiet; put threads, log levels and warnings back afterwards."""
    threads_before = torch.get_num_threads()
    with warnings.catch_warnings():
        torch.set_num_threads(threads)
        levels = quiet()
        try:
            yield
        finally:
            torch.set_num_threads(threads_before)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def run_cells(todo: list[Cell], settings: Settings, workers: int, threads: int) -> Iterator[tuple[Cell, dict]]:
    """Train the cells (in ``workers`` processes if more than one), yielding each result as it finishes."""
    if workers == 1 or len(todo) <= 1:
        with in_process(threads):
            for cell in todo:
                yield cell, train_cell(cell, settings)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(train_cell, cell, settings): cell for cell in todo}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """The grid of trainings for the options of `jitlab fig2` (``argv``: its command line, for the report)."""
    start = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    steps, probe = training_length(args)
    settings = settings_of(args, steps)
    cells = grid_cells(args)
    results: dict[Cell, dict] = {}
    for cell in cells:
        hit = None if args.force else cached(args.cache / f"{cell.name}.json", cell, settings)
        if hit is not None:
            results[cell] = hit
    todo = [c for c in cells if c not in results]
    print(f"fig2: {len(cells)} trainings of {steps} steps ({len(results)} cached in {args.cache}, {len(todo)} to run"
          f"{', --force' if args.force else ''}); {args.workers} worker(s) x {args.threads} thread(s)", flush=True)
    cells_start = time.perf_counter()
    total_cost, done_cost = sum(cost(c, settings) for c in todo), 0.0
    for i, (cell, result) in enumerate(run_cells(todo, settings, args.workers, args.threads), start=1):
        write_text(args.cache / f"{cell.name}.json", json.dumps(result))
        results[cell] = result
        done_cost += cost(cell, settings)
        elapsed = time.perf_counter() - cells_start
        eta = elapsed * (total_cost - done_cost) / done_cost
        m = result["metrics"]
        print(f"fig2: cell {i}/{len(todo)} D={cell.D} {cell.pred}-pred {cell.loss}-loss seed {cell.seed}: "
              f"Chamfer {m['chamfer']:.3g}, residual {m['residual']:.3g} ({result['seconds']:.1f} s) | "
              f"elapsed {clock(elapsed)}, ETA {clock(eta)}", flush=True)
    write_reports(args, settings, [results[c] for c in cells], probe, argv)
    print(f"fig2: wrote {args.out}/{stem(args)}.{{csv,md,png}} in {clock(time.perf_counter() - start)}", flush=True)
    return 0


def stem(args: argparse.Namespace) -> str:
    return args.name or ("fig2" if args.loss == "v" else f"fig2_{args.loss}loss")


def write_reports(args: argparse.Namespace, settings: Settings, results: list[dict], probe: dict | None,
                  argv: list[str] | None) -> None:
    name = stem(args)
    command = ("jitlab fig2 " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    seeds = {d: seeds_at(d, args) for d in args.dims}
    header = header_lines(command, settings, args.loss, seeds, args.workers, results, probe)
    write_csv(args.out / f"{name}.csv", results)
    write_text(args.out / f"{name}.md", markdown(results, args.dims, args.preds, header, arm_gap()))
    truth = spiral_points(settings.samples, settings.noise, torch.Generator().manual_seed(TRUE_SEED)).numpy()
    title = (f"Figure 2 toy: generated points (colour, seed 0) over the true spiral (grey), projected back with P^T\n"
             f"{args.loss}-loss, {settings.steps} steps, Euler {settings.sample_steps}")
    write_png(args.out / f"{name}.png", results, args.dims, args.preds, truth, summarise(results), title)
