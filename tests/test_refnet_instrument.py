"""The instrument is fixed: FD-ref of a committed set of images against another, in each shipped classifier's
features, equals a committed value to 3 significant digits on any machine (and moves when the weights do)."""

from __future__ import annotations

import math

import pytest
import torch

from jitlab.score.metrics import refnet
from jitlab.score.metrics.features import build_extractor
from jitlab.score.metrics.frechet import FrechetDistance
from tests.data.make_refnet_instrument import load

# FD-ref of tests/data/refnet_instrument.npz's real set against its perturbed set (float32 features, float64
# statistics), measured with the shipped classifiers (the same to 7 digits with 2 threads and with float64
# features); compared to 3 significant digits
EXPECTED = {8: 6.2967, 16: 11.142, 32: 23.010}
RELATIVE = 5e-4  # half a unit in the third significant digit


def no_training(*_, **__):
    raise AssertionError("a shipped classifier was retrained")


def fd_ref(extractor, real: torch.Tensor, fake: torch.Tensor) -> float:
    metric = FrechetDistance(extractor)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


# one_thread (conftest): one intra-op thread, the same order of sums in every run on every machine
@pytest.mark.parametrize("resolution", sorted(EXPECTED))
def test_fd_ref_of_the_fixed_images_equals_the_committed_value(resolution, one_thread, monkeypatch, tmp_path):
    monkeypatch.setattr(refnet, "train_refnet", no_training)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    real, fake = load(resolution)  # (200, 3, R, R) uint8 each
    value = fd_ref(build_extractor("refnet", kind="shapes", resolution=resolution), real, fake)
    assert math.isclose(value, EXPECTED[resolution], rel_tol=RELATIVE), f"{value:.5g} != {EXPECTED[resolution]}"
    assert f"{value:.3g}" == f"{EXPECTED[resolution]:.3g}"


def test_the_check_fails_for_another_instrument(one_thread, monkeypatch, tmp_path):
    """The same images in the features of slightly other weights (what a retraining gives) miss the value."""
    monkeypatch.setattr(refnet, "train_refnet", no_training)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    extractor = build_extractor("refnet", kind="shapes", resolution=32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in extractor.net.parameters():
            parameter.mul_(1 + 0.05 * torch.randn(parameter.shape, generator=generator))  # 5% of each weight
    value = fd_ref(extractor, *load(32))
    assert not math.isclose(value, EXPECTED[32], rel_tol=RELATIVE)


def test_the_fixed_images_are_what_the_file_says():
    real, fake = load(16)
    assert real.shape == fake.shape == (200, 3, 16, 16) and real.dtype == fake.dtype == torch.uint8
    real32, fake32 = load(32)
    assert not torch.equal(real32, fake32) and 0 < real32.float().std() < 128
