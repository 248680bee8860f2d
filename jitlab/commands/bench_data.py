"""`jitlab bench-data`: data-loading throughput, the ImageNet folder source against prepared shards.

    jitlab bench-data --out reports/bench-data.md        (make bench-data; what is measured: experiments.bench.data)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jitlab.atomic import write_text
from jitlab.experiments.bench.data import RESOLUTIONS, DataBenchSettings, run
from jitlab.errors import ArgumentParser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(prog="jitlab bench-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here (default: print it)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=list(RESOLUTIONS))
    parser.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1],
                        help="loader worker counts to measure besides per worker (default: the number of cores)")
    parser.add_argument("--images", type=int, default=192, help="source JPEGs to generate")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--short", type=int, nargs=2, default=(375, 1500), help="range of the short side, pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0, help="minimum measuring time per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=None, help="where to make the temporary directory")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    text = run(DataBenchSettings(**args, argv=argv))
    if out is None:
        print(text)
    else:
        write_text(out, text)
        print(f"jitlab bench-data: wrote {out}", file=sys.stderr)
    return 0
