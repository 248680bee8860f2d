"""The sampling-seed spread of a grid's metric: how much a cell's number moves when only the seed changes.

Each report compares cells by one number per cell (one training, one sampling seed, a few hundred
samples at mini scale); the sweep verdicts call a difference under a fixed fraction a tie. This measures
what that fraction should cover: every finished cell's checkpoint is evaluated again, with the grid's
own evaluation settings, under other sampling seeds (training is not repeated, so the spread between
trainings is not in it), and the values go to ``OUT/NAME-seeds.{csv,md}``.

    jitlab grid seeds table4 --scale mini --seeds 1 2     # CELL/metrics-seed1.json, -seed2.json; reports/table4-seeds.*

An evaluation already written is not repeated; each is written atomically by `jitlab eval`, so an
interrupted run loses only the evaluation in progress. A cell that reuses another grid's run is
measured once, in the run's own directory.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pandas as pd

from jitlab.atomic import write_text
from jitlab.grid.runner import Runner, command_line, eval_args, run_subprocess, thread_env
from jitlab.grid.spec import Cell
from jitlab.rundir import cell_dir, collect_seeds, seed_metrics_path, source_directory, spread


def seed_eval_args(directory: Path, settings: dict, seed: int) -> list[str]:
    """The cell's own `jitlab eval` settings with another seed, into another output file."""
    return eval_args(directory, {**settings, "seed": seed}, out=seed_metrics_path(directory, seed),
                     name=f"eval-settings-seed{seed}.json")


def measure(cells: list[Cell], runs: Path, seeds: list[int], jobs: int = 1, threads: int | None = None,
            runner: Runner | None = None, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Evaluate every done cell under each of ``seeds`` (skipping those written before); one row per cell and seed.

    Seed 0 is the grid's own evaluation (``metrics.json``) and is never rerun here.
    """
    pending: dict[tuple[Path, int], Cell] = {}  # keyed by the run, so a run shared by two cells is measured once
    for cell in cells:
        src = source_directory(cell_dir(runs, cell))
        for seed in seeds if src is not None else []:
            if seed != 0 and not seed_metrics_path(src, seed).exists():
                pending.setdefault((src, seed), cell)
    todo = list(pending.items())
    runner = runner or run_subprocess
    env = thread_env(threads)
    started, done = time.time(), [0]

    def one(item) -> None:
        (src, seed), cell = item
        args = seed_eval_args(src, cell.eval, seed)
        code = runner(args, src / f"eval-seed{seed}.log", env)
        done[0] += 1
        status = "ok" if code == 0 and seed_metrics_path(src, seed).exists() else f"FAILED (exit {code})"
        echo(f"[{done[0]}/{len(todo)}] {cell.id} seed {seed}: {status} | {command_line(args)}"
             f" | elapsed {(time.time() - started) / 60:.1f} min")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    return collect_seeds(cells, runs, [0, *[s for s in seeds if s != 0]])


def markdown(frame: pd.DataFrame, title: str, command: str, tie: float | None) -> str:
    """The seed table, each cell's spread and the largest spread (beside the verdict's tie margin, if it has one)."""
    stats = spread(frame)
    seeds = sorted(int(s) for s in frame["seed"].unique())
    lines = [f"# {title}: sampling-seed spread", "",
             f"Each done cell's checkpoint evaluated with the grid's settings under sampling seeds {seeds} "
             "(seed 0 is the grid's own number; training is not repeated, so the spread between trainings is not in "
             f"this). Metric: {', '.join(sorted(frame['metric'].unique()))}. Made by `{command}` on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "| cell | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd / mean | (max - min) / mean |",
             "|---|" + "---:|" * (len(seeds) + 3)]
    wide = frame.pivot(index="cell", columns="seed", values="value")
    for cell in stats.index:
        values = " | ".join(f"{wide.loc[cell, s]:.4g}" if pd.notna(wide.loc[cell, s]) else "-" for s in seeds)
        row = stats.loc[cell]
        lines.append(f"| {cell} | {values} | {row['mean']:.4g} | {row['rel_sd']:.1%} | {row['rel_range']:.1%} |")
    if len(stats):
        worst = stats["rel_range"].idxmax()
        lines += ["", f"Largest (max - min) / mean: {stats['rel_range'].max():.1%} ({worst}); median "
                  f"{stats['rel_range'].median():.1%}; median sd / mean {stats['rel_sd'].median():.1%}."
                  + ("" if tie is None else f" The report's verdict calls a difference under {tie:.0%} a tie: "
                     + ("every cell's seeds stay within it." if stats["rel_range"].max() < tie else
                        "some cell's seeds alone move it by more than that, so a step of that size is not evidence."))]
    else:
        lines += ["", "No cell has two evaluated seeds yet."]
    return "\n".join(lines) + "\n"


def write_seed_report(frame: pd.DataFrame, out: Path, stem: str, title: str, command: str,
                      tie: float | None) -> list[Path]:
    paths = [Path(out) / f"{stem}-seeds.csv", Path(out) / f"{stem}-seeds.md"]
    texts = [frame.to_csv(index=False, float_format="%.6g"), markdown(frame, title, command, tie)]
    for path, text in zip(paths, texts):
        write_text(path, text)
    return paths
