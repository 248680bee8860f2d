"""jitlab.core.flow's Flow against paper.md section 2: the nine training cells' losses (Table 1), Algorithm 1, the
time and noise draws, the noise scale and the sampling velocity with its own guard.

Conventions (paper.md): t = 1 is clean data, t = 0 pure noise; z = t x + (1 - t) eps; v = x - eps.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from jitlab.core.flow import Flow, FlowConfig, noisy_sample
from tests.test_flow import ALL_PAIRS, EPS, SPACES, V, X

CELLS = ALL_PAIRS  # (pred, loss): the nine cells of Table 1


def _batch(seed: int = 9, t=(0.001, 0.03, 0.3, 0.7, 0.97, 0.999), noise_scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor(t)
    x = torch.randn(len(t), 3, 8, 8, generator=g)
    eps = noise_scale * torch.randn(len(t), 3, 8, 8, generator=g)
    return x, eps, noisy_sample(x, eps, t), t


@pytest.mark.parametrize("pred,loss", CELLS, ids=lambda s: str(s))
def test_loss_is_zero_for_the_true_prediction_and_positive_otherwise(pred, loss):
    flow = Flow(FlowConfig(pred=pred, loss=loss))
    x, eps, z, t = _batch()  # t includes values where both guards are active
    truth = {X: x, EPS: eps, V: x - eps}[pred]
    per_sample = flow.per_sample_loss(truth, x, eps, z, t)
    assert per_sample.shape == (len(t),)
    assert torch.equal(per_sample, torch.zeros(len(t)))
    perturbed = flow.per_sample_loss(truth + 0.1, x, eps, z, t)
    assert (perturbed > 0).all()


# Table 1 written out by hand (no clamps needed for t in the interior), independent of convert().
BY_HAND = {
    (X, X): lambda o, z, t: o,
    (EPS, X): lambda o, z, t: (z - (1 - t) * o) / t,
    (V, X): lambda o, z, t: (1 - t) * o + z,
    (X, EPS): lambda o, z, t: (z - t * o) / (1 - t),
    (EPS, EPS): lambda o, z, t: o,
    (V, EPS): lambda o, z, t: z - t * o,
    (X, V): lambda o, z, t: (o - z) / (1 - t),
    (EPS, V): lambda o, z, t: (z - o) / t,
    (V, V): lambda o, z, t: o,
}


@pytest.mark.parametrize("pred,loss", CELLS, ids=lambda s: str(s))
def test_loss_is_the_table1_l2_in_the_interior(pred, loss):
    """Away from the guards: E||(out converted to the loss space) - (true x, eps or v)||^2 per sample."""
    flow = Flow(FlowConfig(pred=pred, loss=loss))
    x, eps, z, t = _batch(seed=10, t=(0.1, 0.4, 0.6, 0.9))
    g = torch.Generator().manual_seed(10)
    out = torch.randn(x.shape, generator=g)
    tb = t[:, None, None, None]
    truth_in_loss_space = {X: x, EPS: eps, V: x - eps}[loss]
    expected = (BY_HAND[(pred, loss)](out, z, tb) - truth_in_loss_space).pow(2).flatten(1).mean(1)
    assert_close(flow.per_sample_loss(out, x, eps, z, t), expected, rtol=1e-4, atol=1e-5)


def test_jit_cell_equals_algorithm_1_by_hand():
    t_eps = 0.05
    flow = Flow(FlowConfig(pred="x", loss="v", t_eps=t_eps))
    g = torch.Generator().manual_seed(12)
    x = torch.randn(6, 3, 8, 8, generator=g)
    # Algorithm 1 with explicit t, two of them past the (1 - t) guard
    t = torch.tensor([0.05, 0.2, 0.5, 0.9, 0.97, 1.0])
    e = torch.randn(x.shape, generator=g)
    tb = t[:, None, None, None]
    z = tb * x + (1 - tb) * e
    xp = torch.randn(x.shape, generator=g)  # net(z, t, y)
    v = (x - z) / torch.clamp(1 - tb, min=t_eps)
    vp = (xp - z) / torch.clamp(1 - tb, min=t_eps)
    by_hand = (v - vp).pow(2).flatten(1).mean(1)  # mean over pixels, per sample
    got = flow.per_sample_loss(xp, x, e, z, t)
    assert_close(got, by_hand, rtol=1e-5, atol=1e-6)
    assert_close(got.mean(), by_hand.mean(), rtol=1e-5, atol=1e-6)
    # the target is Algorithm 1's v (= x - e where the guard is off)
    assert_close(flow.target(x, e, z, t), v, rtol=1e-5, atol=1e-6)
    assert_close(flow.target(x, e, z, t)[:4], (x - e)[:4], rtol=1e-4, atol=1e-4)


def test_target_carries_the_guard_of_the_conversion():
    """Documented design (Flow.target): the truth goes through the same clamped conversion as the output.

    Inside a guard the target therefore differs from the raw x / eps / v: e.g. eps-prediction with
    x-loss at t = 0.01 < t_eps has target (z - (1 - t) eps) / t_eps = t x / t_eps, not x.
    """
    flow = Flow(FlowConfig(pred="eps", loss="x", t_eps=0.05))
    x, eps, z, t = _batch(seed=19, t=(0.01, 0.5))
    target = flow.target(x, eps, z, t)
    assert_close(target[0], 0.01 * x[0] / 0.05, rtol=1e-5, atol=1e-6)
    assert_close(target[1], x[1], rtol=1e-5, atol=1e-5)


def test_jit_cell_with_draw_equals_algorithm_1():
    flow = Flow(FlowConfig())  # defaults: the JiT cell, mu -0.8, sigma 0.8, t_eps 0.05
    assert (flow.config.pred, flow.config.loss) == (X, V)
    g = torch.Generator().manual_seed(13)
    x = torch.randn(16, 3, 8, 8, generator=g)
    t, e, z = flow.draw(x, generator=torch.Generator().manual_seed(14))
    assert t.shape == (16,) and e.shape == x.shape and z.shape == x.shape
    tb = t[:, None, None, None]
    assert_close(z, tb * x + (1 - tb) * e)
    xp = torch.randn(x.shape, generator=g)
    v = (x - z) / torch.clamp(1 - tb, min=0.05)
    vp = (xp - z) / torch.clamp(1 - tb, min=0.05)
    assert_close(flow.per_sample_loss(xp, x, e, z, t), (v - vp).pow(2).flatten(1).mean(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise_scale", [1.0, 2.0, 0.5])
def test_noise_scale_scales_eps(noise_scale):
    flow = Flow(FlowConfig(noise_scale=noise_scale))
    x = torch.zeros(64, 3, 32, 32)  # 196,608 noise values
    t, eps, z = flow.draw(x, generator=torch.Generator().manual_seed(15))
    assert abs(eps.std().item() / noise_scale - 1) < 0.01
    assert abs(eps.mean().item()) < 0.01 * noise_scale
    assert_close(z, (1 - t)[:, None, None, None] * eps)  # x = 0


def test_draw_uses_the_logit_normal_sampler():
    flow = Flow(FlowConfig(mu=-1.2, sigma=0.6))
    t, _, _ = flow.draw(torch.zeros(200_000, 1), generator=torch.Generator().manual_seed(16))
    logit = torch.logit(t.double())
    assert abs(logit.mean().item() + 1.2) < 0.01
    assert abs(logit.std().item() - 0.6) < 0.01


def test_draw_is_reproducible_with_a_generator():
    flow = Flow(FlowConfig())
    x = torch.randn(4, 3, 8, 8)
    a = flow.draw(x, generator=torch.Generator().manual_seed(17))
    b = flow.draw(x, generator=torch.Generator().manual_seed(17))
    assert all(torch.equal(u, w) for u, w in zip(a, b))


@pytest.mark.parametrize("pred", SPACES, ids=str)
def test_velocity_of_a_true_output_is_x_minus_eps(pred):
    flow = Flow(FlowConfig(pred=pred, loss="v"))
    x, eps, z, t = _batch(seed=18, t=(0.1, 0.25, 0.5, 0.75, 0.9))
    truth = {X: x, EPS: eps, V: x - eps}[pred]
    assert_close(flow.velocity(truth, z, t), x - eps, rtol=1e-4, atol=1e-4)


def test_velocity_uses_the_sampling_guard_not_the_training_guard():
    flow = Flow(FlowConfig(pred="x", loss="v", t_eps=0.05, sample_t_eps=0.2))
    out, z = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    t = torch.tensor([0.9])  # 1 - t = 0.1: clamped to 0.2 by sample_t_eps, untouched by t_eps
    assert_close(flow.velocity(out, z, t), (out - z) / 0.2)
    x, eps = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    assert_close(flow.target(x, eps, noisy_sample(x, eps, t), t), x - eps, rtol=1e-5, atol=1e-5)  # t_eps inactive
