"""Pre-conditioned targets: the network's output read as ``out = alpha(t) x + beta(t) eps`` beyond Table 1's three.

Issue 15 (the paper's Table 10 compares JiT with pre-conditioned targets; its numbers are not in paper.md). Any
affine target is converted to x, eps and v like Table 1's columns: with ``z = t x + (1 - t) eps`` the pair
(z, out) is a linear 2x2 system in (x, eps),

    [ z   ]   [ t      1 - t ] [ x   ]        x_p   = (beta z - (1 - t) out) / det
    [ out ] = [ alpha  beta  ] [ eps ],       eps_p = (t out - alpha z) / det,     det = t beta - (1 - t) alpha,

and ``v_p = x_p - eps_p``. The two families below write that solution in a form with no small divisor.

- ``LambdaTarget``: ``out = x - lambda eps`` (lambda 0: x-prediction; 1: v = x - eps). ``det = -(1 - t + lambda t)``:
  ``eps_p = (z - t out) / (1 - t + lambda t)`` and ``x_p = out + lambda eps_p``. At lambda 0 the divisor is Table 1's
  ``1 - t`` and carries its ``t_eps`` clamp; for lambda > 0 it is >= lambda. ``v_p = (out - (1 - lambda) z) /
  (1 - t + lambda t)``, so lambda 0 and 1 are Table 1's x- and v-columns cell by cell, clamps included.
- ``EDMTarget`` (Karras et al. 2022, "Elucidating the Design Space...", Table 1 "Network and preconditioning"):
  ``D(x_noisy; sigma) = c_skip(sigma) x_noisy + c_out(sigma) F(c_in(sigma) x_noisy; c_noise(sigma))`` with
  ``x_noisy = x + sigma n`` and ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
  ``c_in = 1 / sqrt(sigma^2 + sd^2)`` (``sd`` = sigma_data). In this flow (``eps = s n``, ``s`` = noise_scale)
  ``z / t = x + (s (1 - t) / t) n``: ``x_noisy = z / t`` and ``sigma = s (1 - t) / t``. With
  ``R = sqrt(s^2 (1 - t)^2 + sd^2 t^2) = t sqrt(sigma^2 + sd^2)`` (the std of z when x has std sd):
  ``x_p = D = (sd^2 t / R^2) z + (s sd (1 - t) / R) F``, ``eps_p = (s^2 (1 - t) / R^2) z - (s sd t / R) F``, and the
  network's target ``F = (x - c_skip x_noisy) / c_out = (s (1 - t) / (sd R)) x - (sd t / (s R)) eps`` (unit variance
  when x has std sd). ``det = -R / (s sd)`` never vanishes. EDM's input scaling ``c_in x_noisy = z / R`` is
  ``input_scale``, applied by ``Flow.net_input``; the time condition stays the flow's ``t`` (not EDM's
  ``c_noise = ln(sigma) / 4``: the backbone's time embedding is part of what is held fixed).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


def bcast(t: Tensor, like: Tensor) -> Tensor:
    """(N,) -> (N, 1, ..., 1) so that ``t`` broadcasts against a batch shaped like ``like``."""
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def edm_sigma(t: Tensor, noise_scale: float) -> Tensor:
    """EDM's noise level of the flow's time: ``sigma = noise_scale (1 - t) / t`` (t > 0); (N,) -> (N,)."""
    return noise_scale * (1 - t) / t


def edm_coefficients(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in)`` of EDM at noise level ``sigma`` (EDM's parametrisation ``x + sigma n``)."""
    total = sigma ** 2 + sigma_data ** 2
    return sigma_data ** 2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt()


@dataclass(frozen=True)
class LambdaTarget:
    """``out = x - lambda eps``: a target between x (lambda 0) and v (lambda 1)."""

    lam: float

    def truth(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return x - self.lam * eps  # (N, ...)

    def spaces(self, out: Tensor, z: Tensor, t: Tensor, t_eps: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_p, eps_p, v_p)`` of an output; the divisor ``1 - t + lambda t`` is clamped from below by ``t_eps``."""
        t = bcast(t, z)  # (N, 1, ...)
        divisor = (1 - t + self.lam * t).clamp_min(t_eps)  # (N, 1, ...)
        eps_p = (z - t * out) / divisor  # (N, ...)
        v_p = (out - (1 - self.lam) * z) / divisor  # (N, ...)
        return out + self.lam * eps_p, eps_p, v_p


@dataclass(frozen=True)
class EDMTarget:
    """EDM's ``F``: ``D = c_skip x_noisy + c_out F`` is the x-prediction (module docstring for the flow's form)."""

    sigma_data: float
    noise_scale: float

    def _r(self, t: Tensor) -> Tensor:
        s, sd = self.noise_scale, self.sigma_data
        return (s ** 2 * (1 - t) ** 2 + sd ** 2 * t ** 2).sqrt()  # the std of z when x has std sigma_data

    def truth(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        s, sd = self.noise_scale, self.sigma_data
        t = bcast(t, x)  # (N, 1, ...)
        r = self._r(t)
        return (s * (1 - t) / (sd * r)) * x - (sd * t / (s * r)) * eps  # (N, ...)

    def spaces(self, out: Tensor, z: Tensor, t: Tensor, t_eps: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_p, eps_p, v_p)``; no clamp is needed (``R >= min(s, sd) / sqrt(2)``), ``t_eps`` is unused."""
        s, sd = self.noise_scale, self.sigma_data
        t = bcast(t, z)  # (N, 1, ...)
        r = self._r(t)
        x_p = (sd ** 2 * t / r ** 2) * z + (s * sd * (1 - t) / r) * out  # (N, ...)
        eps_p = (s ** 2 * (1 - t) / r ** 2) * z - (s * sd * t / r) * out  # (N, ...)
        return x_p, eps_p, x_p - eps_p

    def input_scale(self, t: Tensor) -> Tensor:
        """EDM's ``c_in(sigma) x_noisy`` as a factor on z: ``1 / R``; (N,) -> (N,)."""
        return 1 / self._r(t)


Target = LambdaTarget | EDMTarget

