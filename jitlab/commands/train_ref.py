"""`jitlab train-ref`: train and cache the reference classifier of an embedded data set (FD-ref features)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jitlab.commands.flags import add_flag, dashed
from jitlab.metrics.refnet import RefNetConfig, cache_path, default_cache_dir, load_refnet


def main(argv: list[str] | None = None) -> int:
    defaults = RefNetConfig()
    p = argparse.ArgumentParser(prog="jitlab train-ref", description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["shapes", "photos"], default=defaults.kind)
    p.add_argument("--resolution", type=int, default=defaults.resolution)
    add_flag(p, "--train_size", dashed("--train_size"), type=int, default=defaults.train_size)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--seed", type=int, default=defaults.seed)
    add_flag(p, "--cache_dir", dashed("--cache_dir"), type=Path, default=None, help=f"default {default_cache_dir()}")
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training (default 1; 0: torch's)")
    args = p.parse_args(argv)
    config = RefNetConfig(kind=args.kind, resolution=args.resolution, train_size=args.train_size,
                          epochs=args.epochs, seed=args.seed)
    if args.force:
        cache_path(config, args.cache_dir).unlink(missing_ok=True)
    net, info = load_refnet(config, cache_dir=args.cache_dir, threads=args.threads or None)
    print(json.dumps({"refnet": f"{config.kind}-{config.resolution}", "val_accuracy": round(info["val_accuracy"], 4),
                      "chance": round(info["chance"], 4), "num_features": net.num_features,
                      "train_seconds": round(info["train_seconds"], 1), "cached": info["cached"],
                      "path": info["path"]}))
    return 0
