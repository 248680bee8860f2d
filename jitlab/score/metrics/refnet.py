"""`jitlab train-ref`: the reference classifier ("refnet") of an embedded data set, trained and cached.

InceptionV3 knows ImageNet, not our rendered shapes: the pooled last convolution of a small CNN trained on the
embedded classes is a feature space that sees what the data set is about (its distances are FD-ref, never FID).
The grids' classifiers ship with their digests (``jitlab.score.metrics.shipped``) and are never retrained; any
other config is trained once (a minute or two on CPU) and cached at ``<cache_dir>/<kind>-<res>-<hash>.pt``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jitlab.atomic import atomic_path
from jitlab.core.data.base import to_model_range
from jitlab.errors import ConfigError
from jitlab.score.metrics import shipped

VERSION = 1  # bump when the architecture or the training changes: it is part of the cache key


@dataclass(frozen=True)
class RefNetConfig:
    """Everything the trained weights depend on."""

    kind: str = "shapes"
    resolution: int = 32
    train_size: int = 8000
    val_size: int = 1000
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    width: int = 128  # channels of the last stage: the feature dimension
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jitlab" / "refnet"


def cache_path(config: RefNetConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"{config.kind}-{config.resolution}-{config.key()}.pt"


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class RefNet(nn.Module):
    """A stem at full resolution, stride-2 stages down to about 4x4, a global average pool, a linear head.

    Channels grow as the maps shrink (``width * 4 / side``, at least 8): every resolution costs about the same.
    """

    def __init__(self, num_classes: int, resolution: int, width: int = 128):
        super().__init__()
        stages = max(1, int(math.log2(resolution)) - 2)  # 32 -> 3 (32, 16, 8, 4), 64 -> 4
        sides = [resolution // 2**i for i in range(stages + 1)]
        widths = [max(8, width * 4 // side) for side in sides[:-1]] + [width]
        layers = [conv_bn(3, widths[0])]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [conv_bn(c_in, c_out, stride=2), conv_bn(c_out, c_out)]
        self.body = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """x in [-1, 1] (N, 3, R, R) -> (N, F)."""
        return self.body(x).mean(dim=(2, 3))  # (N, F)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (N, K)


def _tensors(kind: str, resolution: int, length: int, seed: int) -> tuple[Tensor, Tensor]:
    from jitlab.core.data.embedded import make_dataset

    dataset = make_dataset(kind, resolution, length, seed)
    items = [dataset[i] for i in range(length)]
    images = torch.stack([image for image, _ in items])  # (L, 3, R, R) uint8
    labels = torch.tensor([label for _, label in items])  # (L,)
    return images, labels


@torch.no_grad()
def accuracy(net: RefNet, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = net(to_model_range(images[i:i + batch_size]))  # (B, K)
        correct += int((logits.argmax(1) == labels[i:i + batch_size]).sum())
    return correct / len(images)


def train_refnet(config: RefNetConfig, log: Callable[[str], None] = print,
                 threads: int | None = 1) -> tuple[RefNet, dict]:
    """Train on items of seed ``config.seed``; report accuracy on held-out items of seed ``seed + 1``.

    ``threads``: torch's intra-op threads while training (None: leave as is). One, because such small
    convolutions gain little from more, and OpenMP threads stall badly when the cores are shared
    (measured on 2 busy cores: 1 thread 70 s, 2 threads 270 s for the default shapes-32).
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(config, log)
    finally:
        torch.set_num_threads(previous)


