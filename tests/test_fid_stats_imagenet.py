"""`jitlab fid-stats --root`: reference statistics of an ImageNet training split, as torch-fidelity computes them.

A small synthetic tree (8 readable images and one unreadable file) and a random-weight InceptionV3 stand in
for ImageNet and the real weights. The statistics must equal torch-fidelity's own on the same ADM crops, be
the same from shards, from two processes and after an interruption, and be written in the release's layout
with the resolution recorded.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from jitlab.core.data.synth_imagenet import write_tree
from jitlab.score.metrics.imagenet_stats import partial_path, rank_batches
from jitlab.score.metrics.stats import load_stats
from tests.conftest import run_cli
from tests.test_metrics import inception_weights  # noqa: F401  (fixture)

RESOLUTION = 64


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    write_tree(root, classes=2, train_per_class=4, val_per_class=0, short=(70, 120), seed=3, bad_files=False)
    (root / "train" / "n00000001" / "broken.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    return root


@pytest.fixture(scope="module")
def folder_stats(tree, inception_weights, tmp_path_factory):  # noqa: F811
    """`jitlab fid-stats` as a user types it, on the folder tree (batches of 3: three partial saves)."""
    from jitlab.commands.cli import main

    out = tmp_path_factory.mktemp("stats") / "fid_stats" / "in64.npz"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JITLAB_INCEPTION_WEIGHTS", str(inception_weights))
        code = main(["fid-stats", "--root", str(tree), "--resolution", str(RESOLUTION), "--features", "inception",
                     "--out", str(out), "--batch_size", "3", "--workers", "0", "--every", "1", "--no_progress"])
    assert code == 0
    return out


def test_statistics_are_torch_fidelitys_own_in_the_releases_layout(tree, folder_stats, inception_weights):  # noqa: F811
    with np.load(folder_stats) as archive:
        assert {"mu", "sigma", "resolution", "n", "fingerprint"} <= set(archive.files)
        mu, sigma = archive["mu"], archive["sigma"]
        assert mu.shape == (2048,) and sigma.shape == (2048, 2048) and mu.dtype == np.float64
        assert int(archive["resolution"]) == RESOLUTION and int(archive["n"]) == 8  # the broken file left out
    assert not partial_path(folder_stats).exists()  # removed once the statistics are written

    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    from jitlab.core.data.imagenet import ImageFolderDataset, crop_file

    class Crops(torch.utils.data.Dataset):  # the ADM crops of the readable files, as torch-fidelity takes them
        def __init__(self):
            listing = ImageFolderDataset(tree / "train", RESOLUTION)
            self.paths = [listing.path(i) for i in range(len(listing)) if "broken" not in listing.path(i)]

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            return crop_file(self.paths[i], RESOLUTION)  # (3, 64, 64) uint8

    extractor = create_feature_extractor("inception-v3-compat", ["2048"], cuda=False,
                                         feature_extractor_weights_path=str(inception_weights))
    features = get_featuresdict_from_dataset(Crops(), extractor, batch_size=5, cuda=False, save_cpu_ram=True,
                                             verbose=False)
    theirs = fid_featuresdict_to_statistics(features, "2048")
    assert np.abs(theirs["sigma"]).max() > 1e-3  # random weights still give features that vary
    assert np.allclose(mu, theirs["mu"], rtol=1e-5, atol=1e-6 * np.abs(theirs["mu"]).max())
    assert np.allclose(sigma, theirs["sigma"], rtol=1e-4, atol=1e-5 * np.abs(theirs["sigma"]).max())


def test_shards_and_an_interrupted_run_give_the_same_statistics(tree, folder_stats, tmp_path, monkeypatch,
                                                                inception_weights):  # noqa: F811
    from jitlab.commands.prepare_imagenet import main as prepare
    from jitlab.score.metrics import imagenet_stats
    from jitlab.score.metrics.features import InceptionV3Features

    shards = tmp_path / "shards"
    assert prepare(["--src", str(tree), "--out", str(shards), "--resolution", str(RESOLUTION), "--workers", "0",
                    "--no_progress"]) == 0
    out = tmp_path / "s.npz"
    calls = {"n": 0}
    original = InceptionV3Features.extract

    def dies_at_the_third_batch(self, images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a killed job
        return original(self, images)

    monkeypatch.setattr(InceptionV3Features, "extract", dies_at_the_third_batch)
    extractor = InceptionV3Features(inception_weights)
    with pytest.raises(KeyboardInterrupt):
        imagenet_stats.imagenet_stats(str(shards), RESOLUTION, extractor, out, batch_size=3, workers=0, every=1,
                                      progress=False)
    saved = torch.load(partial_path(out), weights_only=True)
    assert saved["positions"] == 6 and int(saved["n"]) == 6 and not out.exists()
    monkeypatch.setattr(InceptionV3Features, "extract", original)
    stats = imagenet_stats.imagenet_stats(str(shards), RESOLUTION, extractor, out, batch_size=3, workers=0,
                                          every=1, progress=False)
    reference = load_stats(folder_stats)
    assert stats.n == reference.n == 8 and stats.resolution == RESOLUTION
    assert np.allclose(stats.mu, reference.mu, rtol=1e-9, atol=1e-12)
    assert np.allclose(stats.sigma, reference.sigma, rtol=1e-9, atol=1e-12)
    # the partial file of another resolution is refused, naming it
    other = tmp_path / "o.npz"
    torch.save({**saved, "resolution": 32}, partial_path(other))
    from jitlab.errors import ConfigError

    with pytest.raises(ConfigError, match="resolution"):
        imagenet_stats.imagenet_stats(str(shards), RESOLUTION, extractor, other, batch_size=3, workers=0)


def test_rounds_give_every_position_to_exactly_one_rank():
    for total, start, world, batch in [(10, 0, 2, 3), (11, 4, 3, 2), (5, 0, 4, 2)]:
        per_rank = [rank_batches(total, start, world, r, batch) for r in range(world)]
        seen = [i for batches in per_rank for b in batches for i in b]
        assert sorted(seen) == list(range(start, total))
        assert len({len(b) for b in per_rank}) == 1  # every rank has a batch (maybe empty) in every round


def _rank(rank: int, port: int, root: str, weights: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), JITLAB_INCEPTION_WEIGHTS=weights)
    torch.set_num_threads(1)
    from jitlab.commands.fid_stats import main

    assert main(["--root", root, "--resolution", str(RESOLUTION), "--out", out, "--batch_size", "2",
                 "--workers", "0", "--no_progress", "--device", "cpu"]) == 0


def test_two_processes_sum_their_halves(tree, folder_stats, inception_weights, tmp_path):  # noqa: F811
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "two.npz"
    context = mp.get_context("spawn")
    processes = [context.Process(target=_rank, args=(r, port, str(tree), str(inception_weights), str(out)))
                 for r in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
        assert process.exitcode == 0
    two, one = load_stats(out), load_stats(folder_stats)
    assert two.n == one.n == 8
    # batches of 2 instead of 3: the float32 convolutions round differently (~1e-7), the float64 sums do not
    assert np.allclose(two.mu, one.mu, rtol=1e-5, atol=1e-6 * np.abs(one.mu).max())
    assert np.allclose(two.sigma, one.sigma, rtol=1e-4, atol=1e-5 * np.abs(one.sigma).max())


def test_wrong_feature_space_and_missing_root_fail_in_one_line(tmp_path, capsys):
    code, out = run_cli(["fid-stats", "--root", str(tmp_path / "none"), "--resolution", "64", "--features", "refnet",
                         "--out", str(tmp_path / "x.npz")], capsys)
    assert code == 2 and "--features" in out and "inception" in out
    code, out = run_cli(["fid-stats", "--root", str(tmp_path / "none"), "--resolution", "64",
                         "--out", str(tmp_path / "x.npz")], capsys)
    assert code == 2 and "train/" in out and str(tmp_path / "none") in out


def test_build_ref_stats_makes_each_missing_file_once_from_the_cells_data(tmp_path):
    from types import SimpleNamespace

    from jitlab.experiments.grid.refstats import build_ref_stats, missing_ref_stats

    def cell(stats, resolution, features="inception", data="jitlab.core.data.ImageNetDataModule"):
        config = {"data": {"class_path": data, "init_args": {"root": "/data/in", "resolution": resolution}}}
        return SimpleNamespace(config=config, eval={"features": features, "ref_stats": str(stats)})

    present = tmp_path / "in256.npz"
    present.write_bytes(b"")
    cells = [cell(tmp_path / "in64.npz", 64), cell(tmp_path / "in64.npz", 64), cell(present, 256),
             cell(tmp_path / "ref.npz", 64, features="refnet"), cell(tmp_path / "emb.npz", 64, data="x.Embedded")]
    assert missing_ref_stats(cells) == {tmp_path / "in64.npz": ("/data/in", 64)}
    commands = []

    def call(command):
        commands.append(command)
        Path(command[command.index("--out") + 1]).write_bytes(b"")
        return 0

    assert build_ref_stats(cells, echo=lambda _: None, call=call) == [tmp_path / "in64.npz"]
    (command,) = commands
    assert command[command.index("fid-stats") + 1:command.index("--out")] == [
        "--root", "/data/in", "--resolution", "64", "--features", "inception"]
    from jitlab.errors import ConfigError

    with pytest.raises(ConfigError, match="one file cannot be both"):
        missing_ref_stats([cell(tmp_path / "x.npz", 64), cell(tmp_path / "x.npz", 128)])


def test_a_class_subset_measures_only_its_classes(tree, folder_stats, inception_weights, tmp_path,  # noqa: F811
                                                  monkeypatch):
    """`--classes 1` (the lab scale's subsets) measures the first class's 4 images, not the tree's 8."""
    from jitlab.commands.cli import main

    monkeypatch.setenv("JITLAB_INCEPTION_WEIGHTS", str(inception_weights))
    out = tmp_path / "sub.npz"
    assert main(["fid-stats", "--root", str(tree), "--resolution", str(RESOLUTION), "--features", "inception",
                 "--classes", "1", "--out", str(out), "--workers", "0", "--no_progress"]) == 0
    subset, full = load_stats(out), load_stats(folder_stats)
    assert subset.n == 4 and full.n == 8
    assert not np.allclose(subset.mu, full.mu)
    wnids = tmp_path / "wnids.txt"
    wnids.write_text("n09999999\n")
    code = main(["fid-stats", "--root", str(tree), "--resolution", str(RESOLUTION), "--features", "inception",
                 "--classes", str(wnids), "--out", str(tmp_path / "none.npz"), "--workers", "0", "--no_progress"])
    assert code == 2 and not (tmp_path / "none.npz").exists()
