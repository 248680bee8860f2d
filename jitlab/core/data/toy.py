"""The toy data of Figure 2: a 2-D spiral embedded into ``D`` dimensions by a column-orthogonal ``P``.

``x = P s`` with ``s`` a 2-D spiral point and ``P`` (D, 2) a fixed random matrix with ``P^T P = I``
(paper.md section 5). The spiral is scaled so each of its two coordinates has unit standard
deviation: the data are NOT images in [-1, 1], and no image conversion is applied on the device.
The training set is ``num_points`` 2-D points drawn once from ``seed`` (the same on every process);
item ``i`` is point ``i`` projected to D, so items are a pure function of (seed, projection, i).
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from jitlab.core.data.base import ImageDataModule
from jitlab.errors import ConfigError

TURNS = 780 / 360  # the classic "two spirals" toy: the angle runs up to 780 degrees
THETA_MAX = 2 * math.pi * TURNS


def spiral_points(n: int, noise: float, generator: torch.Generator) -> Tensor:
    """``n`` points of the 2-D spiral, uniform along its length, each coordinate of unit std: (n, 2).

    ``theta = THETA_MAX * sqrt(u)`` and the point ``theta * (-cos theta, sin theta)``; since
    ``E[theta^2] = THETA_MAX^2 / 2``, dividing by ``THETA_MAX / 2`` gives coordinates of variance ~1.
    ``noise`` is the std of the Gaussian thickness, in those unit-scale coordinates.
    """
    u = torch.rand(n, generator=generator, dtype=torch.float64)  # (n,)
    theta = THETA_MAX * u.sqrt()  # (n,)
    s = torch.stack([-theta * theta.cos(), theta * theta.sin()], dim=1) / (THETA_MAX / 2)  # (n, 2)
    s = s + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)  # (n, 2)
    return s.float()


def arm_gap() -> float:
    """Radial distance between neighbouring arms of the unit-scale spiral (one turn adds 2 pi / (THETA_MAX / 2))."""
    return 2 * math.pi / (THETA_MAX / 2)


def column_orthogonal(dim: int, seed: int) -> Tensor:
    """A random (dim, 2) matrix ``P`` with ``P^T P = I`` (QR of a Gaussian matrix, signs fixed)."""
    if dim < 2:
        raise ConfigError("data.dim", f"must be >= 2 to embed a 2-D spiral, got {dim}")
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(dim, 2, generator=g, dtype=torch.float64)  # (D, 2)
    q, r = torch.linalg.qr(gauss)  # (D, 2), (2, 2)
    return (q * torch.sign(torch.diagonal(r))).float()  # (D, 2), unique given the Gaussian draw


class SpiralDataset(Dataset):
    """Projected spiral points; ``__getitems__`` fetches a whole batch in one indexing operation."""

    def __init__(self, s: Tensor, projection: Tensor):
        self.s = s  # (n, 2)
        self.projection = projection  # (D, 2)

    def __len__(self) -> int:
        return self.s.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.s[index] @ self.projection.T, torch.zeros((), dtype=torch.long)  # (D,), ()

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        x = self.s[torch.as_tensor(indices)] @ self.projection.T  # (N, D)
        return x, torch.zeros(len(indices), dtype=torch.long)  # (N, D), (N,)


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate of ``__getitems__`` batches: they are already (x, y)."""
    return batch


class SpiralDataModule(L.LightningDataModule):
    """The Figure 2 toy: unconditional, ``x`` (N, D) float, ``y`` (N,) zeros.

    Args:
        dim: the ambient dimension ``D`` (2, 8, 16, 512 in the paper).
        num_points: points in the training set (one epoch).
        val_size: points in the validation set (drawn with ``seed + 1``).
        global_batch_size: points per optimizer step over all processes and accumulation steps.
        noise: std of the spiral's thickness (unit-scale coordinates).
        seed: the data seed (None: the training seed, ``seed_everything``).
        projection_seed: the seed of ``P`` (fixed across data seeds by default).
        num_workers: data-loader workers per process (0 is fastest for these tiny batches).
    """

    num_classes = None

    def __init__(
        self,
        dim: int = 512,
        num_points: int = 1 << 20,
        val_size: int = 4096,
        global_batch_size: int = 256,
        noise: float = 0.02,
        seed: int | None = None,
        projection_seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if global_batch_size <= 0:
            raise ConfigError("data.global_batch_size", f"must be positive, got {global_batch_size}")
        if num_points < global_batch_size or val_size <= 0:
            raise ConfigError("data.num_points", f"need num_points >= global_batch_size and val_size > 0, "
                                                 f"got {num_points}, {global_batch_size}, {val_size}")
        if noise < 0 or num_workers < 0:
            raise ConfigError("data.noise", "noise and num_workers must be >= 0")
        self.dim = dim
        self.num_points = num_points
        self.val_size = val_size
        self.global_batch_size = global_batch_size
        self.noise = noise
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        self.num_workers = num_workers
        self.projection = column_orthogonal(dim, projection_seed)  # (D, 2)
        self.save_hyperparameters()  # stored in checkpoints: the spiral scoring rebuilds P from them
        self._train: SpiralDataset | None = None

    @classmethod
    def net_defaults(cls, **init_args: Any) -> dict[str, Any]:
        """The network's ambient dimension follows the data."""
        return {"dim": init_args.get("dim", 512)}

    micro_batch_size = ImageDataModule.micro_batch_size  # the same per-process split as the images

    def spiral_2d(self, n: int, seed: int = 12345) -> Tensor:
        """``n`` fresh ground-truth 2-D points (N, 2), for metrics and figures."""
        return spiral_points(n, self.noise, torch.Generator().manual_seed(seed))

    def embed(self, s: Tensor) -> Tensor:
        """2-D points (N, 2) -> data space (N, D)."""
        return s @ self.projection.T

    def train_dataset(self) -> SpiralDataset:
        if self._train is None:
            self._train = SpiralDataset(self.spiral_2d(self.num_points, self.seed), self.projection)
        return self._train

    def val_dataset(self) -> SpiralDataset:
        return SpiralDataset(self.spiral_2d(self.val_size, self.seed + 1), self.projection)

    def _loader(self, dataset: SpiralDataset, train: bool) -> DataLoader:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=train, seed=self.seed,
                                     drop_last=train)
        return DataLoader(dataset, batch_size=self.micro_batch_size(), sampler=sampler, drop_last=train,
                          collate_fn=keep_batch, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset(), train=False)
