"""`jitlab grid`: run, dry-run or plan a paper grid (``experiments/grids/NAME.yaml``).

    jitlab grid list
    jitlab grid run table2 --scale mini                     # every cell, locally; finished cells skipped
    jitlab grid run table2 --scale paper --data_root /data/imagenet --launcher slurm --partition gpu
    jitlab grid run table2 --scale paper --launcher slurm --dry_run   # configs and commands, nothing runs
    jitlab grid plan table2 --scale paper                   # GMACs, images, GPU-hours per cell
    jitlab grid seeds table4 --scale mini --seeds 1 2       # the metric's sampling-seed spread -> reports/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from jitlab.commands.flags import add_flag, dashed
from jitlab.errors import ArgumentParser, ConfigError
from jitlab.grid.actions import resolve_cells, run_grid, seed_spread
from jitlab.grid.spec import SCALES, list_grids, load_spec

DEFAULT_RUNS = Path("runs/grids")


def parse_set(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (a dotted config key), got {text!r}")
    return key, yaml.safe_load(value)


def flag(parser: Any, name: str, **kwargs: Any) -> None:
    """A ``--snake_case`` flag; its dashed spelling (the old one) stays a hidden alias."""
    add_flag(parser, name, *([dashed(name)] if "_" in name else []), **kwargs)


def common(q: argparse.ArgumentParser) -> None:
    q.add_argument("name", help="a grid name (experiments/grids/NAME.yaml) or a path to a grid file")
    q.add_argument("--scale", choices=SCALES, default="mini",
                   help="mini (embedded data, CPU), lab (one GPU, an ImageNet subset) or paper (ImageNet)")
    q.add_argument("--set", type=parse_set, action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every cell, e.g. --set trainer.max_steps=500")
    flag(q, "--data_root", default=None, help="the ImageNet root or shard directory (paper scale)")
    q.add_argument("--only", nargs="+", default=None, metavar="CELL", help="run only these cell ids")
    flag(q, "--train_seeds", type=int, default=None, metavar="N",
         help="train every cell under seeds 0..N-1 (default: the grid file's scales.SCALE.train_seeds)")


def add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="train and evaluate every cell (finished cells are skipped)")
    common(run)
    run.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"run directories (default {DEFAULT_RUNS})")
    run.add_argument("--launcher", choices=["local", "slurm"], default="local")
    flag(run, "--dry_run", action="store_true", help="print each cell's resolved config and command; run nothing")
    run.add_argument("--rehearse", action="store_true",
                     help="every cell end to end in minutes (a few steps, a checkpoint, a resume, an evaluation on a "
                          "handful of images, the report) under RUNS/../rehearsal/; no cell is marked done")
    flag(run, "--skip_preflight", action="store_true",
         help="do not check data, reference statistics, Inception weights, disk and batch split first")
    flag(run, "--build_ref_stats", action="store_true",
         help="make missing reference statistics (jitlab fid-stats on the cells' data) before starting")
    run.add_argument("--jobs", type=int, default=None,
                     help="cells at a time (local; default: one per CPU core at mini scale, 1 at paper scale)")
    slurm = run.add_argument_group("slurm (with --launcher slurm)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--nodes", type=int, default=1)
    flag(slurm, "--gpus_per_node", type=int, default=8)
    flag(slurm, "--cpus_per_task", type=int, default=12)
    slurm.add_argument("--time", type=int, default=72 * 60, help="minutes per job (a requeued job resumes)")
    slurm.add_argument("--account", default=None)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jitlab grid", description="Run, dry-run or plan a paper grid.")  # one error line
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the grids under experiments/grids")
    add_run(sub)
    seeds = sub.add_parser("seeds", help="evaluate the done cells again under other sampling seeds -> "
                                         "reports/NAME-seeds.{csv,md}")
    common(seeds)
    seeds.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"run directories (default {DEFAULT_RUNS})")
    seeds.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="sampling seeds besides 0 (default 1 2)")
    seeds.add_argument("--jobs", type=int, default=None, help="evaluations at a time (default: one per CPU core)")
    seeds.add_argument("--out", type=Path, default=Path("reports"), help="where the report goes (default reports)")

    plan = sub.add_parser("plan", help="GMACs, images to train on and GPU-hours per cell")
    common(plan)
    flag(plan, "--peak_tflops", type=float, default=989.0,
         help="peak dense bf16 TFLOP/s of one GPU (default 989: an H100 SXM)")
    plan.add_argument("--utilisation", type=float, default=0.4, help="model FLOP utilisation (default 0.4)")
    plan.add_argument("--nodes", type=int, default=1, help="nodes per cell's job (for its wall time)")
    flag(plan, "--gpus_per_node", type=int, default=8)
    plan.add_argument("--time", type=int, default=72 * 60, help="minutes per job: cells over it are named")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.action == "list":
            for name in list_grids():
                spec = load_spec(name)
                print(f"{name:<8} {spec.title}  [scales: {', '.join(spec.scales)}]")
            return 0
        if args.action == "plan":
            from jitlab.grid.plan import plan_table

            spec, cells = resolve_cells(args)
            print(f"# {spec.title} at {args.scale} scale")
            print(plan_table(cells, args.peak_tflops, args.utilisation, args.nodes * args.gpus_per_node, args.time))
            return 0
        if args.action == "seeds":
            return seed_spread(args)
        from jitlab.cli import main as entry  # the dispatcher a SLURM task runs in-process

        return run_grid(args, entry)
    except ConfigError as error:
        print(f"jitlab grid: error: {error}", file=sys.stderr)
        return 2
