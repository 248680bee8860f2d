"""`jitlab grid`: run, dry-run or plan a paper grid (``experiments/grids/NAME.yaml``).

    jitlab grid list
    jitlab grid run table2 --scale mini                     # every cell, locally; finished cells skipped
    jitlab grid run table2 --scale paper --data-root /data/imagenet --launcher slurm --partition gpu
    jitlab grid run table2 --scale paper --launcher slurm --dry-run   # configs and commands, nothing runs
    jitlab grid plan table2 --scale paper                   # GMACs, images, GPU-hours per cell
    jitlab grid seeds table4 --scale mini --seeds 1 2       # the metric's sampling-seed spread -> reports/
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from jitlab.errors import ArgumentParser, ConfigError
from jitlab.grid.spec import SCALES, list_grids, load_spec

DEFAULT_RUNS = Path("runs/grids")


def parse_set(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (a dotted config key), got {text!r}")
    return key, yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jitlab grid", description="Run, dry-run or plan a paper grid.")  # one error line
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the grids under experiments/grids")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("name", help="a grid name (experiments/grids/NAME.yaml) or a path to a grid file")
        q.add_argument("--scale", choices=SCALES, default="mini", help="mini (embedded data, CPU), lab (one GPU, an ImageNet subset) or paper (ImageNet)")
        q.add_argument("--set", type=parse_set, action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key in every cell, e.g. --set trainer.max_steps=500")
        q.add_argument("--data-root", default=None, help="the ImageNet root or shard directory (paper scale)")
        q.add_argument("--only", nargs="+", default=None, metavar="CELL", help="run only these cell ids")
        q.add_argument("--train-seeds", type=int, default=None, metavar="N",
                       help="train every cell under seeds 0..N-1 (default: the grid file's scales.SCALE.train_seeds)")

    run = sub.add_parser("run", help="train and evaluate every cell (finished cells are skipped)")
    common(run)
    run.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"run directories (default {DEFAULT_RUNS})")
    run.add_argument("--launcher", choices=["local", "slurm"], default="local")
    run.add_argument("--dry-run", action="store_true", help="print each cell's resolved config and command; run nothing")
    run.add_argument("--rehearse", action="store_true",
                     help="every cell end to end in minutes (a few steps, a checkpoint, a resume, an evaluation on a "
                          "handful of images, the report) under RUNS/../rehearsal/; no cell is marked done")
    run.add_argument("--skip-preflight", action="store_true",
                     help="do not check data, reference statistics, Inception weights, disk and batch split first")
    run.add_argument("--build-ref-stats", action="store_true",
                     help="make missing reference statistics (jitlab fid-stats on the cells' data) before starting")
    run.add_argument("--jobs", type=int, default=None,
                     help="cells at a time (local; default: one per CPU core at mini scale, 1 at paper scale)")
    slurm = run.add_argument_group("slurm (with --launcher slurm)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--gpus-per-node", type=int, default=8)
    slurm.add_argument("--cpus-per-task", type=int, default=12)
    slurm.add_argument("--time", type=int, default=72 * 60, help="minutes per job (a requeued job resumes)")
    slurm.add_argument("--account", default=None)

    seeds = sub.add_parser("seeds", help="evaluate the done cells again under other sampling seeds -> "
                                         "reports/NAME-seeds.{csv,md}")
    common(seeds)
    seeds.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"run directories (default {DEFAULT_RUNS})")
    seeds.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="sampling seeds besides 0 (default 1 2)")
    seeds.add_argument("--jobs", type=int, default=None, help="evaluations at a time (default: one per CPU core)")
    seeds.add_argument("--out", type=Path, default=Path("reports"), help="where the report goes (default reports)")

    plan = sub.add_parser("plan", help="GMACs, images to train on and GPU-hours per cell")
    common(plan)
    plan.add_argument("--peak-tflops", type=float, default=989.0,
                      help="peak dense bf16 TFLOP/s of one GPU (default 989: an H100 SXM)")
    plan.add_argument("--utilisation", type=float, default=0.4, help="model FLOP utilisation (default 0.4)")
    plan.add_argument("--nodes", type=int, default=1, help="nodes per cell's job (for its wall time)")
    plan.add_argument("--gpus-per-node", type=int, default=8)
    plan.add_argument("--time", type=int, default=72 * 60, help="minutes per job: cells over it are named")
    return p


def resolve_cells(args: argparse.Namespace):
    spec = load_spec(args.name)
    extra = dict(args.set)
    if args.data_root is not None:
        extra["data.init_args.root"] = args.data_root
    cells = spec.cells(args.scale, extra, args.train_seeds)
    if args.only:  # a plain cell id selects every training seed of that cell; `ID_seed-K` one of them
        plain = {c.id: c.id for c in cells} | {c.id: c.id.rsplit("_seed-", 1)[0] for c in cells if c.train_seed}
        unknown = set(args.only) - set(plain) - set(plain.values())
        if unknown:
            raise ConfigError("--only", f"unknown cell(s) {sorted(unknown)}; cells: {sorted(set(plain.values()))}")
        cells = [c for c in cells if c.id in args.only or plain[c.id] in args.only]
    return spec, cells


def dry_run(cells, args: argparse.Namespace) -> int:
    """Print each cell's resolved config and commands; check each config parses as `jitlab fit` would."""
    from jitlab.cli import check_fit_config
    from jitlab.grid.runner import cell_dir, command_line, eval_args, fit_args

    bad = 0
    for i, cell in enumerate(cells, 1):
        directory = cell_dir(args.runs, cell)
        print(f"# ---- cell {i}/{len(cells)}: {cell.grid} {cell.scale} {cell.id}"
              f" (paper {cell.paper_metric}: {cell.paper_value})")
        print(yaml.safe_dump(cell.config, sort_keys=False).rstrip())
        print(f"# shape: {_shape_line(cell.config)}")
        with _temp_config(cell.config) as path:
            try:
                check_fit_config(["--config", str(path)])
                print("# config: valid")
            except ConfigError as error:
                bad += 1
                print(f"# config: INVALID: {error}")
        if args.launcher == "local":
            print(f"# train: {command_line(fit_args(directory))}")
            print(f"# eval:  {command_line(eval_args(directory, cell.eval))}")
    if args.launcher == "slurm":
        from jitlab.grid.slurm import submit

        submit(cells, args.runs, slurm_options(args), dry_run=True)
    print(f"# {len(cells)} cells, {bad} invalid")
    return 2 if bad else 0


