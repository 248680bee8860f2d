"""`jitlab prepare-imagenet`: write uint8 centre crops of an ImageNet folder tree once, as litdata shards.

    jitlab prepare-imagenet --src /data/imagenet --out /data/imagenet-256 --resolution 256

What is written, resumed and skipped: ``jitlab.core.data.prepare``.
"""

from __future__ import annotations

import argparse
import os
import sys

from jitlab.core.data import prepare
from jitlab.core.data.imagenet import SPLITS
from jitlab.errors import ArgumentParser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="jitlab prepare-imagenet", description=prepare.__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="ImageNet folder tree: SRC/train/<class>/*.JPEG, SRC/val/...")
    parser.add_argument("--out", required=True, help="the shard directory to write (created)")
    parser.add_argument("--resolution", type=int, required=True, help="side of the crops, e.g. 64, 256, 512, 1024")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel processes (default: all cores; 0 = in this process)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                        help="splits to write (those SRC has; default: train val)")
    parser.add_argument("--part_size", type=int, default=None,
                        help="images per part, the unit of work and of resuming (default: about 256 MB of crops)")
    parser.add_argument("--chunk_bytes", default="64MB", help="size of the litdata chunks (default: 64MB)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--classes", type=prepare.class_spec, default=None,
                        help="a class subset: N (the first N classes), a file of WordNet ids (one a line) or a "
                             "shipped list (imagenette, imagenet100); default: all classes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return prepare.run(args)
    except prepare.UsageError as error:
        print(f"jitlab: error: {error}", file=sys.stderr)
        return 2
