"""`jitlab eval`: a sweep over EMA x CFG writes every point and the best one to metrics.json."""

from __future__ import annotations

import json

import pytest

from jitlab import evaluate
from tests.test_sampling import tiny_checkpoint  # noqa: F401  (the module-scoped fixture)


@pytest.fixture
def quick_refnet(monkeypatch, tmp_path):
    """A refnet trained on a tiny budget in place of the default one (minutes of training)."""
    from jitlab.metrics import features
    from jitlab.metrics.refnet import RefNetConfig, load_refnet

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def build(kind_of_features, kind=None, resolution=None, **_):
        assert kind_of_features == "refnet"
        config = RefNetConfig(kind=kind, resolution=resolution, train_size=300, val_size=100, epochs=1, width=16)
        net, info = load_refnet(config, cache_dir=tmp_path / "refnet", train_if_missing=True)
        return features.RefNetFeatures(net, kind, resolution, info["key"])

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
    assert {(r["ema"], r["cfg_scale"]) for r in rows} == {(0.9, 1.0), (0.9, 3.0), ("none", 1.0), ("none", 3.0)}
    assert payload["best"]["value"] == min(r["value"] for r in rows)
    # a second sweep adds its points and keeps the earlier ones
    assert evaluate.main([str(tiny_checkpoint), "--num_images", "20", "--steps", "2", "--ema", "1", "--cfg", "1.0",
                          "--ref_images", "40", "--batch_size", "10", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 5 and rows[-1]["ema"] == 0.5


def test_interval_parsing_rejects_bad_values():
    assert evaluate.parse_interval("0.1,1.0") == (0.1, 1.0)
    for bad in ("0.5,0.2", "-0.1,1", "0,1.5"):
        with pytest.raises(Exception, match="T_MIN"):
            evaluate.parse_interval(bad)
