"""What every image DataModule of jitlab shares.

- ``global_batch_size`` is the batch of one optimizer step across all devices, nodes and gradient
  accumulation; each process loads ``global_batch_size / (world_size * accumulate_grad_batches)``.
- Images travel as uint8 (N, C, H, W) and become floats in [-1, 1] on the device.
- ``net_defaults`` tells the CLI what the network must match (image size, classes, channels).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from jitlab.errors import ConfigError


def to_model_range(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float() / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded as a PNG writer would."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class ImageDataModule(L.LightningDataModule):
    """Base of the image data modules: batching, device transfer and the per-device split."""

    num_classes: int = 0
    channels: int = 3

    def __init__(self, resolution: int, global_batch_size: int, num_workers: int, seed: int):
        super().__init__()
        if resolution <= 0:
            raise ConfigError("data.resolution", f"must be a positive image size, got {resolution}")
        if global_batch_size <= 0:
            raise ConfigError("data.global_batch_size", f"must be positive, got {global_batch_size}")
        if num_workers < 0:
            raise ConfigError("data.num_workers", f"must be >= 0, got {num_workers}")
        self.resolution = resolution
        self.global_batch_size = global_batch_size
        self.num_workers = num_workers
        self.seed = seed

    # -- what subclasses provide ------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset:
        raise NotImplementedError

    @classmethod
    def net_defaults(cls, **init_args: Any) -> dict[str, Any]:
        """Arguments the network must agree with, computed from this module's init arguments."""
        return {"img_size": init_args["resolution"], "num_classes": cls.num_classes, "in_channels": cls.channels}

    # -- shared machinery -------------------------------------------------------------------
    def micro_batch_size(self) -> int:
        """The per-process batch: the global batch divided by processes and accumulation."""
        world, accumulate = 1, 1
        if self.trainer is not None:
            world = self.trainer.world_size
            accumulate = self.trainer.accumulate_grad_batches
        parts = world * accumulate
        if self.global_batch_size % parts:
            raise ConfigError(
                "data.global_batch_size",
                f"{self.global_batch_size} does not divide into {world} process(es) x {accumulate} accumulation "
                f"step(s); choose a multiple of {parts}",
            )
        return self.global_batch_size // parts

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        sampler = None
        if train:
            # the order is a function of (seed, epoch), on one process or many: a run resumed at an
            # epoch boundary sees what an uninterrupted run would (Lightning calls set_epoch)
            world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed,
                                         drop_last=True)
        return DataLoader(
            dataset,
            batch_size=self.micro_batch_size(),
            sampler=sampler,
            shuffle=False,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset(), train=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return to_model_range(x), y  # (N, C, H, W) in [-1, 1], (N,)
