"""Metrics of the Figure 2 toy, computed after projecting generated points back to the plane of ``P``.

Distance: Chamfer rather than sliced Wasserstein-2, because it is in the spiral's own units, it
punishes stray points (generated -> true) and uncovered arms (true -> generated) separately, it
grows linearly (not quadratically) with a few far-away samples so one outlier cannot dominate a
seed, and it is the distance the issue's probes reported, so the numbers are comparable.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_plane(x: Tensor, projection: Tensor) -> Tensor:
    """``P^T x``: data-space points (N, D) -> their 2-D coordinates (N, 2) on the plane of ``P`` (D, 2)."""
    return x.float() @ projection  # (N, 2)


def off_manifold_residual(x: Tensor, projection: Tensor) -> Tensor:
    """Mean over points of ``||x - P P^T x||``: what the projection to the plane discards. x: (N, D)."""
    x = x.double()
    p = projection.double()  # (D, 2)
    residual = x - (x @ p) @ p.T  # (N, D)
    return residual.norm(dim=1).mean().float()


def chamfer(a: Tensor, b: Tensor) -> Tensor:
    """Symmetric Chamfer distance of point sets a (N, k), b (M, k).

    ``(mean_a min_b |a - b| + mean_b min_a |a - b|) / 2``: 0 for identical sets, and equal to the
    shift when one set is a copy of the other moved by less than half its point spacing.
    """
    d = torch.cdist(a.double(), b.double())  # (N, M)
    return (0.5 * (d.min(dim=1).values.mean() + d.min(dim=0).values.mean())).float()
