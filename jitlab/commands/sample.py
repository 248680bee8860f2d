"""`jitlab sample`: images from a checkpoint as a PNG grid and/or an `.npz` of uint8 images.

Under `torchrun --nproc_per_node N -m jitlab.commands.cli sample ...` the processes share the images (the result is
a one-process run's). Every input is checked before the first forward.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields
from pathlib import Path

import torch

from jitlab.commands.settings_flags import add_settings_flags, add_shard_flags, as_flag, check_shard_size, given
from jitlab.errors import ArgumentParser, ConfigError
from jitlab.score.generate import (check_classes, check_device, check_ema, check_output, dist_info,
                                   join_processes, labels_for, process_device, read_jitlab_checkpoint, report_error)
from jitlab.core.images import class_rows, image_grid, save_png, write_npz
from jitlab.core.settings import SamplerSettings, SampleSettings

FLAGS = {"cfg_scale": "--cfg"}  # the settings fields whose flag is not --FIELD
SAMPLE_FIELDS = [f.name for f in fields(SampleSettings) if f.name != "sampling"]
SAMPLER_FIELDS = [f.name for f in fields(SamplerSettings)]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jitlab sample", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a jitlab checkpoint (from `jitlab fit` or `jitlab convert-official`)")
    add_settings_flags(p, SampleSettings, SAMPLE_FIELDS)
    add_settings_flags(p, SamplerSettings, SAMPLER_FIELDS, FLAGS)
    p.add_argument("--png", type=Path, default=None, help="write a grid PNG here (None and no --npz: beside CKPT)")
    p.add_argument("--npz", type=Path, default=None, help="write uint8 images (N, H, W, C) and labels here")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (None: one class per row)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda if available, else cpu)")
    add_shard_flags(p)
    return p


def check_args(args: argparse.Namespace) -> SampleSettings:
    """Everything that needs no checkpoint: the settings (a bad one names its flag), outputs, device."""
    try:
        settings = SampleSettings(**given(args, SAMPLE_FIELDS), sampling=SamplerSettings(**given(args, SAMPLER_FIELDS)))
    except ConfigError as error:
        raise as_flag(error, FLAGS) from None
    if args.nrow is not None and args.nrow < 1:
        raise ConfigError("--nrow", f"must be >= 1, got {args.nrow}")
    check_shard_size(args.shard_size)
    check_output("--npz", args.npz)
    check_output("--png", args.png)
    check_device(args.device)
    return settings


def main(argv: list[str] | None = None) -> int:
    from jitlab.train.checkpoint import load_module
    from jitlab.score.shards import sample_images

    args = build_parser().parse_args(argv)
    if args.png is None and args.npz is None:
        args.png = Path(args.ckpt).with_suffix(".samples.png")
    rank, world = dist_info()
    args.device = process_device(args.device, world)
    try:
        settings = check_args(args)
        ckpt = read_jitlab_checkpoint(args.ckpt)
        check_ema(ckpt, [settings.ema], args.ckpt)
        join_processes(args.device, world)
        module = load_module(args.ckpt, ema=settings.ema, device=args.device, ckpt=ckpt)
        check_classes(settings.classes, module.null_class)
    except ConfigError as error:
        return report_error(error)
    images = sample_images(module, settings, args.shards, args.shard_size, progress=rank == 0)
    if rank == 0:
        write_outputs(args, module, images, settings)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def write_outputs(args: argparse.Namespace, module, images: torch.Tensor, settings: SampleSettings) -> None:
    """The npz (images, labels, metadata with every sampler setting) and/or the grid PNG."""
    n = settings.num_images
    all_labels = labels_for(range(n), module.null_class, settings.classes)
    meta = {"ckpt": str(args.ckpt), "step": module.checkpoint_step, "ema": module.ema_decay,
            **settings.sampling.record()}
    if args.npz is not None:
        labels_np = None if all_labels is None else all_labels.numpy()
        write_npz(args.npz, images.permute(0, 2, 3, 1).numpy(), labels_np, meta)
        print(f"jitlab sample: wrote {n} images to {args.npz}")
    if args.png is not None and images.ndim == 4:
        classes = len(settings.classes) if settings.classes else (module.null_class or 8)
        nrow = args.nrow or max(1, min(n, math.ceil(n / min(classes, n))))
        order = class_rows(all_labels, n) if args.nrow is None else torch.arange(n)
        save_png(image_grid(images[order], nrow=nrow), args.png)
        print(f"jitlab sample: wrote a grid of {n} images to {args.png}")


if __name__ == "__main__":
    raise SystemExit(main())
