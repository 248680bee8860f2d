"""What `jitlab grid run` does with a grid's cells: resolve, dry-run, preflight, run locally or on SLURM.

The functions take the verb's parsed options (``jitlab.commands.grid``).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from typing import Callable

import yaml

from jitlab.errors import ConfigError
from jitlab.experiments.grid.processes import CHILDREN
from jitlab.experiments.grid.progress import default_jobs
from jitlab.experiments.grid.ratios import shape_of
from jitlab.experiments.grid.refstats import build_ref_stats
from jitlab.experiments.grid.rehearse import rehearse_grid
from jitlab.experiments.grid.runner import References, check_settings, command_line, eval_args, fit_args, run_local
from jitlab.experiments.grid.slurm import SlurmOptions, require_slurm, submit
from jitlab.experiments.grid.spec import load_spec
from jitlab.experiments.rundir import cell_dir, is_finished, read_result


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
    bad = 0
    for i, cell in enumerate(cells, 1):
        directory = cell_dir(args.runs, cell)
        print(f"# ---- cell {i}/{len(cells)}: {cell.grid} {cell.scale} {cell.id}"
              f" (paper {cell.paper_metric}: {cell.paper_value})")
        print(yaml.safe_dump(cell.config, sort_keys=False).rstrip())
        print(f"# shape: {shape_line(cell.config)}")
        try:
            check_config(cell.config)
            print("# config: valid")
        except ConfigError as error:
            bad += 1
            print(f"# config: INVALID: {error}")
        if args.launcher == "local":
            print(f"# train: {command_line(fit_args(directory))}")
            print(f"# eval:  {command_line(eval_args(directory, cell.eval, write=False))}")
    if args.launcher == "slurm":
        submit(cells, args.runs, slurm_options(args), dry_run=True)
    print(f"# {len(cells)} cells, {bad} invalid")
    return 2 if bad else 0


def shape_line(config: dict) -> str:
    try:
        return shape_of(config).line()
    except (KeyError, TypeError, ValueError):
        return "not a JiT backbone with a fixed image size"


def check_config(config: dict) -> dict:
    """``config`` resolved as `jitlab fit --config` would (given as YAML text: jsonargparse reads either)."""
    from jitlab.score.fitconfig import check_fit_config

    return check_fit_config(["--config", yaml.safe_dump(config, sort_keys=False)])


ECHO_LOCK = threading.Lock()


def echo(line: str) -> None:
    """Print one whole line: the cells' and the reference classifiers' threads print at once (print writes a line's
    text and its newline apart, so two unlocked ones can run together on one line)."""
    with ECHO_LOCK:
        print(line, flush=True)


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    return SlurmOptions(partition=args.partition, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                        cpus_per_task=args.cpus_per_task, time_min=args.time, account=args.account)


def preflight(cells, args: argparse.Namespace) -> None:
    """Every unfinished cell's needs, checked before any is launched (jitlab.score.preflight)."""
    from jitlab.score.preflight import check_cells

    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # no "Seed set" per cell
    if not args.rehearse:
        check_settings(cells, args.runs)  # a cell directory of other settings: one error before any check
    todo = [c for c in cells if args.rehearse or not is_finished(read_result(cell_dir(args.runs, c)), c)]
    world = args.nodes * args.gpus_per_node if args.launcher == "slurm" else None
    hint = "" if args.build_ref_stats else " (or pass --build_ref_stats to `jitlab grid run`)"
    check_cells(todo, args.runs, world, check_config, hint, echo=echo)


def run_grid(args: argparse.Namespace, entry: Callable[[list[str]], int] | None = None) -> int:
    """Run (or submit) the grid's unfinished cells; ``entry`` is the jitlab dispatcher SLURM tasks run."""
    spec, cells = resolve_cells(args)
    if getattr(args, "released", None) is not None:  # converted instead of trained (grid.converted)
        from jitlab.experiments.grid.converted import run_released

        return run_released(args, cells)
    if args.dry_run:
        return dry_run(cells, args)
    if args.launcher == "slurm":  # before anything is built or written: no SLURM here is one line at once
        require_slurm()
    if args.build_ref_stats:
        build_ref_stats(cells, echo=echo)
    if not args.skip_preflight:
        preflight(cells, args)
    if args.rehearse:
        if args.launcher != "local":
            raise ConfigError("--rehearse", "runs the cells on this machine, one after another: use --launcher local "
                                            "(e.g. inside an allocation of one node)")
        return rehearse_grid(args.name, args.scale, cells, args.runs, threads=None, echo=echo)
    if args.launcher == "slurm":
        submit(cells, args.runs, slurm_options(args), dry_run=False, entry=entry)
        return 0
    cores = os.cpu_count() or 1
    jobs = max(1, min(args.jobs or default_jobs(args.scale), len(cells)))
    threads = args.threads or max(1, cores // jobs)
    echo(f"jitlab grid: {spec.name} at {args.scale} scale: {len(cells)} cells, {jobs} at a time "
         f"({threads} thread(s) each), runs under {args.runs / spec.name / args.scale}")
    started = time.time()
    outcomes = run_local(cells, args.runs, jobs=jobs, threads=threads, echo=echo,
                         references=References(cells, args.runs, threads, echo))
    counts = {s: sum(o.status == s for o in outcomes)
              for s in ("done", "diverged", "failed", "skipped", "interrupted")}
    echo(f"jitlab grid: {spec.name} {args.scale}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
         + f" in {(time.time() - started) / 60:.1f} min")
    if CHILDREN.signum is not None:  # stopped by SIGINT / SIGTERM: the interrupted cells resume next time
        return 128 + CHILDREN.signum
    return 1 if counts["failed"] else 0
