"""Ten classes of procedurally rendered images, at any resolution, with no files and no download.

Item ``index`` has label ``index % 10`` and draws its parameters from ``numpy.random.default_rng([seed, index])``.
Geometry lives in normalised coordinates ``[0, 1]^2`` (x right, y down), so an item looks the same at every
resolution, only sharper. A class gives a signed distance (negative inside, image units) that a one-pixel smoothstep
turns into coverage, blending a softly shaded foreground colour over a softly varying background.
"""

from __future__ import annotations

import math
import operator
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from jitlab.errors import ConfigError

Array = np.ndarray
Rng = np.random.Generator
SignedDistance = Callable[[Array, Array], Array]  # shape-frame coordinates (u, v), each (h, w) -> (h, w)

@lru_cache(maxsize=16)
def _centres(resolution: int) -> Array:
    """Pixel centres in normalised coordinates; (R,), read-only."""
    c = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution  # (R,)
    c.flags.writeable = False
    return c


def _coverage(sd: Array, pixel: float) -> Array:
    """Signed distance (negative inside) -> coverage in [0, 1] with a one-pixel smoothstep edge."""
    t = np.clip(0.5 - sd / pixel, 0.0, 1.0)  # (h, w)
    return t * t * (3.0 - 2.0 * t)  # (h, w)


def _rotate(dx: Array, dy: Array, angle: float) -> tuple[Array, Array]:
    """Offsets (1, w) and (h, 1) expressed in a frame rotated by ``angle``; each (h, w)."""
    cos, sin = math.cos(angle), math.sin(angle)
    return cos * dx + sin * dy, -sin * dx + cos * dy  # (h, w), (h, w)


def _window(resolution: int, centre: float, extent: float) -> slice:
    """The pixel rows (or columns) within ``extent`` (plus two pixels) of ``centre``."""
    pad = extent + 2.0 / resolution
    lo = max(0, math.floor((centre - pad) * resolution))
    hi = min(resolution, math.ceil((centre + pad) * resolution))
    return slice(lo, max(lo, hi))


def _paint(resolution: int, cx: float, cy: float, angle: float, extent: float, sd_of: SignedDistance,
           edge: bool = True) -> Array:
    """Coverage (R, R) of a shape centred at (cx, cy), turned by ``angle``, of radius ``extent``; ``sd_of(u, v)``
    takes the shape's own frame and is evaluated only on its bounding square (zero coverage elsewhere). With
    ``edge=False``, ``sd_of`` gives the coverage itself."""
    c = _centres(resolution)  # (R,)
    cols, rows = _window(resolution, cx, extent), _window(resolution, cy, extent)
    dx = (c[cols] - cx)[None, :]  # (1, w)
    dy = (c[rows] - cy)[:, None]  # (h, 1)
    alpha = np.zeros((resolution, resolution), dtype=np.float32)  # (R, R)
    if dx.size and dy.size:
        field = sd_of(*_rotate(dx, dy, angle))  # (h, w)
        alpha[rows, cols] = _coverage(field, 1.0 / resolution) if edge else field  # (h, w)
    return alpha


def _placement(rng: Rng, extent: float) -> tuple[float, float, float]:
    """A centre keeping a shape of radius ``extent`` mostly inside the image, and an angle."""
    margin = min(0.5, 0.85 * extent)
    cx, cy = rng.uniform(margin, 1.0 - margin, size=2)
    return float(cx), float(cy), float(rng.uniform(0.0, 2.0 * math.pi))


def _sd_box(u: Array, v: Array, half_w: float, half_h: float) -> Array:
    """Exact signed distance to an axis-aligned box centred at the origin; (h, w)."""
    qx, qy = np.abs(u) - half_w, np.abs(v) - half_h  # (h, w)
    outside = np.sqrt(np.square(np.maximum(qx, 0.0)) + np.square(np.maximum(qy, 0.0)))  # (h, w)
    return outside + np.minimum(np.maximum(qx, qy), 0.0)  # (h, w)


