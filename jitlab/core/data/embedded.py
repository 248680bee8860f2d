"""The embedded data sets (``shapes``, ``photos``): no download, any resolution, class conditional, each item a pure
function of (resolution, seed, index). Rendering costs about a tenth of a mini training step, so a run that will see
every training item renders the set once into a uint8 cache file (:class:`RenderedCache`) that later runs find ready.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from jitlab.atomic import atomic_path
from jitlab.core.data import photos, shapes
from jitlab.core.data.base import ImageDataModule
from jitlab.errors import ConfigError

EmbeddedKind = Literal["shapes", "photos"]
CACHE_LIMIT_BYTES = 2 * 2**30  # a set larger than this renders item by item, as before


def make_dataset(kind: EmbeddedKind, resolution: int, length: int, seed: int) -> Dataset:
    return (shapes.ShapesDataset if kind == "shapes" else photos.PhotoCropsDataset)(resolution, length, seed)


def cache_file(kind: EmbeddedKind, resolution: int, length: int, seed: int, cache_dir: Path | None = None) -> Path:
    """Where the rendered set lives; the name carries a hash of the renderer's source and of the versions of the
    libraries it draws with, so an edited renderer or another numpy never reads a stale file."""
    from importlib.metadata import PackageNotFoundError, version

    libraries = ["numpy"] if kind == "shapes" else ["numpy", "pillow", "scikit-image", "scikit-learn"]
    versions = []
    for name in libraries:
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} -")
    source = inspect.getsource(shapes if kind == "shapes" else photos)
    text = f"{kind}-{resolution}-{length}-{seed}\n{versions}\n{source}"
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    root = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jitlab" / "data"
    return Path(root) / f"{kind}-{resolution}-n{length}-s{seed}-{key}.npy"


class RenderedCache(Dataset):
    """The items of a deterministic data set, read from one uint8 file (N, C, H, W) and its labels (N,).

    Each process (and data-loader worker) memory-maps the file, so the page cache holds one copy for all.
    """

    def __init__(self, path: Path, length: int):
        self.path, self.length = Path(path), length
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    @classmethod
    def build(cls, dataset: Dataset, path: Path) -> "RenderedCache":
        """Render every item of ``dataset`` into ``path`` (labels beside it) unless the file exists; atomically:
        a concurrent run renders the same bytes and the last rename wins."""
        path = Path(path)
        length = len(dataset)  # type: ignore[arg-type]
        if not path.exists():
            first, _ = dataset[0]
            images = np.empty((length, *first.shape), dtype=np.uint8)  # (N, C, H, W)
            labels = np.empty(length, dtype=np.int64)  # (N,)
            for i in range(length):
                image, labels[i] = dataset[i]
                images[i] = image.numpy()
            with atomic_path(labels_file(path), suffix=".npy") as tmp:
                np.save(tmp, labels)
            with atomic_path(path, suffix=".npy") as tmp:  # the images file last: its presence means complete
                np.save(tmp, images)
        return cls(path, length)

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")  # (N, C, H, W) uint8
            self._labels = np.load(labels_file(self.path))  # (N,)
            if len(self._images) != self.length or len(self._labels) != self.length:
                raise RuntimeError(f"{self.path} holds {len(self._images)} items, expected {self.length}; delete it")
        return self._images, self._labels  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self._open()
        return torch.from_numpy(np.array(images[index])), int(labels[index])  # (C, H, W) uint8, label

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch in one read (the DataLoader's batched fetch)."""
        images, labels = self._open()
        batch = torch.from_numpy(images[np.asarray(indices)])  # (B, C, H, W): fancy indexing copies
        return [(image, int(labels[i])) for image, i in zip(batch, indices)]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None, "_labels": None}  # workers map the file themselves


def labels_file(path: Path) -> Path:
    return path.with_name(path.stem + ".labels.npy")


def num_classes_of(kind: EmbeddedKind) -> int:
    return len(shapes.SHAPE_CLASSES) if kind == "shapes" else len(photos.load_photos())


class EmbeddedDataModule(ImageDataModule):
    """Offline, class-conditional images at any resolution from 32 to 1024.

    Args:
        kind: ``shapes`` (10 rendered classes) or ``photos`` (one class per bundled photograph).
        resolution: image side in pixels.
        global_batch_size: images per optimizer step over all processes and accumulation steps.
        train_size: items in one training epoch (the data are generated, so any number works).
        val_size: items of the validation set (drawn with ``seed + 1``).
        num_workers: data-loader workers per process.
        seed: the data seed; with the index it fixes every item.
        disk_cache: read the training set from a file rendered once (:class:`RenderedCache`) when the file
            exists, or when this run will draw at least ``train_size`` items (rendering them all first then
            costs no more than rendering them as they come); sets over 2 GiB always render item by item.
    """

    def __init__(
        self,
        kind: EmbeddedKind = "shapes",
        resolution: int = 64,
        global_batch_size: int = 64,
        train_size: int = 50_000,
        val_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        disk_cache: bool = True,
    ):
        super().__init__(resolution, global_batch_size, num_workers, seed)
        self.save_hyperparameters()  # stored in checkpoints: evaluation rebuilds the data from them
        if kind not in ("shapes", "photos"):
            raise ConfigError("data.kind", f"unknown kind {kind!r}; valid choices: shapes, photos")
        if train_size <= 0 or val_size <= 0:
            raise ConfigError("data.train_size", "train_size and val_size must be positive")
        self.kind, self.train_size, self.val_size, self.disk_cache = kind, train_size, val_size, disk_cache
        self.num_classes = num_classes_of(kind)

    @classmethod
    def net_defaults(cls, **init_args: Any) -> dict[str, Any]:
        kind = init_args.get("kind", "shapes")
        return {"img_size": init_args.get("resolution", 64), "num_classes": num_classes_of(kind), "in_channels": 3}

    def train_dataset(self) -> Dataset:
        dataset = make_dataset(self.kind, self.resolution, self.train_size, self.seed)
        if self.disk_cache and self.train_size * 3 * self.resolution**2 <= CACHE_LIMIT_BYTES:
            path = cache_file(self.kind, self.resolution, self.train_size, self.seed)
            if path.exists() or self._draws_every_item():
                return RenderedCache.build(dataset, path)
        return dataset

    def _draws_every_item(self) -> bool:
        """Whether the run ahead draws at least ``train_size`` training items (max_steps or whole epochs)."""
        trainer = self.trainer
        if trainer is None:
            return False
        if trainer.max_steps is None or trainer.max_steps < 0:
            return bool(trainer.max_epochs is None or trainer.max_epochs == -1 or trainer.max_epochs >= 1)
        return trainer.max_steps * self.global_batch_size >= self.train_size

    def val_dataset(self) -> Dataset:
        return make_dataset(self.kind, self.resolution, self.val_size, self.seed + 1)
