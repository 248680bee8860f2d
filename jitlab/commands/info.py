"""`jitlab info`: parameters and multiply-adds of a named model, counted on the meta device."""

from __future__ import annotations

import json

from jitlab.commands.flags import add_flag, dashed
from jitlab.errors import ArgumentParser
from jitlab.models import MODELS
from jitlab.models.flops import describe


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="jitlab info", description="Parameters and GMACs of a named JiT model.")
    parser.add_argument("--model", required=True, choices=list(MODELS), metavar="NAME",
                        help="a registry name, e.g. JiT-B/16 (sizes G H L B S T P; patches 2 4 8 16 32 64)")
    add_flag(parser, "--img_size", dashed("--img_size"), type=int, default=256,
             help="image side in pixels (default 256)")
    add_flag(parser, "--num_classes", dashed("--num_classes"), type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    row = describe(args.model, args.img_size, args.num_classes)
    if args.json:
        print(json.dumps(row))
        return 0
    print(f"{'model':<16}{row['model']}")
    print(f"{'image':<16}{row['img_size']}x{row['img_size']}")
    print(f"{'parameters':<16}{row['params'] / 1e6:.1f}M ({row['params']:,})")
    print(f"{'GMACs/forward':<16}{row['gmacs']:.2f}  (multiply-adds, batch 1; the paper's 'Gflops')")
    print(f"{'tokens':<16}{row['tokens']}")
    print(f"{'patch dim':<16}{row['patch_dim']}")
    print(f"{'hidden size':<16}{row['hidden_size']}")
    print("bottleneck d'".ljust(16) + str(row["bottleneck_dim"]))
    return 0
