"""Metrics: agreement with torch-fidelity, Frechet distance sanity, reference files, weights, refnet, names."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
import torch
from torch import nn

from jitlab.core.data.embedded import make_dataset
from jitlab.errors import ConfigError
from jitlab.score.metrics import (
    FeatureExtractor,
    InceptionV3Features,
    RefNetConfig,
    RefNetFeatures,
    SampleScores,
    StatsFileError,
    build_stats,
    dataset_stats,
    load_refnet,
    load_stats,
    metric_name,
    save_stats,
)
from jitlab.score.metrics import features as features_module
from jitlab.score.metrics import refnet as refnet_module


def images_of(kind: str, resolution: int, n: int, seed: int = 0) -> torch.Tensor:
    dataset = make_dataset(kind, resolution, n, seed)
    return torch.stack([dataset[i][0] for i in range(n)])  # (n, 3, R, R) uint8


class UInt8Images(torch.utils.data.Dataset):
    """What torch-fidelity takes as an input: a Dataset of uint8 (3, H, W) tensors."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def random_inception_weights(path) -> None:
    """A state dict of torch-fidelity's own InceptionV3 with random (but well-scaled) values."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the fresh initialisation

    empty = path.with_name("empty.pth")
    torch.save({}, empty)
    net = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    generator = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):  # He init keeps activations O(1) through the 40-odd layers
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (2.0 / m.weight[0].numel()) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(0.8 + 0.4 * torch.rand(m.weight.shape, generator=generator))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=generator))
            m.running_var.copy_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=generator))
        elif isinstance(m, nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.1)
            m.bias.copy_(torch.randn(m.bias.shape, generator=generator))
    torch.save(net.state_dict(), path)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / features_module.INCEPTION_WEIGHTS_FILE
    random_inception_weights(path)
    return path


TINY_REFNET = RefNetConfig(kind="shapes", resolution=16, train_size=2000, val_size=300, epochs=5, batch_size=50)


@pytest.fixture(scope="module")
def refnet(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("refnet")
    net, info = load_refnet(TINY_REFNET, cache_dir=cache_dir, log=lambda _: None)
    return RefNetFeatures(net, "shapes", 16, info["key"]), info, cache_dir


def relative(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / abs(theirs)


# -- agreement with the paper's tool ---------------------------------------------------------------------


def test_fid_is_kid_agree_with_torch_fidelity(inception_weights):
    # 8 images a side: the covariances are singular (rank 7 of 2048), but both tools take the trace of
    # the square root from the eigenvalues of sigma1 @ sigma2, whose ~2040 null eigenvalues add only
    # ~1e-8 * sqrt(lambda_max) each; measured agreement is ~1e-6, so 1e-3 is a safe but meaningful bound
    # (a different resize, normalisation or covariance convention moves FID by far more).
    n = 8
    fake = images_of("shapes", 32, n)  # upsampled to 299 inside
    real = images_of("photos", 320, n)  # downsampled to 299 inside
    scores = SampleScores(InceptionV3Features(inception_weights), inception_score=True, kid=True,
                          is_splits=1, kid_subsets=2, kid_subset_size=n)
    for half in fake.split(5):  # uneven batches: the states must not care
        scores.update(half)
    scores.update(real, real=True)
    ours = {row["metric"]: row for row in scores.compute()}

    import torch_fidelity

    theirs = torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake), input2=UInt8Images(real), fid=True, isc=True, kid=True, isc_splits=1,
        kid_subsets=2, kid_subset_size=n, feature_extractor_weights_path=str(inception_weights),
        cuda=False, cache=False, verbose=False, save_cpu_ram=True,
    )
    assert set(ours) == {"FID-8", "IS-8", "KID-8"}
    assert theirs["frechet_inception_distance"] > 1.0  # the two sets differ: not a comparison of zeros
    assert relative(ours["FID-8"]["value"], theirs["frechet_inception_distance"]) < 1e-3
    assert relative(ours["IS-8"]["value"], theirs["inception_score_mean"]) < 1e-3
    assert relative(ours["KID-8"]["value"], theirs["kernel_inception_distance_mean"]) < 1e-3
    assert all(row["feature_space"] == "inception-v3-pool3" and row["n_samples"] == n for row in ours.values())


# -- Frechet distance sanity -----------------------------------------------------------------------------


def noisy(images: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * std
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def fd_ref(extractor, reference, fake: torch.Tensor) -> float:
    scores = SampleScores(extractor, reference=reference)
    for batch in fake.split(64):
        scores.update(batch)
    (row,) = scores.compute()
    return row["value"]


def test_fd_of_a_set_with_itself_is_zero_and_grows_with_noise(refnet, tmp_path):
    extractor, _, _ = refnet
    real = images_of("shapes", 16, 400)
    stats = dataset_stats(make_dataset("shapes", 16, 400, 0), extractor, tmp_path / "ref.npz")
    scale = float(np.trace(stats.sigma))
    assert stats.n == 400 and scale > 0
    assert abs(fd_ref(extractor, stats.pair, real)) < 1e-6 * scale

    distances = [fd_ref(extractor, stats.pair, noisy(real, std)) for std in (8.0, 24.0, 64.0)]
    assert 1e-6 * scale < distances[0] < distances[1] < distances[2]

    # the .npz reference and real images in the same run give the same distance
    scores = SampleScores(extractor)
    scores.update(real, real=True)
    scores.update(noisy(real, 24.0))
    assert scores.compute()[0]["value"] == pytest.approx(distances[1], rel=1e-9)


def test_build_stats_takes_any_loader_and_caps_the_count(refnet):
    extractor, _, _ = refnet
    loader = torch.utils.data.DataLoader(make_dataset("shapes", 16, 50, 0), batch_size=16)  # (images, labels)
    mu, sigma, n = build_stats(loader, extractor, max_images=40)
    features = extractor(images_of("shapes", 16, 40)).numpy()  # (40, F)
    assert n == 40
    np.testing.assert_allclose(mu, features.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-8, atol=1e-10)


# -- reference statistics files --------------------------------------------------------------------------


class FakeSpace:
    name, num_features, fingerprint = "refnet-shapes-16", 4, "refnet-shapes-16-abc"


def test_reference_stats_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4))  # (20, 4)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    path = save_stats(tmp_path / "fid_stats" / "ref.npz", mu, sigma, n=20, extractor=FakeSpace())
    loaded = load_stats(path, FakeSpace())
    np.testing.assert_array_equal(loaded.mu, mu)
    np.testing.assert_array_equal(loaded.sigma, sigma)
    assert (loaded.n, loaded.feature_space, loaded.fingerprint) == (20, "refnet-shapes-16", "refnet-shapes-16-abc")
    assert sorted(p.name for p in path.parent.iterdir()) == ["ref.npz"]  # no temporary file left behind

    np.savez(tmp_path / "release.npz", mu=mu.astype(np.float32), sigma=sigma)  # the release's layout: mu, sigma
    assert load_stats(tmp_path / "release.npz").mu.dtype == np.float64


@pytest.mark.parametrize("problem", ["missing", "garbage", "no_sigma", "wrong_shape", "nan", "asymmetric",
                                     "wrong_width", "other_space"])
def test_bad_reference_stats_name_the_file(tmp_path, problem):
    path = tmp_path / f"bad_{problem}.npz"
    mu, sigma = np.zeros(4), np.eye(4)
    if problem == "garbage":
        path.write_bytes(b"this is not a zip archive")
    elif problem == "no_sigma":
        np.savez(path, mu=mu)
    elif problem == "wrong_shape":
        np.savez(path, mu=mu, sigma=np.eye(3))
    elif problem == "nan":
        np.savez(path, mu=np.array([0.0, np.nan, 0.0, 0.0]), sigma=sigma)
    elif problem == "asymmetric":
        np.savez(path, mu=mu, sigma=np.triu(np.ones((4, 4))))
    elif problem == "wrong_width":
        np.savez(path, mu=np.zeros(5), sigma=np.eye(5))
    elif problem == "other_space":
        np.savez(path, mu=mu, sigma=sigma, fingerprint=np.array("inception-v3-pool3"))
    with pytest.raises(StatsFileError) as caught:
        load_stats(path, FakeSpace())
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ConfigError)


# -- Inception weights: a local file, never a download ---------------------------------------------------


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Any download attempt fails the test; torch hub's cache is an empty temporary folder."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(features_module.INCEPTION_WEIGHTS_ENV, raising=False)
    return tmp_path / "hub" / "checkpoints" / features_module.INCEPTION_WEIGHTS_FILE


def test_missing_inception_weights_say_how_to_supply_them(no_network):
    with pytest.raises(ConfigError) as caught:
        InceptionV3Features()
    message = str(caught.value)
    for must in ("weights-inception-2015-12-05-6726825d.pth", "--inception_weights", "JITLAB_INCEPTION_WEIGHTS",
                 str(no_network), "never downloads"):
        assert must in message


def test_inception_weights_from_env_cache_and_bad_files(no_network, inception_weights, monkeypatch, tmp_path):
    monkeypatch.setenv(features_module.INCEPTION_WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(ConfigError, match="nowhere.pth"):
        InceptionV3Features()
    monkeypatch.setenv(features_module.INCEPTION_WEIGHTS_ENV, str(inception_weights))
    assert InceptionV3Features().weights_path == inception_weights
    monkeypatch.delenv(features_module.INCEPTION_WEIGHTS_ENV)
    no_network.parent.mkdir(parents=True)
    no_network.write_bytes(inception_weights.read_bytes())
    assert InceptionV3Features().weights_path == no_network  # torch-fidelity's standard cache location
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a state dict")
    with pytest.raises(ConfigError, match="corrupt.pth"):
        InceptionV3Features(corrupt)


# -- refnet ----------------------------------------------------------------------------------------------


def test_refnet_learns_and_is_cached(refnet, monkeypatch):
    extractor, info, cache_dir = refnet
    assert info["cached"] is False
    assert info["chance"] == 0.1 and info["val_accuracy"] > 0.4  # ten classes; a tiny budget
    assert extractor.num_features == 128 and extractor.name == "refnet-shapes-16"

    def no_training(*args, **kwargs):
        raise AssertionError("retrained despite a cached refnet")

    monkeypatch.setattr(refnet_module, "train_refnet", no_training)
    net, again = load_refnet(TINY_REFNET, cache_dir=cache_dir, log=lambda _: None)
    assert again["cached"] is True and again["key"] == info["key"] and again["digest"] == info["digest"]
    # a classifier trained again under the same key but with other weights is another feature space:
    # its fingerprint (which names the cached reference statistics) differs
    other = refnet_module.RefNet(net.head.out_features, 16, TINY_REFNET.width)
    assert refnet_module.weights_digest(other) != info["digest"]
    fingerprints = {RefNetFeatures(n, "shapes", 16, info["key"], digest=refnet_module.weights_digest(n)).fingerprint
                    for n in (net, other)}
    assert len(fingerprints) == 2 and all(f.startswith(f"refnet-shapes-16-{info['key']}-") for f in fingerprints)
    images = images_of("shapes", 16, 8, seed=5)
    torch.testing.assert_close(RefNetFeatures(net, "shapes", 16, again["key"])(images), extractor(images))
    with pytest.raises(ConfigError, match="train-ref"):
        load_refnet(RefNetConfig(kind="shapes", resolution=24), cache_dir=cache_dir, train_if_missing=False)


def test_refnet_scores_are_never_called_fid(refnet):
    extractor, _, _ = refnet
    scores = SampleScores(extractor, inception_score=True, kid=True, kid_subsets=5, kid_subset_size=100)
    scores.update(images_of("shapes", 16, 500, seed=3), real=True)
    for batch in images_of("shapes", 16, 500, seed=4).split(128):
        scores.update(batch)
    rows = scores.compute()
    assert [row["metric"] for row in rows] == ["FD-ref-500", "IS-ref-500", "KD-ref-500"]
    assert not any("FID" in row["metric"] or "KID" in row["metric"] for row in rows)
    assert all(set(row) >= {"metric", "value", "n_samples", "feature_space"} for row in rows)
    assert all(row["feature_space"] == "refnet-shapes-16" and row["n_samples"] == 500 for row in rows)


def test_extractors_take_uint8_only(refnet):
    extractor, _, _ = refnet
    with pytest.raises(TypeError, match="uint8"):
        extractor(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="16x16"):
        extractor(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


# -- names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, n, name", [
    ("FID", 50_000, "FID-50K"), ("FID", 2000, "FID-2K"), ("FD-ref", 500, "FD-ref-500"), ("IS", 1500, "IS-1500"),
    ("KID", 10_000, "KID-10K"), ("FID", 1000, "FID-1K"), ("FD-ref", 1, "FD-ref-1"), ("IS", 50_500, "IS-50500"),
])
def test_metric_name(kind, n, name):
    assert metric_name(kind, n) == name


@pytest.mark.parametrize("kind, n", [("FID", 0), ("FID", -1000), ("FID", 2.5), ("fid", 1000), ("PSNR", 10)])
def test_metric_name_rejects(kind, n):
    with pytest.raises(ValueError):
        metric_name(kind, n)


# -- distributed: each rank updates its slice, compute() syncs -------------------------------------------


class PixelGrid(FeatureExtractor):
    """A cheap deterministic feature space for the distributed test: 4x4 average-pooled pixels (48-d)."""

    name, num_features, has_logits, logits_dim = "pixel-grid", 48, True, 10

    def extract(self, images):
        x = images.double() / 255  # (N, 3, H, W)
        features = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)  # (N, 48)
        return {"features": features, "logits": 10 * features[:, :10]}  # (N, 48), (N, 10)


def _distributed_worker(rank: int, world: int, init_file: str, reference, queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    fake = images_of("shapes", 16, 64, seed=7)[rank::world]  # this rank's slice
    scores = SampleScores(PixelGrid(), reference=reference, inception_score=True, is_splits=1)
    scores.update(fake)
    queue.put((rank, scores.compute()))
    dist.destroy_process_group()


def test_distributed_slices_give_the_single_process_result(tmp_path):
    real = images_of("shapes", 16, 60, seed=8)
    features = PixelGrid()(real).numpy()  # (60, 48)
    reference = (features.mean(0), np.cov(features, rowvar=False))
    single = SampleScores(PixelGrid(), reference=reference, inception_score=True, is_splits=1)
    single.update(images_of("shapes", 16, 64, seed=7))
    expected = single.compute()

    context = torch.multiprocessing.get_context("spawn")
    queue = context.Queue()
    torch.multiprocessing.start_processes(_distributed_worker, args=(2, str(tmp_path / "init"), reference, queue),
                                          nprocs=2, join=True, start_method="spawn")
    results = dict(queue.get(timeout=60) for _ in range(2))
    for rows in results.values():
        assert [row["metric"] for row in rows] == ["FID-64", "IS-64"]  # PixelGrid keeps the default names
        # the sums are added in another order: equal up to rounding (a rank's own half would be far off)
        assert rows[0]["value"] == pytest.approx(expected[0]["value"], rel=1e-6)
        assert rows[0]["n_samples"] == 64
        # IS gathers the logits of all ranks (in another order: one split makes the order irrelevant)
        assert rows[1]["value"] == pytest.approx(expected[1]["value"], rel=1e-9)
        assert rows[1]["n_samples"] == 64
