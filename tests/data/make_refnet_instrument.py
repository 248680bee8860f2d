"""Writes tests/data/refnet_instrument.npz: the fixed images FD-ref is checked on (tests/test_refnet_instrument.py).

Run once, from the repository root: ``python tests/data/make_refnet_instrument.py``. The file is committed, so the
check never depends on the data renderer of the machine it runs on. It holds ``real``: 200 shapes at 32x32 of data
seed 101, and ``base``: 200 of data seed 102, uint8 (N, 3, 32, 32). The test derives the rest with integer and
float64 arithmetic that every machine does alike (the noise is not stored: it would not compress):
``pooled`` averages blocks for the 16x16 and 8x8 classifiers, ``perturbed`` makes the second set from ``base``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from jitlab.core.data.embedded import make_dataset

COUNT = 200
FILE = Path(__file__).with_name("refnet_instrument.npz")


def images(seed: int) -> torch.Tensor:
    data = make_dataset("shapes", 32, COUNT, seed)
    return torch.stack([data[i][0] for i in range(COUNT)])  # (N, 3, 32, 32) uint8


def pooled(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Block means of uint8 images, rounded half up in integers: (N, 3, R, R) -> (N, 3, r, r)."""
    f = x.shape[-1] // resolution
    blocks = x.long().view(*x.shape[:2], resolution, f, resolution, f).sum(dim=(3, 5))  # (N, 3, r, r)
    return ((blocks + f * f // 2) // (f * f)).to(torch.uint8)  # (N, 3, r, r)


def perturbed(x: torch.Tensor) -> torch.Tensor:
    """Shifted one pixel to the right, Gaussian noise of sd 12 (of 255; torch's CPU generator, seed 0), rounded."""
    generator = torch.Generator().manual_seed(0)
    shifted = torch.roll(x, shifts=1, dims=-1).double()  # (N, 3, R, R)
    noise = torch.randn(shifted.shape, generator=generator, dtype=torch.float64) * 12.0  # (N, 3, R, R)
    return (shifted + noise).round().clamp(0, 255).to(torch.uint8)  # (N, 3, R, R)


def load(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two fixed sets at ``resolution`` (32, 16 or 8): (real, fake), each uint8 (200, 3, R, R)."""
    with np.load(FILE) as archive:
        real, base = torch.from_numpy(archive["real"]), torch.from_numpy(archive["base"])  # (N, 3, 32, 32)
    return pooled(real, resolution), perturbed(pooled(base, resolution))


def main() -> None:
    np.savez_compressed(FILE, real=images(101).numpy(), base=images(102).numpy())
    print(f"wrote {FILE} ({FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
