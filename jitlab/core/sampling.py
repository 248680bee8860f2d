"""Sampling (paper.md, Algorithm 2): pure ODE integrators over a velocity function, and CFG.

``dz/dt = v(z, t)`` from ``t = 0`` (``z = noise_scale * randn``) to ``t = 1`` on ``linspace(0, 1, steps + 1)``;
Heun's last step is plain Euler, as in the release. For x-prediction ``v = (x_p - z) / max(1 - t, sample_t_eps)``:
once ``1 - t < sample_t_eps`` the clamp shrinks ``v``, so even a perfect denoiser (``sample_t_eps = 0.05``) ends at
``a x + (1 - a) eps`` with ``a`` = 1 at 13 steps, about 0.991 at 25 and 0.983 at 50 (more with ``noise_scale``).
``FinalStep.euler`` keeps this (the release); ``FinalStep.x`` lands the last step on the (guided) x-prediction.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from jitlab.core.flow import Flow, Space, ValueEnum, shift_rate, shift_time
from jitlab.core.precond import bcast

# f(z (N, ...), t (N,), t_grid ()) -> (N, ...): t is what the network sees; t_grid the same grid time as the
# release's float32 linspace holds it, on which the CFG interval is decided
StepFn = Callable[[Tensor, Tensor, Tensor], Tensor]


class Sampler(ValueEnum):
    euler = "euler"
    heun = "heun"


class FinalStep(ValueEnum):
    """The last step, from ``t_{n-1}`` to 1: ``euler`` (the release; the sample_t_eps clamp leaves noise) or
    ``x`` (land on the x-prediction at ``t_{n-1}``: exact for a perfect denoiser)."""

    euler = "euler"
    x = "x"


class Precision(ValueEnum):
    """The precision of the network's forward while sampling: ``fp32``, or ``bf16`` autocast (the release on GPU)."""

    fp32 = "fp32"
    bf16 = "bf16"


def nfe(method: Sampler, steps: int) -> int:
    """Network evaluations per image (one CFG evaluation counts once: both branches are one batch)."""
    return steps if Sampler(method) == Sampler.euler else 2 * steps - 1


def cfg_mask(t: Tensor, cfg_interval: tuple[float, float]) -> Tensor:
    """Where the release guides: ``(t < high) & ((low == 0) | (t > low))``, compared in t's dtype (float32): an
    interval starting at 0 includes t = 0 (the first step); otherwise both ends are open."""
    low, high = cfg_interval
    return (t < high) & ((low == 0) | (t > low))


@torch.no_grad()
def integrate(velocity: StepFn, z: Tensor, steps: int, method: Sampler = Sampler.heun,
              final_step: FinalStep = FinalStep.euler, denoise: StepFn | None = None) -> Tensor:
    """Integrate from t = 0 to 1; z: (N, ...) initial noise; ``denoise`` gives the x-prediction for ``final_step=x``.
    The network's times come from a float64 grid (cast to float32); the CFG decision uses the release's float32 one."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    method, final_step = Sampler(method), FinalStep(final_step)
    if final_step == FinalStep.x and denoise is None:
        raise ValueError("final_step=x needs the x-prediction (denoise)")
    ts = torch.linspace(0.0, 1.0, steps + 1, device=z.device, dtype=torch.float64)  # (steps + 1,)
    ts_grid = torch.linspace(0.0, 1.0, steps + 1, device=z.device)  # (steps + 1,) float32, as the release's
    n = z.shape[0]
    for i in range(steps):
        t, t_next = ts[i].float(), ts[i + 1].float()
        dt = (ts[i + 1] - ts[i]).item()
        if i == steps - 1 and final_step == FinalStep.x:
            return denoise(z, t.expand(n), ts_grid[i]).to(z.dtype)  # (N, ...): z_1 = x_p(z, t_{n-1})
        v = velocity(z, t.expand(n), ts_grid[i])  # (N, ...)
        if method == Sampler.heun and i < steps - 1:
            z_euler = z + dt * v  # (N, ...)
            v_next = velocity(z_euler, t_next.expand(n), ts_grid[i + 1])  # (N, ...)
            z = z + dt * 0.5 * (v + v_next)
        else:
            z = z + dt * v
    return z


def guided(net: Callable[[Tensor, Tensor, Tensor], Tensor], flow: Flow, y: Tensor, null_class: int | None,
           cfg_scale: float = 1.0, cfg_interval: tuple[float, float] = (0.0, 1.0), space: Space = Space.v) -> StepFn:
    """The prediction of ``net`` in ``space`` (``v`` for the ODE, ``x`` for the final step) with CFG.

    Where ``cfg_mask`` holds and ``cfg_scale != 1`` both branches run as one batched forward, ``p = p_u + w (p_c -
    p_u)`` on every channel; elsewhere only the conditional one (the release's ``w = 1``). RAE's time shift (alpha =
    ``flow.config.time_shift``): the network and the CFG interval see ``t = shift_time(s)`` of the integrator's grid
    ``s``, and ``v`` is returned as ``dz/ds = v dt/ds`` (the same ODE).
    """
    space = Space(space)
    alpha = flow.config.time_shift

    def in_space(out: Tensor, z: Tensor, t: Tensor) -> Tensor:
        out = out.to(z.dtype)  # a bf16 forward (autocast): the sampler's arithmetic stays in z's precision
        return flow.prediction(out, space, z, t, flow.config.sample_t_eps)  # (N, ...)

    def at(z: Tensor, t: Tensor, t_grid: Tensor) -> Tensor:
        guide = null_class is not None and cfg_scale != 1.0 and bool(cfg_mask(t_grid, cfg_interval))
        if not guide:
            return in_space(net(flow.net_input(z, t), t, y), z, t)  # (N, ...)
        z2, t2 = torch.cat([z, z]), torch.cat([t, t])  # (2N, ...), (2N,)
        y2 = torch.cat([y, torch.full_like(y, null_class)])  # (2N,)
        p_cond, p_uncond = in_space(net(flow.net_input(z2, t2), t2, y2), z2, t2).chunk(2)  # (N, ...) each
        return p_uncond + cfg_scale * (p_cond - p_uncond)

    def predict(z: Tensor, s: Tensor, s_grid: Tensor) -> Tensor:
        if alpha == 1.0:
            return at(z, s, s_grid)  # (N, ...)
        p = at(z, shift_time(s, alpha), shift_time(s_grid, alpha))  # (N, ...)
        if space != Space.v:
            return p
        return p * bcast(shift_rate(s, alpha), p).to(p.dtype)  # (N, ...): dz/ds

    return predict


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
