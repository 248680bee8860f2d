"""A small ImageNet-like folder tree for tests, demos (`jitlab synth-imagenet`) and the loading benchmark.

Every image is a crop of a bundled photograph (``jitlab.core.data.photos``) at a random size and aspect ratio,
saved as JPEG (mostly) or PNG, so decoding costs what real photographs cost. Optionally the tree also holds the
awkward files of real collections (``AWKWARD``): grey, CMYK, palette, RGBA, 16-bit, tiny, elongated, unreadable.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from jitlab.core.data.photos import load_photos

# name -> (is it readable?) for the awkward files of ``with_bad_files``
AWKWARD = {
    "grey.JPEG": True, "cmyk.JPEG": True, "palette.png": True, "rgba.png": True, "grey16.png": True,
    "tiny.JPEG": True, "thin.JPEG": True, "png_named.JPEG": True,
    "truncated.JPEG": False, "empty.JPEG": False, "text.JPEG": False,
}


def photo_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A ``width`` x ``height`` RGB image: a random crop of a bundled photograph with that aspect ratio."""
    photos = load_photos()
    photo = photos[int(rng.integers(len(photos)))][1]  # (H, W, 3) uint8
    ph, pw = photo.shape[:2]
    aspect = width / height
    crop_w = min(pw, int(ph * aspect))
    crop_h = min(ph, int(crop_w / aspect))
    scale = rng.uniform(0.5, 1.0)
    crop_w, crop_h = max(2, int(crop_w * scale)), max(2, int(crop_h * scale))
    left, top = int(rng.integers(0, pw - crop_w + 1)), int(rng.integers(0, ph - crop_h + 1))
    image = Image.fromarray(np.ascontiguousarray(photo[top:top + crop_h, left:left + crop_w]))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image.resize((width, height), Image.Resampling.BICUBIC)


def random_size(rng: np.random.Generator, short: tuple[int, int]) -> tuple[int, int]:
    """(width, height) with the short side in ``short`` and aspect ratio 4:3 or 3:4-ish, like ImageNet."""
    side = int(rng.integers(short[0], short[1] + 1))
    long = int(side * rng.uniform(1.0, 1.5))
    return (long, side) if rng.random() < 0.75 else (side, long)


def write_awkward(folder: Path, rng: np.random.Generator) -> None:
    """The awkward files of ``AWKWARD`` in ``folder``."""
    base = photo_image(rng, 300, 200)
    jpeg = io.BytesIO()
    base.save(jpeg, "JPEG", quality=90)
    files = {
        "grey.JPEG": lambda p: base.convert("L").save(p, "JPEG"),
        "cmyk.JPEG": lambda p: base.convert("CMYK").save(p, "JPEG"),
        "palette.png": lambda p: base.convert("P", palette=Image.Palette.ADAPTIVE).save(p, "PNG"),
        "rgba.png": lambda p: base.convert("RGBA").save(p, "PNG"),
        "grey16.png": lambda p: Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257)).save(p),
        "tiny.JPEG": lambda p: base.resize((5, 3)).save(p, "JPEG"),
        "thin.JPEG": lambda p: photo_image(rng, 700, 9).save(p, "JPEG"),
        "png_named.JPEG": lambda p: base.save(p, "PNG"),
        "truncated.JPEG": lambda p: p.write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2]),
        "empty.JPEG": lambda p: p.write_bytes(b""),
        "text.JPEG": lambda p: p.write_text("not an image\n"),
    }
    for name, write in files.items():
        write(folder / name)


def write_tree(root: str | os.PathLike, classes: int = 4, train_per_class: int = 8, val_per_class: int = 2,
               short: tuple[int, int] = (48, 160), seed: int = 0, bad_files: bool = True,
               png_fraction: float = 0.1, quality: int = 90) -> dict[str, list[Path]]:
    """Write ``root/{train,val}/nXXXXXXXX/*.JPEG`` and return the unreadable files per split; ``short`` is the range
    of the short sides. With ``bad_files`` the first class of each split also receives the files of ``AWKWARD``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    unreadable: dict[str, list[Path]] = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        unreadable[split] = []
        if per_class <= 0:
            continue
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = photo_image(rng, *random_size(rng, short))
                if rng.random() < png_fraction:
                    image.save(folder / f"{split}_{c}_{i:05d}.png")
                else:
                    image.save(folder / f"{split}_{c}_{i:05d}.JPEG", "JPEG", quality=quality)
            if bad_files and c == 0:
                write_awkward(folder, rng)
                unreadable[split] += [folder / name for name, readable in AWKWARD.items() if not readable]
    return unreadable
