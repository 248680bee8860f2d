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

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pandas as pd

from jitlab.atomic import write_text
from jitlab.errors import ConfigError
from jitlab.grid.runner import Runner, cell_dir, command_line, eval_args, read_result, run_subprocess, thread_env
from jitlab.grid.spec import Cell


def seed_metrics_path(directory: Path, seed: int) -> Path:
    """Where the evaluation under ``seed`` goes; seed 0 is the grid's own ``metrics.json``."""
    return directory / ("metrics.json" if seed == 0 else f"metrics-seed{seed}.json")


def source_directory(directory: Path) -> Path | None:
    """The directory holding the cell's checkpoint (another grid's, for a reused run); None if not done."""
    result = read_result(directory)
    if result is None or result.get("status") != "done":
        return None
    return Path(result["reused_from"]) if "reused_from" in result else directory


def seed_eval_args(directory: Path, settings: dict, seed: int) -> list[str]:
    """The cell's own `jitlab eval` arguments, with another seed and another output file."""
    args = eval_args(directory, {**settings, "seed": seed})
    args[args.index("--out") + 1] = str(seed_metrics_path(directory, seed))
    return args


def best_point(path: Path) -> dict | None:
    """The best sweep point of a metrics.json (metric, value, reference statistics, ...), or None."""
    return json.loads(path.read_text()).get("best")


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


def collect_seeds(cells: list[Cell], runs: Path, seeds: list[int]) -> pd.DataFrame:
    """One row per done cell and seed with a written evaluation: grid, scale, cell, seed, metric, value.

    Every seed of a cell must have been scored against the same reference statistics as its seed 0 (the same
    reference classifier's features): a seed scored in another feature space would show as spread.
    """
    rows = []
    for cell in cells:
        src = source_directory(cell_dir(runs, cell))
        first = None
        for seed in seeds if src is not None else []:
            path = seed_metrics_path(src, seed)
            best = best_point(path) if path.exists() else None
            if best is None:
                continue
            first = first or best
            if (stats_name(best), best["metric"]) != (stats_name(first), first["metric"]):
                raise ConfigError(str(path), f"scored {best['metric']} against {best.get('reference')}, but seed "
                                             f"{first.get('seed')} {first['metric']} against {first.get('reference')} "
                                             "(another reference classifier or metric); delete it to evaluate it again")
            rows.append({"grid": cell.grid, "scale": cell.scale, "cell": cell.id, "seed": seed,
                         "metric": best["metric"], "value": float(best["value"])})
    return pd.DataFrame(rows, columns=["grid", "scale", "cell", "seed", "metric", "value"])


def stats_name(row: dict) -> str | None:
    """The name of the reference statistics a metric row was scored against: it carries the classifier's key and
    weights digest, so it identifies them wherever the cache folder is (None when the row names none)."""
    return Path(row["reference"]).name if row.get("reference") else None


def seeds_on_disk(cells: list[Cell], runs: Path) -> list[int]:
    """0 and every other seed some done cell of these has been evaluated under."""
    found = set()
    for cell in cells:
        src = source_directory(cell_dir(runs, cell))
        for path in src.glob("metrics-seed*.json") if src is not None else []:
            found.add(int(path.stem.removeprefix("metrics-seed")))
    return [0, *sorted(found - {0})]


def summary_line(cells: list[Cell], runs: Path, tie: float | None) -> str | None:
    """One sentence for a report's provenance: the measured seed spread (beside the verdict's tie margin, if it has
    one); None if unmeasured."""
    used = seeds_on_disk(cells, runs)
    stats = spread(collect_seeds(cells, runs, used)) if len(used) > 1 else None
    if stats is None or stats.empty:
        return None
    worst = stats["rel_range"].idxmax()
    return (f"{len(stats)} cell(s) evaluated again under sampling seeds {used} (`jitlab grid seeds`): (max - min) / "
            f"mean median {stats['rel_range'].median():.1%}, largest {stats['rel_range'].max():.1%} ({worst})"
            + (f"; the verdicts' tie margin is {tie:.0%}" if tie is not None else "")
            + ". Trainings were not repeated: their spread is not in this")


def spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the seeds' mean, sample sd and (max - min) / mean, for cells with at least two seeds."""
    stats = frame.groupby("cell", sort=False)["value"].agg(["count", "mean", "std", "min", "max"])
    stats = stats[stats["count"] >= 2]
    stats["rel_sd"] = stats["std"] / stats["mean"]
    stats["rel_range"] = (stats["max"] - stats["min"]) / stats["mean"]
    return stats


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
