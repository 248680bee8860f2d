"""The rehearsal (every stage of every cell in minutes, nothing marked done) and the paper-scale recipe itself.

The rehearsal runs Table 2 at paper scale on a synthetic ImageNet tree with a small-model ``--set``, a
random-weight InceptionV3 and reference statistics files at 256 and 64 px, in this process (the same
verbs the subprocesses of `jitlab grid run --rehearse` run; cheaper on a CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from jitlab.commands.cli import main
from jitlab.commands.fit import pop_rehearse
from jitlab.core.data.synth_imagenet import write_tree
from jitlab.experiments.grid import rehearse
from jitlab.train.checkpoint import checkpoint_state
from jitlab.experiments.grid.runner import command_line
from jitlab.score.metrics.stats import save_stats
from tests.conftest import run_cli
from tests.test_metrics import inception_weights  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
SMALL = {"model.net.init_args.hidden_size": 32, "model.net.init_args.depth": 2, "model.net.init_args.num_heads": 2,
         "model.compile": False, "data.init_args.global_batch_size": 6, "data.init_args.num_workers": 0,
         "trainer.precision": "32-true", "trainer.enable_progress_bar": False, "samples.num_images": 2,
         "samples.steps": 1, "eval.steps": 2, "eval.cfg": [2.9]}


def in_process(args, log, env):
    with open(log, "a") as out:
        out.write(f"\n$ {command_line(args)}\n")
    return main(args)


def stats_file(path: Path, resolution: int) -> Path:
    rng = np.random.default_rng(resolution)
    a = rng.normal(size=(2048, 16)) * 0.1
    return save_stats(path, rng.normal(size=2048) * 0.1, a @ a.T + 1e-3 * np.eye(2048), n=50, resolution=resolution)


@pytest.fixture
def workdir(tmp_path, monkeypatch, inception_weights) -> Path:  # noqa: F811
    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    for resolution in (64, 256):
        stats_file(tmp_path / "fid_stats" / f"jit_in{resolution}_stats.npz", resolution)
    write_tree(tmp_path / "imagenet", classes=3, train_per_class=4, val_per_class=0, short=(40, 60), bad_files=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JITLAB_INCEPTION_WEIGHTS", str(inception_weights))
    return tmp_path


def test_rehearsal_of_table2_trains_resumes_evaluates_reports_and_marks_nothing_done(workdir, capsys):
    from jitlab.commands.grid import build_parser, resolve_cells

    only = ["setting-a_loss-v_pred-x", "setting-b_loss-x_pred-eps"]  # one cell of each panel (256 and 64 px)
    args = build_parser().parse_args(["run", "table2", "--scale", "paper", "--data_root", "imagenet", "--only", *only,
                                      *[f"--set={k}={json.dumps(v)}" for k, v in SMALL.items()]])
    _, cells = resolve_cells(args)
    lines: list[str] = []
    code = rehearse.rehearse_grid("table2", "paper", cells, Path("runs/grids"), runner=in_process, echo=lines.append)
    assert code == 0, "\n".join(lines)
    target = workdir / "runs" / "rehearsal" / "grids"
    assert not (workdir / "runs" / "grids").exists()  # the real runs are untouched
    for cell, resolution in zip(only, (256, 64)):
        directory = target / "table2" / "paper" / cell
        log = (directory / "train.log").read_text()
        assert log.count("$ jitlab fit") == 2 and "--trainer.max_steps=2" in log and "--trainer.max_steps=4" in log
        assert "--ckpt_path=" in log.split("$ jitlab fit")[2]  # the second run resumes from the first's checkpoint
        assert checkpoint_state(directory / "checkpoints" / "last.ckpt").step == 4
        config = yaml.safe_load((directory / "config.yaml").read_text())
        assert config["data"]["init_args"]["resolution"] == resolution and config["trainer"]["max_epochs"] == 200
        rows = json.loads((directory / "metrics.json").read_text())["rows"]
        assert {r["metric"] for r in rows} == {"FID-8"} and all(r["step"] == 4 for r in rows)
        assert all(r["reference"].endswith(f"jit_in{resolution}_stats.npz") for r in rows)
        result = json.loads((directory / "result.json").read_text())
        assert result["status"] == "rehearsed" and result["rehearsal_of_status"] == "done"
    assert (target / "reports" / "table2-paper.md").exists() and (target / "reports" / "table2-paper.csv").exists()
    statuses = [json.loads(p.read_text()).get("status") for p in workdir.rglob("result.json")]
    assert statuses and "done" not in statuses
    assert any("no cell is marked done" in line for line in lines)


def test_a_failing_stage_is_named(workdir):
    from jitlab.experiments.grid.spec import load_spec

    extra = {**SMALL, "data.init_args.root": "imagenet", "data.init_args.global_batch_size": 5}  # 5 over 1: fine
    cell = load_spec("table2").cells("paper", {**extra, "trainer.accumulate_grad_batches": 2})[0]  # 5 / 2: fails
    lines: list[str] = []
    assert rehearse.rehearse_grid("table2", "paper", [cell], Path("runs/grids"), runner=in_process,
                                  echo=lines.append) == 1
    assert any(f"{cell.id}: failed (train: `jitlab fit` exited with code" in line for line in lines), lines


def test_fit_rehearsal_runs_the_runs_own_evaluation(workdir, monkeypatch):
    from jitlab.score.fitconfig import check_fit_config

    args = ["--data.init_args.resolution=16", "--data.init_args.global_batch_size=8", "--samples.num_images=2",
            "--samples.steps=1", "--model.net.init_args.patch_size=4", "--trainer.enable_progress_bar=false",
            "--evaluation.every_n_steps=500", "--evaluation.features=inception", "--evaluation.steps=1",
            f"--evaluation.ref_stats={stats_file(workdir / 'in16.npz', 16)}",
            f"--trainer.default_root_dir={workdir / 'runs' / 'mine'}"]
    lines: list[str] = []
    assert rehearse.rehearse_fit(args, check_fit_config(args), runner=in_process, echo=lines.append) == 0, lines
    directory = workdir / "runs" / "rehearsal" / "mine"
    summary = json.loads((directory / "rehearsal.json").read_text())
    assert summary["status"] == "rehearsed" and "FID-8" in summary["evaluation"]
    rows = [r for path in directory.rglob("metrics.json") for r in json.loads(path.read_text())["rows"]]
    assert sorted(r["step"] for r in rows) == [2, 4]  # the periodic evaluation ran before and after the resume
    assert checkpoint_state(directory / "checkpoints" / "last.ckpt").step == 4
    assert not (workdir / "runs" / "mine").exists()


def test_rehearse_flag_forms_and_the_grid_flags():
    assert pop_rehearse(["--config", "a.yaml", "--rehearse"]) == (True, ["--config", "a.yaml"])
    assert pop_rehearse(["--rehearse", "false", "--x=1"]) == (False, ["--x=1"])
    assert pop_rehearse(["--rehearse=true"]) == (True, [])
    assert rehearse.rehearsal_dir(Path("runs/grids")) == Path("runs/rehearsal/grids")
    code = main(["grid", "run", "table2", "--scale", "paper", "--rehearse", "--launcher", "slurm",
                 "--skip_preflight", "--only", "setting-a_loss-x_pred-x"])
    assert code == 2


# -- the recipe, exactly ---------------------------------------------------------------------------------------


def test_base_yaml_is_the_papers_recipe_on_imagenet(capsys):
    code, out = run_cli(["fit", "--config", str(REPO / "experiments" / "base.yaml"), "--print_config"], capsys)
    assert code == 0, out
    printed = yaml.safe_load(out[out.index("seed_everything"):])
    assert printed["data"]["class_path"] == "jitlab.core.data.ImageNetDataModule"
    data = printed["data"]["init_args"]
    assert data["resolution"] == 256 and data["global_batch_size"] == 1024
    net = printed["model"]["net"]["init_args"]
    assert (net["patch_size"], net["hidden_size"], net["bottleneck_dim"], net["in_context_len"]) == (16, 768, 128, 32)
    assert net["attn_impl"] == "fp32"  # q.k and softmax in float32, as the release
    assert printed["trainer"]["precision"] == "bf16-mixed" and printed["trainer"]["max_epochs"] == 200


def test_paper_scale_dry_runs_show_dropout_for_h_and_g_and_the_l_row(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["grid", "run", "table6", "--scale", "paper", "--dry_run", "--runs", "/nonexistent/runs"]) == 0
    out = capsys.readouterr().out
    blocks = {b.split("\n", 1)[0].split()[-4]: b for b in out.split("# ---- cell ")[1:]}
    for cell, block in blocks.items():
        config = yaml.safe_load(block.split("\n", 1)[1].split("\n# ")[0])
        drop = config["model"]["net"]["init_args"].get("proj_drop", 0.0)
        assert drop == (0.2 if cell.endswith(("model-H", "model-G")) else 0.0), cell
        assert config["model"]["net"]["init_args"]["attn_impl"] == "fp32"
    assert len(blocks) == 8
    from jitlab.experiments.grid.spec import load_spec

    cells = {c.id: c for c in load_spec("table4", root=REPO).cells("paper")}
    large = cells["component-in_context_L"]
    assert large.paper_value == 3.39 and large.config["model"]["net"]["init_args"]["hidden_size"] == 1024
    assert large.config["model"]["net"]["init_args"]["in_context_start"] == 8
    assert "component-in_context_L" not in {c.id for c in load_spec("table4", root=REPO).cells("mini")}
    text = (REPO / "experiments" / "grids" / "table6.yaml").read_text()
    assert "ASSUMED: proj_drop 0.2 for G" in text


def test_weight_decay_spares_biases_and_one_dimensional_parameters(tiny_net_factory):
    from jitlab.train.module import JiTModule, OptimConfig

    module = JiTModule(tiny_net_factory(), optim=OptimConfig(weight_decay=0.05, warmup_steps=0))
    module._trainer = SimpleNamespace(estimated_stepping_batches=10, num_training_batches=10,
                                      accumulate_grad_batches=1, datamodule=SimpleNamespace(global_batch_size=256))
    groups = module.configure_optimizers()["optimizer"].param_groups
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}
    assert set(by_decay) == {0.0, 0.05}
    names = {id(p): n for n, p in module.net.named_parameters()}
    assert all(n.endswith(".bias") or module.net.get_parameter(n).ndim <= 1 for n in map(names.get, by_decay[0.0]))
    assert all(not n.endswith(".bias") and module.net.get_parameter(n).ndim >= 2
               for n in map(names.get, by_decay[0.05]))
    assert len(by_decay[0.0]) + len(by_decay[0.05]) == len(names)
    module = JiTModule(tiny_net_factory(), optim=OptimConfig(weight_decay=0.0, warmup_steps=0))
    module._trainer = SimpleNamespace(estimated_stepping_batches=10, num_training_batches=10,
                                      accumulate_grad_batches=1, datamodule=SimpleNamespace(global_batch_size=256))
    (only,) = module.configure_optimizers()["optimizer"].param_groups  # no decay: one group, as before
    assert only["weight_decay"] == 0.0 and torch.is_tensor(only["params"][0])


def test_lab_rehearsal_of_table2_on_a_class_subset_of_the_tree(workdir):
    """The lab scale (one GPU, an ImageNet subset) rehearses on the real path: a 2-class subset, 128 and 32 px."""
    from jitlab.commands.grid import build_parser, resolve_cells

    for resolution in (128, 32):
        stats_file(workdir / "fid_stats" / f"imagenet100_{resolution}_stats.npz", resolution)
    only = ["setting-a_loss-v_pred-x", "setting-b_loss-x_pred-eps"]
    lab = {**SMALL, "data.init_args.classes": 2}  # the synthetic tree has no ImageNet-100 wnids: its first 2 classes
    args = build_parser().parse_args(["run", "table2", "--scale", "lab", "--data_root", "imagenet", "--only", *only,
                                      *[f"--set={k}={json.dumps(v)}" for k, v in lab.items()]])
    _, cells = resolve_cells(args)
    lines: list[str] = []
    code = rehearse.rehearse_grid("table2", "lab", cells, Path("runs/grids"), runner=in_process, echo=lines.append)
    assert code == 0, "\n".join(lines)
    target = workdir / "runs" / "rehearsal" / "grids" / "table2" / "lab"
    for cell, resolution in zip(only, (128, 32)):
        result = json.loads((target / cell / "result.json").read_text())
        assert result["status"] == "rehearsed" and result["rehearsal_of_status"] == "done"
        rows = json.loads((target / cell / "metrics.json").read_text())["rows"]
        assert all(r["reference"].endswith(f"imagenet100_{resolution}_stats.npz") for r in rows)
        assert checkpoint_state(target / cell / "checkpoints" / "last.ckpt").step == 4
    assert (workdir / "runs" / "rehearsal" / "grids" / "reports" / "table2-lab.md").exists()
    assert not (workdir / "runs" / "grids").exists()
