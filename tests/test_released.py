"""`jitlab released`: release-layout checkpoints (random weights, tiny models) found, converted, scored, reported."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jitlab.commands.cli import main
from jitlab.errors import ConfigError
from jitlab.commands.released import build_parser
from jitlab.experiments.grid import released
from tests.test_convert import WEIGHT_SETS, random_net, release_args, release_layout
from tests.test_metrics import random_inception_weights

REPO = Path(__file__).resolve().parents[1]
TINY_BASE = """\
model:
  net:
    class_path: jitlab.core.models.JiT
    init_args: {patch_size: 4, hidden_size: 96, depth: 4, num_heads: 3, bottleneck_dim: 32, in_context_len: 4,
                in_context_start: 1}
data:
  class_path: jitlab.core.data.EmbeddedDataModule
  init_args: {resolution: 16}
"""
# Three models of the registry at 16 px stand in for table7's four: P/4 and P/8 get checkpoints, T/4 has none.
TINY_GRID = """\
name: tiny
axes:
  model:
    values:
      P4: {paper: {}}
      P8: {paper: {model.net.init_args.patch_size: 8}}
      T4: {paper: {model.net.init_args.hidden_size: 192, model.net.init_args.depth: 6}}
scales:
  paper:
    config: BASE
    eval: {features: inception, num_images: 4, sampler: heun, steps: 1, ema: [0], cfg: [2.0],
           cfg_interval: [[0.1, 1.0]], inception_score: true, batch_size: 4, ref_stats: STATS}
"""


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """Random-weight Inception, release-layout reference statistics, a tiny grid and two release checkpoints."""
    root = tmp_path_factory.mktemp("released")
    weights = root / "weights-inception-2015-12-05-6726825d.pth"
    random_inception_weights(weights)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 2048))  # (n, F): any covariance will do
    np.savez(root / "jit_in16_stats.npz", mu=features.mean(0), sigma=np.cov(features, rowvar=False))
    (root / "base.yaml").write_text(TINY_BASE)
    grid = root / "tiny.yaml"
    grid.write_text(TINY_GRID.replace("BASE", str(root / "base.yaml"))
                   .replace("STATS", str(root / "jit_in16_stats.npz")))
    ckpts = root / "release"
    (ckpts / "JiT-P-8").mkdir(parents=True)
    nets = {key: random_net(seed) for seed, key in enumerate(WEIGHT_SETS)}
    torch.save(release_layout(nets, release_args(cfg=1.5)), ckpts / "jit-p-4.pth")  # args say JiT-P/4, cfg 1.5
    nets8 = {key: random_net(seed, patch_size=8) for seed, key in enumerate(WEIGHT_SETS)}
    bare = vars(release_args())
    for unknown in ("model", "cfg", "interval_min", "interval_max"):  # named by its folder only; CFG from the grid
        bare.pop(unknown)
    torch.save(release_layout(nets8, argparse.Namespace(**bare)), ckpts / "JiT-P-8" / "checkpoint-last.pth")
    (ckpts / weights.name).write_bytes(weights.read_bytes())  # a foreign .pth in the folder: ignored
    return {"root": root, "grid": grid, "ckpts": ckpts, "weights": weights}


def options(kit, tmp_path, *extra: str):
    return build_parser().parse_args([
        "--checkpoints", str(kit["ckpts"]), "--grids", str(kit["grid"]), "--inception_weights", str(kit["weights"]),
        "--steps", "2", "--device", "cpu", "--devices", "1", "--work", str(tmp_path / "work"),
        "--out", str(tmp_path / "reports"), *extra])


def in_process(calls: list, code: int | None = None):
    """Run `jitlab eval` in this process (``code``: pretend it exited so, running nothing)."""
    def run(args: list[str], log: Path) -> int:
        calls.append(args)
        return main(args) if code is None else code
    return run


@pytest.fixture(scope="module")
def measured(kit, tmp_path_factory):
    """One whole run over the tiny grid (the evaluations cost most of this file's time: each is done once)."""
    out, calls = tmp_path_factory.mktemp("measured"), []
    rows = {r["model"]: r for r in released.run(options(kit, out), in_process(calls))}
    return rows, calls, out


def test_release_layout_checkpoints_are_converted_scored_and_reported(kit, measured):
    rows, calls, out = measured
    assert [r["status"] for r in rows.values()] == ["done", "done", "missing"]
    p4, p8 = rows["JiT-P/4"], rows["JiT-P/8"]
    for row in (p4, p8):
        assert row["fid_metric"] == "FID-4" and row["is_metric"] == "IS-4"  # named by its count, not FID-50K
        assert row["fid"] > 0 and row["is"] >= 1 and row["n_samples"] == 4 and row["steps"] == 2  # --steps wins
        assert row["ema"] == 0.999  # the first EMA: the file's ema_decay1, i.e. model_ema1
        assert row["sampler"] == "heun" and row["cfg_interval"] == [0.1, 1.0]
    assert (p4["cfg_scale"], p4["cfg_from"]) == (1.5, "checkpoint args")  # what the file records wins
    assert (p8["cfg_scale"], p8["cfg_from"]) == (2.0, "tiny grid")  # no cfg in its args: the grid's
    assert p4["fid"] != p8["fid"]
    handed = [json.loads(Path(c[c.index("--settings") + 1]).read_text()) for c in calls]  # the eval settings file
    assert len(calls) == 2 and all(h["ref_stats"] and h["inception_score"] and h["ema"] for h in handed)
    assert not (out / "work" / "jit-p-4" / "checkpoints" / "last.ckpt").exists()  # converted copy removed

    with open(out / "reports" / "released.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["model"], r["status"]) for r in table] == [("JiT-P/4", "done"), ("JiT-P/8", "done"),
                                                          ("JiT-T/4", "missing")]
    assert float(table[0]["fid"]) == pytest.approx(p4["fid"], rel=1e-5) and table[2]["fid"] == ""
    md = (out / "reports" / "released.md").read_text()
    assert "| JiT-T/4 | 16 | missing |" in md and "1.5 (checkpoint args)" in md
    assert f"ignored {kit['weights'].name}" in md and "in_context_start=1 is the default of size P" in md


def test_a_model_measured_with_the_same_file_and_settings_is_not_measured_again(kit, measured):
    rows, _, out = measured
    calls: list = []
    again = released.run(options(kit, out), in_process(calls, code=1))
    assert calls == [] and [r["fid"] for r in again[:2]] == [rows["JiT-P/4"]["fid"], rows["JiT-P/8"]["fid"]]
    other = released.run(options(kit, out, "--only", "JiT-P/8", "--num_images", "6"), in_process(calls, code=1))
    settings = json.loads(Path(calls[0][calls[0].index("--settings") + 1]).read_text())
    assert len(calls) == 1 and settings["num_images"] == 6  # other settings: measured
    assert other[0]["status"] == "failed" and "exited 1" in other[0]["note"]


def test_all_processes_give_the_numbers_of_one(kit, measured, tmp_path):
    """--devices 2 runs `jitlab eval` under torchrun (gloo on CPU): each image by global index, metrics synced."""
    one = measured[0]["JiT-P/4"]
    two = released.run(options(kit, tmp_path, "--only", "JiT-P/4", "--devices", "2"))[0]
    log = (tmp_path / "work" / "jit-p-4" / "eval.log").read_text()
    assert two["status"] == "done", log[-3000:]
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-4) and two["is"] == pytest.approx(one["is"], rel=1e-4)
    assert "torch.distributed.run" in log and "--nproc_per_node=2" in log


