"""`jitlab bench`: training and sampling speed of named models, in one process, as a table, JSON or a report.

    jitlab bench                                   # the mini model, then JiT-B/16 at 256
    jitlab bench --model JiT-B/16 --img_size 256 --json
    jitlab bench --out reports/bench.md            # (make bench) the table with the machine, versions and date
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

from jitlab.atomic import write_text
from jitlab.experiments.bench.report import report, table
from jitlab.experiments.bench.run import MINI, MINI_CONFIG, BenchSettings, bench_model
from jitlab.errors import ArgumentParser, ConfigError


def parse_model(text: str) -> str:
    from jitlab.core.models import MODELS

    if text != MINI and text not in MODELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not {MINI!r} or a registry name such as JiT-B/16")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jitlab bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=parse_model, nargs="+", default=[MINI, "JiT-B/16"], metavar="NAME",
                   help=f"{MINI!r} (the mini scale's model and data, --config) or registry names such as JiT-B/16")
    p.add_argument("--img_size", type=int, default=None,
                   help="image side for every model; None: the mini config's, 256 for registry names")
    p.add_argument("--config", type=Path, default=MINI_CONFIG, help="the mini model's config")
    p.add_argument("--steps", type=int, default=10, help="timed training steps, per loop")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--batch_size", type=int, default=None,
                   help="training batch; None: the config's, 4 for models over 5 GMACs per image")
    p.add_argument("--sample_batch", type=int, default=None,
                   help="images sampled, one batch; None: 16, 2 for models over 5 GMACs per image")
    p.add_argument("--sample_steps", type=int, default=50, help="Heun steps (50: the release's)")
    p.add_argument("--cfg", type=float, default=2.9, help="CFG scale (2.9: the release's)")
    p.add_argument("--cfg_interval", type=float, nargs=2, default=(0.1, 1.0), metavar=("T_MIN", "T_MAX"))
    p.add_argument("--attn_impl", choices=["fp32", "sdpa"], default=None,
                   help="attention; None: the mini config's, fp32 (the release's) for registry names")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile the network (auto: on a GPU only)")
    p.add_argument("--threads", type=int, default=None, help="torch threads; None: torch's")
    p.add_argument("--json", action="store_true", help="print one JSON object per model (one per line)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown report here (make bench)")
    return p


def settings_from(args: argparse.Namespace) -> BenchSettings:
    for flag in ("steps", "warmup", "batch_size", "sample_batch", "sample_steps", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag}", f"must be >= 1, got {value}")
    if not (math.isfinite(args.cfg) and args.cfg >= 0):
        raise ConfigError("--cfg", f"must be a number >= 0, got {args.cfg}")
    low, high = args.cfg_interval
    if not 0 <= low < high <= 1:
        raise ConfigError("--cfg_interval", f"T_MIN T_MAX must satisfy 0 <= T_MIN < T_MAX <= 1, got {low} {high}")
    if MINI in args.model and not args.config.is_file():
        raise ConfigError("--config", f"{args.config} not found (run from the repository root or pass --config)")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ConfigError("--device", f"unknown device {args.device!r}; valid: cpu, cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda asked for, but no GPU is available here; use --device cpu")
    compiled = {"auto": None, "on": True, "off": False}[args.compile]
    return BenchSettings(args.steps, args.warmup, args.batch_size, args.sample_batch, args.sample_steps, args.cfg,
                         (low, high), str(device), compiled, args.attn_impl, args.config)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = [bench_model(model, args.img_size if args.img_size or model == MINI else 256, settings)
            for model in args.model]
    print("\n".join(map(json.dumps, rows)) if args.json else table(rows))
    if args.out is not None:
        load = (load_before, os.getloadavg()[0])
        write_text(args.out, report(rows, argv, torch.device(settings.device), load))
        print(f"jitlab bench: wrote {args.out}", file=sys.stderr)
    return 0
