"""`jitlab eval`: score a checkpoint over a sweep of EMA x CFG scale x CFG interval; write metrics.json.

The settings come from the flags, or from ``--settings FILE`` (the JSON a grid writes: ``EvalSettings.to_dict``,
keys named as these flags), flags given as well overriding it. Every input is checked before the first
forward; ``metrics.json`` is written (atomically) after each finished point, and a rerun with the same ``--out``
skips the points already in it; with ``--shards DIR`` a point interrupted half-way resumes from its shards.
Under ``torchrun`` each process generates a disjoint slice of the global indices.
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

import torch

from jitlab.commands.settings_flags import add_sampler_flags, add_setting, add_shard_flags, as_flag, check_shard_size, given
from jitlab.errors import ConfigError
from jitlab.evaluation import best_row, evaluate, read_rows, write_rows
from jitlab.generate import Parser, check_device, check_output, dist_info, join_processes, process_device, report_error
from jitlab.settings import EvalSettings, SamplerSettings, ScoreSettings, interval_of, message_of

FLAGS = {"inception_score": "--is"}  # the settings fields whose flag is not --FIELD
SETTING_FIELDS = ({f.name for f in fields(ScoreSettings)} | {f.name for f in fields(SamplerSettings)}
                  | {"ema", "cfg", "cfg_interval", "device"}) - {"cfg_scale"}


def parse_interval(text: str) -> tuple[float, float]:
    """``T_MIN,T_MAX`` -> (T_MIN, T_MAX), checked as the settings check it."""
    try:
        return interval_of("--cfg_interval", text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="jitlab eval", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a jitlab checkpoint")
    p.add_argument("--settings", type=Path, default=None, help="a JSON file of evaluation settings (keys named as "
                   "these flags, as a grid file's eval:); flags given as well override it")
    add_setting(p, "--features", ScoreSettings, "features", "refnet: FD-ref in a classifier trained on the embedded "
                "data; inception: FID (needs weights)", metavar="{refnet,inception}")
    add_setting(p, "--num_images", ScoreSettings, "num_images", "generated images per sweep point", type=int)
    add_setting(p, "--ema", EvalSettings, "ema", "EMA indices to try (0, 1, none)", nargs="+")
    add_setting(p, "--cfg", EvalSettings, "cfg", "CFG scales to try", type=float, nargs="+")
    add_setting(p, "--cfg_interval", EvalSettings, "cfg_interval", "CFG intervals to try, each as T_MIN,T_MAX",
                nargs="+")
    add_sampler_flags(p)
    add_setting(p, "--score_resolution", ScoreSettings, "score_resolution", "resize generated and real images to "
                "this side before the features (and use this resolution's refnet); None: the checkpoint's resolution")
    add_setting(p, "--batch_size", ScoreSettings, "batch_size", "images per forward", type=int)
    add_setting(p, "--is", ScoreSettings, "inception_score", "also the Inception Score", action="store_true",
                dest="inception_score")
    add_setting(p, "--ref_stats", ScoreSettings, "ref_stats", "reference statistics .npz (keys mu, sigma); None: "
                "built from the checkpoint's data")
    add_setting(p, "--ref_images", ScoreSettings, "ref_images", "real images for built reference statistics", type=int)
    add_setting(p, "--inception_weights", ScoreSettings, "inception_weights", "torch-fidelity InceptionV3 weights file")
    add_setting(p, "--device", EvalSettings, "device", "cpu, cuda or cuda:N", shown_default="cuda if available, else cpu")
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
                 f"interval {best['cfg_interval']})" if best else ""))
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
