"""The flow of paper.md section 2: linear noising, logit-normal time sampler and Table 1.

Conventions (the paper's): ``t`` in [0, 1], ``t = 1`` is clean data, ``t = 0`` pure noise;
``z = t * x + (1 - t) * eps`` with ``eps ~ N(0, noise_scale^2 I)``; ``v = x - eps``.

Beyond Table 1 (issue 15): ``precond`` reads the output as a pre-conditioned target (``jitlab.core.precond``: the
``x - lambda eps`` family, EDM's F), converted to x, eps and v like Table 1's columns; ``time_shift`` applies RAE's
shift ``t -> t / (alpha - (alpha - 1) t)`` to the sampled t (and, in ``jitlab.core.sampling.guided``, to the grid).

Every function here is pure tensor math; nothing holds parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Literal

import torch
from torch import Tensor

from jitlab.errors import ConfigError
from jitlab.core.precond import EDMTarget, LambdaTarget, Target, bcast


class ValueEnum(str, Enum):
    """A string enum that prints as its value (flags, records and messages show `x`, not `Space.x`)."""

    def __str__(self) -> str:
        return self.value


class Space(ValueEnum):
    """A prediction or loss space of Table 1."""

    x = "x"
    eps = "eps"
    v = "v"


def noisy_sample(x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """``z_t = t * x + (1 - t) * eps``; x, eps: (N, ...), t: (N,)."""
    t = bcast(t, x)  # (N, 1, ...)
    return t * x + (1 - t) * eps  # (N, ...)


def convert(out: Tensor, src: Space, dst: Space, z: Tensor, t: Tensor, t_eps: float) -> Tensor:
    """Table 1: express a network output ``out`` given in space ``src`` in space ``dst``.

    ``z``: the noisy input (N, ...), ``t``: (N,). Both divisions are guarded: ``1 - t`` and ``t``
    are clamped from below by ``t_eps`` (paper: ``t_eps = 0.05`` for ``1 - t``; the same guard is
    used for ``t``, which only the eps-prediction columns divide by).
    """
    if src == dst:
        return out
    t = bcast(t, z)  # (N, 1, ...)
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


def shift_time(t: Tensor, alpha: float) -> Tensor:
    """RAE's (after SD3's) schedule shift in this flow's time (t = 1 clean): ``t / (alpha - (alpha - 1) t)``.

    SD3/RAE write it on the noise level ``tau = 1 - t`` as ``alpha tau / (1 + (alpha - 1) tau)``; alpha > 1 moves
    every time towards noise, 0 and 1 stay fixed. On logits it is a shift: ``logit(shift) = logit(t) - ln(alpha)``,
    so on the logit-normal sampler it equals ``mu - ln(alpha)``.
    """
    if alpha == 1.0:
        return t
    return t / (alpha - (alpha - 1) * t)


def shift_rate(t: Tensor, alpha: float) -> Tensor:
    """The derivative of ``shift_time`` in t: ``alpha / (alpha - (alpha - 1) t)^2``."""
    return alpha / (alpha - (alpha - 1) * t) ** 2


def time_shift_for(dim: int, base: int = 4096) -> float:
    """RAE's dimension-dependent shift ``alpha = sqrt(dim / base)`` (Zheng et al. 2025, after Esser et al. 2024), with
    ``dim`` the data dimension of one sample (tokens x token dimension: an image's C H W)."""
    if dim < 1 or base < 1:
        raise ValueError(f"dimensions must be positive, got dim={dim}, base={base}")
    return math.sqrt(dim / base)


Precond = Literal["none", "lambda", "edm"]
PRECONDS = ("none", "lambda", "edm")


@dataclass
class FlowConfig:
    """The ablation knobs of the flow (Tables 1-3 and 5).

    pred: the network's output space (Table 1 columns); loss: the space of the L2 loss (rows).
    mu, sigma: logit-normal time sampler (Table 3 shifts ``mu``). noise_scale: std of ``eps``
    (1.0 at 256, 2.0 at 512 in the release). t_eps: the guard of the divisions in training;
    sample_t_eps: the guard used when converting to ``v`` for sampling (kept separate on purpose).

    Issue 15: precond: ``none`` (the output is in ``pred``'s space), ``lambda`` (``x - target_lambda * eps``,
    target_lambda in [0, 1]) or ``edm`` (EDM's F with ``sigma_data``); both need ``pred: x`` (their x-prediction is
    what the flow converts). time_shift: RAE's alpha (1 = none; ``time_shift_for(C * H * W)`` is RAE's choice).
    """

    pred: Space = Space.x
    loss: Space = Space.v
    mu: float = -0.8
    sigma: float = 0.8
    noise_scale: float = 1.0
    t_eps: float = 0.05
    sample_t_eps: float = 0.05
    precond: Precond = "none"
    target_lambda: float | None = None
    sigma_data: float = 0.5
    time_shift: float = 1.0

    def __post_init__(self) -> None:
        self.pred = _as_space(self.pred, "flow.pred")
        self.loss = _as_space(self.loss, "flow.loss")
        self._check_precond()
        if not (isinstance(self.time_shift, (int, float)) and math.isfinite(self.time_shift) and self.time_shift > 0):
            raise ConfigError("flow.time_shift", f"must be a number > 0 (1 = no shift), got {self.time_shift!r}")
        if not self.sigma > 0:
            raise ConfigError("flow.sigma", f"must be > 0 (the std of the logit-normal time sampler), got {self.sigma}")
        if not self.noise_scale > 0:
            raise ConfigError("flow.noise_scale", f"must be > 0, got {self.noise_scale}")
        for name in ("t_eps", "sample_t_eps"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"flow.{name}", f"must lie in (0, 1), got {value}")

    def _check_precond(self) -> None:
        if self.precond not in PRECONDS:
            raise ConfigError("flow.precond", f"unknown choice {self.precond!r}; valid: {', '.join(PRECONDS)}")
        if self.precond != "none" and self.pred != Space.x:
            raise ConfigError("flow.pred", f"is {self.pred.value} but precond={self.precond} reads the output as its "
                                           f"own target, whose x-prediction the flow converts: set pred: x")
        lam = self.target_lambda
        if self.precond == "lambda":
            if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam <= 1:
                raise ConfigError("flow.target_lambda", f"precond=lambda needs a number in [0, 1] (0: x, 1: v), "
                                                        f"got {lam!r}")
        elif lam is not None:
            raise ConfigError("flow.target_lambda", f"is read only with precond: lambda (precond is {self.precond})")
        if not (isinstance(self.sigma_data, (int, float)) and self.sigma_data > 0):
            raise ConfigError("flow.sigma_data", f"must be > 0 (EDM's data std), got {self.sigma_data!r}")

    def target_of_output(self) -> Target | None:
        """The pre-conditioned target the output is read as, or None (Table 1's ``pred`` space)."""
        if self.precond == "lambda":
            return LambdaTarget(float(self.target_lambda))
        if self.precond == "edm":
            return EDMTarget(float(self.sigma_data), float(self.noise_scale))
        return None


def _as_space(value, field: str) -> Space:
    try:
        return Space(value)
    except ValueError:
        choices = ", ".join(s.value for s in Space)
        raise ConfigError(field, f"unknown space {value!r}; valid choices: {choices}") from None


Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]  # net(z, t, y) -> output in the prediction space


