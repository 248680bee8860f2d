"""Random square crops of the real photographs that ship inside scikit-image and scikit-learn.

One class per photograph, sorted by name. Item ``i`` has label ``i % num_classes``; its crop
(size, position, horizontal flip) comes from ``numpy.random.default_rng([seed, i])``, so an item
is a pure function of ``(resolution, seed, index)``. Nothing is downloaded: only photographs
inside the installed wheels are used (scikit-image fetches its other data sets with pooch).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from jitlab.core.data.shapes import check_index, check_seed, check_size

# Colour photographs of ``skimage.data``: class name -> (loader function, file inside the wheel).
# Left out: ``cat`` (the same photograph as ``chelsea``), ``colorwheel`` and ``logo`` (drawings),
# the grey images, and everything that skimage fetches from the network.
SKIMAGE_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut", "astronaut.png"),
    "chelsea": ("chelsea", "chelsea.png"),
    "coffee": ("coffee", "coffee.png"),
    "hubble_deep_field": ("hubble_deep_field", "hubble_deep_field.jpg"),
    "immunohistochemistry": ("immunohistochemistry", "ihc.png"),
    "motorcycle": ("stereo_motorcycle", "motorcycle_left.png"),
    "retina": ("retina", "retina.jpg"),
    "rocket": ("rocket", "rocket.jpg"),
}
CROP_FRACTION = (0.35, 0.9)  # crop side, as a fraction of the photograph's short side


def _as_rgb(image: np.ndarray) -> np.ndarray | None:
    """A uint8 (H, W, 3) copy of a colour image, or None for grey images."""
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        return None
    rgb = np.ascontiguousarray(image[:, :, :3])  # (H, W, 3)
    rgb.flags.writeable = False
    return rgb


def _skimage_photos() -> list[tuple[str, np.ndarray]]:
    """The colour photographs of ``skimage.data`` whose files are inside the installed wheel."""
    import skimage.data

    data_dir = os.path.dirname(skimage.data.__file__)
    photos = []
    for name, (function, filename) in SKIMAGE_PHOTOS.items():
        loader = getattr(skimage.data, function, None)
        if loader is None or not os.path.isfile(os.path.join(data_dir, filename)):
            continue  # not in this version's wheel: loading it could mean a download
        image = loader()
        image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
        rgb = _as_rgb(np.asarray(image))
        if rgb is not None:
            photos.append((name, rgb))
    return photos


def _sklearn_photos() -> list[tuple[str, np.ndarray]]:
    """``china`` and ``flower`` of ``sklearn.datasets.load_sample_images`` (files in the wheel)."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    photos = []
    for filename, image in zip(bunch.filenames, bunch.images):
        rgb = _as_rgb(np.asarray(image))
        if rgb is not None:
            photos.append((os.path.splitext(os.path.basename(filename))[0], rgb))
    return photos


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@lru_cache(maxsize=1)
def load_photos() -> list[tuple[str, np.ndarray]]:
    """All bundled colour photographs as (name, read-only uint8 (H, W, 3)), sorted by name."""
    loaders = {"skimage": _skimage_photos, "sklearn": _sklearn_photos}
    sources = [(module, load) for module, load in loaders.items() if _installed(module)]
    if not sources:
        raise RuntimeError(
            "the 'photos' data set needs the photographs shipped with scikit-image or scikit-learn; "
            "install one of them: pip install scikit-image scikit-learn"
        )
    photos = dict(p for _, load in sources for p in load())
    if not photos:
        raise RuntimeError("no photograph could be loaded from the installed scikit-image / scikit-learn")
    return sorted(photos.items())


@lru_cache(maxsize=1)
def _pil_photos() -> tuple[Image.Image, ...]:
    """The photographs as PIL images, in the order of ``load_photos``."""
    return tuple(Image.fromarray(np.array(image)) for _, image in load_photos())


def crop_box(rng: np.random.Generator, height: int, width: int) -> tuple[tuple[int, int, int, int], bool]:
    """A random square crop (left, top, right, bottom) of a photograph, and whether to flip it."""
    short = min(height, width)
    lo = max(1, round(CROP_FRACTION[0] * short))
    hi = max(lo, round(CROP_FRACTION[1] * short))
    side = int(rng.integers(lo, hi + 1))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    return (left, top, left + side, top + side), bool(rng.random() < 0.5)


def render_crop(resolution: int, seed: int, index: int) -> tuple[np.ndarray, int]:
    """Item ``index``: a crop of photograph ``index % num_classes`` as uint8 (3, R, R), and its label."""
    photos = _pil_photos()
    label = index % len(photos)
    photo = photos[label]
    box, flip = crop_box(np.random.default_rng([seed, index]), photo.height, photo.width)
    # reducing_gap: big downsizes first shrink by an integer factor (fast), then resample bicubic.
    crop = photo.resize((resolution, resolution), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    pixels = np.asarray(crop)  # (R, R, 3)
    if flip:
        pixels = pixels[:, ::-1]  # (R, R, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)), label  # (3, R, R)


class PhotoCropsDataset(Dataset):
    """``length`` random crops of the bundled photographs; one class per photograph.

    Items are ``(uint8 tensor (3, R, R), label)`` and depend only on (resolution, seed, index).
    """

    def __init__(self, resolution: int, length: int, seed: int = 0):
        self.resolution = check_size("resolution", resolution)
        self.length = check_size("length", length)
        self.seed = check_seed(seed)
        self.class_names: list[str] = [name for name, _ in load_photos()]
        self.num_classes: int = len(self.class_names)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i = check_index(index, self.length)
        image, label = render_crop(self.resolution, self.seed, i)  # (3, R, R)
        return torch.from_numpy(image), label
