"""Reference statistics (mu, sigma) of real images: build, write and load them; `jitlab fid-stats`.

The release's layout (``fid_stats/jit_in256_stats.npz``: ``mu`` (F,), ``sigma`` (F, F)); files written here add
``n``, ``feature_space`` and ``fingerprint`` (never compared with features of other weights) and ``resolution`` (a
run's preflight tells statistics of another resolution); the release's files, without them, are accepted as they are.
Statistics of the ImageNet training split: ``jitlab.score.metrics.imagenet_stats``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from jitlab.atomic import atomic_path
from jitlab.errors import ConfigError
from jitlab.score.metrics.features import FeatureExtractor
from jitlab.score.metrics.frechet import FrechetDistance


class StatsFileError(ConfigError):
    """A reference statistics file is missing or unusable; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        super().__init__(f"reference statistics {path}", problem)


@dataclass(frozen=True)
class ReferenceStats:
    mu: np.ndarray  # (F,) float64
    sigma: np.ndarray  # (F, F) float64
    n: int | None = None
    feature_space: str | None = None
    fingerprint: str | None = None
    path: Path | None = None
    resolution: int | None = None  # side of the images measured; None for files that do not say (the release's)

    @property
    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mu, self.sigma


def load_stats(path: str | os.PathLike, extractor: FeatureExtractor | None = None) -> ReferenceStats:
    """Read and check ``path``; with ``extractor``, also check the width and the feature space."""
    path = Path(path)
    if not path.is_file():
        raise StatsFileError(path, "no such file (build one with `jitlab fid-stats ... --out FILE.npz`)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in ("mu", "sigma") if key not in archive.files]
            if missing:
                raise StatsFileError(path, f"missing key(s) {', '.join(missing)} (found: {', '.join(archive.files)}); "
                                     "expected mu (F,) and sigma (F, F)")
            mu, sigma = archive["mu"].astype(np.float64), archive["sigma"].astype(np.float64)
            n = int(archive["n"]) if "n" in archive.files else None
            resolution = int(archive["resolution"]) if "resolution" in archive.files else None
            space, fingerprint = (str(archive[key]) if key in archive.files else None
                                  for key in ("feature_space", "fingerprint"))
    except StatsFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise StatsFileError(path, f"not a readable .npz file ({type(error).__name__}: {error})") from error
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise StatsFileError(path, f"mu has shape {mu.shape} and sigma {sigma.shape}; expected (F,) and (F, F)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatsFileError(path, "mu or sigma contains NaN or infinite values")
    if np.abs(sigma - sigma.T).max() > 1e-6 * max(1.0, np.abs(sigma).max()):
        raise StatsFileError(path, "sigma is not symmetric: not a covariance matrix")
    if extractor is not None:
        if mu.shape[0] != extractor.num_features:
            raise StatsFileError(path, f"statistics of {mu.shape[0]}-d features, but {extractor.name} gives "
                                 f"{extractor.num_features}-d features")
        if fingerprint is not None and fingerprint != extractor.fingerprint:
            raise StatsFileError(path, f"statistics of feature space {fingerprint}, not {extractor.fingerprint}")
    return ReferenceStats(mu, sigma, n, space, fingerprint, path, resolution)


def save_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, n: int | None = None,
               extractor: FeatureExtractor | None = None, resolution: int | None = None) -> Path:
    """Write the release's layout (plus provenance); atomic: a temporary file, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    space, fingerprint = (None, None) if extractor is None else (extractor.name, extractor.fingerprint)
    provenance = {"n": n, "feature_space": space, "fingerprint": fingerprint,
                  "resolution": None if resolution is None else int(resolution)}
    arrays = {"mu": np.asarray(mu, dtype=np.float64), "sigma": np.asarray(sigma, dtype=np.float64),
              **{key: np.array(value) for key, value in provenance.items() if value is not None}}
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez keeps a name ending in .npz
        np.savez(tmp, **arrays)
    return path


@torch.no_grad()
def build_stats(dataloader: Iterable, extractor: FeatureExtractor, max_images: int | None = None,
                device: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu (F,), sigma (F, F), n) of the uint8 images a loader yields (batches, or (batches, labels)); in a
    distributed run each rank passes its slice and the result is over all ranks."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    metric = FrechetDistance(extractor.to(device)).to(device)
    seen = 0
    for batch in dataloader:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch  # (B, 3, H, W) uint8
        if max_images is not None:
            images = images[:max_images - seen]
        if len(images):
            metric.update(images.to(device), real=True)
            seen += len(images)
        if max_images is not None and seen >= max_images:
            break
    with metric.sync_context():
        mu, sigma, n = metric.statistics(real=True)
    return mu.cpu().numpy(), sigma.cpu().numpy(), n


def dataset_stats(dataset: Dataset, extractor: FeatureExtractor, out: str | os.PathLike, num: int | None = None,
                  batch_size: int = 100, device: str | None = None) -> ReferenceStats:
    """Statistics of the first ``num`` items of a data set of (uint8 image, label), written to ``out``."""
    if num is not None:
        dataset = Subset(dataset, range(min(num, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    mu, sigma, n = build_stats(loader, extractor, device=device)
    first = dataset[0]
    image = first[0] if isinstance(first, (tuple, list)) else first  # (3, H, W) uint8
    save_stats(out, mu, sigma, n, extractor, resolution=int(image.shape[-1]))
    return load_stats(out, extractor)


def join_torchrun(device: str | None) -> tuple[int, str | None]:
    """Join the process group of torchrun (WORLD_SIZE > 1): rank, and this process's device."""
    from jitlab.score.generate import join_processes, process_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, device
    device = process_device(device, world)  # None or cuda: this process's own GPU
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    join_processes(device, world)
    return torch.distributed.get_rank(), device
