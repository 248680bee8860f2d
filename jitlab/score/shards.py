"""Generated images kept as shards, so that a large sampling (50K images) resumes after a requeue.

Block ``b`` (global indices ``[b * size, (b + 1) * size)``) is one ``.npz`` of uint8 images and labels, written
atomically when whole; a process takes blocks ``rank, rank + world, ...`` and a rerun generates only the missing
ones. A store's directory is a digest of what decides the images (checkpoint, step, EMA, sampler settings, labels),
which each shard repeats: a shard of other settings is never read. Not litdata: a resumable cache of one sampling,
read back whole, rather than a streamed training set.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from itertools import groupby
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from jitlab.atomic import atomic_path, write_json
from jitlab.score.generate import dist_info, generate_uint8, labels_for, rank_indices
from jitlab.core.settings import SampleSettings, SamplerSettings


def block_indices(total: int, size: int, rank: int, world: int) -> list[int]:
    """The global indices of this process's whole blocks: disjoint across ranks, together 0..total-1."""
    return [i for start in range(rank * size, total, world * size) for i in range(start, min(start + size, total))]


def block_size(total: int, world: int, batch_size: int, requested: int | None = None) -> int:
    """Images per block: ``requested`` (None: 10 batches), at most a process's share, so every process has some."""
    return max(1, min(requested or 10 * batch_size, -(-total // world)))


def split_blocks(indices: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of ``indices`` that fall in one block each."""
    return [list(run) for _, run in groupby(indices, key=lambda i: i // size)]


@dataclass(frozen=True)
class ShardStore:
    """The shards of one sampling under ``root``: ``meta`` is everything that decides its images."""

    root: Path
    meta: dict[str, Any]
    size: int = 1000

    @property
    def directory(self) -> Path:
        digest = hashlib.sha256(json.dumps(self.meta, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return Path(self.root) / digest

    def path(self, block: Sequence[int]) -> Path:
        return self.directory / f"images-{block[0]:08d}-{block[-1] + 1:08d}.npz"

    def load(self, block: Sequence[int]) -> tuple[Tensor, Tensor | None] | None:
        """uint8 images (B, C, H, W) and labels of a finished block, or None (not written, or not these settings)."""
        path = self.path(block)
        if not path.exists():
            return None
        with np.load(path) as shard:
            meta = json.loads(str(shard["meta"]))
            if meta != json.loads(json.dumps(self.meta, default=str)) or shard["indices"].tolist() != list(block):
                return None
            images = torch.from_numpy(shard["images"])  # (B, C, H, W) uint8
            labels = torch.from_numpy(shard["labels"]) if "labels" in shard else None
        return images, labels

    def write(self, block: Sequence[int], images: Tensor, labels: Tensor | None) -> None:
        if not (self.directory / "meta.json").exists():
            write_json(self.directory / "meta.json", self.meta)  # for a person looking at the directory
        arrays = {"images": images.numpy(), "indices": np.asarray(block, dtype=np.int64),
                  "meta": np.array(json.dumps(self.meta, default=str))}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        with atomic_path(self.path(block), suffix=".npz") as tmp:  # np.savez keeps a name ending in .npz
            np.savez(tmp, **arrays)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def sharded_uint8(module, store: ShardStore, indices: Sequence[int], labels: Tensor | None,
                  settings: SamplerSettings, batch_size: int = 64,
                  progress: bool = True) -> Iterator[tuple[list[int], Tensor, Tensor | None]]:
    """Yield (indices, uint8 images (B, C, H, W), labels) block by block: loaded if on disk, else generated and
    written. ``indices`` are whole blocks (``block_indices``); ``labels`` align with them."""
    bar = tqdm(total=len(indices), desc="sampling", unit="img", disable=not progress, dynamic_ncols=True)
    offset = 0
    for block in split_blocks(indices, store.size):
        block_labels = None if labels is None else labels[offset:offset + len(block)]
        offset += len(block)
        found = store.load(block)
        if found is None:
            parts = list(generate_uint8(module, block, block_labels, settings, batch_size, progress=False))
            found = torch.cat([images for _, images, _ in parts]), block_labels  # (B, C, H, W) uint8
            store.write(block, *found)
        bar.update(len(block))
        yield list(block), found[0], found[1]
    bar.close()


def assemble(store: ShardStore, total: int) -> tuple[Tensor, Tensor | None]:
    """All ``total`` images (N, C, H, W) uint8 and labels from the store's finished blocks (every one must be)."""
    images, labels = [], []
    for block in split_blocks(range(total), store.size):
        found = store.load(block)
        if found is None:
            raise FileNotFoundError(f"shard {store.path(block)} is missing: its process did not finish")
        images.append(found[0])
        labels.append(found[1])
    return torch.cat(images), None if labels[0] is None else torch.cat(labels)  # (N, C, H, W), (N,)


def sample_images(module, settings: SampleSettings, shards: Path | None = None, shard_size: int | None = None,
                  progress: bool = True) -> Tensor | None:
    """The images of `jitlab sample`: uint8 (N, C, H, W) on rank 0 (None on the other ranks).

    ``module``: as ``jitlab.train.checkpoint.load_module`` returns it. Each process makes its slice, gathered to rank
    0 in memory (``shards`` None), or written as blocks that rank 0 reads back (so a rerun resumes).
    """
    rank, world = dist_info()
    total, sampling = settings.num_images, settings.sampling
    if shards is None:
        indices = rank_indices(total, rank, world)
        labels = labels_for(indices, module.null_class, settings.classes)
        parts = list(generate_uint8(module, indices, labels, sampling, settings.batch_size, progress=progress))
        images = torch.cat([p[1] for p in parts])  # (n_rank, C, H, W) uint8
        if world == 1:
            return images
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, images)
        images = torch.empty((total, *images.shape[1:]), dtype=torch.uint8)  # (N, C, H, W)
        for r, chunk in enumerate(gathered):
            images[r::world] = chunk  # rank r made indices r, r + world, ...
        return images if rank == 0 else None
    store = ShardStore(Path(shards), {"checkpoint": module.checkpoint_path, "step": module.checkpoint_step,
                                      "ema": module.ema_decay, "classes": settings.classes,
                                      "num_classes": module.null_class, **sampling.record()},
                       block_size(total, world, settings.batch_size, shard_size))
    indices = block_indices(total, store.size, rank, world)
    labels = labels_for(indices, module.null_class, settings.classes)
    for _ in sharded_uint8(module, store, indices, labels, sampling, settings.batch_size, progress=progress):
        pass  # each block is on disk once yielded
    if world > 1:
        torch.distributed.barrier()  # every process's blocks are written
    return assemble(store, total)[0] if rank == 0 else None
