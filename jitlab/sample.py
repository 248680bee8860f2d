"""`jitlab sample`: images from a checkpoint as a PNG grid and/or an `.npz` of uint8 images.

Run under `torchrun --nproc_per_node N` to split the work: each process makes a disjoint slice of
the global indices and rank 0 assembles the result, identical to a one-process run. Every input is
checked before the first forward; a bad one is one `jitlab: error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from jitlab.atomic import atomic_path
from jitlab.errors import ConfigError
from jitlab.generate import (Parser, SamplerSettings, add_sampler_flags, check_at_least, check_cfg, check_classes,
                             check_device, check_ema, check_output, dist_info, generate_uint8, labels_for, parse_ema,
                             rank_indices, read_jitlab_checkpoint, report_error)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="jitlab sample", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a jitlab checkpoint (from `jitlab fit` or `jitlab convert-official`)")
    p.add_argument("--num_images", type=int, default=40, help="number of images")
    p.add_argument("--classes", type=int, nargs="*", default=None,
                   help="labels to cycle through (None: balanced over all classes, label = index mod classes)")
    p.add_argument("--ema", type=parse_ema, default=0, help="EMA index (0 = first decay), 1, or 'none' for raw weights")
    add_sampler_flags(p)
    p.add_argument("--cfg", type=float, default=1.0, help="CFG scale on the velocity (1 = no guidance)")
    p.add_argument("--cfg_interval", type=float, nargs=2, default=(0.1, 1.0), metavar=("T_MIN", "T_MAX"),
                   help="guide where T_MIN < t < T_MAX (t >= 0 when T_MIN = 0), as the release")
    p.add_argument("--batch_size", type=int, default=64, help="images per forward")
    p.add_argument("--png", type=Path, default=None, help="write a grid PNG here (None and no --npz: beside CKPT)")
    p.add_argument("--npz", type=Path, default=None, help="write uint8 images (N, H, W, C) and labels here")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (None: one class per row)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Everything that needs no checkpoint: counts, CFG, outputs, device."""
    check_at_least("--num_images", args.num_images, 1)
    check_at_least("--steps", args.steps, 1)
    check_at_least("--batch_size", args.batch_size, 1)
    if args.nrow is not None:
        check_at_least("--nrow", args.nrow, 1)
    check_cfg([args.cfg], [tuple(args.cfg_interval)])
    check_output("--npz", args.npz)
    check_output("--png", args.png)
    check_device(args.device)


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray | None, meta: dict) -> None:
    """Atomic: write a temporary file, then rename."""
    arrays = {"images": images, "indices": np.arange(len(images))}
    if labels is not None:
        arrays["labels"] = labels
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez keeps a name ending in .npz
        np.savez(tmp, **arrays, meta=np.array(json.dumps(meta)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.png is None and args.npz is None:
        args.png = Path(args.ckpt).with_suffix(".samples.png")
    try:
        check_args(args)
        ckpt = read_jitlab_checkpoint(args.ckpt)
        check_ema(ckpt, [args.ema], args.ckpt)
    except ConfigError as error:
        return report_error(error)
    from jitlab.checkpoint import load_module

    rank, world = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" and world > 1 else args.device
    module = load_module(args.ckpt, ema=args.ema, device=device, ckpt=ckpt)
    try:
        check_classes(args.classes, module.null_class)
    except ConfigError as error:
        return report_error(error)
    settings = SamplerSettings(args.sampler, args.steps, args.cfg, tuple(args.cfg_interval), args.seed,
                               args.final_step, args.precision)
    indices = rank_indices(args.num_images, rank, world)
    labels = labels_for(indices, module.null_class, args.classes)
    parts = list(generate_uint8(module, indices, labels, settings, args.batch_size, progress=rank == 0))
    images = torch.cat([p[1] for p in parts])  # (n_rank, C, H, W) uint8
    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, images)
        images = torch.empty((args.num_images, *images.shape[1:]), dtype=torch.uint8)
        for r, chunk in enumerate(gathered):
            images[r::world] = chunk  # rank r made indices r, r + world, ...
    if rank == 0:
        write_outputs(args, module, images, settings)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def write_outputs(args: argparse.Namespace, module, images: torch.Tensor, settings: SamplerSettings) -> None:
    """The npz (images, labels, metadata with every sampler setting) and/or the grid PNG."""
    all_labels = labels_for(range(args.num_images), module.null_class, args.classes)
    meta = {"ckpt": str(args.ckpt), "step": module.checkpoint_step, "ema": module.ema_decay, **settings.record()}
    if args.npz is not None:
        labels_np = None if all_labels is None else all_labels.numpy()
        write_npz(args.npz, images.permute(0, 2, 3, 1).numpy(), labels_np, meta)
        print(f"jitlab sample: wrote {args.num_images} images to {args.npz}")
    if args.png is not None and images.ndim == 4:
        from jitlab.callbacks import image_grid, save_png

        classes = len(args.classes) if args.classes else (module.null_class or 8)
        nrow = args.nrow or max(1, min(args.num_images, math.ceil(args.num_images / min(classes, args.num_images))))
        order = _grid_order(all_labels, args.num_images) if args.nrow is None else torch.arange(args.num_images)
        save_png(image_grid(images[order], nrow=nrow), args.png)
        print(f"jitlab sample: wrote a grid of {args.num_images} images to {args.png}")


def _grid_order(labels: torch.Tensor | None, n: int) -> torch.Tensor:
    """Sort by label (stable) so that each grid row shows one class."""
    if labels is None:
        return torch.arange(n)
    return torch.sort(labels, stable=True).indices


if __name__ == "__main__":
    raise SystemExit(main())