class Flow:
    """Training loss of one Table 1 cell and the velocity used for sampling."""

    def __init__(self, config: FlowConfig):
        self.config = config
        self.precond = config.target_of_output()

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Draw ``t`` (N,), ``eps`` (N, ...) and ``z`` (N, ...) for a clean batch ``x`` (t shifted by time_shift)."""
        config = self.config
        t = sample_t(x.shape[0], config.mu, config.sigma, device=x.device, generator=generator)  # (N,)
        t = shift_time(t, config.time_shift)  # (N,)
        eps = config.noise_scale * torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
        z = noisy_sample(x, eps, t)  # (N, ...)
        return t, eps, z

    def target(self, x: Tensor, eps: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """The ground truth in the loss space.

        The truth is taken in the prediction space and sent through the same Table 1 conversion as
        the network output, so that both sides carry the same clamp (Algorithm 1's
        ``v = (x - z) / clamp(1 - t, t_eps)`` for the JiT cell) and a perfect prediction has loss 0.
        """
        if self.precond is not None:
            truth = self.precond.truth(x, eps, t)  # (N, ...)
        else:
            truth = {Space.x: x, Space.eps: eps, Space.v: x - eps}[self.config.pred]  # (N, ...)
        return self.prediction(truth, self.config.loss, z, t, self.config.t_eps)

    def prediction(self, out: Tensor, dst: Space, z: Tensor, t: Tensor, t_eps: float) -> Tensor:
        """A network output (``pred``'s space or the pre-conditioned target) expressed in space ``dst``: (N, ...)."""
        if self.precond is None:
            return convert(out, self.config.pred, dst, z, t, t_eps)
        x_p, eps_p, v_p = self.precond.spaces(out, z, t, t_eps)  # (N, ...) each
        return {Space.x: x_p, Space.eps: eps_p, Space.v: v_p}[Space(dst)]

    def per_sample_loss(self, out: Tensor, x: Tensor, eps: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """Mean squared error over all but the batch dimension: (N,)."""
        pred_in_loss_space = self.prediction(out, self.config.loss, z, t, self.config.t_eps)  # (N, ...)
        target = self.target(x, eps, z, t)  # (N, ...)
        return (pred_in_loss_space.float() - target.float()).pow(2).flatten(1).mean(1)  # (N,)

    def net_input(self, z: Tensor, t: Tensor) -> Tensor:
        """What the network is fed: ``z`` itself, or EDM's ``c_in x_noisy = z / R`` under ``precond: edm``: (N, ...)."""
        if not isinstance(self.precond, EDMTarget):
            return z
        return z * bcast(self.precond.input_scale(t), z).to(z.dtype)  # (N, ...)

    def velocity(self, out: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """Convert a network output to ``v`` for the ODE ``dz/dt = v`` (sampling guard ``sample_t_eps``)."""
        return self.prediction(out, Space.v, z, t, self.config.sample_t_eps)
