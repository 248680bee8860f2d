"""The Figure 2 toy: spiral data, ToyMLP through JiTModule, the metrics and the fig2 runner."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from jitlab.core.data.toy import SpiralDataModule, column_orthogonal
from jitlab.train.ema import MultiEMA
from jitlab.errors import ConfigError
from jitlab.core.flow import FlowConfig
from jitlab.core.models.mlp import ToyMLP
from jitlab.core.models.spec import build_net, net_spec
from jitlab.train.module import JiTModule, OptimConfig
from jitlab.commands import fig2
from jitlab.experiments.toy import probe
from jitlab.experiments.toy.fig2 import settings_of
from jitlab.experiments.toy.metrics import chamfer, off_manifold_residual, to_plane
from jitlab.experiments.toy.stats import summarise
from jitlab.experiments.toy.verdict import RECOVERED_FRACTION, verdict


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

    from jitlab.train.callbacks import SampleGrid
    from jitlab.score.fitconfig import fill_net_from_data

    config = Namespace(data=Namespace(class_path="jitlab.core.data.toy.SpiralDataModule", init_args=Namespace(dim=8)),
                       model=Namespace(net=Namespace(class_path="jitlab.core.models.mlp.ToyMLP",
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
    argv = ["--dims", "2", "8", "--seeds", "1", "--steps", "8", "--samples", "64", "--sample_steps", "4",
            "--workers", "1", "--out", str(out), "--cache", str(cache)]
    assert fig2.main(argv) == 0
    first = capsys.readouterr().out
    assert "6 to run" in first and "cell 6/6" in first and "ETA" in first
    with open(out / "fig2.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"D", "pred", "loss", "train_seed", "metric", "value"} <= set(rows[0])
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
    third = capsys.readouterr().out
    assert "0 cached" in third and "probe" not in third  # an explicit --steps N skips the length probe
    assert not list(cache.glob("probe-*.json"))


def test_runner_trains_in_worker_processes(tmp_path, capsys):
    argv = ["--dims", "2", "--preds", "x", "--seeds", "2", "--steps", "4", "--samples", "32", "--sample_steps", "2",
            "--workers", "2", "--out", str(tmp_path / "reports"), "--cache", str(tmp_path / "cache")]
    assert fig2.main(argv) == 0
    assert "cell 2/2" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert (tmp_path / "reports" / "fig2.md").exists()


def test_runner_auto_length_probes_once_and_caches_it(tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.setattr(probe, "WINDOW", 4)
    monkeypatch.setattr(probe, "MAX_STEPS", 12)
    out, cache = tmp_path / "reports", tmp_path / "cache"
    argv = ["--dims", "2", "8", "16", "--preds", "x", "--seeds", "2", "--seeds_mid", "1", "--samples", "32",
            "--sample_steps", "2", "--workers", "1", "--out", str(out), "--cache", str(cache)]  # --steps auto: default
    assert fig2.main(argv) == 0
    first = capsys.readouterr().out
    assert "length probe (D=2 x-pred" in first
    (found,) = cache.glob("probe-*.json")
    result = json.loads(found.read_text())
    steps = result["steps"]
    assert 8 <= steps <= 12 and steps % 4 == 0 and len(result["window_means"]) == steps // 4
    assert f"trainings of {steps} steps" in first
    assert "5 trainings" in first  # D=2 and D=16 (the ends) 2 seeds each, D=8 1 seed
    cells = [json.loads(p.read_text()) for p in cache.glob("D*.json")]
    assert {c["settings"]["steps"] for c in cells} == {steps}
    assert {(c["cell"]["D"], c["cell"]["seed"]) for c in cells} == {(2, 0), (2, 1), (8, 0), (16, 0), (16, 1)}
    md = (out / "fig2.md").read_text()
    assert "Training length (`--steps auto`" in md and "cap 12 steps" in md and "Budget" in md

    assert fig2.main(argv) == 0  # the probe and the cells are cached
    second = capsys.readouterr().out
    assert f"length probe cached in {found}: {steps} steps" in second and "0 to run" in second


def test_steps_and_seeds_flags_fail_at_parse_time(capsys):
    for bad in (["--steps", "many"], ["--steps", "0"], ["--seeds_mid", "0"]):
        with pytest.raises(SystemExit):
            fig2.parse_args(bad)
        err = capsys.readouterr().err
        assert "jitlab fig2: error:" in err and bad[0] in err
    assert fig2.parse_args([]).steps == "auto" and fig2.parse_args(["--steps", "300"]).steps == 300


# -- the length probe ---------------------------------------------------------------------------

def test_plateau_step_stops_where_the_window_mean_stops_falling_by_the_fraction():
    w = 10
    falling = [1.0 * 0.9 ** (i // w) for i in range(6 * w)]  # every window 10% below the previous one
    assert probe.plateau_step(falling, w, 0.02) is None
    flat_after_3 = [max(0.9 ** (i // w), 0.9 ** 2) for i in range(6 * w)]  # windows 1, 0.9, 0.81, 0.81, ...
    assert probe.plateau_step(flat_after_3, w, 0.02) == 4 * w
    small_gain = [1.0] * w + [0.97] * w + [0.96] * w  # 3% then 1.03%: stopped improving by 2% at window 3
    assert probe.plateau_step(small_gain, w, 0.02) == 3 * w
    assert probe.plateau_step(small_gain, w, 0.005) is None
    assert probe.plateau_step(small_gain[: w + 5], w, 0.02) is None  # one complete window: nothing to compare
    assert probe.window_means([1, 2, 3, 4, 5], 2) == [1.5, 3.5]


def test_run_probe_stops_the_training_where_its_recorded_loss_plateaus(one_thread):
    settings = settings_of(fig2.parse_args(["--samples", "16"]), steps=1)
    result = probe.run_probe("v", settings, window=3, fraction=0.5, max_steps=30)  # 50%: stops after two windows
    assert result["converged"] and result["steps"] == 6 and len(result["window_means"]) == 2
    assert result["probe"]["settings"]["schedule"] == "constant" and result["probe"]["settings"]["steps"] == 30
    capped = probe.run_probe("v", settings, window=3, fraction=-10.0, max_steps=9)  # never "stopped improving"
    assert not capped["converged"] and capped["steps"] == 9 and len(capped["window_means"]) == 3


# -- the verdict: the paper's claims as rules, fed numbers where they hold and where they do not ----------------

GAP = 1.0  # arm gap: the recovery threshold is RECOVERED_FRACTION * GAP


def fake_results(chamfer_means: dict, residual_means: dict | None = None, seeds: int = 3,
                 spread: float = 0.002) -> list[dict]:
    """Results whose seeds scatter by +-spread around the given (D, pred) means."""
    rows = []
    for (d, p), c in chamfer_means.items():
        r = (residual_means or {}).get((d, p), 0.0)
        for s in range(seeds):
            jitter = spread * (s - (seeds - 1) / 2)
            rows.append({"cell": {"D": d, "pred": p, "loss": "v", "seed": s},
                         "metrics": {"chamfer": c + jitter, "residual": r + jitter}})
    return rows


PAPER_LIKE = {(2, "x"): 0.03, (2, "eps"): 0.075, (2, "v"): 0.05,  # all below 0.1, but 2.5x apart
              (512, "x"): 0.03, (512, "eps"): 20.0, (512, "v"): 0.2}
RESIDUALS = {(512, "x"): 0.3, (512, "eps"): 900.0, (512, "v"): 19.0}


def judge(chamfers: dict, residuals: dict = RESIDUALS, **kwargs) -> list[str]:
    return verdict(summarise(fake_results(chamfers, residuals, **kwargs)), [2, 512], ["x", "eps", "v"], GAP)


def claim(lines: list[str], d: int) -> str:
    (line,) = [ln for ln in lines if ln.startswith(f"**Claim at D={d}**")]
    return line


def test_verdict_reproduces_when_every_space_recovers_at_d2_even_if_more_than_2x_apart():
    lines = judge(PAPER_LIKE)
    assert "reproduces (3 seeds per cell)" in claim(lines, 2)
    assert "reproduces (3 seeds per cell)" in claim(lines, 512)
    spread = [ln for ln in lines if "spread (information, not a rule)" in ln]
    assert spread and "2.5x" in spread[0] and "more than 2x apart" in spread[0]
    eps = [ln for ln in lines if ln.startswith("**D=2: eps-pred recovers the spiral**")][0]
    assert "YES" in eps and "< 0.1" in eps and "margin 0.025" in eps and "rests on 3 training seeds" in eps
    assert RECOVERED_FRACTION == 0.1


def test_verdict_says_so_when_eps_does_not_recover_at_d2():
    lines = judge({**PAPER_LIKE, (2, "eps"): 0.12})
    assert "does NOT reproduce" in claim(lines, 2) and "eps-pred does not recover the spiral" in claim(lines, 2)
    eps = [ln for ln in lines if ln.startswith("**D=2: eps-pred recovers the spiral**")][0]
    assert "NO" in eps and "not below the threshold 0.1: margin 0.02" in eps
    assert "reproduces (3 seeds per cell)" in claim(lines, 512)  # the other claim is judged on its own


def test_verdict_says_so_when_x_is_not_far_below_at_d512():
    lines = judge({**PAPER_LIKE, (512, "v"): 0.06})  # only 2x above x-pred (and still recovering)
    high = claim(lines, 512)
    assert "does NOT reproduce" in high and "x-pred's Chamfer is not far below v-pred's" in high
    assert "v-pred still recovers the spiral" in high and "eps-pred" not in high
    v = [ln for ln in lines if ln.startswith("**D=512: x-pred's Chamfer far below v-pred's**")][0]
    assert "NO" in v and "2x (need >= 3x)" in v
    # 4x apart in the means, but seeds scattered so widely that their ranges overlap: not "far"
    lines = judge({**PAPER_LIKE, (512, "v"): 0.12}, spread=0.05)
    assert "not far below v-pred's" in claim(lines, 512) and "overlap" in "".join(lines)


def test_verdict_says_so_when_residuals_are_not_larger_and_counts_single_seeds():
    lines = judge(PAPER_LIKE, {**RESIDUALS, (512, "eps"): 0.5})
    assert "eps-pred's residual is not far larger" in claim(lines, 512)
    lines = judge(PAPER_LIKE, seeds=1)
    assert "consistent, 1 seed per cell" in claim(lines, 2) and "rests on 1 training seed." in lines[0]
