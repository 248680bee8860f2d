"""`jitlab consolidate CKPT_DIR OUT.ckpt`: a sharded checkpoint (``--trainer.strategy`` fsdp2) as one file.

jitlab's one-file layout (weights, both EMAs, hyper-parameters, step; no optimizer state), made on CPU.
"""

from __future__ import annotations

from jitlab.errors import ArgumentParser
from jitlab.train.strategy import consolidate


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="jitlab consolidate", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_dir", metavar="CKPT_DIR", help="a sharded checkpoint directory (e.g. .../last.ckpt)")
    parser.add_argument("out", metavar="OUT.ckpt", help="the one-file checkpoint to write")
    args = parser.parse_args(argv)
    out = consolidate(args.ckpt_dir, args.out)
    print(f"jitlab consolidate: wrote {out}")
    return 0
