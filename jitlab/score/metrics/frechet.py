"""The Frechet distance between Gaussians fitted to features, as a torchmetrics metric with an optional fixed reference.

torchmetrics' ``FrechetInceptionDistance`` accumulates float64 sums of features and of their outer
products, and sums them over processes before ``compute`` (each rank updates with its slice). It
takes the real statistics only from images; to measure against a reference ``.npz`` (mu, sigma)
we keep the reference as buffers and, when present, ``compute`` uses them in place of the real
states, with torchmetrics' own Frechet formula (``_compute_fid``: eigenvalues of sigma1 @ sigma2,
the same as torch-fidelity's). Injecting the reference into the summed real states instead would be
multiplied by the number of processes at sync time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid


class FrechetDistance(FrechetInceptionDistance):
    """FID (or FD-ref) of fake features against real features or a fixed reference (mu, sigma).

    Args:
        feature: any module mapping the ``update`` input to features (N, F); it needs ``num_features``.
        reference: optional ``(mu (F,), sigma (F, F))``; then only fake updates are needed.
    """

    def __init__(self, feature: nn.Module, reference: tuple | None = None, **kwargs):
        super().__init__(feature=feature, **kwargs)
        self.register_buffer("reference_mu", None, persistent=False)
        self.register_buffer("reference_sigma", None, persistent=False)
        if reference is not None:
            self.set_reference(*reference)

    def set_reference(self, mu: Tensor | np.ndarray, sigma: Tensor | np.ndarray) -> None:
        mu = torch.as_tensor(mu, dtype=torch.float64)  # (F,)
        sigma = torch.as_tensor(sigma, dtype=torch.float64)  # (F, F)
        width = self.fake_features_sum.shape[0]
        if mu.shape != (width,) or sigma.shape != (width, width):
            raise ValueError(f"reference statistics have shapes {tuple(mu.shape)} and {tuple(sigma.shape)}; "
                             f"the features are {width}-d")
        device = self.fake_features_sum.device
        self.reference_mu, self.reference_sigma = mu.to(device), sigma.to(device)

    def statistics(self, real: bool) -> tuple[Tensor, Tensor, int]:
        """Mean (F,), unbiased covariance (F, F) in float64, and the count, from the current states."""
        prefix = "real" if real else "fake"
        n = int(getattr(self, f"{prefix}_features_num_samples"))
        if n < 2:
            hint = "" if not real else " (or a reference: FrechetDistance(..., reference=(mu, sigma)))"
            raise ValueError(f"the Frechet distance needs at least 2 {prefix} samples{hint}, got {n}")
        mu = getattr(self, f"{prefix}_features_sum") / n  # (F,)
        outer = getattr(self, f"{prefix}_features_cov_sum")  # (F, F): sum of x x^T
        sigma = (outer - n * torch.outer(mu, mu)) / (n - 1)  # (F, F)
        return mu, sigma, n

    def compute(self) -> Tensor:
        """float64 distance; Metric wraps this so that the states are summed over processes first."""
        mu_fake, sigma_fake, _ = self.statistics(real=False)
        if self.reference_mu is not None:
            mu_real, sigma_real = self.reference_mu, self.reference_sigma
        else:
            mu_real, sigma_real, _ = self.statistics(real=True)
        return _compute_fid(mu_real, sigma_real, mu_fake, sigma_fake)  # () float64
