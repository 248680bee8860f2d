"""The CFG interval mask equals the release's: ``(t < high) & ((low == 0) | (t > low))`` on the float32 linspace.

jitlab used to guide on the open interval ``t_min < t < t_max``, comparing the float32 network time as a Python
float: an interval from 0 then skipped the first step, and t = 0.1 at 50 steps (float32 0.100000001 from the
float64 grid) was guided where the release's float32 linspace (0.099999994) is not. Each boundary test below
states the old rule's decision as a premise, so it shows what it catches.
"""

from __future__ import annotations

import pytest
import torch

from jitlab.core.flow import Flow, FlowConfig, Space
from jitlab.core.sampling import Sampler, cfg_mask, guided, integrate

N, NULL = 3, 4


def old_rule(t: float, interval: tuple[float, float]) -> bool:
    """The mask jitlab had: the open interval, on the network's float32 time read as a Python float."""
    return interval[0] < t < interval[1]


class Counting(torch.nn.Module):
    """A fake x-predicting net whose output depends on the label; records (t, batch size) of every forward."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[float, int]] = []

    def forward(self, z, t, y):
        self.calls.append((float(t[0]), z.shape[0]))
        return 0.5 * z + (y.float() / 10).view(-1, 1, 1)  # (B, C, D)


def sample_calls(steps: int, interval: tuple[float, float], method: Sampler = Sampler.heun) -> list[tuple[float, int]]:
    net = Counting()
    velocity = guided(net, Flow(FlowConfig(pred=Space.x)), torch.arange(N), NULL, 2.0, interval)
    integrate(velocity, torch.randn(N, 2, 5), steps, method)
    return net.calls


def test_an_interval_from_zero_guides_the_first_step():
    assert cfg_mask(torch.tensor(0.0), (0.0, 1.0)) and not cfg_mask(torch.tensor(0.0), (0.1, 1.0))
    assert not old_rule(0.0, (0.0, 1.0))  # premise: the old mask left the first step unguided
    for method in Sampler:
        calls = sample_calls(25, (0.0, 1.0), method)
        assert calls[0] == (0.0, 2 * N), f"{method}: the first step at t = 0 is not guided"
        assert all(size == 2 * N for _, size in calls)  # (0, 1) with low = 0 guides every evaluation (t < 1)


def test_t_0_1_at_50_steps_is_decided_by_the_float32_comparison():
    release_t = torch.linspace(0, 1, 51)[5]  # float32, as the release's grid holds 0.1
    network_t = float(torch.linspace(0, 1, 51, dtype=torch.float64)[5].float())  # what the network sees
    release_guides = bool(release_t > 0.1)  # the comparison in float32, as torch does it in the release
    assert release_guides is False and old_rule(network_t, (0.1, 1.0))  # premise: the two rules disagree here
    assert bool(cfg_mask(release_t, (0.1, 1.0))) == release_guides
    for method in Sampler:
        at_01 = [size for t, size in sample_calls(50, (0.1, 1.0), method) if abs(t - 0.1) < 1e-6]
        # Heun evaluates t = 0.1 twice (end of step 4, start of step 5), Euler once; none of them guided
        assert at_01 == [N] * (2 if method == Sampler.heun else 1), f"{method}: {at_01}"


def test_high_1_excludes_t_1_and_both_ends_are_open_otherwise():
    assert not cfg_mask(torch.tensor(1.0), (0.1, 1.0)) and not cfg_mask(torch.tensor(1.0), (0.0, 1.0))
    assert cfg_mask(torch.tensor(0.99), (0.1, 1.0))
    grid = torch.linspace(0, 1, 11)  # float32: 0.5 is exact
    assert not cfg_mask(grid[5], (0.0, 0.5)) and cfg_mask(grid[4], (0.0, 0.5))
    assert not cfg_mask(grid[2], (0.2, 0.6)) and cfg_mask(grid[3], (0.2, 0.6))
    assert cfg_mask(torch.tensor([0.0, 0.05, 0.1, 0.5, 1.0]), (0.0, 0.1)).tolist() == [True, True, False, False, False]


def test_heuns_second_evaluation_is_decided_at_its_own_t():
    """4 steps on (0, 0.5): step 1's second evaluation at t = 0.5 is outside while its first (t = 0.25) is inside."""
    calls = sample_calls(4, (0.0, 0.5))
    assert calls == [(0.0, 2 * N), (0.25, 2 * N), (0.25, 2 * N), (0.5, N), (0.5, N), (0.75, N), (0.75, N)]


class Linear(torch.nn.Module):
    """A fixed random v-predicting net with a label embedding, so guidance changes the samples."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(5, 5, generator=g) / 3
        self.emb = torch.randn(NULL + 1, 5, generator=g)

    def forward(self, z, t, y):
        return z @ self.w + self.emb[y][:, None, :] * (1 + t).view(-1, 1, 1)  # (B, C, 5)


def release_mask(t32: torch.Tensor, t: float, interval: tuple[float, float]) -> bool:
    low, high = interval
    return bool((t32 < high) & ((low == 0) | (t32 > low)))


def release_sampler(net, z, steps: int, w: float, interval: tuple[float, float], y, mask=release_mask):
    """The release's loop, written out: two forwards per evaluation, guidance by torch.where on the mask.

    ``mask(t32, t, interval)``: the release's rule on the float32 linspace ``t32`` (default) or another rule.
    """
    ts = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    grid = torch.linspace(0, 1, steps + 1)

    def v(z, i):
        t = ts[i].float().expand(len(z))  # the network's time, as jitlab feeds it
        v_cond, v_uncond = net(z, t, y), net(z, t, torch.full_like(y, NULL))
        scale = torch.where(torch.tensor(mask(grid[i], float(t[0]), interval)), w, 1.0)
        return v_uncond + scale * (v_cond - v_uncond)

    for i in range(steps - 1):
        dt = (ts[i + 1] - ts[i]).item()
        v_t = v(z, i)
        z_euler = z + dt * v_t
        z = z + dt * 0.5 * (v_t + v(z_euler, i + 1))
    return z + (ts[steps] - ts[steps - 1]).item() * v(z, steps - 1)  # last step Euler


@pytest.mark.parametrize("steps,interval", [(50, (0.1, 1.0)), (25, (0.0, 1.0)), (10, (0.1, 0.9)), (7, (0.2, 0.8))])
def test_batched_sampler_with_skipped_branch_equals_the_release_loop(steps, interval):
    net, y = Linear(), torch.arange(N)
    z = torch.randn(N, 2, 5, generator=torch.Generator().manual_seed(1))
    ours = integrate(guided(net, Flow(FlowConfig(pred=Space.v)), y, NULL, 3.0, interval), z, steps)
    torch.testing.assert_close(ours, release_sampler(net, z, steps, 3.0, interval, y), rtol=0, atol=1e-5)
    # where the old rule decides one evaluation differently, the comparison above sees it
    old = release_sampler(net, z, steps, 3.0, interval, y, mask=lambda t32, t, iv: old_rule(t, iv))
    grid, ts = torch.linspace(0, 1, steps + 1), torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    if any(release_mask(grid[i], 0, interval) != old_rule(float(ts[i].float()), interval) for i in range(steps)):
        assert (old - ours).abs().max() > 1e-3
    else:
        assert steps == 7  # the interval without a grid point on its boundary
