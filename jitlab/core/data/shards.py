"""Shards of pre-cropped images: the layout ``jitlab prepare-imagenet`` writes and the data set that streams it.

Layout of a shard directory (local, or a URL such as ``s3://bucket/imagenet-256``)::

    ROOT/jitlab_shards.json    resolution, class names in label order, image counts (written last: complete)
    ROOT/train/index.json      litdata's index of the chunks
    ROOT/train/chunk-P-K.bin   items {"image": uint8 (3, R, R), "label": int, "index": int}
    ROOT/val/...               the same for the validation split (if the source had one)

Why litdata rather than webdataset: it splits an epoch exactly across DDP ranks and workers, its loader's
``state_dict`` (saved by Lightning) resumes mid-epoch without repeating or skipping samples, and the same code reads
local disks, shared file systems and object storage (s3://, gs://, ...) with a local chunk cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # never ask PyPI from a training job (before the import)

from litdata import StreamingDataLoader, StreamingDataset  # noqa: E402

from jitlab import atomic  # noqa: E402
from jitlab.errors import ConfigError  # noqa: E402

META_NAME = "jitlab_shards.json"
FORMAT = "jitlab-imagenet-shards"
INDEX_NAME = "index.json"  # litdata's


def is_url(root: str) -> bool:
    return "://" in root


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if is_url(root) else os.path.join(root, *parts)


def _read_text(path: str) -> str:
    if is_url(path):
        import tempfile

        try:  # the client litdata itself downloads chunks with (s3://, gs://, r2://)
            from litdata.streaming.fs_provider import _get_fs_provider

            provider = _get_fs_provider(path)
        except Exception:  # noqa: BLE001 -- a scheme litdata has no client for: try fsspec
            provider = None
        if provider is not None:
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, META_NAME)
                provider.download_file(path, local)
                return Path(local).read_text()
        import fsspec  # a Lightning dependency; object stores need their driver (s3fs, gcsfs, ...)

        with fsspec.open(path, "r") as handle:
            return handle.read()
    return Path(path).read_text()


def is_shard_dir(root: str) -> bool:
    """True if ``root`` holds the meta file of ``prepare-imagenet`` (object storage: a URL always is)."""
    return is_url(root) or os.path.isfile(os.path.join(root, META_NAME))


def read_meta(root: str) -> dict[str, Any]:
    """The meta file of a shard directory; a ``ConfigError`` naming the path if it is missing or unfinished."""
    path = join(root, META_NAME)
    try:
        meta = json.loads(_read_text(path))
    except FileNotFoundError:
        raise ConfigError("data.root", f"{root}: no {META_NAME}; write the shards with `jitlab prepare-imagenet "
                                       f"--src DIR --out {root} --resolution N` (an interrupted run resumes)") from None
    except (OSError, ValueError) as error:
        raise ConfigError("data.root", f"{path}: cannot read the shard meta file ({error})") from None
    if meta.get("format") != FORMAT or not meta.get("classes"):
        raise ConfigError("data.root", f"{path} is not a meta file of jitlab prepare-imagenet")
    return meta


def write_meta(root: str, meta: dict[str, Any]) -> None:
    atomic.write_json(os.path.join(root, META_NAME), {"format": FORMAT, **meta})


def flip_bit(seed: int, epoch: int, index: int) -> bool:
    """A fair coin that is a pure function of (seed, epoch, index): splitmix64 of the three."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return bool(x & 1)


class ShardDataset(StreamingDataset):
    """One split of a shard directory: ``(uint8 (3, R, R), label)`` items, streamed by litdata.

    Training (``flip=True``) shuffles per epoch from ``seed``, drops the tail that does not split evenly over ranks
    and workers, and flips each item by a coin of (seed, epoch, item), so a resumed run sees exactly the images an
    uninterrupted one would. A split the source did not have falls back to the training split.
    """

    def __init__(self, root: str, split: str, flip: bool = False, seed: int = 0, cache_dir: str | None = None):
        meta = read_meta(root)
        splits = meta.get("splits", {})
        split = split if split in splits else "train"
        self.root, self.split, self.flip = root, split, flip
        self.num_images = int(splits.get(split, {}).get("images", 0))  # over all ranks
        self.resolution = int(meta["resolution"])
        super().__init__(join(root, split), cache_dir=cache_dir, shuffle=flip, drop_last=True if flip else None,
                         seed=seed)

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        image = item["image"]  # uint8 (3, R, R)
        if self.flip and flip_bit(self.seed, self.current_epoch, int(item["index"])):
            image = image.flip(2)
        return image.contiguous(), int(item["label"])


class ShardLoader(StreamingDataLoader):
    """litdata's ``StreamingDataLoader``, fixed for a resumed epoch that Lightning does not exhaust.

    After ``load_state_dict`` litdata stays "resuming" until its iterator reaches ``StopIteration``, which Lightning
    never asks for, so the next epoch would start with a stale epoch counter (other shuffles and flips than an
    uninterrupted run). An epoch whose batches were all delivered ends that mode here.
    """

    def __iter__(self) -> Any:
        if self.restore and self.batch_size and self._num_samples_yielded_streaming >= len(self) * self.batch_size:
            self.restore = False
        yield from super().__iter__()


def shard_loader(dataset: Any, batch_size: int, num_workers: int, train: bool) -> Any:
    """A litdata ``StreamingDataLoader``: its state (saved in checkpoints by Lightning) resumes mid-epoch."""
    return ShardLoader(dataset, batch_size=batch_size, num_workers=num_workers, drop_last=train,
                       pin_memory=torch.cuda.is_available())
