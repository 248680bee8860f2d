"""`jitlab train-ref`: rebuild a reference classifier (FD-ref features) and compare it with the shipped one.

FD-ref reads the shipped weights (``jitlab.score.metrics.shipped``) on every machine, even where a rebuild differs
(another CPU or torch); a config that is not shipped is trained once and cached (read on this machine only).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from jitlab.errors import ArgumentParser
from jitlab.score.metrics import shipped
from jitlab.score.metrics.refnet import (RefNetConfig, cache_path, default_cache_dir, load_refnet, save_refnet,
                                         train_refnet, weights_digest)

CONFIG_FIELDS = ("kind", "resolution", "train_size", "epochs", "seed")  # the flags that make a RefNetConfig


def parse(argv: list[str] | None) -> argparse.Namespace:
    defaults = RefNetConfig()
    p = ArgumentParser(prog="jitlab train-ref", description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["shapes", "photos"], default=defaults.kind)
    for name in CONFIG_FIELDS[1:]:
        p.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    p.add_argument("--cache_dir", type=Path, default=None, help=f"default {default_cache_dir()}")
    p.add_argument("--force", action="store_true", help="a config that is not shipped: retrain even if cached")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training (default 1; 0: torch's)")
    p.add_argument("--if_missing", action="store_true",
                   help="only make sure the classifier is there: a shipped one is loaded and its digest checked, "
                  "another is trained only if not cached (what `jitlab grid run` asks for)")
    p.add_argument("--out", type=Path, default=None, help="also save the rebuilt classifier to this file")
    p.add_argument("--ship", action="store_true",
                   help="maintainers: write the rebuilt weights into the package with a manifest entry")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    config = RefNetConfig(**{name: getattr(args, name) for name in CONFIG_FIELDS})
    name = f"{config.kind}-{config.resolution}"
    entry = shipped.find(config.kind, config.resolution, config.key())
    threads = args.threads or None
    if entry is None and not args.ship or args.if_missing:
        if args.force and entry is None:
            cache_path(config, args.cache_dir).unlink(missing_ok=True)
        net, info = load_refnet(config, cache_dir=args.cache_dir, threads=threads)
        where = "shipped, digest checked" if info["shipped"] else "not shipped: its scores compare on this machine only"
        print(json.dumps({"refnet": name, "val_accuracy": round(info["val_accuracy"], 4), "digest": info["digest"],
                          "cached": info["cached"], "shipped": info["shipped"], "path": info["path"]}))
        print(f"jitlab train-ref: {name} ({where}) at {info['path']}")
        return 0
    net, info = train_refnet(config, threads=threads)
    digest = weights_digest(net)
    if args.out is not None:
        save_refnet(args.out, net, config, info)
    print(json.dumps({"refnet": name, "key": config.key(), "val_accuracy": round(info["val_accuracy"], 4),
                      "train_seconds": round(info["train_seconds"], 1), "digest": digest,
                      "shipped_digest": entry.digest if entry else None}))
    if args.ship:
        made = shipped.ship(net.state_dict(), config.kind, config.resolution, config.key(), asdict(config), info)
        print(f"jitlab train-ref: shipped {name} as {made.path()} (digest {made.digest}, validation accuracy "
              f"{made.val_accuracy:.1%})")
        return 0
    if digest == entry.digest:
        print(f"jitlab train-ref: {name} digest match: the rebuilt weights are the shipped ones ({digest})")
        return 0
    print(f"jitlab train-ref: {name} digest mismatch: rebuilt {digest}, shipped {entry.digest} (validation "
          f"accuracy {info['val_accuracy']:.1%} rebuilt, {entry.val_accuracy:.1%} shipped). Training on another "
          "CPU or torch build may give other weights; FD-ref keeps reading the shipped ones")
    return 1
