"""`jitlab fig2`: the toy experiment of Figure 2 (a spiral in D dims, x/eps/v prediction) -> reports/fig2.*.

What is trained, cached and reported: ``jitlab.experiments.toy.fig2``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jitlab.experiments.toy import fig2
from jitlab.experiments.toy.cell import Settings


def steps_arg(value: str) -> int | str:
    """``--steps``: ``auto`` (the convergence probe) or a positive number of optimizer steps."""
    if value == "auto":
        return value
    try:
        steps = int(value)
    except ValueError:
        steps = 0
    if steps < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {value!r}")
    return steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Settings()
    ap = argparse.ArgumentParser(prog="jitlab fig2", description=fig2.__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=fig2.DEFAULT_DIMS, help="ambient dimensions D")
    ap.add_argument("--preds", nargs="+", default=fig2.DEFAULT_PREDS, choices=fig2.DEFAULT_PREDS,
                    help="prediction spaces")
    ap.add_argument("--loss", default="v", choices=fig2.DEFAULT_PREDS, help="loss space (default v)")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds 0 .. N-1 at the lowest and highest D")
    ap.add_argument("--seeds_mid", type=int, default=1, help="training seeds at the D between them (not a claim)")
    ap.add_argument("--steps", type=steps_arg, default="auto",
                    help="optimizer steps per training, or 'auto': the length probe (default)")
    ap.add_argument("--batch_size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--schedule", default=d.schedule, choices=["constant", "cosine"])
    ap.add_argument("--mu", type=float, default=d.mu, help="logit-normal time sampler: mean")
    ap.add_argument("--sigma", type=float, default=d.sigma, help="logit-normal time sampler: std")
    ap.add_argument("--noise", type=float, default=d.noise, help="spiral thickness (std)")
    ap.add_argument("--samples", type=int, default=d.samples, help="generated points per training")
    ap.add_argument("--sample_steps", type=int, default=d.sample_steps, help="Euler steps")
    ap.add_argument("--workers", type=int, default=2, help="trainings run in parallel processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--out", type=Path, default=Path("reports"), help="where fig2.{csv,md,png} go")
    ap.add_argument("--name", default=None, help="file stem of the outputs (default fig2, or fig2_<loss>loss)")
    ap.add_argument("--cache", type=Path, default=Path("runs/fig2"), help="per-training result files")
    ap.add_argument("--force", action="store_true", help="retrain cached cells (and the probe)")
    args = ap.parse_args(argv)
    for flag in ("seeds", "seeds_mid", "workers", "threads"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    args.dims = sorted(set(args.dims))
    args.preds = [p for p in fig2.DEFAULT_PREDS if p in args.preds]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return fig2.run(parse_args(argv), argv)
