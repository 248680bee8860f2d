"""`jitlab fig2`: the toy experiment of Figure 2 (paper.md section 5) as a grid of JiTModule trainings.

D in {2, 8, 16, 512} x pred in {x, eps, v} x seeds, one loss space (v by default). Each finished
training is cached as ``<cache>/<cell>.json`` (with its settings) and skipped on a re-run unless
``--force`` or the settings changed. Writes ``<out>/fig2.csv``, ``fig2.md`` and ``fig2.png``.
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
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import torch

from jitlab.data.toy import arm_gap, spiral_points
from jitlab.toy.cell import TRUE_SEED, Cell, Settings, chamfer_floor, quiet, train_cell
from jitlab.toy.plot import write_png
from jitlab.toy.report import atomic_write, fmt, markdown, summarise, write_csv

DEFAULT_DIMS = [2, 8, 16, 512]
DEFAULT_PREDS = ["x", "eps", "v"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Settings()
    ap = argparse.ArgumentParser(prog="jitlab fig2", description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=DEFAULT_DIMS, help="ambient dimensions D")
    ap.add_argument("--preds", nargs="+", default=DEFAULT_PREDS, choices=DEFAULT_PREDS, help="prediction spaces")
    ap.add_argument("--loss", default="v", choices=DEFAULT_PREDS, help="loss space (default v)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per cell: 0 .. N-1")
    ap.add_argument("--steps", type=int, default=d.steps, help="optimizer steps per training")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--schedule", default=d.schedule, choices=["constant", "cosine"])
    ap.add_argument("--mu", type=float, default=d.mu, help="logit-normal time sampler: mean")
    ap.add_argument("--sigma", type=float, default=d.sigma, help="logit-normal time sampler: std")
    ap.add_argument("--noise", type=float, default=d.noise, help="spiral thickness (std)")
    ap.add_argument("--samples", type=int, default=d.samples, help="generated points per training")
    ap.add_argument("--sample-steps", type=int, default=d.sample_steps, help="Euler steps")
    ap.add_argument("--workers", type=int, default=2, help="trainings run in parallel processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--out", type=Path, default=Path("reports"), help="where fig2.{csv,md,png} go")
    ap.add_argument("--name", default=None, help="file stem of the outputs (default fig2, or fig2_<loss>loss)")
    ap.add_argument("--cache", type=Path, default=Path("runs/fig2"), help="per-training result files")
    ap.add_argument("--force", action="store_true", help="retrain cached cells")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.workers < 1 or args.threads < 1:
        ap.error("--seeds, --steps, --workers and --threads must be >= 1")
    args.dims = sorted(set(args.dims))
    args.preds = [p for p in DEFAULT_PREDS if p in args.preds]
    return args


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, mu=args.mu,
                    sigma=args.sigma, noise=args.noise, samples=args.samples, sample_steps=args.sample_steps)


def cached(path: Path, cell: Cell, settings: Settings) -> dict | None:
    """The stored result of ``cell`` if it was made with the same settings, else None."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("cell") == asdict(cell) and result.get("settings") == asdict(settings) else None


def cost(cell: Cell, settings: Settings) -> float:
    """Relative compute of one training: the MLP's weight count (input D + 64 time features, output D)."""
    h = settings.hidden
    return (cell.D + 64) * h + (settings.layers - 2) * h * h + h * cell.D


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    quiet()


def run_cells(todo: list[Cell], settings: Settings, workers: int, threads: int) -> Iterator[tuple[Cell, dict]]:
    """Train the cells (in ``workers`` processes if more than one), yielding each result as it finishes."""
    if workers == 1 or len(todo) <= 1:  # in this process: put threads, log levels and warnings back afterwards
        threads_before = torch.get_num_threads()
        with warnings.catch_warnings():
            torch.set_num_threads(threads)
            levels = quiet()
            try:
                for cell in todo:
                    yield cell, train_cell(cell, settings)
            finally:
                torch.set_num_threads(threads_before)
                for name, level in levels.items():
                    logging.getLogger(name).setLevel(level)
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


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_of(args)
    cells = [Cell(d, p, args.loss, s) for d in sorted(args.dims, reverse=True) for p in args.preds
             for s in range(args.seeds)]  # the largest D first: the longest trainings start first
    args.cache.mkdir(parents=True, exist_ok=True)
    results: dict[Cell, dict] = {}
    for cell in cells:
        hit = None if args.force else cached(args.cache / f"{cell.name}.json", cell, settings)
        if hit is not None:
            results[cell] = hit
    todo = [c for c in cells if c not in results]
    n = len(cells)
    print(f"fig2: {n} trainings ({len(results)} cached in {args.cache}, {len(todo)} to run"
          f"{', --force' if args.force else ''}); {args.workers} worker(s) x {args.threads} thread(s)", flush=True)
    start = time.perf_counter()
    total_cost, done_cost = sum(cost(c, settings) for c in todo), 0.0
    for i, (cell, result) in enumerate(run_cells(todo, settings, args.workers, args.threads), start=1):
        atomic_write(args.cache / f"{cell.name}.json", json.dumps(result))
        results[cell] = result
        done_cost += cost(cell, settings)
        elapsed = time.perf_counter() - start
        eta = elapsed * (total_cost - done_cost) / done_cost
        m = result["metrics"]
        print(f"fig2: cell {i}/{len(todo)} D={cell.D} {cell.pred}-pred {cell.loss}-loss seed {cell.seed}: "
              f"Chamfer {m['chamfer']:.3g}, residual {m['residual']:.3g} ({result['seconds']:.1f} s) | "
              f"elapsed {clock(elapsed)}, ETA {clock(eta)}", flush=True)
    write_reports(args, settings, [results[c] for c in cells], argv)
    print(f"fig2: wrote {args.out}/{stem(args)}.{{csv,md,png}} in {clock(time.perf_counter() - start)}", flush=True)
    return 0


