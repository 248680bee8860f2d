"""`jitlab released`: convert and score the authors' released checkpoints -> reports/released.{csv,md}.

What is converted, scored and compared: ``jitlab.experiments.grid.released``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jitlab.errors import ArgumentParser, ConfigError
from jitlab.experiments.grid import released
from jitlab.experiments.grid.released import GRIDS


def build_parser() -> argparse.ArgumentParser:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    p = ArgumentParser(prog="jitlab released", description=released.__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=Path, required=True, help="folder holding the released .pth files")
    p.add_argument("--grids", nargs="+", default=list(GRIDS), help="grids whose cells are the released models")
    p.add_argument("--only", nargs="+", default=None, metavar="MODEL", help="only these models, e.g. JiT-B/16")
    p.add_argument("--inception_weights", type=Path, default=None,
                   help="torch-fidelity InceptionV3 weights (None: $JITLAB_INCEPTION_WEIGHTS or torch hub's cache)")
    p.add_argument("--fid_stats", type=Path, default=None,
                   help="folder of the release's jit_in256_stats.npz and jit_in512_stats.npz (None: the grid's path)")
    p.add_argument("--devices", type=int, default=max(gpus, 1), help="processes (GPUs) per evaluation")
    p.add_argument("--device", default="cuda" if gpus else "cpu", help="cuda or cpu")
    p.add_argument("--num_images", type=int, default=None, help="None: the release's 50,000")
    p.add_argument("--steps", type=int, default=None, help="None: the release's (50)")
    p.add_argument("--batch_size", type=int, default=None, help="images per forward (None: the release's 128)")
    p.add_argument("--work", type=Path, default=Path("runs/released"), help="converted checkpoints and metrics")
    p.add_argument("--out", type=Path, default=Path("reports"), help="where released.{csv,md} go")
    p.add_argument("--keep_converted", action="store_true", help="keep WORK/ID/checkpoints/last.ckpt afterwards")
    return p


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    try:
        released.run(options)
    except ConfigError as error:
        print(f"jitlab released: error: {error}", file=sys.stderr)
        return 2
    print(f"jitlab released: wrote {options.out / 'released.csv'} and {options.out / 'released.md'}")
    return 0
