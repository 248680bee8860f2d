"""Samplers, CFG with interval, per-index noise, and `jitlab sample` on 1 vs 2 processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from jitlab.core.flow import Flow, FlowConfig, Space
from jitlab.core.sampling import Sampler, guided, initial_noise, integrate, nfe


def test_euler_and_heun_on_known_odes():
    z0 = torch.zeros(3, 2)
    # dz/dt = t: exact z(1) = 1/2; Euler on n steps gives (n-1)/(2n); Heun (last step Euler) is exact but the last step
    steps = 10
    euler = integrate(lambda z, t, _: t[:, None].expand_as(z), z0, steps, Sampler.euler)
    assert torch.allclose(euler, torch.full_like(z0, (steps - 1) / (2 * steps)))
    heun = integrate(lambda z, t, _: t[:, None].expand_as(z), z0, steps, Sampler.heun)
    exact_but_last = 0.5 * (0.9 ** 2) + 0.9 * 0.1  # trapezoid up to 0.9 is exact; the last Euler step uses t=0.9
    assert torch.allclose(heun, torch.full_like(z0, exact_but_last))
    # dz/dt = -z: Heun is far closer to exp(-1) than Euler
    one = torch.ones(1, 1)
    e = integrate(lambda z, t, _: -z, one, 20, Sampler.euler).item()
    h = integrate(lambda z, t, _: -z, one, 20, Sampler.heun).item()
    assert abs(h - np.exp(-1)) < abs(e - np.exp(-1)) / 5


@pytest.mark.parametrize("method,steps", [(Sampler.euler, 7), (Sampler.heun, 7), (Sampler.heun, 1)])
def test_number_of_evaluations_and_time_grid(method, steps):
    seen, seen_grid = [], []

    def velocity(z, t, t_grid):
        seen.append(float(t[0]))
        seen_grid.append(t_grid)
        return torch.zeros_like(z)

    integrate(velocity, torch.zeros(2, 1), steps, method)
    assert len(seen) == nfe(method, steps)
    grid = np.linspace(0, 1, steps + 1)
    assert all(np.isclose(s, grid).any() for s in seen)
    assert seen[0] == 0.0 and max(seen) < 1.0
    # the network's t from the float64 grid; the CFG decision's t is the release's float32 linspace at the same step
    release = torch.linspace(0, 1, steps + 1)
    for t, t_grid in zip(seen, seen_grid):
        assert t_grid.dtype == torch.float32 and t_grid.ndim == 0
        assert t_grid == release[int(np.argmin(np.abs(grid - t)))]


class Recorder(torch.nn.Module):
    """A fake x-predicting net whose output depends on the label, recording each call's batch."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.num_classes = num_classes
        self.calls = []

    def forward(self, z, t, y):
        self.calls.append((z.shape[0], y.clone()))
        return z * 0.5 + y.float().view(-1, 1, 1, 1) / 10  # (N, C, H, W)


def test_cfg_is_one_batched_forward_inside_the_interval_and_guides_the_full_velocity():
    net, flow = Recorder(), Flow(FlowConfig(pred=Space.x))
    y = torch.tensor([1, 2, 3])
    z = torch.randn(3, 3, 4, 4)
    velocity = guided(net, flow, y, null_class=5, cfg_scale=3.0, cfg_interval=(0.1, 0.9))
    t_in = torch.full((3,), 0.5)
    v = velocity(z, t_in, t_in[0])
    assert len(net.calls) == 1 and net.calls[0][0] == 6
    assert net.calls[0][1].tolist() == [1, 2, 3, 5, 5, 5]
    v_cond = flow.velocity(net(z, t_in, y), z, t_in)
    v_unc = flow.velocity(net(z, t_in, torch.full_like(y, 5)), z, t_in)
    torch.testing.assert_close(v, v_unc + 3.0 * (v_cond - v_unc))  # every channel guided
    net.calls.clear()
    for t_out in (0.05, 0.95):
        v = velocity(z, torch.full((3,), t_out), torch.tensor(t_out))
        assert net.calls[-1][0] == 3 and net.calls[-1][1].tolist() == [1, 2, 3]
        torch.testing.assert_close(v, flow.velocity(net(z, torch.full((3,), t_out), y), z, torch.full((3,), t_out)))
    net.calls.clear()
    guided(net, flow, y, 5, cfg_scale=1.0)(z, t_in, t_in[0])
    assert net.calls[0][0] == 3  # scale 1: no unconditional branch at all


