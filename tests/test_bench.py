"""`jitlab bench`: the JSON keys and sane values of a tiny run, the reference sampler, the flag errors. No timings."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import run_cli

TINY = ["bench", "--json", "--model", "JiT-P/4", "--img_size", "16", "--batch_size", "4", "--steps", "2",
        "--warmup", "1", "--sample_steps", "3", "--sample_batch", "2", "--threads", "1"]
KEYS = ("train_img_per_s", "raw_train_img_per_s", "sample_img_per_s", "ref_sample_img_per_s", "nfe_per_s", "mfu",
        "matmul_peak_gflops", "peak_mem_mb", "device", "torch")


def test_bench_json_has_the_keys_and_sane_values(capsys, tmp_path):
    out_md = tmp_path / "bench.md"
    code, out = run_cli([*TINY, "--out", str(out_md)], capsys)
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    row = rows[0]
    for key in KEYS:
        assert key in row, key
    for key in ("train_img_per_s", "raw_train_img_per_s", "sample_img_per_s", "ref_sample_img_per_s", "nfe_per_s",
                "matmul_peak_gflops", "peak_mem_mb", "raw_mfu", "ref_sample_mfu"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    assert 0 < row["mfu"] < 1.5
    assert row["device"] == "cpu" and row["torch"] == torch.__version__
    assert row["precision"] == "fp32" and row["compile"] is False  # the CPU guard
    assert row["nfe"] == 5 and row["batch_size"] == 4 and row["sample_batch"] == 2
    assert row["nfe_per_s"] == pytest.approx(row["sample_img_per_s"] * 5)
    assert row["sample_max_uint8_diff"] <= 1  # the same method gives the same pictures
    text = out_md.read_text()
    assert "## Machine" in text and torch.__version__ in text and row["model"] in text


def test_reference_sampler_makes_the_images_of_jitlab_sample(tiny_net_factory, one_thread):
    from jitlab.experiments.bench.sample import reference_sample
    from jitlab.train.module import JiTModule
    from jitlab.core.sampling import initial_noise

    torch.manual_seed(0)
    module = JiTModule(tiny_net_factory()).eval()
    for p in module.net.parameters():  # the output layer starts at zero: give every weight a value
        p.data.normal_(0, 0.05)
    module.net.y_embedder.embedding_table.weight.data.normal_(0, 1.0)  # classes the net tells apart: CFG matters
    indices = list(range(3))
    y = torch.tensor([0, 4, 9])
    for interval in [(0.1, 1.0), (0.0, 1.0), (0.3, 0.7)]:
        ours = module.generate(indices, y, steps=6, cfg_scale=2.9, cfg_interval=interval)  # (3, 3, 16, 16)
        z = initial_noise(indices, module.sample_shape, 0, module.flow.config.noise_scale)
        ref = reference_sample(module.net, module.flow, z, y, module.null_class, 6, 2.9, interval)
        assert torch.allclose(ours, ref, atol=1e-5), (interval, (ours - ref).abs().max())
    # and it is not vacuous: a different guidance scale gives different images
    other = reference_sample(module.net, module.flow, z, y, module.null_class, 6, 1.0, (0.3, 0.7))
    assert (other - ref).abs().max() > 100 * 1e-5


def test_matmul_peak_is_positive_and_finite():
    from jitlab.experiments.bench.machine import matmul_peak_gflops

    peak = matmul_peak_gflops(torch.device("cpu"), size=256, repeats=2)
    assert math.isfinite(peak) and peak > 0


@pytest.mark.parametrize("args,flag", [
    (["--steps", "0"], "--steps"),
    (["--cfg_interval", "0.5", "0.2"], "--cfg_interval"),
    (["--model", "JiT-X/3"], "--model"),
    (["--config", "no/such.yaml"], "--config"),
])
def test_bad_flags_name_themselves(args, flag, capsys):
    code, out = run_cli(["bench", *args], capsys)
    assert code == 2
    assert "jitlab: error:" in out and flag in out


# -- the speed-ups compute the same ----------------------------------------------------------------------------

def test_rendered_cache_gives_the_same_batches(tmp_path):
    from jitlab.core.data.base import ResumableDataLoader, ResumableDistributedSampler
    from jitlab.core.data.embedded import RenderedCache, cache_file, make_dataset

    for kind in ("shapes", "photos"):
        rendered = make_dataset(kind, 16, 40, 3)
        path = cache_file(kind, 16, 40, 3, tmp_path)
        cached = RenderedCache.build(rendered, path)
        assert path.exists() and len(cached) == 40
        loaders = [ResumableDataLoader(d, ResumableDistributedSampler(d, 1, 0, seed=5), batch_size=8, drop_last=True)
                   for d in (rendered, cached)]
        batches = 0
        for (xa, ya), (xb, yb) in zip(*loaders):
            assert xa.dtype == xb.dtype == torch.uint8 and ya.dtype == yb.dtype
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            batches += 1
        assert batches == 5
        x, y = cached[7]
        assert torch.equal(x, rendered[7][0]) and y == rendered[7][1]
    # the file's name tells data sets apart
    assert cache_file("shapes", 16, 40, 3, tmp_path) != cache_file("shapes", 16, 40, 4, tmp_path)
    assert cache_file("shapes", 16, 40, 3, tmp_path) != cache_file("shapes", 16, 41, 3, tmp_path)


def test_the_cache_is_used_only_when_it_cannot_cost_more(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from jitlab.core.data.embedded import EmbeddedDataModule, RenderedCache, cache_file

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    dm = EmbeddedDataModule(resolution=16, global_batch_size=8, train_size=64)
    dm.trainer = SimpleNamespace(max_steps=4, max_epochs=None, world_size=1, global_rank=0, accumulate_grad_batches=1)
    assert not isinstance(dm.train_dataset(), RenderedCache)  # 32 of 64 items: render as they come
    assert not cache_file("shapes", 16, 64, 0).exists()
    dm.trainer.max_steps = 8  # the run draws every item: render once
    assert isinstance(dm.train_dataset(), RenderedCache) and cache_file("shapes", 16, 64, 0).exists()
    dm.trainer.max_steps = 1  # a file that exists is used by any run
    assert isinstance(dm.train_dataset(), RenderedCache)
    off = EmbeddedDataModule(resolution=16, global_batch_size=8, train_size=64, disk_cache=False)
    off.trainer = dm.trainer
    assert not isinstance(off.train_dataset(), RenderedCache)
