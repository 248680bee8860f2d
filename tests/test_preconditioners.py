"""Pre-conditioned targets, the learned skip and RAE's time shift against their defining formulas; one training step
of each switch with a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from jitlab.errors import ConfigError
from tests.conftest import fit_one_step
from jitlab.core.flow import Flow, FlowConfig, Space, convert, noisy_sample, shift_rate, shift_time, time_shift_for
from jitlab.core.models import JiT, LearnedSkip, ToyMLP
from jitlab.core.models.protocol import Backbone, PatchBackbone
from jitlab.core.models.spec import build_net, net_spec
from jitlab.train.module import JiTModule, OptimConfig
from jitlab.core.precond import EDMTarget, LambdaTarget, edm_coefficients, edm_sigma
from jitlab.core.sampling import FinalStep, Sampler, guided, integrate

def batch(n=64, shape=(3, 4, 4), low=0.1, high=0.9, noise_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    eps = noise_scale * torch.randn(n, *shape, generator=g, dtype=torch.float64)
    t = low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)
    return x, eps, t, noisy_sample(x, eps, t)


def solve_2x2(out, z, t, alpha, beta):
    """x and eps from z = t x + (1-t) eps and out = alpha x + beta eps, by torch.linalg.solve per sample."""
    n = z.shape[0]
    a = torch.stack([torch.stack([t, 1 - t], -1), torch.stack([alpha, beta], -1)], -2)  # (N, 2, 2)
    rhs = torch.stack([z.reshape(n, -1), out.reshape(n, -1)], 1)  # (N, 2, D)
    sol = torch.linalg.solve(a, rhs)  # (N, 2, D)
    return sol[:, 0].reshape(z.shape), sol[:, 1].reshape(z.shape)


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 1.0])
def test_lambda_target_round_trip_and_the_2x2_solution(lam):
    x, eps, t, z = batch()
    target = LambdaTarget(lam)
    out = target.truth(x, eps, t)
    assert torch.allclose(out, x - lam * eps)
    x_p, eps_p, v_p = target.spaces(out, z, t, t_eps=0.05)
    assert torch.allclose(x_p, x, atol=1e-10) and torch.allclose(eps_p, eps, atol=1e-10)
    # any output (not only the truth) splits as the linear system says
    other = torch.randn_like(z)
    x_s, eps_s = solve_2x2(other, z, t, torch.ones_like(t), torch.full_like(t, -lam))
    x_p, eps_p, v_p = target.spaces(other, z, t, t_eps=0.05)
    assert torch.allclose(x_p, x_s, atol=1e-9) and torch.allclose(eps_p, eps_s, atol=1e-9)
    assert torch.allclose(v_p, x_s - eps_s, atol=1e-9)


@pytest.mark.parametrize("lam, space", [(0.0, Space.x), (1.0, Space.v)])
def test_lambda_ends_are_table1_columns_with_their_clamp(lam, space):
    x, eps, t, z = batch(low=0.0, high=1.0)  # t up to 1: the x column's 1 - t clamp is exercised
    t[:4] = torch.tensor([0.96, 0.99, 1.0, 0.951])
    flow = Flow(FlowConfig(pred="x", loss="v", precond="lambda", target_lambda=lam))
    out = torch.randn_like(z)
    for dst in Space:
        assert torch.allclose(flow.prediction(out, dst, z, t, 0.05), convert(out, space, dst, z, t, 0.05), atol=1e-10)


def test_edm_coefficients_at_known_sigma():
    sd = 0.5
    c_skip, c_out, c_in = edm_coefficients(torch.tensor([sd, 1e-8, 1e8], dtype=torch.float64), sd)
    assert c_skip[0] == pytest.approx(0.5) and c_out[0] == pytest.approx(sd / math.sqrt(2))
    assert c_in[0] == pytest.approx(1 / (sd * math.sqrt(2)))
    assert c_skip[1] == pytest.approx(1.0) and c_out[1] == pytest.approx(0.0, abs=1e-7)  # no noise: D = x_noisy
    assert c_skip[2] == pytest.approx(0.0, abs=1e-12) and c_out[2] == pytest.approx(sd)  # all noise: D = sd F
    assert edm_sigma(torch.tensor([0.5, 0.8]), 2.0).tolist() == pytest.approx([2.0, 0.5])


@pytest.mark.parametrize("sd, s", [(0.5, 1.0), (0.3, 2.0)])
def test_edm_target_is_edms_denoiser_in_the_flows_coordinates(sd, s):
    x, eps, t, z = batch(noise_scale=s)
    target = EDMTarget(sd, s)
    sigma = edm_sigma(t, s)  # (N,)
    c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1) for c in edm_coefficients(sigma, sd))
    x_noisy = z / t.reshape(-1, 1, 1, 1)  # EDM's x + sigma n with n = eps / s
    assert torch.allclose(x_noisy, x + sigma.reshape(-1, 1, 1, 1) * eps / s)
    f = torch.randn_like(z)
    x_p, eps_p, v_p = target.spaces(f, z, t, t_eps=0.05)
    assert torch.allclose(x_p, c_skip * x_noisy + c_out * f, atol=1e-10)  # D = c_skip x_noisy + c_out F
    assert torch.allclose(noisy_sample(x_p, eps_p, t), z, atol=1e-10)  # the split is consistent with z
    assert torch.allclose(v_p, x_p - eps_p)
    assert torch.allclose(target.truth(x, eps, t), (x - c_skip * x_noisy) / c_out, atol=1e-9)  # EDM's F target
    assert torch.allclose(target.input_scale(t).reshape(-1, 1, 1, 1) * z, c_in * x_noisy, atol=1e-10)


def test_edm_target_has_unit_variance_when_x_has_sigma_data():
    sd, s = 0.5, 1.0
    g = torch.Generator().manual_seed(1)
    x, eps = sd * torch.randn(20000, 8, generator=g), s * torch.randn(20000, 8, generator=g)
    for t in (0.05, 0.5, 0.95):
        f = EDMTarget(sd, s).truth(x, eps, torch.full((20000,), t))
        assert f.var().item() == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("cfg", [dict(precond="lambda", target_lambda=0.5), dict(precond="edm"),
                                 dict(precond="lambda", target_lambda=0.0), dict(time_shift=3.0)])
@pytest.mark.parametrize("loss", ["x", "eps", "v"])
def test_a_perfect_output_has_zero_loss_in_every_loss_space(cfg, loss):
    flow = Flow(FlowConfig(pred="x", loss=loss, **cfg))
    x, eps, t, z = batch(low=0.0, high=1.0)
    t[:3] = torch.tensor([0.97, 0.999, 0.02])
    z = noisy_sample(x, eps, t)
    truth = flow.precond.truth(x, eps, t) if flow.precond is not None else x
    assert flow.per_sample_loss(truth, x, eps, z, t).max().item() < 1e-18
    assert flow.per_sample_loss(truth + 0.1, x, eps, z, t).min().item() > 0


@pytest.mark.parametrize("kwargs, field", [
    (dict(precond="pre"), "flow.precond"),
    (dict(precond="edm", pred="v"), "flow.pred"),
    (dict(precond="lambda"), "flow.target_lambda"),
    (dict(precond="lambda", target_lambda=1.5), "flow.target_lambda"),
    (dict(target_lambda=0.5), "flow.target_lambda"),
    (dict(precond="edm", sigma_data=0.0), "flow.sigma_data"),
    (dict(time_shift=0.0), "flow.time_shift"),
    (dict(time_shift=float("inf")), "flow.time_shift"),
])
def test_bad_flow_fields_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as error:
        FlowConfig(**kwargs)
    assert error.value.field == field


def test_time_shift_is_rae_s_formula_and_a_logit_normal_mu_shift():
    n = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    mu, sigma, alpha = -0.8, 0.8, time_shift_for(3 * 256 * 256)
    assert alpha == pytest.approx(math.sqrt(48))  # RAE: sqrt(data dimension / 4096)
    assert time_shift_for(3072) == pytest.approx(math.sqrt(0.75))
    t = torch.sigmoid(mu + sigma * n)
    tau = 1 - t  # SD3/RAE's noise level: alpha tau / (1 + (alpha - 1) tau)
    assert torch.allclose(1 - shift_time(t, alpha), alpha * tau / (1 + (alpha - 1) * tau), atol=1e-6)
    assert torch.allclose(shift_time(t, alpha), torch.sigmoid(mu - math.log(alpha) + sigma * n), atol=1e-6)
    ends = shift_time(torch.tensor([0.0, 1.0]), alpha)
    assert ends.tolist() == [0.0, 1.0]
    h = 1e-6
    grid = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    fd = (shift_time(grid + h, alpha) - shift_time(grid - h, alpha)) / (2 * h)
    assert torch.allclose(shift_rate(grid, alpha), fd, rtol=1e-6)
    # the flow's sampled t: the same draw, shifted
    x = torch.zeros(500, 3)
    plain = Flow(FlowConfig(mu=mu, sigma=sigma)).draw(x, torch.Generator().manual_seed(3))[0]
    shifted = Flow(FlowConfig(mu=mu, sigma=sigma, time_shift=alpha)).draw(x, torch.Generator().manual_seed(3))[0]
    assert torch.allclose(shifted, shift_time(plain, alpha)) and (shifted < plain).all()


def test_the_sampler_asks_the_shifted_grid_and_lands_on_x():
    seen = []
    x_true = torch.randn(2, 5)

    def net(z, t, y):  # a perfect x-predictor of one fixed target
        seen.append(t[0].item())
        return x_true.clone()

    alpha = 2.0
    flow = Flow(FlowConfig(pred="x", loss="v", time_shift=alpha))
    y = torch.zeros(2, dtype=torch.long)
    z0 = torch.randn(2, 5)
    out = integrate(guided(net, flow, y, None), z0, 8, Sampler.euler, FinalStep.x, denoise=guided(net, flow, y, None,
                                                                                                    space=Space.x))
    grid = shift_time(torch.linspace(0, 1, 9, dtype=torch.float64), alpha).float()
    assert seen == pytest.approx(grid[:8].tolist(), abs=1e-6)  # the network sees the shifted times
    assert torch.allclose(out, x_true)
    # dz/ds = v(shift(s)) dshift/ds
    step = guided(lambda z, t, y: torch.ones_like(z), flow, y, None)
    s = torch.full((2,), 0.3)
    v = flow.velocity(torch.ones(2, 5), z0, shift_time(s, alpha)) * shift_rate(s, alpha)[:, None]
    assert torch.allclose(step(z0, s, s[0]), v)


def test_the_learned_skip_adds_c_of_t_times_z_and_keeps_the_contract():
    inner = {"class_path": "jitlab.core.models.JiT",
             "init_args": dict(patch_size=4, hidden_size=48, depth=1, num_heads=3, bottleneck_dim=None,
                               in_context_len=0)}
    net = LearnedSkip(inner, img_size=16, num_classes=4)
    assert isinstance(net, PatchBackbone) and net.noise_widths() == {"hidden_size": 48} and net.patch_dim == 48
    assert net.init_args["net"]["init_args"]["img_size"] == 16  # what the data decide reaches the wrapped net
    z, t, y = torch.randn(3, 3, 16, 16), torch.rand(3), torch.tensor([0, 1, 4])
    assert torch.equal(net(z, t, y), net.net(z, t, y))  # c = 0 at the start
    torch.nn.init.normal_(net.skip[-1].weight)
    c = net.c(t)  # (N,)
    assert c.abs().min() > 0
    assert torch.allclose(net(z, t, y), net.net(z, t, y) + c[:, None, None, None] * z, atol=1e-6)
    rebuilt = build_net(net_spec(net))
    assert isinstance(rebuilt, LearnedSkip) and isinstance(rebuilt.net, JiT)
    toy = LearnedSkip({"class_path": "jitlab.core.models.ToyMLP", "init_args": {"hidden": 8, "layers": 2}}, dim=6)
    assert isinstance(toy, Backbone) and not isinstance(toy, PatchBackbone) and isinstance(toy.net, ToyMLP)
    with pytest.raises(ConfigError, match="model.net.init_args.net.init_args.img_size"):
        LearnedSkip({**inner, "init_args": {**inner["init_args"], "img_size": 8}}, img_size=16, num_classes=4)


@pytest.mark.parametrize("flow, skip", [(dict(pred="x", precond="lambda", target_lambda=0.5), False),
                                        (dict(pred="x", precond="edm"), False),
                                        (dict(pred="x", time_shift=0.866), False),
                                        (dict(pred="v"), True)])
def test_one_training_step_of_each_switch(tmp_path, flow, skip):
    torch.manual_seed(0)
    inner = {"class_path": "jitlab.core.models.JiT",
             "init_args": dict(patch_size=4, hidden_size=48, depth=1, num_heads=3, bottleneck_dim=None,
                               in_context_len=0, attn_impl="sdpa")}
    net = LearnedSkip(inner, img_size=16, num_classes=10) if skip else build_net(
        {**inner, "init_args": {**inner["init_args"], "img_size": 16, "num_classes": 10}})
    module = JiTModule(net, flow=FlowConfig(loss="v", **flow), optim=OptimConfig(lr=1e-2, warmup_steps=0))
    before = [p.detach().clone() for p in module.net.parameters()]
    trainer = fit_one_step(module, tmp_path)
    assert trainer.global_step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, module.net.parameters()))
    if skip:
        assert module.net.skip[-1].weight.abs().sum() > 0  # the skip's coefficient learns
    samples = module.generate([0, 1], torch.tensor([0, 3]), steps=2, cfg_scale=1.5, seed=0,
                              final_step=FinalStep.x)
    assert samples.shape == (2, 3, 16, 16) and torch.isfinite(samples).all()


class Recorder(torch.nn.Module):
    """Records what the network is fed; outputs zeros."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, z, t, y):
        self.seen.append(z.detach().clone())
        return torch.zeros_like(z)


@pytest.mark.parametrize("precond", ["edm", "lambda", "none"])
def test_edm_feeds_the_network_c_in_z_in_sampling_and_training(precond):
    cfg = FlowConfig(pred="x", loss="v", precond=precond, noise_scale=2.0, sigma_data=0.5,
                     target_lambda=0.5 if precond == "lambda" else None)
    flow = Flow(cfg)
    z = torch.randn(4, 3, 4, 4, dtype=torch.float64)  # (N, C, H, W)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)  # (N,)
    net = Recorder()
    guided(net, flow, torch.zeros(4, dtype=torch.long), None)(z, t, t[:1])
    scale = (1 / torch.sqrt(4.0 * (1 - t) ** 2 + 0.25 * t ** 2) if precond == "edm"
             else torch.ones(4, dtype=torch.float64))
    assert torch.allclose(net.seen[-1], z * scale.view(-1, 1, 1, 1), atol=1e-12)
    x_noisy = z / t.view(-1, 1, 1, 1)  # EDM's x + sigma n
    if precond == "edm":
        _, _, c_in = edm_coefficients(edm_sigma(t, 2.0), 0.5)
        assert torch.allclose(net.seen[-1], c_in.view(-1, 1, 1, 1) * x_noisy, atol=1e-12)
