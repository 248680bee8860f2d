"""`jitlab grid`: run, dry-run or plan a paper grid (``experiments/grids/NAME.yaml``).

    jitlab grid list
    jitlab grid run table2 --scale mini                     # every cell, locally; finished cells skipped
    jitlab grid run table2 --scale paper --data_root /data/imagenet --launcher slurm --partition gpu
    jitlab grid run table2 --scale paper --launcher slurm --dry_run   # configs and commands, nothing runs
    jitlab grid plan table2 --scale paper                   # GMACs, images, GPU-hours per cell
    jitlab grid status table2                               # each cell: done, running, interrupted, ...; time left
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from jitlab.errors import ArgumentParser, ConfigError
from jitlab.experiments.grid.actions import resolve_cells, run_grid
from jitlab.experiments.grid.spec import GRID_DIR, SCALES, list_grids, load_spec, project_root

DEFAULT_RUNS = Path("runs/grids")


def parse_set(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (a dotted config key), got {text!r}")
    return key, yaml.safe_load(value)


def positive_int(text: str) -> int:
    """A count of things at a time: a whole number >= 1 (0 would silently mean 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def common(q: argparse.ArgumentParser) -> None:
    q.add_argument("name", help="a grid name (experiments/grids/NAME.yaml) or a path to a grid file")
    q.add_argument("--scale", choices=SCALES, default="mini",
                   help="mini (embedded data, CPU), lab (one GPU, an ImageNet subset) or paper (ImageNet)")
    q.add_argument("--set", type=parse_set, action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every cell, e.g. --set trainer.max_steps=500")
    q.add_argument("--data_root", default=None, help="the ImageNet root or shard directory (paper scale)")
    q.add_argument("--only", nargs="+", default=None, metavar="CELL", help="run only these cell ids")
    q.add_argument("--train_seeds", type=int, default=None, metavar="N",
                   help="train every cell under seeds 0..N-1 (default: the grid file's scales.SCALE.train_seeds)")


def add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="train and evaluate every cell (finished cells are skipped)")
    common(run)
    run.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"run directories (default {DEFAULT_RUNS})")
    run.add_argument("--launcher", choices=["local", "slurm"], default="local")
    run.add_argument("--dry_run", action="store_true",
                     help="print each cell's resolved config and command; run nothing")
    run.add_argument("--rehearse", action="store_true",
                     help="every cell end to end in minutes (a few steps, a checkpoint, a resume, an evaluation on a "
                          "handful of images, the report) under RUNS/../rehearsal/; no cell is marked done")
    run.add_argument("--skip_preflight", action="store_true",
                     help="do not check data, reference statistics, Inception weights, disk and batch split first")
    run.add_argument("--build_ref_stats", action="store_true",
                     help="make missing reference statistics (jitlab fid-stats on the cells' data) before starting")
    run.add_argument("--jobs", type=positive_int, default=None,
                     help="cells at a time (local; default: one per CPU core at mini scale, 1 at paper scale)")
    run.add_argument("--threads", type=positive_int, default=None,
                     help="math-library threads per cell process (local; default: the CPU cores over --jobs; set it "
                          "lower when another run shares the machine)")
    run.add_argument("--released", type=Path, default=None, metavar="DIR",
                     help="instead of training, give each cell the authors' released weights (the *.pth under DIR "
                          "naming its model), converted, then score and record it; a model without a file is not run")
    slurm = run.add_argument_group("slurm (with --launcher slurm)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--gpus_per_node", type=int, default=8)
    slurm.add_argument("--cpus_per_task", type=int, default=12)
    slurm.add_argument("--time", type=int, default=72 * 60, help="minutes per job (a requeued job resumes)")
    slurm.add_argument("--account", default=None)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jitlab grid", description="Run, dry-run or plan a paper grid.")  # one error line
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the grids under experiments/grids")
    add_run(sub)
    plan = sub.add_parser("plan", help="GMACs, images to train on and GPU-hours per cell")
    common(plan)
    plan.add_argument("--peak_tflops", type=float, default=989.0,
                      help="peak dense bf16 TFLOP/s of one GPU (default 989: an H100 SXM)")
    plan.add_argument("--utilisation", type=float, default=0.4, help="model FLOP utilisation (default 0.4)")
    plan.add_argument("--nodes", type=int, default=1, help="nodes per cell's job (for its wall time)")
    plan.add_argument("--gpus_per_node", type=int, default=8)
    plan.add_argument("--time", type=int, default=72 * 60, help="minutes per job: cells over it are named")
    plan.add_argument("--gpu_memory", type=float, default=None, metavar="GIB",
                      help="memory of one GPU in GiB (e.g. 80): each cell's memory plan (a prediction from counted "
                           "activations)")
    plan.add_argument("--json", action="store_true", help="one JSON object per cell (a JSON list)")
    status = sub.add_parser("status", help="where each cell's run stands (done, running, interrupted, ...) and the "
                                           "time left")
    common(status)
    status.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"run directories (default {DEFAULT_RUNS})")
    status.add_argument("--json", action="store_true", help="a JSON object: each cell, the counts, the time left")
    status.add_argument("--released", action="store_true", help="the runs are `grid run --released` ones")
    status.add_argument("--jobs", type=positive_int, default=None,
                        help="cells the run trains at a time, for the time left (default: `grid run`'s)")
    return p


