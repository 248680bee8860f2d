"""`jitlab grid run --released DIR`: release-layout checkpoints (random weights, tiny models) found, converted into
their grid cells instead of trained, scored by the grid runner, reported by `jitlab report`, never taken for a
training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jitlab.errors import ConfigError
from jitlab.experiments.grid import converted, runner
from jitlab.experiments.grid.spec import load_spec
from jitlab.experiments.rundir import cell_dir, is_finished, read_result
from tests.conftest import run_cli
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
title: "Tiny: the released models at 16 px"
paper_metric: FID-50K
layout: {kind: points, x: model}
axes:
  model:
    values:
      P4: {label: JiT-P/4, paper: {}}
      P8: {label: JiT-P/8, paper: {model.net.init_args.patch_size: 8}}
      T4: {label: JiT-T/4, paper: {model.net.init_args.hidden_size: 192, model.net.init_args.depth: 6}}
scales:
  paper:
    config: BASE
    eval: {features: inception, num_images: 4, sampler: heun, steps: 1, ema: [0], cfg: [2.0],
           cfg_interval: [[0.1, 1.0]], inception_score: true, batch_size: 4, ref_stats: STATS}
paper:
  - {model: P4, value: 3.66}
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
    args = release_args(cfg=1.5, num_sampling_steps=2)  # says JiT-P/4, cfg 1.5, 2 steps
    torch.save(release_layout(nets, args), ckpts / "jit-p-4.pth")
    nets8 = {key: random_net(seed, patch_size=8) for seed, key in enumerate(WEIGHT_SETS)}
    bare = vars(release_args(num_sampling_steps=2))
    for unknown in ("model", "cfg", "interval_min", "interval_max"):  # named by its folder only; CFG from the grid
        bare.pop(unknown)
    torch.save(release_layout(nets8, argparse.Namespace(**bare)), ckpts / "JiT-P-8" / "checkpoint-last.pth")
    (ckpts / weights.name).write_bytes(weights.read_bytes())  # a foreign .pth in the folder: ignored
    return {"root": root, "grid": grid, "ckpts": ckpts, "weights": weights}


def options(kit, runs: Path, **extra) -> argparse.Namespace:
    """What `jitlab grid run GRID --scale paper --released DIR --runs RUNS` parses to."""
    fields = dict(name=str(kit["grid"]), scale="paper", released=kit["ckpts"], runs=runs, launcher="local",
                  rehearse=False, dry_run=False, skip_preflight=False)
    return argparse.Namespace(**(fields | extra))


def in_process(calls: list):
    """The runner's subprocess, `python -m jitlab.commands.cli ARGS`, in this process (the CPU is shared)."""
    from jitlab.commands.cli import main

    def run(args: list[str], log: Path, env: dict[str, str]) -> int:
        calls.append(args)
        return main(args)
    return run


def cells_of(kit):
    return load_spec(str(kit["grid"])).cells("paper")


@pytest.fixture(scope="module")
def measured(kit, tmp_path_factory):
    """One run of the tiny grid through the grid runner (its two evaluations cost most of this file's time)."""
    runs, calls = tmp_path_factory.mktemp("runs"), []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JITLAB_INCEPTION_WEIGHTS", str(kit["weights"]))
        code = converted.run_released(options(kit, runs), cells_of(kit), in_process(calls))
    assert [c[0] for c in calls] == ["eval", "eval"]  # no `jitlab fit`
    return code, runs


def test_release_checkpoints_become_converted_cells_scored_by_the_runner(kit, measured):
    code, runs = measured
    assert code == 0
    p4, p8, t4 = (cell_dir(runs, cell) for cell in cells_of(kit))
    for directory, cfg, source in ((p4, 1.5, "jit-p-4.pth"), (p8, 2.0, "JiT-P-8/checkpoint-last.pth")):
        result = read_result(directory)
        assert result["status"] == "done", (directory / "eval.log").read_text()[-3000:]
        weights = result["weights"]  # the release's file, never a training
        assert weights["label"] == "released weights, converted"
        assert weights["path"] == str((kit["ckpts"] / source).resolve())
        assert weights["bytes"] == (kit["ckpts"] / source).stat().st_size and weights["mtime"] > 0
        assert json.loads((directory / "cell.json").read_text())["weights"] == {
            k: v for k, v in weights.items() if k != "notes"}
        fid, inception = result["rows"]
        assert (fid["metric"], inception["metric"]) == ("FID-4", "IS-4")  # named by its count, not FID-50K
        assert fid["value"] > 0 and inception["value"] >= 1 and fid["ema"] == 0.999  # model_ema1: ema_decay1
        assert fid["cfg_scale"] == cfg and fid["steps"] == 2  # the file's args win over the grid (cfg 2.0, 1 step)
        assert result["train_seconds"] is None and "convert-official" in result["commands"][0]
        assert not (directory / "checkpoints" / "last.ckpt").exists()  # the converted copy removed once scored
    notes = read_result(p8)["weights"]["notes"]  # what the conversion assumed (P/8's args name no model)
    assert any("args.model is missing: in_context_start=1 is the default of size P" in n for n in notes)
    assert read_result(p4)["rows"][0]["value"] != read_result(p8)["rows"][0]["value"]
    assert not t4.exists()  # no checkpoint: not run


def test_jitlab_report_reports_the_converted_cells_labelled_as_such(kit, measured, capsys):
    _, runs = measured
    out = runs.parent / "reports"
    code, printed = run_cli(["report", str(kit["grid"]), "--scale", "paper", "--runs", str(runs), "--out", str(out)],
                            capsys)
    assert code == 0, printed
    md = (out / "tiny-paper.md").read_text()
    assert "| `model-T4` | not run |" in md and "3.66" in md
    done = [line for line in md.splitlines() if line.startswith(("| `model-P4` | done", "| `model-P8` | done"))]
    assert len(done) == 2 and all("released weights, converted" in line for line in done)


