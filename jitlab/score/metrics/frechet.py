"""The Frechet distance between Gaussians fitted to features, as a torchmetrics metric with an optional fixed reference.

torchmetrics' ``FrechetInceptionDistance`` sums features and their outer products over processes, but takes the
real statistics only from images. A reference (mu, sigma) is kept as buffers that ``compute`` uses in place of the
real states: injected into the summed states, it would be multiplied by the number of processes at sync time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid


class FrechetDistance(FrechetInceptionDistance):
    """FID (or FD-ref) of fake features against real features or a fixed ``reference`` (mu (F,), sigma (F, F)).

    ``feature``: any module mapping the ``update`` input to features (N, F), with ``num_features``.
    """

    def __init__(self, feature: nn.Module, reference: tuple | None = None, **kwargs):
        super().__init__(feature=feature, **kwargs)
        self.register_buffer("reference_mu", None, persistent=False)
        self.register_buffer("reference_sigma", None, persistent=False)
        if reference is None:
            return
        mu = torch.as_tensor(reference[0], dtype=torch.float64)  # (F,)
        sigma = torch.as_tensor(reference[1], dtype=torch.float64)  # (F, F)
        width = self.fake_features_sum.shape[0]
        if mu.shape != (width,) or sigma.shape != (width, width):
            raise ValueError(f"reference statistics have shapes {tuple(mu.shape)} and {tuple(sigma.shape)}; "
                             f"the features are {width}-d")
        self.reference_mu, self.reference_sigma = mu, sigma  # buffers: they follow the metric's device

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
        """float64 distance (torchmetrics' ``_compute_fid``, as torch-fidelity's), of states summed over processes."""
        mu_fake, sigma_fake, _ = self.statistics(real=False)
        if self.reference_mu is not None:
            mu_real, sigma_real = self.reference_mu, self.reference_sigma
        else:
            mu_real, sigma_real, _ = self.statistics(real=True)
        return _compute_fid(mu_real, sigma_real, mu_fake, sigma_fake)  # () float64