def _train(config: RefNetConfig, log: Callable[[str], None]) -> tuple[RefNet, dict]:
    from jitlab.core.data.embedded import num_classes_of

    if config.kind not in ("shapes", "photos"):
        raise ConfigError("kind", f"unknown kind {config.kind!r}; valid choices: shapes, photos")
    start = time.perf_counter()
    train_x, train_y = _tensors(config.kind, config.resolution, config.train_size, config.seed)
    val_x, val_y = _tensors(config.kind, config.resolution, config.val_size, config.seed + 1)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = RefNet(num_classes_of(config.kind), config.resolution, config.width)
    steps_per_epoch = config.train_size // config.batch_size
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.epochs * steps_per_epoch)
    for epoch in range(config.epochs):
        net.train()
        order = torch.randperm(config.train_size, generator=generator)  # (L,)
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]  # (B,)
            x = to_model_range(train_x[batch])  # (B, 3, R, R)
            if torch.rand((), generator=generator) < 0.5:
                x = x.flip(-1)  # the classes are mirror symmetric as sets: flips are free data
            loss = F.cross_entropy(net(x), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        log(f"refnet {config.kind}-{config.resolution}: epoch {epoch + 1}/{config.epochs} loss {loss.item():.3f}")
    info = {
        "key": config.key(),
        "val_accuracy": accuracy(net, val_x, val_y),
        "train_accuracy": accuracy(net, train_x[:config.val_size], train_y[:config.val_size]),
        "train_seconds": time.perf_counter() - start,
        "chance": 1.0 / net.head.out_features,
        "threads": torch.get_num_threads(),
    }
    return net.eval(), info


def save_refnet(path: Path, net: RefNet, config: RefNetConfig, info: dict) -> None:
    """Atomic: a temporary file in the same folder, then a rename."""
    with atomic_path(path) as tmp:
        torch.save({"version": VERSION, "config": asdict(config), "info": info, "state_dict": net.state_dict()}, tmp)


def load_refnet(config: RefNetConfig, cache_dir: str | os.PathLike | None = None, train_if_missing: bool = True,
                log: Callable[[str], None] = print, threads: int | None = 1,
                weights_dir: str | os.PathLike | None = None) -> tuple[RefNet, dict]:
    """The shipped refnet of ``config`` (file and digest checked), else the cached one, else trained and cached if
    ``train_if_missing``. ``info``: ``key``, ``val_accuracy``, ``train_seconds``, ``path``, ``cached`` (False if
    trained now), ``shipped``, ``digest`` (of the weights: one retrained under the same key, e.g. on other cores,
    gets other weights and so other reference statistics).
    """
    from jitlab.core.data.embedded import num_classes_of

    entry = shipped.find(config.kind, config.resolution, config.key(), weights_dir)
    if entry is not None:
        net = RefNet(num_classes_of(config.kind), config.resolution, config.width)
        net.load_state_dict(shipped.load(entry, weights_dir))
        return net.eval(), {"key": entry.key, "val_accuracy": entry.val_accuracy, "train_seconds": entry.train_seconds,
                            "chance": 1.0 / net.head.out_features, "path": str(entry.path(weights_dir)),
                            "cached": True, "shipped": True, "digest": entry.digest}
    path = cache_path(config, cache_dir)
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net = RefNet(num_classes_of(config.kind), config.resolution, config.width)
        net.load_state_dict(blob["state_dict"])
        return net.eval(), {**blob["info"], "path": str(path), "cached": True, "shipped": False,
                            "digest": weights_digest(net)}
    if not train_if_missing:
        raise ConfigError("refnet", f"no shipped or cached refnet for {config.kind}-{config.resolution} (key "
                          f"{config.key()}; looked in {shipped.WEIGHTS_DIR} and at {path}); train one with "
                          f"`jitlab train-ref --kind {config.kind} --resolution {config.resolution}`")
    log(f"training refnet {config.kind}-{config.resolution} (not shipped; cache miss: {path})")
    net, info = train_refnet(config, log=log, threads=threads)
    save_refnet(path, net, config, info)
    return net, {**info, "path": str(path), "cached": False, "shipped": False, "digest": weights_digest(net)}


def weights_digest(net: nn.Module) -> str:
    """``shipped.weights_digest`` of the float32 state_dict."""
    return shipped.weights_digest(shipped.canonical(net.state_dict()))
