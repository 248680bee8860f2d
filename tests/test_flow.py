"""jitlab.core.flow against paper.md section 2: Table 1 by hand, clamps, the time sampler, FlowConfig (the
nine losses: test_flow_loss.py).

Conventions (paper.md): t = 1 is clean data, t = 0 pure noise; z = t x + (1 - t) eps; v = x - eps.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.testing import assert_close

from jitlab.errors import ConfigError
from jitlab.core.flow import FlowConfig, Space, convert, noisy_sample, sample_t

X, EPS, V = Space.x, Space.eps, Space.v
SPACES = (X, EPS, V)
ALL_PAIRS = list(itertools.product(SPACES, SPACES))


def f64(values, shape=(1, 1, 1)) -> torch.Tensor:
    """A batch of scalar-per-sample values shaped like images: (N, *shape)."""
    return torch.tensor(values, dtype=torch.float64).reshape(-1, *([1] * len(shape))).expand(-1, *shape).clone()


# ----------------------------------------------------------------------------------------------
# Table 1, cell by cell, with small numbers
# ----------------------------------------------------------------------------------------------

# Three samples: t = 0.25, 0.5, 0.75; z = 1.0, -2.0, 0.5; the network output out = 2.0, 1.0, -1.0.
# No clamp is active (t_eps = 0.05 < t, 1 - t). Each expected value is the Table 1 formula written
# out with those numbers (1 - t = 0.75, 0.5, 0.25).
T3 = [0.25, 0.5, 0.75]
Z3 = [1.0, -2.0, 0.5]
OUT3 = [2.0, 1.0, -1.0]
TABLE1_BY_HAND = {
    # (1)(b) x_p = (z - (1-t) e_p) / t
    (EPS, X): [(1.0 - 0.75 * 2.0) / 0.25, (-2.0 - 0.5 * 1.0) / 0.5, (0.5 - 0.25 * -1.0) / 0.75],  # -2, -5, 1
    # (1)(c) x_p = (1-t) v_p + z
    (V, X): [0.75 * 2.0 + 1.0, 0.5 * 1.0 + -2.0, 0.25 * -1.0 + 0.5],  # 2.5, -1.5, 0.25
    # (2)(a) e_p = (z - t x_p) / (1-t)
    (X, EPS): [(1.0 - 0.25 * 2.0) / 0.75, (-2.0 - 0.5 * 1.0) / 0.5, (0.5 - 0.75 * -1.0) / 0.25],  # 2/3, -5, 5
    # (2)(c) e_p = z - t v_p
    (V, EPS): [1.0 - 0.25 * 2.0, -2.0 - 0.5 * 1.0, 0.5 - 0.75 * -1.0],  # 0.5, -2.5, 1.25
    # (3)(a) v_p = (x_p - z) / (1-t)
    (X, V): [(2.0 - 1.0) / 0.75, (1.0 - -2.0) / 0.5, (-1.0 - 0.5) / 0.25],  # 4/3, 6, -6
    # (3)(b) v_p = (z - e_p) / t
    (EPS, V): [(1.0 - 2.0) / 0.25, (-2.0 - 1.0) / 0.5, (0.5 - -1.0) / 0.75],  # -4, -6, 2
}


def test_table1_by_hand_covers_the_six_off_diagonal_cells():
    assert set(TABLE1_BY_HAND) == {(s, d) for s, d in ALL_PAIRS if s != d}


@pytest.mark.parametrize("src,dst", list(TABLE1_BY_HAND), ids=lambda s: str(s))
def test_convert_matches_table1_by_hand(src, dst):
    t = torch.tensor(T3, dtype=torch.float64)
    z, out = f64(Z3, (3, 2, 2)), f64(OUT3, (3, 2, 2))
    got = convert(out, src, dst, z, t, t_eps=0.05)
    assert got.shape == out.shape
    assert_close(got, f64(TABLE1_BY_HAND[(src, dst)], (3, 2, 2)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("space", SPACES, ids=str)
def test_convert_is_identity_on_the_diagonal(space):
    g = torch.Generator().manual_seed(0)
    out, z = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    t = torch.tensor([0.0, 0.01, 0.5, 1.0])  # identity even where a division would be clamped
    assert torch.equal(convert(out, space, space, z, t, t_eps=0.05), out)


def test_noisy_sample_by_hand():
    x, eps, t = f64([2.0, -1.0, 4.0]), f64([1.0, 3.0, -2.0]), torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    expected = f64([0.25 * 2.0 + 0.75 * 1.0, 0.5 * -1.0 + 0.5 * 3.0, 1.0 * 4.0 + 0.0 * -2.0])
    assert_close(noisy_sample(x, eps, t), expected, rtol=1e-12, atol=1e-12)
    # t = 0 is pure noise, t = 1 clean data
    assert torch.equal(noisy_sample(x, eps, torch.zeros(3, dtype=torch.float64)), eps)
    assert torch.equal(noisy_sample(x, eps, torch.ones(3, dtype=torch.float64)), x)


# ----------------------------------------------------------------------------------------------
# Round trips and consistency with the true x / eps / v
# ----------------------------------------------------------------------------------------------

T_INTERIOR = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)  # away from both clamps


@pytest.mark.parametrize("src,dst", ALL_PAIRS, ids=lambda s: str(s))
def test_round_trip_recovers_the_input(src, dst):
    g = torch.Generator().manual_seed(1)
    out = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    z = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    there = convert(out, src, dst, z, T_INTERIOR, t_eps=0.05)
    back = convert(there, dst, src, z, T_INTERIOR, t_eps=0.05)
    assert_close(back, out, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("src,dst", ALL_PAIRS, ids=lambda s: str(s))
def test_true_value_converts_to_true_value(src, dst):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    z = noisy_sample(x, eps, T_INTERIOR)
    truth = {X: x, EPS: eps, V: x - eps}
    assert_close(convert(truth[src], src, dst, z, T_INTERIOR, t_eps=0.05), truth[dst], rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# The t_eps guards
# ----------------------------------------------------------------------------------------------

def _out_z(n: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 2, 3, generator=g, dtype=torch.float64),
            torch.randn(n, 2, 3, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("t_eps", [0.05, 0.25])
def test_clamp_one_minus_t_at_and_near_t_equal_one(t_eps):
    # every t here has 1 - t < t_eps, so (1 - t) must be replaced by t_eps exactly
    t = torch.tensor([1.0 - t_eps / 2, 1.0 - t_eps / 10, 1.0], dtype=torch.float64)
    out, z = _out_z(3)
    tb = t[:, None, None]
    to_v = convert(out, X, V, z, t, t_eps)
    to_eps = convert(out, X, EPS, z, t, t_eps)
    assert torch.isfinite(to_v).all() and torch.isfinite(to_eps).all()
    assert torch.equal(to_v, (out - z) / t_eps)
    assert torch.equal(to_eps, (z - tb * out) / t_eps)
    # at t = 1 exactly: divide by t_eps
    assert torch.equal(to_v[2], (out[2] - z[2]) / t_eps)
    assert torch.equal(to_eps[2], (z[2] - out[2]) / t_eps)


def test_clamp_t_at_and_near_t_equal_zero():
    t_eps = 0.05
    t = torch.tensor([0.0, 0.01, 0.04], dtype=torch.float64)  # t < t_eps: t is replaced by t_eps
    out, z = _out_z(3, seed=4)
    tb = t[:, None, None]
    to_x = convert(out, EPS, X, z, t, t_eps)
    to_v = convert(out, EPS, V, z, t, t_eps)
    assert torch.isfinite(to_x).all() and torch.isfinite(to_v).all()
    assert torch.equal(to_x, (z - (1 - tb) * out) / t_eps)  # only the divisor is clamped
    assert torch.equal(to_v, (z - out) / t_eps)
    assert torch.equal(to_x[0], (z[0] - out[0]) / t_eps)  # t = 0 exactly


def test_clamps_inactive_between_the_guards():
    t_eps = 0.05
    t = torch.tensor([0.06, 0.5, 0.94], dtype=torch.float64)  # t_eps < t < 1 - t_eps
    out, z = _out_z(3, seed=5)
    tb = t[:, None, None]
    assert_close(convert(out, X, V, z, t, t_eps), (out - z) / (1 - tb), rtol=1e-12, atol=0)
    assert_close(convert(out, X, EPS, z, t, t_eps), (z - tb * out) / (1 - tb), rtol=1e-12, atol=0)
    assert_close(convert(out, EPS, X, z, t, t_eps), (z - (1 - tb) * out) / tb, rtol=1e-12, atol=0)
    assert_close(convert(out, EPS, V, z, t, t_eps), (z - out) / tb, rtol=1e-12, atol=0)


@pytest.mark.parametrize("src,dst", list(TABLE1_BY_HAND), ids=lambda s: str(s))
def test_each_guard_touches_only_its_own_divisor(src, dst):
    """Over the whole of [0, 1]: (1 - t) is clamped only where Table 1 divides by it, t likewise."""
    t_eps = 0.05
    t = torch.tensor([0.0, 0.01, 0.04, 0.05, 0.3, 0.95, 0.96, 0.99, 1.0], dtype=torch.float64)
    out, z = _out_z(len(t), seed=7)
    tb = t[:, None, None]
    omt = torch.clamp(1 - tb, min=t_eps)  # divisor (1 - t)
    ts = torch.clamp(tb, min=t_eps)  # divisor t
    expected = {
        (EPS, X): (z - (1 - tb) * out) / ts,
        (V, X): (1 - tb) * out + z,
        (X, EPS): (z - tb * out) / omt,
        (V, EPS): z - tb * out,
        (X, V): (out - z) / omt,
        (EPS, V): (z - out) / ts,
    }[(src, dst)]
    got = convert(out, src, dst, z, t, t_eps)
    assert torch.isfinite(got).all()
    assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_v_conversions_never_divide():
    out, z = _out_z(2, seed=6)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    to_x = convert(out, V, X, z, t, 0.05)
    to_eps = convert(out, V, EPS, z, t, 0.05)
    assert torch.equal(to_x[0], out[0] + z[0]) and torch.equal(to_x[1], z[1])  # x = (1-t) v + z
    assert torch.equal(to_eps[0], z[0]) and torch.equal(to_eps[1], z[1] - out[1])  # eps = z - t v
    # the divisions that use (1 - t) do not clamp t and vice versa: x->v at t = 0 divides by 1
    assert torch.equal(convert(out, X, V, z, t, 0.05)[0], out[0] - z[0])
    assert torch.equal(convert(out, EPS, V, z, t, 0.05)[1], z[1] - out[1])


# ----------------------------------------------------------------------------------------------
# The logit-normal time sampler
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mu,sigma", [(-0.8, 0.8), (0.0, 1.0), (-1.2, 0.8), (0.5, 0.3)])
def test_sample_t_is_logit_normal(mu, sigma):
    g = torch.Generator().manual_seed(7)
    t = sample_t(200_000, mu, sigma, generator=g)
    assert t.shape == (200_000,)
    assert ((t > 0) & (t < 1)).all()
    logit = torch.logit(t.double())
    # standard errors: sigma / sqrt(n) ~ 0.002 for the mean, sigma / sqrt(2 n) ~ 0.0016 for the std
    assert abs(logit.mean().item() - mu) < 0.01
    assert abs(logit.std().item() - sigma) < 0.01


def test_sample_t_is_reproducible_with_a_generator():
    a = sample_t(1000, -0.8, 0.8, generator=torch.Generator().manual_seed(11))
    b = sample_t(1000, -0.8, 0.8, generator=torch.Generator().manual_seed(11))
    c = sample_t(1000, -0.8, 0.8, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_negative_mu_moves_mass_toward_noise():
    shifted = sample_t(200_000, -1.2, 0.8, generator=torch.Generator().manual_seed(8))
    centred = sample_t(200_000, 0.0, 0.8, generator=torch.Generator().manual_seed(8))
    assert shifted.mean() < centred.mean() - 0.1  # t = 0 is noise
    assert abs(centred.mean().item() - 0.5) < 0.005  # symmetric about 1/2 at mu = 0
    # same normal draws: every sample moves toward noise
    assert (shifted < centred).all()


# ----------------------------------------------------------------------------------------------
# FlowConfig validation
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    (dict(sigma=0.0), "flow.sigma"),
    (dict(sigma=-0.5), "flow.sigma"),
    (dict(sigma=math.nan), "flow.sigma"),
    (dict(noise_scale=0.0), "flow.noise_scale"),
    (dict(noise_scale=-1.0), "flow.noise_scale"),
    (dict(t_eps=0.0), "flow.t_eps"),
    (dict(t_eps=1.0), "flow.t_eps"),
    (dict(t_eps=-0.05), "flow.t_eps"),
    (dict(t_eps=1.5), "flow.t_eps"),
    (dict(sample_t_eps=0.0), "flow.sample_t_eps"),
    (dict(sample_t_eps=1.0), "flow.sample_t_eps"),
    (dict(pred="xx"), "flow.pred"),
    (dict(loss="xx"), "flow.loss"),
    (dict(pred="X"), "flow.pred"),
])
def test_flow_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ConfigError) as info:
        FlowConfig(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field", ["pred", "loss"])
def test_unknown_space_message_lists_the_choices(field):
    with pytest.raises(ConfigError) as info:
        FlowConfig(**{field: "xx"})
    message = str(info.value)
    assert "'xx'" in message
    assert "x, eps, v" in message


def test_flow_config_accepts_space_strings_and_members():
    cfg = FlowConfig(pred="eps", loss="x")
    assert cfg.pred is Space.eps and cfg.loss is Space.x
    cfg = FlowConfig(pred=Space.v, loss=Space.eps)
    assert cfg.pred is Space.v and cfg.loss is Space.eps
    defaults = FlowConfig()
    assert (defaults.pred, defaults.loss, defaults.mu, defaults.sigma, defaults.noise_scale, defaults.t_eps) == (
        Space.x, Space.v, -0.8, 0.8, 1.0, 0.05)
    assert str(Space.eps) == "eps"
