"""Sampling images/s: `jitlab sample`'s generation path against a plain reference sampler.

The reference is the release's sampler (``denoiser.py`` of the authors' code) written out plainly, Heun with CFG
``v_u + w (v_c - v_u)`` from two forwards per evaluation. It is written here, not taken from ``jitlab.core.sampling``,
so that it stays the fixed yardstick whatever that module does to be faster.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import Tensor

from jitlab.experiments.bench.machine import synchronize
from jitlab.core.data.base import to_uint8
from jitlab.score.generate import SamplerSettings, generate_uint8, labels_for
from jitlab.core.sampling import initial_noise

Net = Callable[[Tensor, Tensor, Tensor], Tensor]  # net(z (N, C, H, W), t (N,), y (N,)) -> (N, C, H, W)


@torch.no_grad()
def reference_sample(net: Net, flow, z: Tensor, y: Tensor, null_class: int, steps: int, cfg_scale: float,
                     cfg_interval: tuple[float, float]) -> Tensor:
    """The release's Heun sampler with CFG: ``2 * (2 * steps - 1)`` forwards of the batch; z (N, ...) -> (N, ...)."""
    low, high = cfg_interval
    ts = torch.linspace(0.0, 1.0, steps + 1, device=z.device)  # (steps + 1,) float32, as the release's
    y_null = torch.full_like(y, null_class)  # (N,)

    def velocity(z: Tensor, t: Tensor) -> Tensor:
        t_n = t.expand(z.shape[0])  # (N,)
        v_cond = flow.velocity(net(z, t_n, y).to(z.dtype), z, t_n)  # (N, ...)
        v_uncond = flow.velocity(net(z, t_n, y_null).to(z.dtype), z, t_n)  # (N, ...)
        inside = bool((t < high) & ((low == 0) | (t > low)))
        return v_uncond + (cfg_scale if inside else 1.0) * (v_cond - v_uncond)

    for i in range(steps - 1):
        t, t_next = ts[i], ts[i + 1]
        v = velocity(z, t)  # (N, ...)
        z_euler = z + (t_next - t) * v  # (N, ...)
        z = z + (t_next - t) * 0.5 * (v + velocity(z_euler, t_next))  # (N, ...)
    return z + (ts[-1] - ts[-2]) * velocity(z, ts[-2])  # (N, ...): the last step is Euler


def _timed(run: Callable[[], Tensor], device: torch.device) -> tuple[float, Tensor]:
    synchronize(device)
    start = time.perf_counter()
    out = run()
    synchronize(device)
    return time.perf_counter() - start, out


def sample_rates(module, settings: SamplerSettings, batch: int, reference_net: Net, bf16: bool) -> dict[str, float]:
    """Images/s of one batch through `jitlab sample`'s path and through ``reference_sample``, each after a 2-step
    warm-up, and the largest difference between their uint8 images (0: the same pictures)."""
    if module.null_class is None:
        raise ValueError("the bench samples with CFG: the model must be class conditional")
    device = module.device
    indices = list(range(batch))
    labels = labels_for(indices, module.null_class)  # (B,)
    warm = SamplerSettings(settings.sampler, 2, settings.cfg_scale, settings.cfg_interval, settings.seed)

    def ours(s: SamplerSettings) -> Tensor:
        return next(generate_uint8(module, indices, labels, s, batch_size=batch, progress=False))[1]  # (B, C, H, W)

    def reference(steps: int) -> Tensor:
        z = initial_noise(indices, module.sample_shape, settings.seed, module.flow.config.noise_scale, device)
        x = reference_sample(reference_net, module.flow, z, labels.to(device), module.null_class, steps,
                             settings.cfg_scale, tuple(settings.cfg_interval))  # (B, C, H, W)
        return to_uint8(x).cpu()

    module.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        ours(warm)
        ours_seconds, ours_images = _timed(lambda: ours(settings), device)
        reference(2)
        ref_seconds, ref_images = _timed(lambda: reference(settings.steps), device)
    diff = (ours_images.int() - ref_images.int()).abs().max().item()
    return {"sample_img_per_s": batch / ours_seconds, "ref_sample_img_per_s": batch / ref_seconds,
            "sample_max_uint8_diff": int(diff)}
