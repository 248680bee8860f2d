"""`jitlab fid-stats`: reference statistics (mu, sigma) as .npz, of an embedded data set or of ImageNet.

Under ``torchrun --nproc_per_node N -m jitlab.commands.cli fid-stats --root ...`` the processes share the images.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from jitlab.errors import ArgumentParser, ConfigError
from jitlab.score.metrics.features import INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE, build_extractor
from jitlab.score.metrics.stats import ReferenceStats, dataset_stats, join_torchrun


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jitlab fid-stats",
                                description="Reference statistics (mu, sigma) as .npz: of an embedded data set "
                                            "(--kind) or of the ImageNet training split (--root).")
    p.add_argument("--root", default=None, help="ImageNet: a folder tree (ROOT/train/<class>/*) or a directory of "
                   "`jitlab prepare-imagenet` shards; every training image, ADM centre crop, no flip")
    p.add_argument("--source", choices=["auto", "folder", "shards"], default="auto", help="with --root")
    p.add_argument("--classes", default=None, help="with --root: a class subset as --data.classes takes it (N = the "
                   "first N classes, imagenet100, imagenette, or a file of WordNet ids); default all")
    p.add_argument("--kind", choices=["shapes", "photos"], default="shapes", help="embedded data (without --root)")
    p.add_argument("--resolution", type=int, default=32, help="image side in pixels (64, 256, 512, 1024, ...)")
    p.add_argument("--num", type=int, default=None, help="embedded data: images (the first NUM training items; "
                   "default 2000)")
    p.add_argument("--seed", type=int, default=0, help="data seed (the training set of a run with this seed)")
    p.add_argument("--features", choices=["refnet", "inception"], default=None,
                   help="default: inception with --root, refnet for embedded data")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--inception_weights", default=None, help=f"torch-fidelity's {INCEPTION_WEIGHTS_FILE} "
                   f"(default: ${INCEPTION_WEIGHTS_ENV}, then torch hub's cache)")
    p.add_argument("--cache_dir", default=None, help="refnet cache folder (default ~/.cache/jitlab/refnet)")
    p.add_argument("--batch_size", type=int, default=100, help="images per batch and process")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="with --root: data-loader workers per process (default: up to 8, one per core)")
    p.add_argument("--every", type=int, default=50, help="with --root: save the partial sums every N batches "
                   "(OUT.partial.pt; the same command continues from it)")
    p.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--device", default=None)
    return p


def imagenet(args: argparse.Namespace) -> ReferenceStats | None:
    from jitlab.score.metrics.imagenet_stats import imagenet_stats

    if args.features != "inception":
        raise ConfigError("--features", "ImageNet statistics (--root) are in Inception features: use "
                                        "--features inception (refnet features belong to embedded data)")
    if args.num is not None:
        raise ConfigError("--num", "ImageNet statistics (--root) use every training image; leave --num out")
    from jitlab.core.data.imagenet import dataset_classes

    classes = int(args.classes) if args.classes is not None and args.classes.isdigit() else args.classes
    dataset_classes(args.root, args.source, classes)  # a missing root or an unknown class fails before the weights
    rank, device = join_torchrun(args.device)
    extractor = build_extractor("inception", inception_weights=args.inception_weights)
    try:
        return imagenet_stats(args.root, args.resolution, extractor, args.out, args.batch_size, args.workers,
                              args.every, args.progress, device, args.source, classes)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.features is None:
        args.features = "inception" if args.root else "refnet"
    for flag, value in (("--resolution", args.resolution), ("--batch_size", args.batch_size)):
        if value <= 0:
            raise ConfigError(flag, f"must be positive, got {value}")
    if args.root:
        stats = imagenet(args)
        if stats is None:  # not rank 0: rank 0 writes and reports
            return 0
    else:
        num = 2000 if args.num is None else args.num
        if num < 2:
            raise ConfigError("--num", f"needs at least 2 images, got {num}")
        from jitlab.core.data.embedded import make_dataset

        extractor = build_extractor(args.features, args.kind, args.resolution, args.inception_weights,
                                    args.cache_dir)
        dataset = make_dataset(args.kind, args.resolution, num, args.seed)
        stats = dataset_stats(dataset, extractor, args.out, batch_size=args.batch_size, device=args.device)
    print(json.dumps({"out": str(args.out), "n": stats.n, "feature_space": stats.feature_space,
                      "resolution": stats.resolution, "num_features": int(stats.mu.shape[0]),
                      "trace_sigma": float(np.trace(stats.sigma))}))
    return 0
