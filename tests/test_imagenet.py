"""ImageNet data: the ADM crop, the folder source, prepare-imagenet shards, bad files, the CLI.

Everything runs on small generated folder trees (crops of the photographs bundled with
scikit-image, as JPEG and PNG of mixed sizes, plus grey / CMYK / palette / RGBA / 16-bit / tiny /
thin images and unreadable files). The distributed and resume tests are in
``test_imagenet_distributed.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jitlab.core.data.imagenet import ImageFolderDataset, ImageNetDataModule, center_crop, crop_file, open_rgb
from jitlab.core.data.synth_imagenet import AWKWARD, write_tree
from jitlab.errors import ConfigError
from tests.conftest import run_cli

CLASSES = 3


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """3 classes x (6 train, 2 val) photographs, plus the awkward files in the first class of each split."""
    root = tmp_path_factory.mktemp("imagenet")
    write_tree(root, classes=CLASSES, train_per_class=6, val_per_class=2, short=(40, 300), seed=1)
    return root


@pytest.fixture(scope="module")
def shards64(tree, tmp_path_factory) -> Path:
    from jitlab.commands.prepare_imagenet import main

    out = tmp_path_factory.mktemp("shards") / "s64"
    assert main(["--src", str(tree), "--out", str(out), "--resolution", "64", "--workers", "0", "--no_progress",
                 "--part_size", "5"]) == 0
    return out


def readable_files(root: Path, split: str) -> list[Path]:
    files = sorted(p for p in (root / split).rglob("*") if p.is_file())
    return [p for p in files if AWKWARD.get(p.name, True)]


# -- the crop ---------------------------------------------------------------------------------------


def three_bands(width: int, height: int, axis: int, cut: tuple[int, int]) -> Image.Image:
    """Red before ``cut[0]``, green in [cut[0], cut[1]), blue after, along ``axis`` (0: x, 1: y)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    coord = np.arange(width if axis == 0 else height)
    band = np.select([coord < cut[0], coord < cut[1]], [0, 1], 2)
    colours = np.eye(3, dtype=np.uint8)[band] * 255  # (L, 3)
    pixels[:] = colours[None, :, :] if axis == 0 else colours[:, None, :]
    return Image.fromarray(pixels)


@pytest.mark.parametrize("width,height,axis", [(300, 200, 0), (200, 300, 1)])
def test_crop_geometry_hand_checked(width, height, axis):
    """300 x 200 to 64: halve once (box) to 150 x 100, bicubic to 96 x 64, crop x in [16, 80).

    In the original's coordinates the crop is x in [16 / 0.64 * 2, 80 / 0.64 * 2) = [50, 250). An
    image that is red left of 50, green on [50, 250) and blue from 250 on gives a green crop
    whose first column has a trace of red and whose last one the same trace of blue (the bicubic
    kernel reaches just across the cut); with the bands 3 pixels wider there is no trace at all,
    3 pixels narrower and the colours fill a whole column. The portrait case is the same on y.
    """
    def lines(cut: tuple[int, int]) -> np.ndarray:
        crop = np.asarray(center_crop(three_bands(width, height, axis, cut), 64)).astype(int)  # (64, 64, 3)
        assert crop.shape == (64, 64, 3)
        return crop if axis == 0 else crop.transpose(1, 0, 2)  # the cut axis second

    exact = lines((50, 250))
    inside = exact[:, 1:63]
    assert (inside[..., 1] == 255).all() and (inside[..., [0, 2]] == 0).all()
    red, blue = exact[:, 0, 0], exact[:, 63, 2]
    assert (red == red[0]).all() and (blue == blue[0]).all()
    assert 0 < red[0] == blue[0] < 64  # centred: the same trace on both sides
    assert (exact[:, 0, 2] == 0).all() and (exact[:, 63, 0] == 0).all()
    wider = lines((47, 253))
    assert (wider[..., 1] == 255).all() and (wider[..., [0, 2]] == 0).all()
    narrower = lines((53, 247))
    assert narrower[0, 0, 0] > 128 and narrower[0, 63, 2] > 128