def test_initial_noise_depends_only_on_index_and_seed():
    a = initial_noise([0, 1, 2, 3], (3, 8, 8), seed=7, noise_scale=1.0)
    b = initial_noise([2, 3], (3, 8, 8), seed=7, noise_scale=1.0)
    torch.testing.assert_close(a[2:], b)
    c = initial_noise([0], (3, 8, 8), seed=8, noise_scale=1.0)
    assert not torch.allclose(a[0], c[0])
    assert not torch.allclose(a[0], a[1])
    d = initial_noise([0, 1, 2, 3], (3, 8, 8), seed=7, noise_scale=2.0)
    torch.testing.assert_close(d, 2 * a)
    big = initial_noise(range(64), (3, 16, 16), seed=0, noise_scale=1.0)
    assert abs(big.std().item() - 1) < 0.02 and abs(big.mean().item()) < 0.02


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A few training steps of a tiny JiT with two EMAs, saved by Lightning."""
    from jitlab.core.data import EmbeddedDataModule
    from jitlab.train.ema import MultiEMA
    from jitlab.train.module import JiTModule, OptimConfig
    from tests.conftest import tiny_net

    root = tmp_path_factory.mktemp("ckpt")
    L.seed_everything(0)
    module = JiTModule(tiny_net(), optim=OptimConfig(lr=1e-2, warmup_steps=0))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=5, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=root,
                        callbacks=[MultiEMA(decays=[0.9, 0.5])], enable_checkpointing=False)
    trainer.fit(module, EmbeddedDataModule(resolution=16, global_batch_size=8, train_size=64))
    path = root / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_sample_on_one_and_two_processes_gives_identical_images(tiny_checkpoint, tmp_path):
    """`jitlab sample` vs `torchrun --nproc_per_node 2 -m jitlab.commands.sample` (gloo, CPU)."""
    bin_dir = Path(sys.executable).parent
    common = [str(tiny_checkpoint), "--num_images", "9", "--steps", "3", "--batch_size", "4", "--device", "cpu",
              "--cfg", "2.0"]
    one = subprocess.run([str(bin_dir / "jitlab"), "sample", *common, "--npz", str(tmp_path / "one.npz")],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", "29517", "-m",
                          "jitlab.commands.sample", *common, "--npz", str(tmp_path / "two.npz")],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert a["images"].shape == (9, 16, 16, 3) and a["images"].dtype == np.uint8
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])
    assert a["labels"].tolist() == [i % 10 for i in range(9)]
    assert len({a["images"][i].tobytes() for i in range(9)}) == 9


def test_sample_selects_ema_and_writes_png(tiny_checkpoint, tmp_path):
    from jitlab.commands.sample import main

    outs = {}
    for ema in ("0", "1", "none"):
        path = tmp_path / f"{ema}.npz"
        assert main([str(tiny_checkpoint), "--num_images", "4", "--steps", "2", "--ema", ema, "--npz", str(path),
                     "--png", str(tmp_path / f"{ema}.png")]) == 0
        outs[ema] = np.load(path)["images"]
        assert (tmp_path / f"{ema}.png").stat().st_size > 0
    assert not np.array_equal(outs["0"], outs["1"]) and not np.array_equal(outs["0"], outs["none"])


def test_a_checkpoint_naming_a_class_before_the_layer_folders_samples_as_today(tiny_checkpoint, tmp_path):
    """A checkpoint saved before jitlab's modules moved into layer folders names ``jitlab.models.jit.JiT``."""
    from jitlab.commands.sample import main

    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["net"]["class_path"] == "jitlab.core.models.jit.JiT"
    ckpt["hyper_parameters"]["net"]["class_path"] = "jitlab.models.jit.JiT"
    torch.save(ckpt, tmp_path / "old.ckpt")
    images = {}
    for name, path in (("today", tiny_checkpoint), ("old", tmp_path / "old.ckpt")):
        assert main([str(path), "--num_images", "2", "--steps", "2", "--npz", str(tmp_path / f"{name}.npz"),
                     "--device", "cpu"]) == 0
        images[name] = np.load(tmp_path / f"{name}.npz")["images"]
    assert np.array_equal(images["today"], images["old"])


# -- the final step ----------------------------------------------------------------------------------------------

