"""The effective rank of a set of vectors (Roy & Vetterli 2007): how many directions they really use.

``erank(A) = exp(H(p))`` with ``p_i = s_i / sum_j s_j`` the normalised singular values of ``A`` and ``H`` the
Shannon entropy: in [1, min(rows, cols)], ``k`` for ``k`` equal singular values, invariant to scale. DSD's collapse
metric (the batch's latent tokens, one row each, centred); no library computes it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def effective_rank(rows: Tensor, center: bool = True, eps: float = 1e-12) -> Tensor:
    """The effective rank of ``rows`` (M, D), a 0-d float32 tensor; ``center``: of the spread, not the offset.
    An all-zero matrix has effective rank 0 by convention (it uses no direction)."""
    if rows.ndim != 2:
        raise ValueError(f"effective_rank takes a matrix (M, D), got shape {tuple(rows.shape)}")
    a = rows.detach().double()  # (M, D)
    if center:
        a = a - a.mean(0, keepdim=True)  # (M, D)
    s = torch.linalg.svdvals(a)  # (min(M, D),)
    total = s.sum()
    if total <= eps:
        return torch.zeros((), dtype=torch.float32, device=rows.device)
    p = s / total  # (K,)
    entropy = -(p * torch.log(p.clamp_min(eps))).sum()  # 0 * log 0 = 0 through the clamp
    return entropy.exp().float()