def test_crop_sizes_box_halving_then_bicubic(monkeypatch):
    """1000 x 520 to 64: box-halve while the short side >= 128 (520, 260, 130), then one bicubic resize."""
    calls = []
    original = Image.Image.resize

    def resize(self, size, resample=None, *args, **kwargs):
        calls.append((self.size, tuple(size), resample))
        return original(self, size, resample, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    out = center_crop(Image.new("RGB", (1000, 520)), 64)
    assert out.size == (64, 64)
    assert calls == [((1000, 520), (500, 260), Image.BOX), ((500, 260), (250, 130), Image.BOX),
                     ((250, 130), (125, 65), Image.BOX), ((125, 65), (123, 64), Image.BICUBIC)]


@pytest.mark.parametrize("size", [(5, 3), (700, 9), (64, 64), (65, 300)])
def test_crop_of_tiny_and_thin_images(size):
    crop = center_crop(Image.new("RGB", size, (10, 20, 30)), 64)
    assert crop.size == (64, 64)
    assert np.abs(np.asarray(crop).astype(int) - [10, 20, 30]).max() <= 1


# -- decoding ---------------------------------------------------------------------------------------


def test_awkward_files_convert_to_rgb_or_fail(tree):
    folder = tree / "train" / "n00000000"
    for name, readable in AWKWARD.items():
        if readable:
            image = open_rgb(folder / name)
            assert image.mode == "RGB", name
            crop = crop_file(folder / name, 64)
            assert crop.shape == (3, 64, 64) and crop.dtype == torch.uint8, name
        else:
            with pytest.raises(Exception):
                open_rgb(folder / name)
    grey16 = np.asarray(open_rgb(folder / "grey16.png")).astype(int)
    grey8 = np.asarray(open_rgb(folder / "grey.JPEG")).astype(int)
    assert abs(grey16.mean() - grey8.mean()) < 3  # 16-bit scaled to 8 bits, not clipped to white


# -- the folder source ------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [64, 256])
def test_folder_items_shapes_range_labels(tree, resolution, capsys):
    classes = sorted(p.name for p in (tree / "train").iterdir())
    dataset = ImageFolderDataset(tree / "train", resolution, flip=True)
    assert dataset.classes == classes and len(dataset) == CLASSES * 6 + len(AWKWARD)
    labels = []
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert image.shape == (3, resolution, resolution) and image.dtype == torch.uint8 and image.is_contiguous()
        assert label == classes.index(Path(dataset.path(i)).parent.name)
        labels.append(label)
    assert sorted(set(labels)) == list(range(CLASSES))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "skipped unreadable" in line]
    assert len(warnings) == sum(not ok for ok in AWKWARD.values())  # one line per bad file
    dm = ImageNetDataModule(root=str(tree), resolution=resolution, global_batch_size=4, num_workers=0)
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (4, 3, resolution, resolution) and x.dtype == torch.float32
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0 and y.dtype == torch.int64
    assert x.std() > 0.1  # real photographs, not flat images


def test_folder_item_is_the_crop_of_its_file_flipped_or_not(tree):
    dataset = ImageFolderDataset(tree / "train", 64, flip=True)
    torch.manual_seed(0)
    flipped = set()
    for i in range(len(dataset) - 12, len(dataset)):  # photographs of the last two classes
        image, _ = dataset[i]
        crop = crop_file(dataset.path(i), 64)
        assert torch.equal(image, crop) or torch.equal(image, crop.flip(2))
        flipped.add(not torch.equal(image, crop))
    assert flipped == {True, False}