def test_a_missing_checkpoint_is_one_line_and_finished_cells_are_never_rerun(kit, measured, capsys):
    code, runs = measured
    before = {c.id: read_result(cell_dir(runs, c)) for c in cells_of(kit)}
    calls: list = []
    assert converted.run_released(options(kit, runs), cells_of(kit), in_process(calls)) == 0  # nothing to preflight
    assert calls == []
    printed = capsys.readouterr().out
    assert f"model-T4: no JiT-T/4 checkpoint in {kit['ckpts']}; not run" in printed
    assert f"ignored {kit['weights'].name}" in printed
    assert printed.count(": skipped (done earlier") == 2 and "2 skipped" in printed
    assert {c.id: read_result(cell_dir(runs, c)) for c in cells_of(kit)} == before


def test_a_converted_cell_is_never_taken_for_a_trained_one_nor_the_reverse(kit, measured, tmp_path):
    _, runs = measured
    cells = cells_of(kit)
    p4 = cells[0]
    assert is_finished(read_result(cell_dir(runs, p4)), p4)  # finished, yet no training may skip, reuse or resume it
    with pytest.raises(ConfigError, match=r"model-P4: holds the release's weights, converted \(--released\), done"):
        runner.run_local(cells[:1], runs, runner=lambda *a: pytest.fail("nothing may run"))
    twin = runs / "other" / "paper" / p4.id
    assert runner.find_twin(runs, p4, twin) is None  # no other grid reuses it as a training of its config

    trained = tmp_path / "runs"
    runner.prepare_cell(p4, cell_dir(trained, p4))  # a training's directory (not finished: it would resume)
    (cell_dir(trained, p4) / "checkpoints").mkdir()
    (cell_dir(trained, p4) / "checkpoints" / "last.ckpt").write_bytes(b"a training's state")
    with pytest.raises(ConfigError, match=r"model-P4: holds a training of the cell, unfinished; .* --runs DIR"):
        converted.run_released(options(kit, trained, skip_preflight=True), cells)
    assert (cell_dir(trained, p4) / "checkpoints" / "last.ckpt").read_bytes() == b"a training's state"
    assert "weights" not in json.loads((cell_dir(trained, p4) / "cell.json").read_text())


def test_wrong_resolution_two_files_of_one_model_and_missing_statistics(kit, tmp_path, capsys):
    at32 = tmp_path / "at32.yaml"
    at32.write_text(kit["grid"].read_text().replace("P4: {label: JiT-P/4, paper: {}}",
                                                    "P4: {label: JiT-P/4, paper: {data.init_args.resolution: 32}}"))
    cell = load_spec(str(at32)).cells("paper")[0]
    calls: list = []
    assert converted.run_released(options(kit, tmp_path / "runs", skip_preflight=True), [cell], in_process(calls)) == 1
    result = read_result(cell_dir(tmp_path / "runs", cell))
    assert result["status"] == "failed" and "holds a 16px model; the cell is 32px" in result["error"]
    assert result["weights"]["label"] == "released weights, converted" and calls == []  # nothing evaluated

    twice = tmp_path / "twice"
    twice.mkdir()
    for name in ("jit-p-4.pth", "copy-of-jit-p-4.pth"):
        (twice / name).write_bytes((kit["ckpts"] / "jit-p-4.pth").read_bytes())
    with pytest.raises(ConfigError, match="2 files hold JiT-P/4"):
        converted.find_released(twice, {"JiT-P/4"})

    nowhere = tmp_path / "nowhere.yaml"
    nowhere.write_text(kit["grid"].read_text().replace(str(kit["root"] / "jit_in16_stats.npz"), "nowhere/x.npz"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JITLAB_INCEPTION_WEIGHTS", str(kit["weights"]))
        with pytest.raises(ConfigError, match=r"nowhere/x.npz \(reference statistics of model-P4\) not found"):
            converted.run_released(options(kit, tmp_path / "none"), load_spec(str(nowhere)).cells("paper"))
    assert not (tmp_path / "none").exists()  # failed before converting anything


def test_the_paper_grids_cells_are_the_eight_released_models(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    empty = tmp_path / "none"
    empty.mkdir()
    names = []
    for grid in ("table7", "table8"):
        cells = load_spec(grid).cells("paper")
        names += [converted.model_name(c.config) for c in cells]
        assert converted.run_released(options({"grid": grid, "ckpts": empty}, tmp_path / "runs"), cells) == 0
    assert names == [f"JiT-{s}/{p}" for p in (16, 32) for s in "BLHG"]
    printed = capsys.readouterr().out
    assert printed.count("checkpoint in") == 8 and "model-G: no JiT-G/32 checkpoint in" in printed
    assert not (tmp_path / "runs").exists()


def test_the_grid_verb_hands_released_to_the_conversion(tmp_path, capsys):
    """`jitlab grid run table7 --scale paper --released DIR`: the flag reaches the conversion step (not training)."""
    from jitlab.commands.cli import main

    empty = tmp_path / "checkpoints"
    empty.mkdir()
    assert main(["grid", "run", "table7", "--scale", "paper", "--released", str(empty), "--runs",
                 str(tmp_path / "runs"), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert f"model-G: no JiT-G/16 checkpoint in {empty}; not run" in out
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("train.log"))  # nothing trained
