"""`jitlab convert-official CKPT --out OUT.ckpt`: a released JiT .pth as a jitlab checkpoint (jitlab.train.convert)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from jitlab.train.convert import OfficialCheckpointError, convert_official
from jitlab.errors import ArgumentParser, ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="jitlab convert-official", description="Convert an authors' JiT checkpoint "
                                     "(.pth) to a jitlab checkpoint that `jitlab sample` reads.")
    parser.add_argument("ckpt", type=Path,
                        help="the release checkpoint (dict with model, model_ema1, model_ema2, args)")
    parser.add_argument("--out", type=Path, required=True, help="the jitlab checkpoint to write (e.g. jit-b16.ckpt)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--in_context_start", type=int, default=None,
                        help="block where the class tokens enter (default: from args.model or the model size)")
    parser.add_argument("--steps_per_epoch", type=int, default=None,
                        help="optimizer steps per epoch for global_step (default: estimated from args, else 0)")
    parser.add_argument("--attn_impl", choices=["fp32", "sdpa"], default="fp32",
                        help="attention kernel of the rebuilt network (fp32 = the release's float32 softmax)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            converted = convert_official(args.ckpt, args.out, overwrite=args.overwrite,
                                         in_context_start=args.in_context_start,
                                         steps_per_epoch=args.steps_per_epoch, attn_impl=args.attn_impl)
    except (OfficialCheckpointError, ConfigError, FileNotFoundError, FileExistsError) as error:
        print(f"jitlab convert-official: error: {error}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"jitlab convert-official: warning: {warning.message}", file=sys.stderr)
    _report(converted, args.out)
    return 0


def _report(converted: dict[str, Any], out: Path) -> None:
    source = converted["jitlab_source"]
    init = converted["hyper_parameters"]["net"]["init_args"]
    arch = ", ".join(f"{k}={init[k]}" for k in ("img_size", "patch_size", "hidden_size", "depth", "num_heads",
                                                 "bottleneck_dim", "in_context_len", "in_context_start", "num_classes"))
    print(f"wrote {out}")
    print(f"  architecture: {arch}")
    print(f"  epoch {source['epoch']}, global_step {converted['global_step']} ({source['global_step']})")
    decays = list(converted["callbacks"].values())[0]["decays"]
    print(f"  EMA decays {decays} (load_module ema=0, ema=1; ema=None = raw weights)")
    print(f"  official sampling: {converted['official_sampling']}")
    for note in source["assumptions"]:
        print(f"  assumed: {note}")
