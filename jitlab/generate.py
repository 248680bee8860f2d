"""Generate images by global index, in batches, on one process or a slice per process.

Every image's initial noise comes from (seed, global index) and its label from the index too, so
``N`` images are the same whether one process makes them all or each of ``W`` processes makes the
indices ``rank, rank + W, ...``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from jitlab.data.base import to_uint8
from jitlab.sampling import Sampler, nfe


@dataclass
class SamplerSettings:
    """Everything that decides a generated image besides the weights; recorded with every result."""

    sampler: Sampler = Sampler.heun
    steps: int = 50
    cfg_scale: float = 1.0
    cfg_interval: tuple[float, float] = (0.1, 1.0)
    seed: int = 0

    def record(self) -> dict:
        return {"sampler": str(Sampler(self.sampler)), "steps": self.steps, "nfe": nfe(self.sampler, self.steps),
                "cfg_scale": self.cfg_scale, "cfg_interval": list(self.cfg_interval), "seed": self.seed}


def dist_info() -> tuple[int, int]:
    """(rank, world size): from torch.distributed if initialised, else from the launcher's environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def rank_indices(total: int, rank: int, world: int) -> list[int]:
    """The global indices one process generates: disjoint across ranks, together 0..total-1."""
    return list(range(rank, total, world))


def labels_for(indices: Sequence[int], num_classes: int | None, classes: Sequence[int] | None = None) -> Tensor | None:
    """Labels by index: balanced over all classes (index mod classes), or cycling through ``classes``."""
    if num_classes is None:
        return None
    pool = list(classes) if classes else list(range(num_classes))
    bad = [c for c in pool if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class labels {bad} out of range; the model has {num_classes} classes (0..{num_classes - 1})")
    return torch.tensor([pool[i % len(pool)] for i in indices], dtype=torch.long)


def generate_uint8(module, indices: Sequence[int], labels: Tensor | None, settings: SamplerSettings,
                   batch_size: int = 64, progress: bool = True) -> Iterator[tuple[list[int], Tensor, Tensor | None]]:
    """Yield (indices, uint8 images (B, C, H, W) on the CPU, labels) batch by batch."""
    indices = list(indices)
    bar = tqdm(total=len(indices), desc="sampling", unit="img", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        chunk_labels = None if labels is None else labels[start:start + batch_size]
        x = module.generate(chunk, chunk_labels, steps=settings.steps, method=settings.sampler,
                            cfg_scale=settings.cfg_scale, cfg_interval=tuple(settings.cfg_interval),
                            seed=settings.seed)  # (B, C, H, W) in [-1, 1]
        bar.update(len(chunk))
        yield chunk, to_uint8(x).cpu(), chunk_labels
    bar.close()
