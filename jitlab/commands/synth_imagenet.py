"""`jitlab synth-imagenet ROOT`: write a small ImageNet-like folder tree (crops of bundled photographs).

To try `jitlab prepare-imagenet` and `jitlab fid-stats --root` on; ``jitlab.core.data.synth_imagenet`` describes it.
"""

from __future__ import annotations

from jitlab.core.data.synth_imagenet import write_tree
from jitlab.errors import ArgumentParser


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="jitlab synth-imagenet", description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--train_per_class", type=int, default=16)
    parser.add_argument("--val_per_class", type=int, default=4)
    parser.add_argument("--short", type=int, nargs=2, default=(48, 160), help="range of the short side")
    parser.add_argument("--no_bad_files", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bad = write_tree(args.root, args.classes, args.train_per_class, args.val_per_class, tuple(args.short), args.seed,
                     not args.no_bad_files)
    print(f"wrote {args.root}; unreadable on purpose: {sum(len(v) for v in bad.values())} files")
    return 0