def stem(args: argparse.Namespace) -> str:
    return args.name or ("fig2" if args.loss == "v" else f"fig2_{args.loss}loss")


def write_reports(args: argparse.Namespace, settings: Settings, results: list[dict], argv: list[str] | None) -> None:
    name = stem(args)
    command = "jitlab fig2 " + shlex.join(sys.argv[1:] if argv is None else argv)
    header = header_lines(command.strip(), settings, args, results, chamfer_floor(settings), arm_gap())
    write_csv(args.out / f"{name}.csv", results)
    atomic_write(args.out / f"{name}.md", markdown(results, args.dims, args.preds, header, arm_gap()))
    truth = spiral_points(settings.samples, settings.noise, torch.Generator().manual_seed(TRUE_SEED)).numpy()
    title = (f"Figure 2 toy: generated points (colour, seed 0) over the true spiral (grey), projected back with P^T\n"
             f"{args.loss}-loss, {settings.steps} steps, Euler {settings.sample_steps}")
    write_png(args.out / f"{name}.png", results, args.dims, args.preds, truth, summarise(results), title)


def header_lines(command: str, s: Settings, args: argparse.Namespace, results: list[dict], floor: float,
                 gap: float) -> list[str]:
    compute = sum(r["seconds"] for r in results)
    return [
        f"Produced by `{command}` (equivalently `python -m jitlab.toy.fig2 ...`; `make fig2`) on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        "Settings (every cell the same; only D, the prediction space and the seed change):",
        "",
        f"- data: 2-D spiral (2.17 turns, each coordinate of unit std, thickness {s.noise}) embedded as x = P s with "
        f"a fixed random column-orthogonal P (D x 2, projection seed 0); {s.num_points} training points per seed.",
        f"- net: ToyMLP, {s.layers} linear layers with ReLU between them, {s.hidden} hidden units, "
        f"64 sinusoidal time features concatenated to z; trained through JiTModule (the images' flow, loss and sampler).",
        f"- training: {s.steps} steps, batch {s.batch_size}, AdamW lr {s.lr:g} (betas 0.9/0.95, no warm-up), "
        f"{s.schedule} schedule, {args.loss}-loss, logit-normal t with mu {s.mu:g}, sigma {s.sigma:g}, "
        f"noise_scale 1, t_eps 0.05; no EMA; seeds {', '.join(str(i) for i in range(args.seeds))}.",
        f"- sampling: {s.samples} points per training, Euler, {s.sample_steps} steps (`JiTModule.generate`).",
        f"- metrics: Chamfer distance (symmetric mean nearest-neighbour distance, halved) between P^T x of the "
        f"generated points and {s.samples} fresh true spiral points; its floor (two independent true samples) is "
        f"{fmt(floor)}. Off-manifold residual: mean ||x - P P^T x||. The gap between spiral arms is "
        f"{gap:.3g}.",
        "",
        f"Why the defaults ({why_note(s)}): the issue's probes reached their plateau within 1,000-3,000 steps at batch 256 and lr "
        "1e-3; 2,000 steps keeps the 36 trainings under 15 minutes on 2 cores (2 worker processes of 1 thread each: "
        "one-thread matmuls for these tiny MLPs are faster than two threads contending). Cosine decay instead of "
        "a constant lr because the constant-lr weights stay noisy at the end of so short a run (no EMA here). "
        "mu 0, sigma 1 (the unshifted logit-normal) rather than the paper's -0.8/0.8, because the paper's shift is "
        "tuned for 256x256 images (more noise for higher-dimensional data, Table 3), while the toy's data are 2-D "
        "and unit-scale at every D; with -0.8/0.8 a probe at D=2 gave x-pred a Chamfer of 0.13-0.20 (vs 0.05), "
        "since the net rarely sees t > 0.8, where x-pred's 1/(1-t) conversion amplifies its errors. These choices "
        "were made from D=2 probes (can every space learn the 2-D spiral?), not tuned towards the D=512 result. "
        "The budget limits D=2: a one-seed probe with 8,000 steps gave x-pred 0.027 and eps-pred 0.048 "
        "(2,000 steps: 0.047 and 0.099), so gaps between the spaces at low D shrink with longer training.",
        "",
        f"Compute: {len(results)} trainings, {clock(compute)} summed over cells (run {args.workers} at a time; "
        f"panel titles and tables give mean ± sd over seeds).",
    ]


def why_note(s: Settings) -> str:
    """Whether this run used the defaults, and if not which settings differ."""
    changed = [f"{k} {v}" for k, v in asdict(s).items() if v != getattr(Settings(), k)]
    return "this run uses them" if not changed else "this run changes: " + ", ".join(changed)


if __name__ == "__main__":
    sys.exit(main())