def test_validation_order_is_deterministic_and_sorted(tree):
    def val_batches():
        dm = ImageNetDataModule(root=str(tree), resolution=64, global_batch_size=4, num_workers=0)
        return [(x.clone(), y.clone()) for x, y in dm.val_dataloader()]

    first, second = val_batches(), val_batches()
    assert len(first) == len(second) > 0
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    labels = torch.cat([y for _, y in first]).tolist()
    assert labels == sorted(labels)  # class by class, files by name
    dataset = ImageFolderDataset(tree / "val", 64)
    items = torch.cat([x for x, _ in first])
    for i in range(len(dataset)):
        if AWKWARD.get(Path(dataset.path(i)).name, True):
            assert torch.equal(items[i], crop_file(dataset.path(i), 64))  # never flipped


def test_global_batch_must_divide_over_devices(tree):
    from types import SimpleNamespace

    dm = ImageNetDataModule(root=str(tree), resolution=64, global_batch_size=12, num_workers=0)
    dm.trainer = SimpleNamespace(world_size=8, accumulate_grad_batches=1, global_rank=0)
    with pytest.raises(ConfigError, match="data.global_batch_size.*multiple of 8"):
        dm.train_dataloader()
    dm = ImageNetDataModule(root=str(tree), resolution=64, global_batch_size=4096, num_workers=0)
    with pytest.raises(ConfigError, match="4096 is more than"):
        dm.train_dataloader()


@pytest.mark.parametrize("layout", ["missing", "no_train", "no_classes", "no_images", "file"])
def test_empty_or_misnamed_root_fails_at_setup_naming_the_path(tmp_path, layout):
    root = tmp_path / "data"
    if layout == "no_train":
        (root / "training" / "n0").mkdir(parents=True)
    elif layout == "no_classes":
        (root / "train").mkdir(parents=True)
    elif layout == "no_images":
        (root / "train" / "n0").mkdir(parents=True)
        (root / "train" / "n0" / "notes.txt").write_text("x")
    elif layout == "file":
        root.write_text("x")
    with pytest.raises(ConfigError) as error:
        ImageNetDataModule.net_defaults(root=str(root), resolution=64)
        ImageNetDataModule(root=str(root), resolution=64).train_dataloader()
    assert error.value.field == "data.root" and str(root) in str(error.value)


# -- shards -----------------------------------------------------------------------------------------