def _sd_regular_polygon(u: Array, v: Array, sides: int, apothem: float) -> Array:
    """Signed distance (exact inside, a lower bound outside) to a regular polygon; (h, w)."""
    sd = None
    for k in range(sides):
        a = 2.0 * math.pi * k / sides - math.pi / 2.0
        edge = math.cos(a) * u + math.sin(a) * v - apothem  # (h, w)
        sd = edge if sd is None else np.maximum(sd, edge, out=sd)
    return sd


def _sd_star(u: Array, v: Array, points: int, outer: float, inner: float) -> Array:
    """Signed distance to a star, by folding the plane into one mirrored wedge; (h, w)."""
    wedge = 2.0 * math.pi / points
    a = np.mod(np.arctan2(v, u), wedge)  # (h, w) in [0, wedge)
    a = np.minimum(a, wedge - a)  # (h, w) in [0, wedge / 2]
    rho = np.sqrt(u * u + v * v)  # (h, w)
    qx, qy = rho * np.cos(a), rho * np.sin(a)  # (h, w), (h, w)
    # The edge from the tip (outer, 0) to the inner vertex; its normal points away from the centre.
    bx, by = inner * math.cos(wedge / 2.0), inner * math.sin(wedge / 2.0)
    length = math.hypot(bx - outer, by)
    nx, ny = by / length, (outer - bx) / length
    return nx * (qx - outer) + ny * qy  # (h, w)


def _sd_ellipse(u: Array, v: Array, a: float, b: float) -> Array:
    """First-order signed distance to an ellipse with semi-axes a (along u) and b; (h, w)."""
    k = np.sqrt(np.square(u / a) + np.square(v / b))  # (h, w), 1 on the boundary
    grad = np.sqrt(np.square(u / (a * a)) + np.square(v / (b * b)))  # (h, w), k * |grad k|
    return k * (k - 1.0) / np.maximum(grad, 1e-6)  # (h, w)


# the classes: each draws its parameters and returns coverage (R, R)
def _disk(rng: Rng, resolution: int) -> Array:
    r = rng.uniform(0.125, 0.3)
    cx, cy, angle = _placement(rng, r)
    return _paint(resolution, cx, cy, angle, r, lambda u, v: np.hypot(u, v) - r)


def _square(rng: Rng, resolution: int) -> Array:
    half = rng.uniform(0.11, 0.24)
    extent = half * math.sqrt(2.0)
    cx, cy, angle = _placement(rng, extent)
    return _paint(resolution, cx, cy, angle, extent, lambda u, v: _sd_box(u, v, half, half))


def _triangle(rng: Rng, resolution: int) -> Array:
    circum = rng.uniform(0.16, 0.33)
    cx, cy, angle = _placement(rng, circum)
    apothem = circum / 2.0  # equilateral: the inradius is half the circumradius
    return _paint(resolution, cx, cy, angle, circum, lambda u, v: _sd_regular_polygon(u, v, 3, apothem))


def _ring(rng: Rng, resolution: int) -> Array:
    r = rng.uniform(0.14, 0.3)
    half_width = r * rng.uniform(0.13, 0.22)
    extent = r + half_width
    cx, cy, angle = _placement(rng, extent)
    return _paint(resolution, cx, cy, angle, extent, lambda u, v: np.abs(np.hypot(u, v) - r) - half_width)


def _cross(rng: Rng, resolution: int) -> Array:
    arm = rng.uniform(0.14, 0.3)
    half_width = arm * rng.uniform(0.2, 0.3)
    extent = math.hypot(arm, half_width)
    cx, cy, angle = _placement(rng, extent)

    def sd(u: Array, v: Array) -> Array:
        return np.minimum(_sd_box(u, v, arm, half_width), _sd_box(u, v, half_width, arm))  # (h, w)

    return _paint(resolution, cx, cy, angle, extent, sd)