def _shape_line(config: dict) -> str:
    from jitlab.grid.ratios import shape_of

    try:
        return shape_of(config).line()
    except (KeyError, TypeError, ValueError):
        return "not a JiT backbone with a fixed image size"


class _temp_config:
    def __init__(self, config: dict):
        self.config = config

    def __enter__(self) -> Path:
        import tempfile

        fd, name = tempfile.mkstemp(suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(self.config, f, sort_keys=False)
        self.path = Path(name)
        return self.path

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def slurm_options(args: argparse.Namespace):
    from jitlab.grid.slurm import SlurmOptions

    return SlurmOptions(partition=args.partition, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                        cpus_per_task=args.cpus_per_task, time_min=args.time, account=args.account)


def preflight(cells, args: argparse.Namespace) -> None:
    """Every unfinished cell's needs, checked before any is launched (jitlab.preflight); a ConfigError names each."""
    import logging

    from jitlab.cli import check_fit_config
    from jitlab.grid.runner import FINISHED, cell_dir, read_result
    from jitlab.preflight import check_cells

    def resolve(config: dict) -> dict:
        with _temp_config(config) as path:
            return check_fit_config(["--config", str(path)])

    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # no "Seed set" per cell
    todo = [c for c in cells if args.rehearse or (read_result(cell_dir(args.runs, c)) or {}).get("status")
            not in FINISHED]
    world = args.nodes * args.gpus_per_node if args.launcher == "slurm" else None
    hint = "" if args.build_ref_stats else " (or pass --build-ref-stats to `jitlab grid run`)"
    check_cells(todo, args.runs, world, resolve, hint, echo=lambda line: print(line, flush=True))


def run(args: argparse.Namespace) -> int:
    spec, cells = resolve_cells(args)
    if args.dry_run:
        return dry_run(cells, args)
    if args.launcher == "slurm":  # before anything is built or written: no SLURM here is one line at once
        from jitlab.grid.slurm import require_slurm

        require_slurm()
    if args.build_ref_stats:
        from jitlab.grid.refstats import build_ref_stats

        build_ref_stats(cells, echo=lambda line: print(line, flush=True))
    if not args.skip_preflight:
        preflight(cells, args)
    if args.rehearse:
        if args.launcher != "local":
            raise ConfigError("--rehearse", "runs the cells on this machine, one after another: use --launcher local "
                                            "(e.g. inside an allocation of one node)")
        from jitlab.grid.rehearse import rehearse_grid

        return rehearse_grid(args.name, args.scale, cells, args.runs, threads=None,
                             echo=lambda line: print(line, flush=True))
    if args.launcher == "slurm":
        from jitlab.grid.slurm import submit

        submit(cells, args.runs, slurm_options(args), dry_run=False)
        return 0
    from jitlab.grid.runner import References, run_local

    cores = os.cpu_count() or 1
    jobs = args.jobs or (cores if args.scale == "mini" else 1)
    jobs = max(1, min(jobs, len(cells)))
    threads = max(1, cores // jobs)
    print(f"jitlab grid: {spec.name} at {args.scale} scale: {len(cells)} cells, {jobs} at a time "
          f"({threads} thread(s) each), runs under {args.runs / spec.name / args.scale}", flush=True)
    started = time.time()
    echo = lambda line: print(line, flush=True)  # noqa: E731
    outcomes = run_local(cells, args.runs, jobs=jobs, threads=threads, echo=echo,
                         references=References(cells, args.runs, threads, echo))
    counts = {s: sum(o.status == s for o in outcomes)
              for s in ("done", "diverged", "failed", "skipped", "interrupted")}
    print(f"jitlab grid: {spec.name} {args.scale}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f" in {(time.time() - started) / 60:.1f} min", flush=True)
    from jitlab.grid.processes import CHILDREN

    if CHILDREN.signum is not None:  # stopped by SIGINT / SIGTERM: the interrupted cells resume next time
        return 128 + CHILDREN.signum
    return 1 if counts["failed"] else 0


def seed_spread(args: argparse.Namespace) -> int:
    from jitlab.grid.seeds import measure, write_seed_report

    spec, cells = resolve_cells(args)
    cores = os.cpu_count() or 1
    jobs = max(1, args.jobs or cores)
    frame = measure(cells, args.runs, args.seeds, jobs=jobs, threads=max(1, cores // jobs),
                    echo=lambda line: print(line, flush=True))
    if frame.empty:
        raise ConfigError(str(args.runs / spec.name / args.scale), "has no done cell to evaluate; run the grid first")
    command = (f"jitlab grid seeds {spec.name} --scale {args.scale} --seeds {' '.join(map(str, args.seeds))}"
               + (f" --only {' '.join(args.only)}" if args.only else ""))
    # the report's stem (NAME, NAME-paper); the verdicts' margins are per rule and measured, none is fixed here
    stem = spec.name if args.scale == "mini" else f"{spec.name}-{args.scale}"
    paths = write_seed_report(frame, args.out, stem, spec.title, command, None)
    print(f"jitlab grid: wrote {', '.join(map(str, paths))}")
    return 0


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
        return run(args)
    except ConfigError as error:
        print(f"jitlab grid: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