def test_prepare_reports_bad_files_and_writes_the_meta(tree, tmp_path, capsys):
    from jitlab.commands.prepare_imagenet import main

    out = tmp_path / "s"
    assert main(["--src", str(tree), "--out", str(out), "--resolution", "32", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    bad = [p for split in ("train", "val") for p in (tree / split).rglob("*") if not AWKWARD.get(p.name, True)]
    warnings = [line for line in err.splitlines() if line.startswith("jitlab: warning: skipped unreadable image")]
    assert len(warnings) == len(bad) == 6 and all(any(str(p) in w for w in warnings) for p in bad)
    assert "skipped 6 unreadable file(s)" in err
    meta = json.loads((out / "jitlab_shards.json").read_text())
    assert meta["resolution"] == 32 and meta["classes"] == sorted(p.name for p in (tree / "train").iterdir())
    assert meta["splits"]["train"]["images"] == len(readable_files(tree, "train"))
    assert meta["splits"]["val"]["images"] == len(readable_files(tree, "val"))
    assert (out / "train" / "index.json").is_file() and (out / "val" / "index.json").is_file()
    assert main(["--src", str(tree), "--out", str(out), "--resolution", "32", "--workers", "0"]) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_shard_items_equal_the_folder_crops(tree, shards64):
    from litdata import StreamingDataset

    raw = StreamingDataset(str(shards64 / "val"))
    dataset = ImageFolderDataset(tree / "val", 64)
    assert len(raw) == len(readable_files(tree, "val"))
    for i in range(len(raw)):
        item = raw[i]
        assert torch.equal(item["image"], crop_file(dataset.path(item["index"]), 64))
        assert item["label"] == int(dataset.labels[item["index"]])
    dm = ImageNetDataModule(root=str(shards64), resolution=64, global_batch_size=4, num_workers=0)
    assert dm.source == "shards" and dm.num_classes == CLASSES
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (4, 3, 64, 64) and -1 <= x.min() and x.max() <= 1 and 0 <= y.min() and y.max() < CLASSES
    val = torch.cat([y for _, y in dm.val_dataloader()]).tolist()
    assert val == sorted(val) and len(val) == len(raw)


def test_shards_at_another_resolution_are_refused(shards64):
    with pytest.raises(ConfigError, match="data.resolution.*64"):
        ImageNetDataModule(root=str(shards64), resolution=256)
    assert ImageNetDataModule.net_defaults(root=str(shards64), resolution=64) == {
        "img_size": 64, "num_classes": CLASSES, "in_channels": 3}


def test_prepare_resumes_after_an_interruption(tree, tmp_path, monkeypatch, capsys):
    """Interrupted after 3 parts, the same command writes only the rest; the shards equal a one-shot run."""
    from litdata import StreamingDataset

    from jitlab.commands.prepare_imagenet import main as prepare_main
    from jitlab.core.data import prepare

    args = ["--src", str(tree), "--resolution", "32", "--workers", "0", "--part_size", "4", "--splits", "train"]
    assert prepare_main([*args, "--out", str(tmp_path / "once")]) == 0
    original, calls = prepare._write_part_quietly, []

    def interrupt_after_three(*a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(a[1].number)
        return original(*a, **k)

    monkeypatch.setattr(prepare, "_write_part_quietly", interrupt_after_three)
    assert prepare_main([*args, "--out", str(tmp_path / "twice")]) == 130
    assert not (tmp_path / "twice" / "jitlab_shards.json").exists()
    monkeypatch.setattr(prepare, "_write_part_quietly", original)
    capsys.readouterr()
    assert prepare_main([*args, "--out", str(tmp_path / "twice")]) == 0
    assert "resuming, 3 parts done" in capsys.readouterr().err
    once = StreamingDataset(str(tmp_path / "once" / "train"))
    twice = StreamingDataset(str(tmp_path / "twice" / "train"))
    assert len(once) == len(twice) == len(readable_files(tree, "train"))
    for i in range(len(once)):
        a, b = once[i], twice[i]
        assert a["index"] == b["index"] and torch.equal(a["image"], b["image"])


def test_prepare_bad_input_exits_2(tree, tmp_path, capsys):
    from jitlab.commands.prepare_imagenet import main

    assert main(["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--resolution", "64"]) == 2
    assert "jitlab: error: --src" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    assert main(["--src", str(tree), "--out", str(tmp_path / "busy"), "--resolution", "64"]) == 2
    assert "not a shard directory" in capsys.readouterr().err
    assert main(["--src", str(tree), "--out", str(tmp_path / "o"), "--resolution", "0"]) == 2


# -- the CLI ----------------------------------------------------------------------------------------


def run_fit(root: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    args = ["fit", "--data", "ImageNetDataModule", "--data.root", str(root), "--data.resolution", "64",
            "--trainer.max_steps=2", "--data.global_batch_size=4", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", "--samples.num_images=2", "--samples.steps=1",
            "--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.default_root_dir={tmp_path}", *extra]
    return run_cli(args, capsys)


@pytest.mark.parametrize("source", ["folder", "shards"])
def test_cli_fit_on_the_folder_tree_and_on_shards(tree, shards64, source, tmp_path, capsys):
    root = tree if source == "folder" else shards64
    code, out = run_fit(root, tmp_path, capsys)
    assert code == 0, out[-3000:]
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    net = ckpt["hyper_parameters"]["net"]["init_args"]
    assert net["img_size"] == 64 and net["num_classes"] == CLASSES  # followed the data
    assert ckpt["datamodule_hyper_parameters"]["root"] == str(root)


def test_cli_bad_root_exits_2_naming_it(tmp_path, capsys):
    code, out = run_fit(tmp_path / "no-such-imagenet", tmp_path, capsys)
    assert code == 2 and "data.root" in out and "no-such-imagenet" in out
