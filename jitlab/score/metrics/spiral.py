"""Figure 2's metrics (``features: spiral``): generated points against the true spiral after projecting them back.

Chamfer rather than sliced Wasserstein-2: it is in the spiral's own units, it punishes stray points (generated ->
true) and uncovered arms (true -> generated) separately, and it grows linearly (not quadratically) with a few
far-away samples, so one outlier cannot dominate a training.
"""

from __future__ import annotations

import torch
from torch import Tensor

TRUE_SEED = 12345  # the fresh true spiral sample every cell is compared with


def chamfer(a: Tensor, b: Tensor) -> float:
    """``(mean_a min_b |a - b| + mean_b min_a |a - b|) / 2`` of point sets a (N, k), b (M, k): 0 for identical sets,
    the shift for a copy moved by less than half its point spacing."""
    d = torch.cdist(a.double(), b.double())  # (N, M)
    return float(0.5 * (d.min(dim=1).values.mean() + d.min(dim=0).values.mean()))


def off_manifold_residual(x: Tensor, projection: Tensor) -> float:
    """Mean over points of ``||x - P P^T x||``: what the projection to the plane of ``P`` (D, 2) discards. x: (N, D)."""
    x, p = x.double(), projection.double()  # (N, D), (D, 2)
    return float((x - (x @ p) @ p.T).norm(dim=1).mean())  # (N, D) -> ()


def spiral_scores(x: Tensor, data) -> tuple[dict[str, float], Tensor]:
    """({chamfer, residual}, the points on the plane (N, 2)) of generated ``x`` (N, D) for a SpiralDataModule."""
    plane = x.float().cpu() @ data.projection  # (N, 2): P^T x
    truth = data.spiral_2d(x.shape[0], seed=TRUE_SEED)  # (N, 2)
    return {"chamfer": chamfer(plane, truth), "residual": off_manifold_residual(x.cpu(), data.projection)}, plane
