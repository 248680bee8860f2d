"""The embedded data sets: no download, any resolution, class conditional, deterministic per index.

``shapes``: ten procedurally rendered classes (``jitlab.data.shapes``).
``photos``: crops of the photographs that ship inside scikit-image and scikit-learn, one class per
photograph (``jitlab.data.photos``).
Each item is a pure function of (resolution, seed, index), so every process of a DDP run and every
worker sees the same data for the same index.
"""

from __future__ import annotations

from typing import Any, Literal

from torch.utils.data import Dataset

from jitlab.data.base import ImageDataModule
from jitlab.errors import ConfigError

EmbeddedKind = Literal["shapes", "photos"]


def make_dataset(kind: EmbeddedKind, resolution: int, length: int, seed: int) -> Dataset:
    if kind == "shapes":
        from jitlab.data.shapes import ShapesDataset

        return ShapesDataset(resolution, length, seed)
    from jitlab.data.photos import PhotoCropsDataset

    return PhotoCropsDataset(resolution, length, seed)


def num_classes_of(kind: EmbeddedKind) -> int:
    if kind == "shapes":
        from jitlab.data.shapes import SHAPE_CLASSES

        return len(SHAPE_CLASSES)
    from jitlab.data.photos import load_photos

    return len(load_photos())


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
    ):
        super().__init__(resolution, global_batch_size, num_workers, seed)
        self.save_hyperparameters()  # stored in checkpoints: evaluation rebuilds the data from them
        if kind not in ("shapes", "photos"):
            raise ConfigError("data.kind", f"unknown kind {kind!r}; valid choices: shapes, photos")
        if train_size <= 0 or val_size <= 0:
            raise ConfigError("data.train_size", "train_size and val_size must be positive")
        self.kind = kind
        self.train_size = train_size
        self.val_size = val_size
        self.num_classes = num_classes_of(kind)

    @classmethod
    def net_defaults(cls, **init_args: Any) -> dict[str, Any]:
        kind = init_args.get("kind", "shapes")
        return {"img_size": init_args.get("resolution", 64), "num_classes": num_classes_of(kind), "in_channels": 3}

    def train_dataset(self) -> Dataset:
        return make_dataset(self.kind, self.resolution, self.train_size, self.seed)

    def val_dataset(self) -> Dataset:
        return make_dataset(self.kind, self.resolution, self.val_size, self.seed + 1)