def _star(rng: Rng, resolution: int) -> Array:
    outer = rng.uniform(0.17, 0.33)
    inner = outer * rng.uniform(0.38, 0.5)
    cx, cy, angle = _placement(rng, outer)
    return _paint(resolution, cx, cy, angle, outer, lambda u, v: _sd_star(u, v, 5, outer, inner))


def _ellipse(rng: Rng, resolution: int) -> Array:
    a = rng.uniform(0.17, 0.32)
    b = a * rng.uniform(0.3, 0.5)
    cx, cy, angle = _placement(rng, a)
    return _paint(resolution, cx, cy, angle, a, lambda u, v: _sd_ellipse(u, v, a, b))


def _gradient_blob(rng: Rng, resolution: int) -> Array:
    sigma = rng.uniform(0.13, 0.21)
    aspect = rng.uniform(0.7, 1.0)
    cx, cy, angle = _placement(rng, 1.2 * sigma)

    def blob(u: Array, v: Array) -> Array:
        return np.exp(-0.5 * (np.square(u / sigma) + np.square(v / (sigma * aspect))))  # (h, w)

    return _paint(resolution, cx, cy, angle, 4.5 * sigma, blob, edge=False)  # beyond 4.5 sigma: below 1e-4


def _stripes(rng: Rng, resolution: int) -> Array:
    cycles = rng.uniform(2.5, 6.0)  # periods across the image
    duty = rng.uniform(-0.3, 0.3)  # thick or thin stripes
    angle, phase = rng.uniform(0.0, math.pi), rng.uniform(0.0, 2.0 * math.pi)
    w = 2.0 * math.pi * cycles
    c = _centres(resolution)  # (R,)
    u, _ = _rotate(c[None, :], c[:, None], angle)  # (R, R)
    s = np.sin(w * u + phase) + duty  # (R, R)
    return _coverage(-s / w, 1.0 / resolution)  # (R, R)


def _checker(rng: Rng, resolution: int) -> Array:
    cycles = rng.uniform(1.75, 3.5)  # periods (two squares) across the image
    angle = rng.uniform(0.0, math.pi / 2.0)
    phase_u, phase_v = (float(p) for p in rng.uniform(0.0, 2.0 * math.pi, size=2))
    w = 2.0 * math.pi * cycles
    c = _centres(resolution) - 0.5  # (R,)
    u, v = _rotate(c[None, :], c[:, None], angle)  # (R, R)
    su, sv = np.sin(w * u + phase_u), np.sin(w * v + phase_v)  # (R, R), (R, R)
    sd = -np.sign(su * sv) * np.minimum(np.abs(su), np.abs(sv)) / w  # (R, R), distance to a grid line
    return _coverage(sd, 1.0 / resolution)  # (R, R)


_RENDERERS: dict[str, Callable[[Rng, int], Array]] = {  # in label order
    "disk": _disk, "square": _square, "triangle": _triangle, "ring": _ring, "cross": _cross, "stripes": _stripes,
    "checker": _checker, "star": _star, "ellipse": _ellipse, "gradient_blob": _gradient_blob,
}
SHAPE_CLASSES: tuple[str, ...] = tuple(_RENDERERS)
_LUMA = np.array([0.299, 0.587, 0.114])


def _colours(rng: Rng, min_contrast: float = 0.35) -> tuple[Array, Array]:
    """Foreground and background RGB in [0, 1] whose luma differs by at least ``min_contrast``."""
    for _ in range(64):
        fg, bg = rng.uniform(0.0, 1.0, size=(2, 3))  # (3,), (3,)
        if abs(float(_LUMA @ (fg - bg))) >= min_contrast:
            return fg, bg
    return fg, 1.0 - fg  # practically never reached


