"""Random square crops of the real photographs inside the scikit-image and scikit-learn wheels (nothing downloaded).

One class per photograph, sorted by name. Item ``i`` has label ``i % num_classes``; its crop (size, position, flip)
comes from ``numpy.random.default_rng([seed, i])``.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from typing import Iterator

import numpy as np
from PIL import Image

from jitlab.core.data.shapes import RenderedDataset

# Colour photographs of ``skimage.data``: class name -> (loader function, file inside the wheel). Left out: ``cat``
# (``chelsea`` again), ``colorwheel`` and ``logo`` (drawings), the grey images, and all that skimage downloads.
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


def _skimage_photos() -> Iterator[tuple[str, np.ndarray]]:
    import skimage.data

    data_dir = os.path.dirname(skimage.data.__file__)
    for name, (function, filename) in SKIMAGE_PHOTOS.items():
        loader = getattr(skimage.data, function, None)
        if loader is not None and os.path.isfile(os.path.join(data_dir, filename)):  # else loading could download
            image = loader()
            yield name, image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)


def _sklearn_photos() -> Iterator[tuple[str, np.ndarray]]:
    """``china`` and ``flower`` of ``sklearn.datasets.load_sample_images`` (files in the wheel)."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    for filename, image in zip(bunch.filenames, bunch.images):
        yield os.path.splitext(os.path.basename(filename))[0], image


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@lru_cache(maxsize=1)
def load_photos() -> list[tuple[str, np.ndarray]]:
    """All bundled colour photographs as (name, read-only uint8 (H, W, 3)), sorted by name."""
    sources = {"skimage": _skimage_photos, "sklearn": _sklearn_photos}
    loaders = [load for module, load in sources.items() if _installed(module)]
    if not loaders:
        raise RuntimeError("the 'photos' data set needs the photographs shipped with scikit-image or scikit-learn; "
                           "install one of them: pip install scikit-image scikit-learn")
    rgbs = ((name, _as_rgb(np.asarray(image))) for load in loaders for name, image in load())
    photos = {name: rgb for name, rgb in rgbs if rgb is not None}
    if not photos:
        raise RuntimeError("no photograph could be loaded from the installed scikit-image / scikit-learn")
    return sorted(photos.items())


@lru_cache(maxsize=1)
def _pil_photos() -> tuple[Image.Image, ...]:
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


class PhotoCropsDataset(RenderedDataset):
    """``length`` random crops of the bundled photographs; one class per photograph."""

    render = staticmethod(render_crop)

    def __init__(self, resolution: int, length: int, seed: int = 0):
        super().__init__(resolution, length, seed)
        self.class_names: list[str] = [name for name, _ in load_photos()]
        self.num_classes: int = len(self.class_names)
