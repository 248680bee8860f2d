"""`jitlab eval`: score a checkpoint over a sweep of EMA x CFG scale x CFG interval; write metrics.json.

Every input is checked before the first forward; ``metrics.json`` is written after each finished point, and a
rerun with the same ``--out`` skips the points in it. Under ``torchrun`` the processes share the images.
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

import torch

from jitlab.commands.settings_flags import add_settings_flags, add_shard_flags, as_flag, check_shard_size, given
from jitlab.errors import ArgumentParser, ConfigError
from jitlab.score.evaluation import best_row, evaluate, read_rows, write_rows
from jitlab.score.generate import (check_device, check_output, dist_info, join_processes, process_device,
                                   report_error)
from jitlab.core.settings import EvalSettings, SamplerSettings, ScoreSettings, message_of

FLAGS = {"inception_score": "--is"}  # the settings fields whose flag is not --FIELD
SWEEP_FIELDS = [f.name for f in fields(EvalSettings) if f.name not in ("score", "sampling")]
SAMPLER_FIELDS = [f.name for f in fields(SamplerSettings) if f.name not in ("cfg_scale", "cfg_interval")]  # swept
SCORE_FIELDS = [f.name for f in fields(ScoreSettings)]
SETTING_FIELDS = {*SWEEP_FIELDS, *SAMPLER_FIELDS, *SCORE_FIELDS}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jitlab eval", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a jitlab checkpoint")
    p.add_argument("--settings", type=Path, default=None, help="a JSON file of evaluation settings (keys named as "
                   "these flags, as a grid file's eval:); flags given as well override it")
    add_settings_flags(p, ScoreSettings, SCORE_FIELDS, FLAGS)
    add_settings_flags(p, EvalSettings, SWEEP_FIELDS)
    add_settings_flags(p, SamplerSettings, SAMPLER_FIELDS)
    p.add_argument("--out", type=Path, default=None, help="metrics.json (None: beside the checkpoint)")
    add_shard_flags(p)
    return p


def eval_settings(args: argparse.Namespace) -> EvalSettings:
    """``--settings`` (if given) overridden by the flags given; a bad value names its flag, or the file and key."""
    flat = EvalSettings.read_dict(args.settings) if args.settings is not None else {}
    flags = given(args, SETTING_FIELDS)
    try:
        return EvalSettings.from_dict({**flat, **flags}, where="" if not set(flat) - set(flags) else str(args.settings))
    except ConfigError as error:
        name = error.field.removeprefix(f"{args.settings}: ")
        if name in flags:
            raise as_flag(ConfigError(name, message_of(error)), FLAGS) from None
        raise


def check_args(args: argparse.Namespace, world: int) -> tuple[EvalSettings, Path]:
    """Everything that needs no checkpoint; returns the settings (on this process's device) and metrics.json."""
    settings = eval_settings(args)
    settings = replace(settings, device=process_device(settings.device, world))
    check_shard_size(args.shard_size)
    out = args.out or Path(args.ckpt).with_name("metrics.json")
    check_output("--out", out)
    check_device(settings.device)
    return settings, out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank, world = dist_info()
    try:
        settings, out = check_args(args, world)
        done = read_rows(out)
    except ConfigError as error:
        return report_error(error)
    join_processes(settings.device, world)

    def write_point(point: list[dict]) -> None:  # every finished point is kept, whatever happens later
        if rank == 0:
            write_rows(out, point)

    try:
        rows = evaluate(args.ckpt, settings, write_point, done, args.shards, args.shard_size)
    except (KeyError, FileNotFoundError, ValueError) as error:  # ConfigError is a ValueError
        return report_error(error)
    if rank == 0:
        best = best_row(read_rows(out))
        print(f"jitlab eval: wrote {len(rows)} rows to {out}"
              + (f"; best: {best['metric']} {best['value']:.4g} (ema {best['ema']}, cfg {best['cfg_scale']}, "
                 f"interval {best['cfg_interval']}) at step {best.get('step')}" if best else ""))
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
