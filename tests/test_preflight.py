"""Preflight: a paper-scale run fails in seconds, naming what it lacks and how to make it, before any step.

The acceptance commands run in a scratch directory that sees the repository's experiments/ (so relative
paths such as ``fid_stats/jit_in64_stats.npz`` resolve there), on a synthetic ImageNet tree.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from jitlab.score import preflight
from jitlab.commands.cli import main
from jitlab.core.data.synth_imagenet import write_tree
from jitlab.errors import ConfigError
from jitlab.score.metrics.stats import save_stats
from tests.test_metrics import inception_weights  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
B_CELL = "setting-b_loss-x_pred-x"  # Table 2 (b): 64x64, the release has no statistics at this resolution


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    write_tree(root, classes=3, train_per_class=4, val_per_class=0, short=(40, 60), bad_files=False)
    return root


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No Inception weights anywhere: no argument, no $JITLAB_INCEPTION_WEIGHTS, an empty torch hub cache."""
    import torch

    monkeypatch.delenv("JITLAB_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def fake_stats(path: Path, width: int = 2048, resolution: int | None = 64) -> Path:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(width, 8))
    return save_stats(path, rng.normal(size=width), a @ a.T + np.eye(width), n=10, resolution=resolution)


def grid_run(tree: Path, capsys, *extra: str) -> tuple[int, str, float]:
    started = time.time()
    code = main(["grid", "run", "table2", "--scale", "paper", "--data_root", str(tree), "--only", B_CELL,
                 "--runs", "runs/grids", "--set", "data.init_args.global_batch_size=6", *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err, time.time() - started


# -- the acceptance: nothing starts without what the last step needs ------------------------------------------


def test_missing_64px_statistics_stop_the_grid_before_any_cell(workdir, tree, monkeypatch, capsys,
                                                                inception_weights):  # noqa: F811
    monkeypatch.setenv("JITLAB_INCEPTION_WEIGHTS", str(inception_weights))
    code, out, seconds = grid_run(tree, capsys)
    assert code != 0 and seconds < 120
    line = next(x for x in out.splitlines() if "error" in x)
    assert "fid_stats/jit_in64_stats.npz" in line and "no such file" in line
    assert f"jitlab fid-stats --root {tree} --resolution 64 --features inception" in line  # how to make it
    assert "--build_ref_stats" in line
    assert not (workdir / "runs").exists() and not list(workdir.rglob("*.ckpt"))


def test_missing_inception_weights_stop_the_grid_before_any_cell(workdir, tree, no_weights, capsys):
    fake_stats(workdir / "fid_stats" / "jit_in64_stats.npz")
    code, out, seconds = grid_run(tree, capsys)
    assert code != 0 and seconds < 120
    line = next(x for x in out.splitlines() if "error" in x)
    assert "eval.inception_weights" in line and "weights-inception-2015-12-05-6726825d.pth" in line
    assert "JITLAB_INCEPTION_WEIGHTS" in line and "--inception_weights" in line
    assert "ref_stats" not in line  # the statistics are there now: only the weights are named
    assert not (workdir / "runs").exists() and not list(workdir.rglob("*.ckpt"))


def test_skip_preflight_lets_an_expert_through(workdir, tree, no_weights, capsys):
    code, out, _ = grid_run(tree, capsys, "--skip_preflight", "--dry_run")
    assert code == 0, out[-2000:]  # a dry run after no preflight: the configs still resolve


# -- what is checked, one by one ------------------------------------------------------------------------------


def data_config(tree: Path, resolution: int = 64, **trainer) -> dict:
    return {"data": {"class_path": "jitlab.core.data.ImageNetDataModule",
                     "init_args": {"root": str(tree), "resolution": resolution, "global_batch_size": 6}},
            "model": {"net": {"class_path": "jitlab.core.models.JiT", "init_args": {
                "patch_size": 16, "hidden_size": 32, "depth": 1, "num_heads": 2, "bottleneck_dim": None,
                "in_context_len": 0}}},
            "trainer": {"max_steps": 10, **trainer}, "checkpoint": {"save_last": True, "save_top_k": 0}}


def problems(config: dict, evaluations=(), world: int = 1) -> list[str]:
    report = preflight.Report()
    preflight.check_run(config, evaluations, world, report)
    return report.problems


def test_reference_statistics_must_match_the_feature_space_and_the_resolution(tree, tmp_path,
                                                                               inception_weights):  # noqa: F811
    config = data_config(tree)
    ev = lambda path: preflight.Evaluation("eval", "inception", str(path), str(inception_weights))  # noqa: E731
    assert problems(config, [ev(fake_stats(tmp_path / "ok.npz"))]) == []
    (wrong_width,) = problems(config, [ev(fake_stats(tmp_path / "w.npz", width=64))])
    assert "64-d" in wrong_width and "2048" in wrong_width
    (wrong_res,) = problems(config, [ev(fake_stats(tmp_path / "r.npz", resolution=256))])
    assert "made at 256px" in wrong_res and "64px" in wrong_res and "fid-stats" in wrong_res
    (tmp_path / "bad.npz").write_text("not a zip")
    (unreadable,) = problems(config, [ev(tmp_path / "bad.npz")])
    assert "bad.npz" in unreadable and "readable" in unreadable
    report = preflight.Report()  # the release's files record no resolution: accepted with a note
    preflight.check_run(config, [ev(fake_stats(tmp_path / "release.npz", resolution=None))], 1, report)
    assert report.problems == [] and any("does not record its resolution" in n for n in report.notes)
    (none_given,) = problems(config, [preflight.Evaluation("evaluation", "inception", None, str(inception_weights))])
    assert none_given.startswith("evaluation.ref_stats: is required for ImageNet")
    (refnet,) = problems(config, [preflight.Evaluation("eval", "refnet", None)])
    assert "eval.features" in refnet and "inception" in refnet


def test_data_root_classes_and_batch_split(tree, tmp_path):
    (missing,) = problems(data_config(tmp_path / "nowhere"))
    assert missing.startswith("data.root") and "nowhere" in missing
    report = preflight.Report()
    preflight.check_run(data_config(tree), [], 1, report)
    assert "3 classes, 12 training images" in " ".join(report.notes)
    config = data_config(tree)
    config["model"]["net"]["init_args"]["num_classes"] = 1000
    assert any("num_classes" in p and "3 classes" in p for p in problems(config))
    config = data_config(tree)
    config["data"]["init_args"]["global_batch_size"] = 64
    assert any("64 is more than the 12 training images" in p for p in problems(config))
    (split,) = problems(data_config(tree), world=4)  # 6 over 4 processes
    assert "6 does not divide into 4 process(es)" in split
    assert problems(data_config(tree, devices=2, num_nodes=3), world=preflight.world_size(
        {"devices": 2, "num_nodes": 3})) == []  # 6 = 2 devices x 3 nodes


def test_checkpoint_space_is_estimated_from_the_parameters():
    b16 = {"data": {"class_path": "jitlab.core.data.EmbeddedDataModule", "init_args": {"resolution": 256}},
           "model": {"net": {"class_path": "jitlab.core.models.JiT", "init_args": {"patch_size": 16}}}}
    params = preflight.parameter_count(b16, {"img_size": 256, "num_classes": 1000})
    assert abs(params / 131.3e6 - 1) < 0.01  # JiT-B/16: weights + 2 EMAs + AdamW's 2 moments = 20 bytes each
    assert preflight.BYTES_PER_PARAM * params > 2.6e9
    paper = {"trainer": {"max_epochs": 200}, "data": {"init_args": {"global_batch_size": 1024}},
             "checkpoint": {"save_last": True, "save_top_k": -1, "every_n_train_steps": 2500}}
    steps = preflight.total_steps(paper, 1_281_167)
    assert steps == 200 * 1251
    assert preflight.kept_checkpoints(paper, steps) == 101 + 1 + 1  # every 2,500 steps, last.ckpt, one in writing
    paper["checkpoint"]["save_top_k"] = 0
    assert preflight.kept_checkpoints(paper, steps) == 2


def test_output_must_be_writable_and_large_enough(tmp_path):
    report = preflight.Report()
    preflight.check_output(tmp_path / "a" / "b", 10**18, report)
    (full,) = report.problems
    assert "need about 1000000000.0 GB" in full and "free" in full
    (tmp_path / "file").write_text("")
    report = preflight.Report()
    preflight.check_output(tmp_path / "file" / "runs", 1, report)
    assert "cannot write there" in report.problems[0]
    assert not (tmp_path / "a").exists()  # nothing is created by checking


def test_fit_preflight_names_every_problem_and_can_be_skipped(tree, tmp_path, no_weights):
    config = {**data_config(tree), "evaluation": {"every_n_steps": 100, "features": "inception",
                                                  "ref_stats": str(tmp_path / "none.npz")},
              "trainer": {"max_steps": 10, "default_root_dir": str(tmp_path / "run"), "devices": 4}}
    with pytest.raises(ConfigError) as caught:
        preflight.check_fit(config)
    text = str(caught.value)
    assert text.startswith("preflight: 3 problems, nothing was started")
    for what in ("evaluation.ref_stats", "evaluation.inception_weights", "global_batch_size"):
        assert what in text
    preflight.check_fit({**config, "skip_preflight": True})  # experts: no checks at all


def test_jitlab_fit_stops_before_the_first_step(tree, tmp_path, capsys, no_weights):
    from tests.conftest import run_cli

    code, out = run_cli(["fit", "--data", "ImageNetDataModule", f"--data.root={tree}", "--data.resolution=32",
                         "--data.global_batch_size=6", "--data.num_workers=0", "--model.net.init_args.patch_size=8",
                         "--evaluation.every_n_steps=5", "--evaluation.features=inception",
                         f"--evaluation.ref_stats={tmp_path / 'in32.npz'}", "--trainer.max_steps=5",
                         f"--trainer.default_root_dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    line = next(x for x in out.splitlines() if x.startswith("jitlab: error:"))
    assert "evaluation.ref_stats" in line and "in32.npz" in line and "--resolution 32" in line
    assert not list(tmp_path.rglob("*.ckpt"))


def test_every_cell_must_resolve(tmp_path):
    class Cell:
        def __init__(self, id_, config):
            self.id, self.config, self.eval = id_, config, {"features": "refnet"}

    def resolve(config):
        if "bad" in config:
            raise ConfigError("config", "unknown key 'bad'")
        return config

    good = {"data": {"class_path": "jitlab.core.data.EmbeddedDataModule", "init_args": {"resolution": 16,
                                                                                  "global_batch_size": 8}},
            "model": {"net": {"class_path": "jitlab.core.models.JiT", "init_args": {
                "patch_size": 4, "hidden_size": 32, "depth": 1, "num_heads": 2, "in_context_len": 0}}},
            "trainer": {"max_steps": 4}}
    preflight.check_cells([Cell("ok", good)], tmp_path, 1, resolve, echo=lambda _: None)
    with pytest.raises(ConfigError, match="cell broken: config: config: unknown key 'bad'"):
        preflight.check_cells([Cell("ok", good), Cell("broken", {**good, "bad": 1})], tmp_path, 1, resolve)
