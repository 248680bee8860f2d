"""`jitlab eval`: a sweep over EMA x CFG writes every point and the best one to metrics.json."""

from __future__ import annotations

import json

import pytest

from jitlab.score import evaluation
from jitlab.commands import evaluate
from jitlab.errors import ConfigError
from jitlab.core.settings import ScoreSettings
from tests.test_sampling import tiny_checkpoint  # noqa: F401  (the module-scoped fixture)


@pytest.fixture
def quick_refnet(monkeypatch, tmp_path):
    """A refnet trained on a tiny budget in place of the default one (minutes of training)."""
    from jitlab.score.metrics import features
    from jitlab.score.metrics.refnet import RefNetConfig, load_refnet

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def build(kind_of_features, kind=None, resolution=None, **_):
        assert kind_of_features == "refnet"
        config = RefNetConfig(kind=kind, resolution=resolution, train_size=300, val_size=100, epochs=1, width=16)
        net, info = load_refnet(config, cache_dir=tmp_path / "refnet", train_if_missing=True)
        return features.RefNetFeatures(net, kind, resolution, info["key"], info["val_accuracy"])

    monkeypatch.setattr(features, "build_extractor", build)


def test_sweep_writes_every_point_and_the_best(tiny_checkpoint, quick_refnet, tmp_path):  # noqa: F811
    out = tmp_path / "metrics.json"
    code = evaluate.main([str(tiny_checkpoint), "--num_images", "20", "--steps", "2", "--ema", "0", "none",
                          "--cfg", "1.0", "3.0", "--ref_images", "40", "--batch_size", "10", "--out", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    assert len(rows) == 4
    for row in rows:
        assert row["metric"] == "FD-ref-20" and "FID" not in row["metric"]
        assert row["n_samples"] == 20 and row["feature_space"].startswith("refnet-shapes-16")
        assert row["sampler"] == "heun" and row["steps"] == 2 and row["nfe"] == 3 and row["seed"] == 0
        assert row["step"] == 5 and row["cfg_interval"] == [0.1, 1.0] and row["value"] > 0
        assert 0.0 <= row["feature_accuracy"] <= 1.0  # the classifier's validation accuracy travels with the score
        assert row["final_step"] == "euler" and row["precision"] == "fp32" and row["score_resolution"] is None
    assert {(r["ema"], r["cfg_scale"]) for r in rows} == {(0.9, 1.0), (0.9, 3.0), ("none", 1.0), ("none", 3.0)}
    assert payload["best"]["value"] == min(r["value"] for r in rows)
    # a second sweep adds its points and keeps the earlier ones
    assert evaluate.main([str(tiny_checkpoint), "--num_images", "20", "--steps", "2", "--ema", "1", "--cfg", "1.0",
                          "--ref_images", "40", "--batch_size", "10", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 5 and rows[-1]["ema"] == 0.5


def test_interval_flags_reject_bad_values_naming_the_flag():
    args = evaluate.build_parser().parse_args(["ckpt", "--cfg_interval", "0.1,1.0", "0,0.5"])
    assert evaluate.eval_settings(args).cfg_interval == ((0.1, 1.0), (0.0, 0.5))
    for bad in ("0.5,0.2", "1,1", "0,1.5", "0.1"):
        args = evaluate.build_parser().parse_args(["ckpt", "--cfg_interval", bad])
        with pytest.raises(ConfigError, match="^--cfg_interval: .*T_MIN"):
            evaluate.eval_settings(args)


def test_periodic_evaluation_during_fit_logs_and_writes_rows(quick_refnet, tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from jitlab.core.data import EmbeddedDataModule
    from jitlab.train.ema import MultiEMA
    from jitlab.train.module import JiTModule, OptimConfig
    from jitlab.score.periodic_eval import PeriodicEval
    from tests.conftest import tiny_net

    L.seed_everything(0)
    callback = PeriodicEval(every_n_steps=2, num_images=12, steps=2, ref_images=40, batch_size=6)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=CSVLogger(tmp_path), log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        enable_checkpointing=False, callbacks=[MultiEMA(decays=[0.9]), callback])
    trainer.fit(JiTModule(tiny_net(), optim=OptimConfig(lr=1e-2, warmup_steps=0)),
                EmbeddedDataModule(resolution=16, global_batch_size=8, train_size=64))
    path = next(tmp_path.rglob("metrics.json"))
    rows = json.loads(path.read_text())["rows"]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["metric"] == "FD-ref-12" and r["value"] > 0 and r["nfe"] == 3 for r in rows)
    assert rows[0]["value"] != rows[1]["value"]
    assert "eval/FD-ref-12" in trainer.callback_metrics


def test_eval_with_inception_features_names_fid_and_needs_the_weights(
        tiny_checkpoint, tmp_path, monkeypatch, capsys):  # noqa: F811
    """FID end to end with a random-weights InceptionV3 file (the real one cannot be fetched here)."""
    from jitlab.score.metrics.features import INCEPTION_WEIGHTS_ENV
    from tests.test_metrics import random_inception_weights

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    out = tmp_path / "metrics.json"
    base = [str(tiny_checkpoint), "--features", "inception", "--num_images", "8", "--steps", "1", "--ref_images", "8",
            "--batch_size", "8", "--out", str(out)]
    assert evaluate.main([*base, "--inception_weights", str(tmp_path / "absent.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jitlab: error: inception_weights") and "weights" in err and not out.exists()
    weights = tmp_path / "inception.pth"
    random_inception_weights(weights)
    assert evaluate.main([*base, "--inception_weights", str(weights), "--is"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["metric"] for r in rows} == {"FID-8", "IS-8"}
    assert all(r["feature_space"] == "inception-v3-pool3" and r["n_samples"] == 8 for r in rows)
    assert not any("feature_accuracy" in r for r in rows)  # Inception: no classifier accuracy of ours to state


def test_sampler_options_and_score_resolution_are_recorded_in_every_row(
        tiny_checkpoint, quick_refnet, tmp_path):  # noqa: F811
    """--final_step x, --precision bf16 (autocast on CPU) and --score_resolution 8: a 16px model in the 8px space."""
    out = tmp_path / "metrics.json"
    assert evaluate.main([str(tiny_checkpoint), "--num_images", "10", "--steps", "2", "--final_step", "x",
                          "--precision", "bf16", "--score_resolution", "8", "--cfg", "1.0", "2.0", "--ref_images", "20",
                          "--batch_size", "10", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2
    for row in rows:
        assert row["final_step"] == "x" and row["precision"] == "bf16" and row["score_resolution"] == 8
        assert row["feature_space"] == "refnet-shapes-8" and row["nfe"] == 3 and row["value"] > 0


def test_one_resize_for_generated_and_real_images(tiny_checkpoint, quick_refnet):  # noqa: F811
    import torch

    from jitlab.core.data.embedded import make_dataset

    data = {"kind": "shapes", "resolution": 16, "seed": 0}
    extractor, ref = evaluation.instruments(ScoreSettings(ref_images=20, score_resolution=8), data, "cpu")
    assert isinstance(extractor, evaluation.ScoredAt) and extractor.inner.resolution == 8
    real = torch.stack([make_dataset("shapes", 16, 20, 2)[i][0] for i in range(20)])  # (20, 3, 16, 16) uint8
    inner = extractor.inner.extract(evaluation.resize_uint8(real, 8))["features"]  # (20, F)
    torch.testing.assert_close(torch.as_tensor(ref.mu), inner.mean(0))  # the statistics saw the resized images
    torch.testing.assert_close(extractor(real), inner)  # and so do the generated ones
    # area downsampling averages each 2x2 window exactly; a constant image stays constant
    rows = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    rows[..., ::2, :] = 200
    assert evaluation.resize_uint8(rows, 8).unique().tolist() == [100]
    assert evaluation.resize_uint8(torch.full((1, 3, 8, 8), 77, dtype=torch.uint8), 16).unique().tolist() == [77]


def test_sweep_keeps_each_finished_point_and_a_rerun_skips_them(tiny_checkpoint, quick_refnet, tmp_path, monkeypatch,
                                                                capsys):  # noqa: F811
    out = tmp_path / "metrics.json"
    base = [str(tiny_checkpoint), "--num_images", "10", "--steps", "1", "--ref_images", "20", "--batch_size", "10",
            "--out", str(out)]
    real_score, calls = evaluation.score_samples, []

    def failing_second(*args, **kwargs):
        calls.append(args[2].cfg_scale)
        if len(calls) == 2:
            raise ValueError("simulated failure at the second point")
        return real_score(*args, **kwargs)

    monkeypatch.setattr(evaluation, "score_samples", failing_second)
    assert evaluate.main([*base, "--cfg", "1.0", "2.0", "3.0"]) == 2
    rows = json.loads(out.read_text())["rows"]
    assert [r["cfg_scale"] for r in rows] == [1.0]  # the first point was written before the failure
    calls.clear()
    monkeypatch.setattr(evaluation, "score_samples",
                        lambda *a, **k: calls.append(a[2].cfg_scale) or real_score(*a, **k))
    assert evaluate.main([*base, "--cfg", "1.0", "2.0", "3.0"]) == 0
    assert calls == [2.0, 3.0] and "skipped" in capsys.readouterr().out  # resumed: only the missing points ran
    rows = json.loads(out.read_text())["rows"]
    assert sorted(r["cfg_scale"] for r in rows) == [1.0, 2.0, 3.0]
    calls.clear()
    assert evaluate.main([*base, "--cfg", "1.0", "--final_step", "x"]) == 0  # another setting is another point
    assert calls == [1.0] and len(json.loads(out.read_text())["rows"]) == 4
