"""`jitlab info`: parameters and multiply-adds of a named model, counted on the meta device."""

from __future__ import annotations

import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from jitlab.errors import ArgumentParser
from jitlab.models import MODELS, build_model
from jitlab.models.jit import JiT


def count_params(net: torch.nn.Module) -> int:
    """All parameters, the fixed position embedding included (as the release counts them)."""
    return sum(p.numel() for p in net.parameters())


def count_gmacs(net: JiT, batch: int = 1) -> float:
    """Multiply-adds (in 1e9) of one forward pass of ``batch`` images, via ``torch.utils.flop_counter``.

    Runs on whatever device ``net`` lives on; on the meta device no memory is used.
    """
    device = next(net.parameters()).device
    x = torch.zeros(batch, *net.sample_shape, device=device)  # (N, C, H, W)
    t = torch.zeros(batch, device=device)  # (N,)
    y = torch.zeros(batch, dtype=torch.long, device=device)  # (N,)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, t, y)
    return counter.get_total_flops() / 2 / 1e9


def describe(name: str, img_size: int, num_classes: int = 1000) -> dict:
    with torch.device("meta"):
        net = build_model(name, img_size=img_size, num_classes=num_classes)
    return {
        "model": name,
        "img_size": img_size,
        "params": count_params(net),
        "gmacs": count_gmacs(net),
        "tokens": net.num_patches,
        "patch_dim": net.patch_dim,
        "hidden_size": net.hidden_size,
        "depth": net.depth,
        "bottleneck_dim": net.init_args["bottleneck_dim"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="jitlab info", description="Parameters and GMACs of a named JiT model.")
    parser.add_argument("--model", required=True, choices=list(MODELS), metavar="NAME",
                        help="a registry name, e.g. JiT-B/16 (sizes G H L B S T P; patches 2 4 8 16 32 64)")
    parser.add_argument("--img_size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--num_classes", type=int, default=1000)
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
