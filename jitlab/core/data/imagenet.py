"""ImageNet (or any class-per-folder image tree) at any resolution, from the folder tree or from shards.

``folder`` reads ``ROOT/train/<class>/*.JPEG`` (and ``ROOT/val/...``) and crops every item from the full-size file
(at 512 and 1024 decoding is the bottleneck); ``shards`` reads the uint8 crops ``jitlab prepare-imagenet`` wrote
(``jitlab.core.data.shards``). Both give the same items: the ADM centre crop, a random flip for training, labels
numbered by sorted folder name, or 0..N-1 over a class subset (``jitlab.core.data.subsets``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from jitlab.core.data.base import ImageDataModule
from jitlab.core.data.subsets import Classes, select_classes
from jitlab.errors import ConfigError

# file endings taken for images (compared in lower case); anything else in a class folder is ignored
IMG_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
Source = Literal["auto", "folder", "shards"]
SPLITS = ("train", "val")


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The ADM centre crop (guided-diffusion, used by JiT): box-halve while the short side is >= 2 ``size``,
    resize bicubic to a short side of ``size``, cut the centre square."""
    while min(image.size) >= 2 * size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), resample=Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file completely (a truncated one raises, never padded with grey) and convert it to RGB."""
    with Image.open(path) as image:
        image.load()  # decode now: a truncated or corrupt file fails here, not later
        if image.mode == "RGB":
            return image.copy()
        if image.mode.startswith("I;16") or image.mode in ("I", "F"):
            array = np.asarray(image, dtype=np.float64)  # (H, W)
            peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
            image = Image.fromarray((array.clip(0, peak) * (255.0 / peak)).round().astype(np.uint8))
        return image.convert("RGB")


def crop_file(path: str | os.PathLike, size: int) -> torch.Tensor:
    """The uint8 (3, size, size) centre crop of one image file."""
    array = np.asarray(center_crop(open_rgb(path), size))  # (size, size, 3)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())  # (3, size, size)


def find_classes(split_dir: str | os.PathLike) -> list[str]:
    """Sorted names of the class folders of ``split_dir`` (hidden entries ignored)."""
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def check_split_classes(split_dir: str | os.PathLike, known: list[str]) -> None:
    """A ``ConfigError`` if ``split_dir`` has class folders not in ``known`` (a class train/ does not have)."""
    unknown = sorted(set(find_classes(split_dir)) - set(known))
    if unknown:
        raise ConfigError("data.root", f"{split_dir} has class folders that train/ does not have: {unknown[:5]}")


def scan_split(split_dir: str | os.PathLike, classes: list[str]) -> tuple[list[str], np.ndarray]:
    """Relative paths ``<class>/<file>`` of the images of ``split_dir`` (sorted) and their labels (positions in
    ``classes``); folders not in ``classes`` are left out (a class subset)."""
    index = {name: i for i, name in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for name in (name for name in find_classes(split_dir) if name in index):
        with os.scandir(os.path.join(split_dir, name)) as entries:
            files = sorted(e.name for e in entries
                           if e.name.lower().endswith(IMG_EXTENSIONS) and not e.name.startswith(".") and e.is_file())
        paths += [f"{name}/{f}" for f in files]
        labels += [index[name]] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def folder_classes(root: str | os.PathLike) -> list[str]:
    """The classes of a folder tree ``root/train/<class>/``; a ``ConfigError`` naming the path if absent."""
    train = Path(root) / "train"
    if not train.is_dir():
        raise ConfigError("data.root", f"{root}: no train/ folder (expected {train}/<class>/<image files>) "
                                       "and no shards of jitlab prepare-imagenet")
    classes = find_classes(train)
    if not classes:
        raise ConfigError("data.root", f"{train} has no class folders (expected {train}/<class>/<image files>)")
    return classes


class ImageFolderDataset(Dataset):
    """The images of ``split_dir`` (``ROOT/train`` or ``ROOT/val``), centre-cropped per item: ``(uint8 (3, R, R),
    label)``; ``classes`` (default: all folders) in label order, ``flip`` a random horizontal flip (training).

    The sorted file list lives in numpy arrays (shared by data-loader workers, no refcounts). An undecodable file
    is replaced by the next readable one with one warning per file and process: it costs a warning, not the run.
    """

    def __init__(self, split_dir: str | os.PathLike, resolution: int, classes: list[str] | None = None,
                 flip: bool = False):
        self.split_dir, self.resolution, self.flip = str(split_dir), resolution, flip
        self.classes = list(classes) if classes is not None else find_classes(split_dir)
        paths, self.labels = scan_split(split_dir, self.classes)
        self.paths = np.asarray(paths, dtype=np.bytes_) if paths else np.zeros(0, dtype="S1")
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> str:
        return os.path.join(self.split_dir, self.paths[index].decode())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for offset in range(min(len(self), 100)):
            i = (index + offset) % len(self)
            try:
                image = crop_file(self.path(i), self.resolution)  # (3, R, R) uint8
            except Exception as error:  # noqa: BLE001 -- any undecodable file: skip it, never stop the run
                if i not in self._warned:
                    self._warned.add(i)
                    print(f"jitlab: warning: skipped unreadable image {self.path(i)} ({type(error).__name__}: "
                          f"{error}); item {index} uses the next readable image", file=sys.stderr)
                continue
            if self.flip and torch.rand(()) < 0.5:
                image = image.flip(2)
            return image.contiguous(), int(self.labels[index])
        raise RuntimeError(f"100 unreadable images in a row from {self.path(index)}; is {self.split_dir} intact?")


def resolve_source(root: str, source: Source) -> Literal["folder", "shards"]:
    """``folder`` or ``shards`` for ``root``: ``auto`` recognises a shard directory by its meta file."""
    from jitlab.core.data.shards import is_shard_dir

    if source not in ("auto", "folder", "shards"):
        raise ConfigError("data.source", f"unknown source {source!r}; valid choices: auto, folder, shards")
    if not root:
        raise ConfigError("data.root", "is required: an ImageNet folder tree (train/<class>/...) or a shard directory")
    if source == "auto":
        return "shards" if is_shard_dir(root) else "folder"
    return source


def dataset_classes(root: str, source: Source = "auto", classes: Classes = None) -> list[str]:
    """The class names of ``root`` that ``classes`` selects, in label order (cheap: folder names or the shard meta
    file). Shards hold the classes they were written with: a selection must be all of them."""
    if resolve_source(root, source) == "shards":
        from jitlab.core.data.shards import read_meta

        held = [str(name) for name in read_meta(root)["classes"]]
        if select_classes(held, classes, f"the shards in {root}") != held:
            raise ConfigError("data.classes", f"selects a part of the {len(held)} classes of the shards in {root}; "
                                              "write shards of the subset with `jitlab prepare-imagenet --classes "
                                              "...` or leave data.classes unset (the shards' own classes)")
        return held
    return select_classes(folder_classes(root), classes, f"{Path(root) / 'train'}")


class ImageNetDataModule(ImageDataModule):
    """ImageNet (any class-per-folder tree) at any resolution, read from the folder tree or from shards.

    Args:
        root: the data: a folder tree ``ROOT/train/<class>/*.JPEG`` (``ROOT/val/<class>/...`` for
            validation; without it, validation uses the training images in file order), or a
            directory (or object-storage URL, e.g. ``s3://bucket/imagenet-256``) written by
            ``jitlab prepare-imagenet``.
        resolution: image side in pixels (64, 256, 512, 1024 in the paper; any positive size).
            Shards hold one resolution; it must match.
        global_batch_size: images per optimizer step over all processes and accumulation steps.
        num_workers: data-loader workers per process.
        seed: the seed of the training order (an epoch's order is a function of seed and epoch).
        source: ``auto`` (shards if ``root`` holds the meta file of ``prepare-imagenet``, else the
            folder tree), ``folder`` or ``shards``.
        cache_dir: where litdata caches chunks of shards in object storage (default: its own).
        classes: a class subset: ``N`` (the first N classes in sorted order), a list file of WordNet
            ids (one a line, ``#`` comments) or a shipped list (``imagenette``, ``imagenet100``), or
            null (all; for shards: the classes they were written with). Labels are 0..N-1 in sorted
            order; the network's ``num_classes`` follows N; checkpoints record the list.
    """

    def __init__(
        self,
        root: str = "",
        resolution: int = 256,
        global_batch_size: int = 1024,
        num_workers: int = 8,
        seed: int = 0,
        source: Source = "auto",
        cache_dir: str | None = None,
        classes: Classes = None,
    ):
        super().__init__(resolution, global_batch_size, num_workers, seed)
        self.save_hyperparameters()  # stored in checkpoints: evaluation rebuilds the data from them
        self.root = str(root)
        self.source = resolve_source(self.root, source)
        self.cache_dir = cache_dir
        self.classes = dataset_classes(self.root, self.source, classes)
        self.num_classes = len(self.classes)
        if self.source == "shards":
            from jitlab.core.data.shards import read_meta

            written = int(read_meta(self.root)["resolution"])
            if written != resolution:
                raise ConfigError("data.resolution", f"is {resolution} but the shards in {self.root} hold "
                                                     f"{written} x {written} crops; use --data.resolution {written} "
                                                     f"or prepare shards at {resolution}")

    @classmethod
    def net_defaults(cls, **init_args: Any) -> dict[str, Any]:
        root, source = str(init_args.get("root") or ""), init_args.get("source", "auto")
        classes = dataset_classes(root, source, init_args.get("classes"))
        return {"img_size": init_args.get("resolution", 256), "num_classes": len(classes), "in_channels": 3}

    def state_dict(self) -> dict[str, Any]:
        """In every checkpoint: the class names in label order (for ``checkpoint_classes``: sampling and
        evaluation name the labels by it; a resumed run checks that its data give the same classes)."""
        return {"classes": list(self.classes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        recorded = [str(name) for name in state.get("classes") or []]
        if recorded and recorded != self.classes:
            first = next((i for i, (a, b) in enumerate(zip(recorded, self.classes)) if a != b),
                         min(len(recorded), len(self.classes)))
            raise ConfigError("data.classes", f"the checkpoint's {len(recorded)} classes are not the "
                                              f"{len(self.classes)} of {self.root} (they differ from label {first} "
                                              "on); resume with the run's data.root and data.classes")

    def _folder(self, split: str) -> ImageFolderDataset:
        split_dir = Path(self.root) / split
        if split == "val" and not split_dir.is_dir():
            split_dir = Path(self.root) / "train"
        if split_dir.name == "val":
            check_split_classes(split_dir, folder_classes(self.root))
        dataset = ImageFolderDataset(split_dir, self.resolution, self.classes, flip=split == "train")
        if len(dataset) == 0:
            raise ConfigError("data.root", f"{split_dir} has no image files ({', '.join(IMG_EXTENSIONS)}) "
                                           "in its class folders")
        return dataset

    def _dataset(self, split: str) -> Dataset:
        if self.source == "folder":
            return self._folder(split)
        from jitlab.core.data.shards import ShardDataset

        return ShardDataset(self.root, split, flip=split == "train", seed=self.seed, cache_dir=self.cache_dir)

    def train_dataset(self) -> Dataset:
        return self._dataset("train")

    def val_dataset(self) -> Dataset:
        return self._dataset("val")

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        """The base class's loader (folder) or litdata's (shards), after checking the split is big enough."""
        images = getattr(dataset, "num_images", None) or len(dataset)  # type: ignore[arg-type]  (shards: all ranks)
        world = self.trainer.world_size if self.trainer is not None else 1
        if train and images < self.global_batch_size:
            raise ConfigError("data.global_batch_size", f"{self.global_batch_size} is more than the {images} "
                                                        f"training images of {self.root}")
        if not train and images < world:
            raise ConfigError("data.root", f"{self.root}: fewer validation images ({images}) than processes ({world})")
        if self.source == "folder":
            return super()._loader(dataset, train)
        from jitlab.core.data.shards import shard_loader

        return shard_loader(dataset, self.micro_batch_size(), self.num_workers, train=train)
