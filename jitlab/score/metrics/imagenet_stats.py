"""Reference statistics of the ImageNet training split at any resolution (`jitlab fid-stats --root DIR`).

Every readable training image of a folder tree or of `jitlab prepare-imagenet`'s shards, with the crop training
sees (the release's ADM centre crop, no flip), through InceptionV3 into ``FrechetDistance``'s float64 sums.
Several processes (torchrun; gloo on CPU, nccl on GPUs) take the images in rounds of ``world x batch`` positions,
rank ``r`` the ``r``-th batch of each round. Resumable: every ``every`` rounds the summed states and the positions
done go atomically to ``OUT.partial.pt``, which the same command (any number of processes) continues from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from jitlab.atomic import atomic_path
from jitlab.errors import ConfigError
from jitlab.score.metrics.features import FeatureExtractor
from jitlab.score.metrics.frechet import FrechetDistance
from jitlab.score.metrics.stats import ReferenceStats, load_stats, save_stats

PARTIAL_FORMAT = "jitlab-fid-stats-partial"
# a partial file's key -> the metric's summed state: (F,), (F, F) float64 and the count ()
SUMS = {"sum": "real_features_sum", "cov_sum": "real_features_cov_sum", "n": "real_features_num_samples"}


class TrainCrops(Dataset):
    """``index -> (uint8 (3, R, R), readable)`` over the training split of a folder tree or of shards.

    An undecodable file gives ``readable=False`` (and a warning): left out rather than a neighbour counted twice.
    """

    def __init__(self, root: str, resolution: int, source: str = "auto", classes: Any = None):
        from jitlab.core.data.imagenet import ImageFolderDataset, dataset_classes, resolve_source

        self.root, self.resolution = str(root), int(resolution)
        self.source = resolve_source(self.root, source)  # type: ignore[arg-type]
        self.classes = list(dataset_classes(self.root, self.source, classes))  # type: ignore[arg-type]  # or a subset
        if self.source == "shards":
            from jitlab.core.data.shards import ShardDataset

            self.items: Any = ShardDataset(self.root, "train", flip=False)
            if self.items.resolution != self.resolution:
                raise ConfigError("--resolution", f"is {resolution} but the shards in {root} hold "
                                                  f"{self.items.resolution} x {self.items.resolution} crops")
            self.num_images = int(self.items.num_images)
        else:
            self.items = ImageFolderDataset(Path(self.root) / "train", self.resolution, self.classes, flip=False)
            self.num_images = len(self.items)
        if self.num_images < 2:
            raise ConfigError("--root", f"{root}: {self.num_images} training image(s); statistics need at least 2")

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool]:
        if self.source == "shards":
            image, _ = self.items[index]  # (3, R, R) uint8
            return image, True
        from jitlab.core.data.imagenet import crop_file

        path = self.items.path(index)
        try:
            return crop_file(path, self.resolution), True  # (3, R, R) uint8
        except Exception as error:  # noqa: BLE001 -- any undecodable file: leave it out, never stop
            print(f"jitlab fid-stats: warning: skipped unreadable image {path} ({type(error).__name__}: {error})",
                  file=sys.stderr)
            return torch.zeros(3, self.resolution, self.resolution, dtype=torch.uint8), False


def keep_readable(items: list[tuple[torch.Tensor, bool]]) -> tuple[torch.Tensor, int]:
    """Collate: the readable images (k, 3, R, R) uint8 and the number left out."""
    images = [image for image, ok in items if ok]
    batch = torch.stack(images) if images else torch.zeros(0, *items[0][0].shape, dtype=torch.uint8)
    return batch, len(items) - len(images)


def rank_batches(total: int, start: int, world: int, rank: int, batch: int) -> list[list[int]]:
    """The batches of positions ``start..total-1`` that rank ``rank`` measures, its ``rank``-th of each round of
    ``world * batch`` positions: every position goes to exactly one rank; only the last round can be uneven."""
    lows = [min(first + rank * batch, total) for first in range(start, total, world * batch)]
    return [list(range(low, min(low + batch, total))) for low in lows]


def partial_path(out: str | os.PathLike) -> Path:
    return Path(f"{Path(out)}.partial.pt")


def load_partial(path: Path, identity: dict[str, Any], metric: FrechetDistance) -> tuple[int, int]:
    """Put the saved sums into ``metric`` (rank 0 only calls this); the positions done (measured or unreadable)
    and the unreadable files left out, over all ranks (no file: zeros)."""
    if not path.exists():
        return 0, 0
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- a foreign or truncated file: say which, and what to do
        raise ConfigError(str(path), f"is not a readable partial statistics file ({error}); delete it to start "
                                     "afresh") from None
    for key, value in identity.items():
        if saved.get(key) != value:
            raise ConfigError(str(path), f"was made with {key} = {saved.get(key)!r}, not {value!r}; delete it to "
                                         "start afresh or run the command that made it")
    device = metric.real_features_sum.device
    for key, name in SUMS.items():
        setattr(metric, name, saved[key].to(device))
    return int(saved["positions"]), int(saved["skipped"])


def save_partial(path: Path, identity: dict[str, Any], metric: FrechetDistance, positions: int, skipped: int) -> None:
    """Write the (already all-reduced) sums and the progress atomically."""
    state = {**identity, "positions": positions, "skipped": skipped,
             **{key: getattr(metric, name).cpu() for key, name in SUMS.items()}}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def _all_sum(value: int, device: torch.device) -> int:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(tensor)
    return int(tensor.item())


def imagenet_stats(root: str, resolution: int, extractor: FeatureExtractor, out: str | os.PathLike,
                   batch_size: int = 100, workers: int = 8, every: int = 50, progress: bool = True,
                   device: str | None = None, source: str = "auto", classes: Any = None) -> ReferenceStats | None:
    """Measure the training split of ``root`` and write ``out`` (rank 0); returns the statistics on rank 0."""
    from tqdm import tqdm

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    crops = TrainCrops(root, resolution, source, classes)
    metric = FrechetDistance(extractor.to(device)).to(device)
    identity = {"format": PARTIAL_FORMAT, "root": crops.root, "resolution": crops.resolution,
                "num_images": crops.num_images, "classes": crops.classes, "fingerprint": extractor.fingerprint}
    partial = partial_path(out)
    done, skipped_before = load_partial(partial, identity, metric) if rank == 0 else (0, 0)
    start = _all_sum(done, metric.real_features_sum.device)  # every rank learns where to start
    batches = [b for b in rank_batches(crops.num_images, start, world, rank, batch_size) if b]
    loader = DataLoader(crops, batch_sampler=batches, num_workers=workers, collate_fn=keep_readable)
    rounds = -(-(crops.num_images - start) // (world * batch_size))
    bar = tqdm(total=crops.num_images, initial=start, unit="img", desc=f"fid-stats {resolution}px",
               disable=not progress or rank != 0)
    skipped = 0
    for k, (images, left_out) in enumerate(loader):
        skipped += left_out
        if len(images):
            metric.update(images.to(device), real=True)
        positions = min(start + (k + 1) * world * batch_size, crops.num_images)
        bar.update(positions - bar.n)
        if every > 0 and (k + 1) % every == 0 and k + 1 < rounds:  # every rank is at round k here
            with metric.sync_context():
                total_skipped = skipped_before + _all_sum(skipped, metric.real_features_sum.device)
                if rank == 0:
                    save_partial(partial, identity, metric, positions, total_skipped)
    bar.close()
    total_skipped = skipped_before + _all_sum(skipped, metric.real_features_sum.device)
    with metric.sync_context():
        mu, sigma, n = metric.statistics(real=True)  # (F,), (F, F) float64, over every rank
    if rank != 0:
        return None
    if total_skipped:
        print(f"jitlab fid-stats: left out {total_skipped} unreadable file(s)", file=sys.stderr)
    save_stats(out, mu.cpu().numpy(), sigma.cpu().numpy(), n, extractor, resolution=resolution)
    partial.unlink(missing_ok=True)
    return load_stats(out, extractor)
