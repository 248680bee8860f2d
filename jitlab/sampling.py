"""Sampling (paper.md, Algorithm 2): pure ODE integrators over a velocity function, and CFG.

``dz/dt = v(z, t)`` from ``t = 0`` (``z = noise_scale * randn``) to ``t = 1`` on
``linspace(0, 1, steps + 1)``. Heun's last step is plain Euler, as in the release.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from jitlab.flow import Flow

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # v(z (N, ...), t (N,)) -> (N, ...)


class Sampler(str, Enum):
    euler = "euler"
    heun = "heun"

    def __str__(self) -> str:
        return self.value


def nfe(method: Sampler, steps: int) -> int:
    """Network evaluations per image (one CFG evaluation counts once: both branches are one batch)."""
    return steps if Sampler(method) == Sampler.euler else 2 * steps - 1


@torch.no_grad()
def integrate(velocity: VelocityFn, z: Tensor, steps: int, method: Sampler = Sampler.heun) -> Tensor:
    """Integrate from t = 0 to 1; z: (N, ...) initial noise. Returns (N, ...)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    method = Sampler(method)
    ts = torch.linspace(0.0, 1.0, steps + 1, device=z.device, dtype=torch.float64)
    n = z.shape[0]
    for i in range(steps):
        t, t_next = ts[i].float(), ts[i + 1].float()
        dt = (ts[i + 1] - ts[i]).item()
        v = velocity(z, t.expand(n))  # (N, ...)
        if method == Sampler.heun and i < steps - 1:
            z_euler = z + dt * v  # (N, ...)
            v_next = velocity(z_euler, t_next.expand(n))  # (N, ...)
            z = z + dt * 0.5 * (v + v_next)
        else:
            z = z + dt * v
    return z


def guided_velocity(net: Callable[[Tensor, Tensor, Tensor], Tensor], flow: Flow, y: Tensor, null_class: int | None,
                    cfg_scale: float = 1.0, cfg_interval: tuple[float, float] = (0.0, 1.0)) -> VelocityFn:
    """The velocity of ``net`` for labels ``y`` with classifier-free guidance on the full ``v``.

    Inside ``cfg_interval`` (open interval on t) and for ``cfg_scale != 1`` the conditional and
    unconditional branches run as one batched forward: ``v = v_u + w (v_c - v_u)``. Elsewhere only
    the conditional branch runs.
    """
    t_min, t_max = cfg_interval

    def velocity(z: Tensor, t: Tensor) -> Tensor:
        guided = null_class is not None and cfg_scale != 1.0 and t_min < float(t[0]) < t_max
        if not guided:
            return flow.velocity(net(z, t, y), z, t)  # (N, ...)
        z2, t2 = torch.cat([z, z]), torch.cat([t, t])  # (2N, ...), (2N,)
        y2 = torch.cat([y, torch.full_like(y, null_class)])  # (2N,)
        v_cond, v_uncond = flow.velocity(net(z2, t2, y2), z2, t2).chunk(2)  # (N, ...) each
        return v_uncond + cfg_scale * (v_cond - v_uncond)

    return velocity


def index_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for one generated image, from the run seed and its global index."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]) >> 1


def initial_noise(indices: Sequence[int], shape: Sequence[int], seed: int, noise_scale: float,
                  device: torch.device | str = "cpu") -> Tensor:
    """``noise_scale * randn`` per image, drawn from its global index: the same images on any number of processes."""
    noise = torch.stack([
        torch.randn(tuple(shape), generator=torch.Generator().manual_seed(index_seed(seed, int(i))))
        for i in indices
    ])  # (N, *shape)
    return (noise_scale * noise).to(device)
