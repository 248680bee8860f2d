"""The Figure 2 toy: spiral data, ToyMLP through JiTModule, the metrics and the fig2 runner."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from jitlab.data.toy import SpiralDataModule, column_orthogonal
from jitlab.ema import MultiEMA
from jitlab.errors import ConfigError
from jitlab.flow import FlowConfig
from jitlab.models.mlp import ToyMLP
from jitlab.models.spec import build_net, net_spec
from jitlab.module import JiTModule, OptimConfig
from jitlab.toy import fig2
from jitlab.toy.metrics import chamfer, off_manifold_residual, to_plane


def trainer(root, max_steps: int, **kwargs) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, max_steps=max_steps, default_root_dir=root, logger=False,
                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=max_steps)
    args.update(kwargs)
    return L.Trainer(**args)


# -- data ------------------------------------------------------------------------------------

def test_projection_is_column_orthogonal_and_seeded():
    for dim in (2, 8, 512):
        p = column_orthogonal(dim, seed=3)  # (D, 2)
        assert p.shape == (dim, 2)
        torch.testing.assert_close(p.T @ p, torch.eye(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(column_orthogonal(16, 0), column_orthogonal(16, 0))
    assert not torch.allclose(column_orthogonal(16, 0), column_orthogonal(16, 1))
    with pytest.raises(ConfigError):
        column_orthogonal(1, 0)


def test_batches_have_the_right_shapes_lie_on_the_plane_and_are_unit_scale():
    dm = SpiralDataModule(dim=8, num_points=1024, global_batch_size=64, seed=0)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 8) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.long and (y == 0).all()
    p = dm.projection  # (8, 2)
    torch.testing.assert_close(x, x @ p @ p.T, atol=1e-5, rtol=0)  # on the embedded plane
    s = dm.spiral_2d(20_000)  # (n, 2)
    assert s.shape == (20_000, 2)
    assert ((s.std(0) > 0.7) & (s.std(0) < 1.3)).all(), s.std(0)  # roughly unit scale, not [-1, 1] images
    assert dm.on_after_batch_transfer((x, y), 0)[0] is x  # no image conversion on the device
    val_x, _ = next(iter(dm.val_dataloader()))
    assert val_x.shape == (64, 8)


def test_items_are_deterministic_and_the_batch_splits_per_device():
    a = SpiralDataModule(dim=4, num_points=512, global_batch_size=64, seed=5)
    b = SpiralDataModule(dim=4, num_points=512, global_batch_size=64, seed=5)
    torch.testing.assert_close(a.train_dataset()[17][0], b.train_dataset()[17][0])
    torch.testing.assert_close(next(iter(a.train_dataloader()))[0], next(iter(b.train_dataloader()))[0])
    a.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2, global_rank=1)
    assert a.micro_batch_size() == 16
    x, _ = next(iter(a.train_dataloader()))
    assert x.shape == (16, 4)
    a.trainer = SimpleNamespace(world_size=3, accumulate_grad_batches=1, global_rank=0)
    with pytest.raises(ConfigError):
        a.micro_batch_size()
    assert SpiralDataModule.net_defaults(dim=16) == {"dim": 16}


# -- network ---------------------------------------------------------------------------------

def test_toy_mlp_shape_spec_and_ignores_labels():
    net = ToyMLP(dim=8)
    z, t = torch.randn(5, 8), torch.rand(5)
    out = net(z, t, torch.zeros(5, dtype=torch.long))
    assert out.shape == (5, 8)
    torch.testing.assert_close(out, net(z, t, torch.ones(5, dtype=torch.long)))
    assert net.sample_shape == (8,) and net.num_classes is None
    assert sum(isinstance(m, torch.nn.Linear) for m in net.modules()) == 5
    spec = net_spec(net)
    assert spec["init_args"] == {"dim": 8, "hidden": 256, "layers": 5, "time_features": 64}
    assert isinstance(build_net(spec), ToyMLP)
    with pytest.raises(ConfigError):
        ToyMLP()


def fixed_loss(module: JiTModule, x: torch.Tensor) -> float:
    module.eval()
    with torch.no_grad():
        losses = [module.loss_per_sample(xb, torch.zeros(len(xb), dtype=torch.long),
                                         torch.Generator().manual_seed(i))[0].mean() for i, xb in enumerate(x.split(256))]
    module.train()
    return float(torch.stack(losses).mean())


@pytest.mark.parametrize("pred", ["x", "eps", "v"])
def test_short_training_through_jit_module_lowers_the_loss(tmp_path, pred, one_thread):
    L.seed_everything(0, verbose=False)
    dm = SpiralDataModule(dim=8, num_points=8192, global_batch_size=64)
    module = JiTModule(ToyMLP(dim=8, hidden=128), flow=FlowConfig(pred=pred, loss="v", mu=0.0, sigma=1.0),
                       optim=OptimConfig(lr=1e-3, warmup_steps=0))
    x = dm.embed(dm.spiral_2d(1024))  # (1024, 8)
    before = fixed_loss(module, x)
    trainer(tmp_path, max_steps=200).fit(module, dm)
    after = fixed_loss(module, x)
    assert after < 0.7 * before, f"{pred}-pred: {before:.4f} -> {after:.4f}"


def test_fit_compatible_with_validation_ema_and_cli_net_defaults(tmp_path, one_thread):
    """What `jitlab fit` does with the toy: net args filled from the data, validation, EMA, sample callback."""
    from jsonargparse import Namespace

    from jitlab.callbacks import SampleGrid
    from jitlab.cli import fill_net_from_data

    config = Namespace(data=Namespace(class_path="jitlab.data.toy.SpiralDataModule", init_args=Namespace(dim=8)),
                       model=Namespace(net=Namespace(class_path="jitlab.models.mlp.ToyMLP",
                                                     init_args=Namespace(dim=None))))
    fill_net_from_data(config)
    assert config.model.net.init_args.dim == 8
    L.seed_everything(0, verbose=False)
    module = JiTModule(ToyMLP(dim=8), optim=OptimConfig(lr=1e-3, warmup_steps=2))
    dm = SpiralDataModule(dim=8, num_points=2048, val_size=256, global_batch_size=64)
    t = trainer(tmp_path, max_steps=6, limit_val_batches=2, val_check_interval=3,
                callbacks=[MultiEMA(decays=[0.99]), SampleGrid(num_images=8, steps=2)])
    t.fit(module, dm)
    assert t.global_step == 6 and torch.isfinite(t.callback_metrics["val/loss"])
    samples = module.generate(range(4), None, steps=3, method="euler")
    assert samples.shape == (4, 8) and torch.isfinite(samples).all()


# -- metrics ---------------------------------------------------------------------------------

def test_chamfer_of_identical_and_shifted_sets():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    assert float(chamfer(a, a)) == 0.0
    shift = torch.tensor([0.1, 0.0])
    assert float(chamfer(a, a + shift)) == pytest.approx(0.1, abs=1e-6)
    # hand-computed: a single point against two: (1 + (1 + 3) / 2) / 2 = 1.5
    assert float(chamfer(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0], [-3.0, 0.0]]))) == pytest.approx(1.5)


def test_residual_and_plane_coordinates():
    p = column_orthogonal(6, 0)  # (6, 2)
    s = torch.randn(50, 2)
    x = s @ p.T  # (50, 6) on the plane
    assert float(off_manifold_residual(x, p)) == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close(to_plane(x, p), s, atol=1e-5, rtol=0)
    w = torch.randn(50, 6)
    w = w - (w @ p) @ p.T  # orthogonal to the plane
    w = 3 * w / w.norm(dim=1, keepdim=True)  # norm 3 per point
    assert float(off_manifold_residual(x + w, p)) == pytest.approx(3.0, rel=1e-5)
    torch.testing.assert_close(to_plane(x + w, p), s, atol=1e-5, rtol=0)


# -- the runner ------------------------------------------------------------------------------

def test_runner_writes_reports_and_skips_finished_cells(tmp_path, capsys, one_thread):
    out, cache = tmp_path / "reports", tmp_path / "cache"
    argv = ["--dims", "2", "8", "--seeds", "1", "--steps", "8", "--samples", "64", "--sample-steps", "4",
            "--workers", "1", "--out", str(out), "--cache", str(cache)]
    assert fig2.main(argv) == 0
    first = capsys.readouterr().out
    assert "6 to run" in first and "cell 6/6" in first and "ETA" in first
    with open(out / "fig2.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"D", "pred", "loss", "seed", "metric", "value"} <= set(rows[0])
    assert len(rows) == 2 * 3 * 1 * 2  # dims x preds x seeds x metrics
    assert {r["metric"] for r in rows} == {"chamfer", "residual"}
    md = (out / "fig2.md").read_text()
    assert "jitlab fig2" in md and "Verdict" in md and "| x-pred |" in md
    assert (out / "fig2.png").stat().st_size > 10_000
    assert len(list(cache.glob("*.json"))) == 6
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}

    assert fig2.main(argv[:-4] + ["--workers", "2"] + argv[-4:]) == 0  # nothing to run: no pool is started
    second = capsys.readouterr().out
    assert "6 cached" in second and "0 to run" in second and "cell 1/" not in second
    assert stamps == {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}

    assert fig2.main(argv[:5] + ["--steps", "9"] + argv[7:]) == 0  # other settings: nothing is reused
    assert "0 cached" in capsys.readouterr().out


def test_runner_trains_in_worker_processes(tmp_path, capsys):
    argv = ["--dims", "2", "--preds", "x", "--seeds", "2", "--steps", "4", "--samples", "32", "--sample-steps", "2",
            "--workers", "2", "--out", str(tmp_path / "reports"), "--cache", str(tmp_path / "cache")]
    assert fig2.main(argv) == 0
    assert "cell 2/2" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert (tmp_path / "reports" / "fig2.md").exists()