def status_command(args: argparse.Namespace) -> int:
    """`jitlab grid status`: a line per cell and a summary, read from the run directories (nothing is written)."""
    from jitlab.experiments.grid.progress import default_jobs
    from jitlab.experiments.grid.status import cell_status, seconds_left, state_counts, status_lines

    spec, cells = resolve_cells(args)
    statuses = [cell_status(cell, args.runs, args.released) for cell in cells]
    left, timed = seconds_left(statuses)
    jobs = args.jobs or default_jobs(args.scale)
    if args.json:
        print(json.dumps({"grid": spec.name, "scale": args.scale, "runs": str(args.runs),
                          "counts": state_counts(statuses),
                          "cell_seconds_left": left, "jobs": jobs, "timed_cells": timed,
                          "cells": [s.as_dict() for s in statuses]}, indent=1))
        return 0
    print(f"# {spec.title} at {args.scale} scale, runs under {args.runs}")
    print("\n".join(status_lines(statuses, left, timed, jobs)))
    return 0


def list_command() -> int:
    """Every grid of the project (found as `jitlab report` finds them: ``spec.project_root``)."""
    names = list_grids()
    if not names:
        raise ConfigError("grid list", f"no grid files in {project_root() / GRID_DIR}; run from the jitlab checkout "
                                       "(or one of its directories)")
    for name in names:
        spec = load_spec(name)
        print(f"{name:<8} {spec.title}  [scales: {', '.join(spec.scales)}]")
    return 0


def main(argv: list[str] | None = None, entry: Callable[[list[str]], int] | None = None) -> int:
    """``entry``: the `jitlab` dispatcher a SLURM task runs in-process (``jitlab.commands.cli`` passes itself)."""
    args = build_parser().parse_args(argv)
    try:
        if args.action == "list":
            return list_command()
        if args.action == "status":
            return status_command(args)
        if args.action == "plan":
            from jitlab.experiments.grid.plan import plan_rows, plan_table

            spec, cells = resolve_cells(args)
            gpus = args.nodes * args.gpus_per_node
            if args.json:
                rows = plan_rows(cells, args.peak_tflops, args.utilisation, gpus, args.gpu_memory)
                print(json.dumps([r.as_dict() for r in rows], indent=1))
            else:
                print(f"# {spec.title} at {args.scale} scale")
                print(plan_table(cells, args.peak_tflops, args.utilisation, gpus, args.time, args.gpu_memory))
            return 0
        return run_grid(args, entry)
    except ConfigError as error:
        print(f"jitlab grid: error: {error}", file=sys.stderr)
        return 2
