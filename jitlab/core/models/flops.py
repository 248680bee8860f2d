"""Parameters and multiply-adds of a backbone, counted on whatever device it lives on (the meta device: no memory).

Used by `jitlab info`, `jitlab grid plan` and `jitlab bench`.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from jitlab.core.models.protocol import Backbone
from jitlab.core.models.registry import build_model


def count_params(net: torch.nn.Module) -> int:
    """All parameters, the fixed position embedding included (as the release counts them)."""
    return sum(p.numel() for p in net.parameters())


def count_gmacs(net: Backbone, batch: int = 1) -> float:
    """Multiply-adds (in 1e9) of one forward pass of ``batch`` samples, via ``torch.utils.flop_counter``."""
    device = next(net.parameters()).device
    z = torch.zeros(batch, *net.sample_shape, device=device)  # (N, C, H, W)
    t = torch.zeros(batch, device=device)  # (N,)
    y = torch.zeros(batch, dtype=torch.long, device=device)  # (N,)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(z, t, y)
    return counter.get_total_flops() / 2 / 1e9


def describe(name: str, img_size: int, num_classes: int = 1000) -> dict:
    """A registry model's size at ``img_size``: parameters, GMACs, tokens, widths (built on the meta device)."""
    with torch.device("meta"):
        net = build_model(name, img_size=img_size, num_classes=num_classes)
    return {"model": name, "img_size": img_size, "params": count_params(net), "gmacs": count_gmacs(net),
            "tokens": net.num_patches, "patch_dim": net.patch_dim, "hidden_size": net.hidden_size, "depth": net.depth,
            "bottleneck_dim": net.init_args["bottleneck_dim"]}