def test_the_paper_grids_list_eight_models_and_a_missing_checkpoint_is_a_row(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    empty = tmp_path / "none"
    empty.mkdir()
    assert main(["released", "--checkpoints", str(empty), "--out", str(tmp_path)]) == 0
    with open(tmp_path / "released.csv") as f:
        table = {r["model"]: r for r in csv.DictReader(f)}
    assert list(table) == [f"JiT-{s}/{p}" for p in (16, 32) for s in "BLHG"]
    assert {r["status"] for r in table.values()} == {"missing"}
    assert (table["JiT-B/16"]["paper_fid"], table["JiT-B/16"]["paper_is"]) == ("3.66", "275.1")
    assert (table["JiT-G/16"]["paper_fid"], table["JiT-G/16"]["paper_is"]) == ("1.82", "292.6")
    assert (table["JiT-G/32"]["paper_fid"], table["JiT-G/32"]["paper_is"]) == ("1.78", "")  # no IS at 512
    assert "gives no IS at 512" in (tmp_path / "released.md").read_text()


def test_wrong_resolution_two_files_of_one_model_and_missing_statistics(kit, tmp_path):
    at32 = tmp_path / "at32.yaml"
    at32.write_text(kit["grid"].read_text().replace("P4: {paper: {}}", "P4: {paper: {data.init_args.resolution: 32}}"))
    opts = options(kit, tmp_path, "--only", "JiT-P/4")
    opts.grids = [str(at32)]
    row = released.run(opts, in_process(calls := []))[0]
    assert row["status"] == "failed" and "16px model" in row["note"] and calls == []

    twice = tmp_path / "twice"
    twice.mkdir()
    for name in ("jit-p-4.pth", "copy-of-jit-p-4.pth"):
        (twice / name).write_bytes((kit["ckpts"] / "jit-p-4.pth").read_bytes())
    with pytest.raises(ConfigError, match="2 files hold JiT-P/4"):
        released.find_checkpoints(twice, ["JiT-P/4"])

    opts = options(kit, tmp_path, "--fid_stats", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"--fid_stats: .*nowhere/jit_in16_stats.npz .* not found"):
        released.run(opts, in_process(calls))
    assert calls == [] and not (tmp_path / "work").exists()  # failed before converting anything
