"""The embedded data sets: rendered shapes and crops of the bundled photographs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from jitlab.core.data.photos import PhotoCropsDataset, load_photos
from jitlab.core.data.shapes import SHAPE_CLASSES, ShapesDataset

DATASETS = {"shapes": ShapesDataset, "photos": PhotoCropsDataset}


def stack(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Items ``indices`` as a uint8 batch (N, 3, R, R) and labels (N,)."""
    images, labels = zip(*(dataset[i] for i in indices))
    return torch.stack(images), torch.tensor(labels)


def spectrum_features(images: torch.Tensor) -> torch.Tensor:
    """Translation-invariant features: log magnitude of the 2-D FFT of the standardised luma."""
    grey = images.float().mean(1)  # (N, R, R)
    grey = (grey - grey.mean((1, 2), keepdim=True)) / (grey.std((1, 2), keepdim=True) + 1e-3)  # (N, R, R)
    return torch.log1p(torch.fft.rfft2(grey).abs()).flatten(1)  # (N, R * (R // 2 + 1))


def nearest_centroid_accuracy(train, test, num_classes: int) -> float:
    """Accuracy on ``test`` of a nearest-class-mean classifier fitted on ``train``; (x, y) pairs."""
    (x_train, y_train), (x_test, y_test) = train, test
    centroids = torch.stack([x_train[y_train == c].mean(0) for c in range(num_classes)])  # (C, D)
    predicted = torch.cdist(x_test, centroids).argmin(1)  # (N,)
    return (predicted == y_test).float().mean().item()


# -- shared behaviour ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DATASETS)
@pytest.mark.parametrize("resolution", [32, 64, 256])
def test_items_are_uint8_chw_with_labels_in_range(kind, resolution):
    dataset = DATASETS[kind](resolution, length=25, seed=0)
    assert len(dataset) == 25
    for i in range(0, 25, 4):
        image, label = dataset[i]
        assert image.dtype == torch.uint8
        assert image.shape == (3, resolution, resolution)
        assert image.is_contiguous()
        assert isinstance(label, int) and 0 <= label < dataset.num_classes
        assert label == i % dataset.num_classes


@pytest.mark.parametrize("kind", DATASETS)
def test_one_item_at_1024(kind):
    image, _ = DATASETS[kind](1024, length=3, seed=0)[2]
    assert image.shape == (3, 1024, 1024) and image.dtype == torch.uint8
    assert image.float().std() > 5


@pytest.mark.parametrize("kind", DATASETS)
def test_labels_are_balanced(kind):
    n = DATASETS[kind](32, length=1).num_classes
    dataset = DATASETS[kind](32, length=5 * n, seed=0)
    _, labels = stack(dataset, range(len(dataset)))
    assert torch.equal(torch.bincount(labels, minlength=n), torch.full((n,), 5))


@pytest.mark.parametrize("kind", DATASETS)
def test_item_depends_only_on_seed_and_index(kind):
    a = DATASETS[kind](48, length=30, seed=3)
    b = DATASETS[kind](48, length=30, seed=3)
    order = [29, 4, 17, 0, 4, 11]
    forward = {i: a[i][0] for i in sorted(set(order))}
    for i in order:  # another instance, another order, repeated indices
        assert torch.equal(b[i][0], forward[i])
    assert torch.equal(a[-1][0], a[29][0])


@pytest.mark.parametrize("kind", DATASETS)
def test_seed_changes_the_images_not_the_labels(kind):
    a = DATASETS[kind](32, length=12, seed=0)
    b = DATASETS[kind](32, length=12, seed=1)
    for i in range(12):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert ya == yb
        assert not torch.equal(xa, xb)


@pytest.mark.parametrize("kind", DATASETS)
def test_images_are_not_flat(kind):
    dataset = DATASETS[kind](32, length=60, seed=0)
    images, _ = stack(dataset, range(60))
    per_image_std = images.float().flatten(1).std(1)  # (N,)
    assert per_image_std.min() > 5.0
    assert not torch.equal(images[0], images[dataset.num_classes])  # same class, other index


@pytest.mark.parametrize("kind", DATASETS)
def test_worker_processes_produce_the_same_items(kind):
    dataset = DATASETS[kind](32, length=16, seed=5)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=False)
    images = torch.cat([x for x, _ in loader])  # (16, 3, 32, 32)
    expected, _ = stack(dataset, range(16))
    assert torch.equal(images, expected)


@pytest.mark.parametrize("kind", DATASETS)
@pytest.mark.parametrize("bad", [0, -32, 1.5, "64", True, None])
def test_invalid_resolution_is_a_value_error_naming_it(kind, bad):
    with pytest.raises(ValueError, match="resolution"):
        DATASETS[kind](bad, length=10)