def clamp_residual(steps: int, method: Sampler, t_eps: float = 0.05) -> float:
    """The share b of eps left in z_1 = (1 - b) x + b eps by a perfect x-denoiser, by the scalar recursion.

    On z = (1 - b) x + b eps the perfect velocity is (x - z) / max(1 - t, t_eps) = b / max(1 - t, t_eps) (x - eps),
    so each Euler substep multiplies b by 1 - dt / max(1 - t, t_eps); Heun averages two such slopes.
    """
    b, dt = 1.0, 1.0 / steps
    for i in range(steps):
        t = i / steps
        slope = b / max(1 - t, t_eps)
        if method == Sampler.heun and i < steps - 1:
            b_euler = b - dt * slope
            b = b - dt * 0.5 * (slope + b_euler / max(1 - t - dt, t_eps))
        else:
            b = b - dt * slope
    return b


class Oracle(torch.nn.Module):
    """A perfect x-denoiser for one fixed target: it returns the true x whatever z, t and the label."""

    def __init__(self, x):
        super().__init__()
        self.x = x

    def forward(self, z, t, y):
        return self.x.expand_as(z)  # (N, ...)


@pytest.mark.parametrize("steps", [13, 25, 50])
@pytest.mark.parametrize("method", list(Sampler))
def test_final_step_x_lands_on_a_perfect_denoisers_x_while_euler_leaves_the_clamp_residual(steps, method):
    from jitlab.core.sampling import FinalStep

    g = torch.Generator().manual_seed(steps)
    x, eps = torch.randn(1, 3, 4, 4, generator=g).clamp(-1, 1), torch.randn(6, 3, 4, 4, generator=g)
    flow, y = Flow(FlowConfig(pred=Space.x, sample_t_eps=0.05)), torch.arange(6) % 3
    for cfg_scale, interval in ((1.0, (0.1, 1.0)), (3.0, (0.0, 1.0))):  # guidance of equal branches changes nothing
        v = guided(Oracle(x), flow, y, 3, cfg_scale, interval)
        denoise = guided(Oracle(x), flow, y, 3, cfg_scale, interval, space=Space.x)
        exact = integrate(v, eps, steps, method, FinalStep.x, denoise)
        torch.testing.assert_close(exact, x.expand_as(eps), rtol=0, atol=1e-6)
        release = integrate(v, eps, steps, method, FinalStep.euler, denoise)
        b = clamp_residual(steps, method)
        torch.testing.assert_close(release, (1 - b) * x + b * eps, rtol=0, atol=1e-5)
    # the numbers the sampling docstring states for Heun: none at 13 steps, 0.9% at 25, 1.7% at 50
    if method == Sampler.heun:
        assert abs(b - {13: 0.0, 25: 0.009, 50: 0.017}[steps]) < 5e-4, b
    with pytest.raises(ValueError, match="denoise"):
        integrate(v, eps, steps, method, FinalStep.x)


def test_generate_in_bf16_runs_on_cpu_and_stays_close_to_fp32(tiny_checkpoint):
    from jitlab.train.checkpoint import load_module

    module = load_module(tiny_checkpoint, ema=None)
    labels = torch.arange(4) % 10
    for p in module.net.parameters():  # a trained-looking net: class and time change the output
        p.data.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    fp32 = module.generate(range(4), labels, steps=3, cfg_scale=2.0, cfg_interval=(0.0, 1.0), precision="fp32")
    bf16 = module.generate(range(4), labels, steps=3, cfg_scale=2.0, cfg_interval=(0.0, 1.0), precision="bf16")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert not torch.equal(fp32, bf16)  # the forward ran in bf16
    assert (fp32 - bf16).abs().max() < 0.1 * fp32.abs().max()


def test_sample_records_final_step_and_precision_in_the_npz(tiny_checkpoint, tmp_path):
    import json

    from jitlab.commands.sample import main

    images = {}
    for final_step, precision in (("euler", "fp32"), ("x", "fp32"), ("x", "bf16")):
        path = tmp_path / f"{final_step}-{precision}.npz"
        assert main([str(tiny_checkpoint), "--num_images", "3", "--steps", "3", "--final_step", final_step,
                     "--precision", precision, "--npz", str(path), "--device", "cpu"]) == 0
        with np.load(path) as archive:
            meta = json.loads(str(archive["meta"]))
            images[final_step, precision] = archive["images"]
        assert meta["final_step"] == final_step and meta["precision"] == precision and meta["nfe"] == 5
    assert images["euler", "fp32"].shape == images["x", "bf16"].shape == (3, 16, 16, 3)
