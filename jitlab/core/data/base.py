"""What every image DataModule of jitlab shares.

``global_batch_size`` is the batch of one optimizer step over all devices and accumulation steps; images travel as
uint8 (N, C, H, W) and become floats in [-1, 1] on the device; a subclass's ``net_defaults(**init_args)`` tells the
CLI what the network must match. The training loader resumes mid-epoch: an epoch's order is a function of (seed,
epoch), and the loader's ``state_dict`` (in every checkpoint) records how much of it was consumed.
"""

from __future__ import annotations

from typing import Any, Iterator

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


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled, ``drop_last``) that can start part-way into an epoch.

    Epoch ``e``'s global order is torch's ``randperm(n)`` seeded with ``seed + e``; rank ``r`` of ``w`` takes
    positions ``r, r + w, ...``. ``skip(e, k)`` leaves out the first ``k`` positions, which (batches being consumed
    in lockstep) are exactly the samples seen, even if the number of processes changed. ``len()`` stays a whole
    epoch's: Lightning counts the batches already done itself.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0  # positions of the global order of ``self.epoch`` already consumed

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0  # a new epoch starts at its beginning
        super().set_epoch(epoch)

    def skip(self, epoch: int, start: int) -> None:
        """Continue epoch ``epoch`` after its first ``start`` positions."""
        self.epoch, self.start = epoch, max(0, int(start))

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()  # type: ignore[arg-type]
        order = order[: self.total_size][self.start:]
        usable = len(order) // self.num_replicas * self.num_replicas  # every rank gets as many
        return iter(order[self.rank:usable:self.num_replicas])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableDistributedSampler` whose ``state_dict`` Lightning checkpoints.

    The state is the epoch and the positions of its global order all processes have consumed (batches handed
    to the training loop, not those workers prefetched).
    """

    def __init__(self, dataset: Dataset, sampler: ResumableDistributedSampler, **kwargs: Any):
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._epoch = sampler.epoch
        self._consumed = sampler.start  # global positions of ``_epoch`` consumed so far

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableDistributedSampler = self.sampler  # type: ignore[assignment]
        self._epoch, self._consumed = sampler.epoch, sampler.start
        per_batch = self.batch_size * sampler.num_replicas  # type: ignore[operator]
        for batch in super().__iter__():
            self._consumed += per_batch
            yield batch
        sampler.start = 0  # the epoch is complete: iterating again starts it afresh

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "consumed": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableDistributedSampler = self.sampler  # type: ignore[assignment]
        sampler.skip(int(state["epoch"]), int(state["consumed"]))
        self._epoch, self._consumed = sampler.epoch, sampler.start


class ImageDataModule(L.LightningDataModule):
    """Base of the image data modules: batching, device transfer and the per-device split."""

    num_classes: int = 0

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

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset:
        raise NotImplementedError

    def micro_batch_size(self) -> int:
        """The per-process batch: the global batch divided by processes and accumulation."""
        world, accumulate = (self.trainer.world_size, self.trainer.accumulate_grad_batches) if self.trainer else (1, 1)
        parts = world * accumulate
        if self.global_batch_size % parts:
            raise ConfigError(
                "data.global_batch_size",
                f"{self.global_batch_size} does not divide into {world} process(es) x {accumulate} accumulation "
                f"step(s); choose a multiple of {parts}",
            )
        return self.global_batch_size // parts

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        kwargs = dict(batch_size=self.micro_batch_size(), shuffle=False, drop_last=train, num_workers=self.num_workers,
                      persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())
        if not train:
            return DataLoader(dataset, **kwargs)
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        sampler = ResumableDistributedSampler(dataset, num_replicas=world, rank=rank, seed=self.seed)
        return ResumableDataLoader(dataset, sampler, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset(), train=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return to_model_range(x), y  # (N, C, H, W) in [-1, 1], (N,)