@pytest.mark.parametrize("kind", DATASETS)
def test_invalid_length_seed_and_index(kind):
    with pytest.raises(ValueError, match="length"):
        DATASETS[kind](32, length=0)
    with pytest.raises(ValueError, match="seed"):
        DATASETS[kind](32, length=4, seed=-1)
    dataset = DATASETS[kind](32, length=4)
    with pytest.raises(IndexError):
        dataset[4]
    with pytest.raises(IndexError):
        dataset[-5]


# -- shapes ---------------------------------------------------------------------------------------------


def test_shape_classes():
    assert len(SHAPE_CLASSES) == 10 == ShapesDataset.num_classes
    assert len(set(SHAPE_CLASSES)) == 10


def test_shape_classes_are_separable():
    """A nearest-centroid classifier on FFT magnitudes (chance: 10%) must tell the classes apart."""
    train = stack(ShapesDataset(32, length=300, seed=0), range(300))
    test = stack(ShapesDataset(32, length=100, seed=1), range(100))
    accuracy = nearest_centroid_accuracy(
        (spectrum_features(train[0]), train[1]), (spectrum_features(test[0]), test[1]), num_classes=10
    )
    assert accuracy > 0.4


def test_shape_class_means_differ():
    images, labels = stack(ShapesDataset(32, length=200, seed=0), range(200))
    features = spectrum_features(images)  # (N, D)
    means = torch.stack([features[labels == c].mean(0) for c in range(10)])  # (10, D)
    distances = torch.cdist(means, means)  # (10, 10)
    off_diagonal = distances[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.min() > 0.1 * off_diagonal.mean()


def test_shapes_look_the_same_at_every_resolution():
    """Rendering at 256 and averaging 8 x 8 blocks gives nearly the 32-pixel rendering."""
    large, _ = stack(ShapesDataset(256, length=20, seed=2), range(20))
    small, _ = stack(ShapesDataset(32, length=20, seed=2), range(20))
    pooled = F.avg_pool2d(large.float(), 8)  # (N, 3, 32, 32)
    error = (pooled - small.float()).abs().mean((1, 2, 3))  # (N,) in grey levels
    assert error.max() < 8.0
    other = ShapesDataset(32, length=21, seed=2)[20][0].float()  # an unrelated item, for scale
    assert (other - small[0].float()).abs().mean() > 3 * error[0]


def test_tiny_and_odd_resolutions_render():
    for resolution in (1, 8, 33):
        image, _ = ShapesDataset(resolution, length=10)[7]
        assert image.shape == (3, resolution, resolution)


# -- photos ---------------------------------------------------------------------------------------------


def test_bundled_photos():
    photos = load_photos()
    names = [name for name, _ in photos]
    assert len(photos) >= 5
    assert names == sorted(names) and len(set(names)) == len(names)
    for _, image in photos:
        assert image.dtype.name == "uint8" and image.ndim == 3 and image.shape[2] == 3
    assert load_photos() is photos  # cached
    dataset = PhotoCropsDataset(32, length=10)
    assert dataset.class_names == names and dataset.num_classes == len(names)


def test_photo_crops_of_one_class_differ():
    dataset = PhotoCropsDataset(64, length=100, seed=0)
    n = dataset.num_classes
    for label in range(min(n, 4)):
        crops = [dataset[label + k * n][0].float() for k in range(3)]
        assert all(dataset[label + k * n][1] == label for k in range(3))
        for a, b in [(0, 1), (0, 2), (1, 2)]:
            assert (crops[a] - crops[b]).abs().mean() > 2.0


def test_photo_classes_are_separable_by_colour():
    """Each class is one photograph: mean colour and spectrum pick it out well above chance."""
    train_set, test_set = PhotoCropsDataset(32, length=200, seed=0), PhotoCropsDataset(32, length=100, seed=1)
    n = train_set.num_classes

    def features(images):
        colour = images.float().mean((2, 3)) / 32.0  # (N, 3)
        return torch.cat([colour, spectrum_features(images)], dim=1)

    (x_train, y_train), (x_test, y_test) = stack(train_set, range(200)), stack(test_set, range(100))
    accuracy = nearest_centroid_accuracy((features(x_train), y_train), (features(x_test), y_test), n)
    assert accuracy > 2.5 / n


def test_missing_packages_give_a_clear_error(monkeypatch):
    import jitlab.core.data.photos as photos_module

    monkeypatch.setattr(photos_module, "_installed", lambda module: False)
    photos_module.load_photos.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="scikit-image"):
            photos_module.load_photos()
    finally:
        monkeypatch.undo()
        photos_module.load_photos.cache_clear()
    assert len(photos_module.load_photos()) >= 5
