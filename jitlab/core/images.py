"""Image files: a grid of uint8 images as PNG, the order that puts one class per row, samples as .npz (atomically)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from jitlab.atomic import atomic_path


def image_grid(images: Tensor, nrow: int) -> Tensor:
    """uint8 (N, C, H, W) -> one uint8 grid (C, H', W') with a 2-pixel border."""
    from torchvision.utils import make_grid

    return make_grid(images, nrow=nrow, padding=2, pad_value=255)


def save_png(grid: Tensor, path: Path) -> None:
    """Write a uint8 (C, H, W) grid as PNG (atomically: write, then rename)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).cpu().numpy()).save(tmp, format="PNG")


def class_rows(labels: Tensor | None, n: int) -> Tensor:
    """The order (stable sort by label) that makes each grid row show one class; identity without labels."""
    return torch.arange(n) if labels is None else torch.sort(labels, stable=True).indices


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray | None, meta: dict) -> None:
    """uint8 images (N, H, W, C), their labels and indices and ``meta`` (JSON) as one .npz, atomically."""
    arrays = {"images": images, "indices": np.arange(len(images))}
    if labels is not None:
        arrays["labels"] = labels
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez keeps a name ending in .npz
        np.savez(tmp, **arrays, meta=np.array(json.dumps(meta)))
