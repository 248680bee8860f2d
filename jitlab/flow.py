"""The flow of paper.md section 2: linear noising, logit-normal time sampler and Table 1.

Conventions (the paper's): ``t`` in [0, 1], ``t = 1`` is clean data, ``t = 0`` pure noise;
``z = t * x + (1 - t) * eps`` with ``eps ~ N(0, noise_scale^2 I)``; ``v = x - eps``.

Every function here is pure tensor math; nothing holds parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

import torch
from torch import Tensor

from jitlab.errors import ConfigError


class Space(str, Enum):
    """A prediction or loss space of Table 1."""

    x = "x"
    eps = "eps"
    v = "v"

    def __str__(self) -> str:
        return self.value


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    """(N,) -> (N, 1, ..., 1) so that ``t`` broadcasts against a batch shaped like ``like``."""
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def noisy_sample(x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """``z_t = t * x + (1 - t) * eps``; x, eps: (N, ...), t: (N,)."""
    t = _bcast(t, x)  # (N, 1, ...)
    return t * x + (1 - t) * eps  # (N, ...)


def convert(out: Tensor, src: Space, dst: Space, z: Tensor, t: Tensor, t_eps: float) -> Tensor:
    """Table 1: express a network output ``out`` given in space ``src`` in space ``dst``.

    ``z``: the noisy input (N, ...), ``t``: (N,). Both divisions are guarded: ``1 - t`` and ``t``
    are clamped from below by ``t_eps`` (paper: ``t_eps = 0.05`` for ``1 - t``; the same guard is
    used for ``t``, which only the eps-prediction columns divide by).
    """
    if src == dst:
        return out
    t = _bcast(t, z)  # (N, 1, ...)
    one_minus_t = (1 - t).clamp_min(t_eps)  # (N, 1, ...)
    t_safe = t.clamp_min(t_eps)  # (N, 1, ...)
    if dst == Space.x:
        if src == Space.eps:  # (1)(b): x_p = (z - (1-t) e_p) / t
            return (z - (1 - t) * out) / t_safe
        return (1 - t) * out + z  # (1)(c): x_p = (1-t) v_p + z
    if dst == Space.eps:
        if src == Space.x:  # (2)(a): e_p = (z - t x_p) / (1-t)
            return (z - t * out) / one_minus_t
        return z - t * out  # (2)(c): e_p = z - t v_p
    # dst == Space.v
    if src == Space.x:  # (3)(a): v_p = (x_p - z) / (1-t)
        return (out - z) / one_minus_t
    return (z - out) / t_safe  # (3)(b): v_p = (z - e_p) / t


def sample_t(n: int, mu: float, sigma: float, *, device=None, generator: torch.Generator | None = None) -> Tensor:
    """Logit-normal time sampler: ``t = sigmoid(mu + sigma * n)``, ``n ~ N(0, 1)``; returns (n,)."""
    normal = torch.randn(n, device=device, generator=generator)  # (n,)
    return torch.sigmoid(mu + sigma * normal)  # (n,)


@dataclass
class FlowConfig:
    """The ablation knobs of the flow (Tables 1-3 and 5).

    pred: the network's output space (Table 1 columns); loss: the space of the L2 loss (rows).
    mu, sigma: logit-normal time sampler (Table 3 shifts ``mu``). noise_scale: std of ``eps``
    (1.0 at 256, 2.0 at 512 in the release). t_eps: the guard of the divisions in training;
    sample_t_eps: the guard used when converting to ``v`` for sampling (kept separate on purpose).
    """

    pred: Space = Space.x
    loss: Space = Space.v
    mu: float = -0.8
    sigma: float = 0.8
    noise_scale: float = 1.0
    t_eps: float = 0.05
    sample_t_eps: float = 0.05

    def __post_init__(self) -> None:
        self.pred = _as_space(self.pred, "flow.pred")
        self.loss = _as_space(self.loss, "flow.loss")
        if not self.sigma > 0:
            raise ConfigError("flow.sigma", f"must be > 0 (the std of the logit-normal time sampler), got {self.sigma}")
        if not self.noise_scale > 0:
            raise ConfigError("flow.noise_scale", f"must be > 0, got {self.noise_scale}")
        for name in ("t_eps", "sample_t_eps"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"flow.{name}", f"must lie in (0, 1), got {value}")


def _as_space(value, field: str) -> Space:
    try:
        return Space(value)
    except ValueError:
        choices = ", ".join(s.value for s in Space)
        raise ConfigError(field, f"unknown space {value!r}; valid choices: {choices}") from None


Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]  # net(z, t, y) -> output in the prediction space


class Flow:
    """Training loss of one Table 1 cell and the velocity used for sampling."""

    def __init__(self, cfg: FlowConfig):
        self.cfg = cfg

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Draw ``t`` (N,), ``eps`` (N, ...) and ``z`` (N, ...) for a clean batch ``x``."""
        cfg = self.cfg
        t = sample_t(x.shape[0], cfg.mu, cfg.sigma, device=x.device, generator=generator)  # (N,)
        eps = cfg.noise_scale * torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
        z = noisy_sample(x, eps, t)  # (N, ...)
        return t, eps, z

    def target(self, x: Tensor, eps: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """The ground truth in the loss space.

        The truth is taken in the prediction space and sent through the same Table 1 conversion as
        the network output, so that both sides carry the same clamp (Algorithm 1's
        ``v = (x - z) / clamp(1 - t, t_eps)`` for the JiT cell) and a perfect prediction has loss 0.
        """
        truth = {Space.x: x, Space.eps: eps, Space.v: x - eps}[self.cfg.pred]  # (N, ...)
        return convert(truth, self.cfg.pred, self.cfg.loss, z, t, self.cfg.t_eps)

    def per_sample_loss(self, out: Tensor, x: Tensor, eps: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """Mean squared error over all but the batch dimension: (N,)."""
        pred_in_loss_space = convert(out, self.cfg.pred, self.cfg.loss, z, t, self.cfg.t_eps)  # (N, ...)
        target = self.target(x, eps, z, t)  # (N, ...)
        return (pred_in_loss_space.float() - target.float()).pow(2).flatten(1).mean(1)  # (N,)

    def velocity(self, out: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """Convert a network output to ``v`` for the ODE ``dz/dt = v`` (sampling guard ``sample_t_eps``)."""
        return convert(out, self.cfg.pred, Space.v, z, t, self.cfg.sample_t_eps)