def _shaded(rng: Rng, resolution: int, colour: Array, amplitude: float) -> Array:
    """``colour`` (3,) plus a smooth random field: a ramp and two low-frequency waves; (3, R, R). Every term is
    separable, ``f(y) * g(x)``: each channel is one rank-6 product, not transcendentals over all R * R pixels."""
    c = _centres(resolution).astype(np.float64)  # (R,)
    ones = np.ones_like(c)  # (R,)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    rows = [ones, math.sin(angle) * (c - 0.5)]  # ramp = cos * (x - .5) + sin * (y - .5)
    cols = [math.cos(angle) * (c - 0.5), ones]
    weights = [amplitude * rng.uniform(-1.0, 1.0, size=3)] * 2  # the ramp's two terms share them
    for _ in range(2):
        kx, ky = 2.0 * math.pi * rng.uniform(-1.5, 1.5, size=2)  # at most 1.5 periods
        phase = rng.uniform(0.0, 2.0 * math.pi)
        w = 0.5 * amplitude * rng.uniform(-1.0, 1.0, size=3)  # (3,)
        # sin(kx x + ky y + phase) = sin(kx x) cos(ky y + phase) + cos(kx x) sin(ky y + phase)
        rows += [np.cos(ky * c + phase), np.sin(ky * c + phase)]
        cols += [np.sin(kx * c), np.cos(kx * c)]
        weights += [w, w]
    rows_k = np.stack(rows, axis=1).astype(np.float32)  # (R, K): functions of y
    cols_k = np.stack(weights, axis=1)[:, :, None] * np.stack(cols)[None]  # (3, K, R): of x
    cols_k[:, 0, :] += colour[:, None]  # the constant row carries the base colour
    cols_k = cols_k.astype(np.float32)  # (3, K, R)
    field = np.empty((3, resolution, resolution), dtype=np.float32)  # (3, R, R)
    for ch in range(3):  # einsum, not ``@``: BLAS's thread pool is slow to wake for such small K
        np.einsum("yk,kx->yx", rows_k, cols_k[ch], out=field[ch])  # (R, R)
    return field


def render_shape(resolution: int, seed: int, index: int) -> tuple[Array, int]:
    """Item ``index`` as uint8 (3, R, R) and its label ``index % 10``."""
    rng = np.random.default_rng([seed, index])
    fg, bg = _colours(rng)  # (3,), (3,) in [0, 1]
    # In grey levels; the + 0.5 makes the final truncation round to nearest.
    background = _shaded(rng, resolution, 255.0 * bg + 0.5, 0.12 * 255.0)  # (3, R, R)
    foreground = _shaded(rng, resolution, 255.0 * fg + 0.5, 0.06 * 255.0)  # (3, R, R)
    label = index % len(SHAPE_CLASSES)
    alpha = _RENDERERS[SHAPE_CLASSES[label]](rng, resolution)  # (R, R)
    foreground -= background
    foreground *= alpha  # (3, R, R)
    background += foreground  # (3, R, R): the composite
    np.clip(background, 0.0, 255.0, out=background)
    return background.astype(np.uint8), label  # (3, R, R)


def _whole(name: str, value: object, minimum: int, what: str) -> int:
    """``value`` as an int >= ``minimum``, or a ConfigError (a ValueError) naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(name, f"must be a {what} integer, got {value!r}")
    return int(value)


class RenderedDataset(Dataset):
    """``length`` items ``(uint8 tensor (3, R, R), label)``: ``render(resolution, seed, index)``, nothing else."""

    render: Callable[[int, int, int], tuple[Array, int]]

    def __init__(self, resolution: int, length: int, seed: int = 0):
        self.resolution = _whole("resolution", resolution, 1, "positive")
        self.length = _whole("length", length, 1, "positive")
        self.seed = _whole("seed", seed, 0, "non-negative")  # numpy's SeedSequence takes no negative entropy

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i = operator.index(index)
        i += self.length if i < 0 else 0  # negative indices count from the end
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for a data set of {self.length} items")
        image, label = self.render(self.resolution, self.seed, i)  # (3, R, R)
        return torch.from_numpy(image), label


class ShapesDataset(RenderedDataset):
    """``length`` rendered images of ``resolution`` pixels; item ``i`` has label ``i % 10``."""

    num_classes = len(SHAPE_CLASSES)
    class_names = list(SHAPE_CLASSES)
    render = staticmethod(render_shape)
