"""The grid orchestrator: specs parse, dry runs resolve valid configs, the runner skips, resumes and records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from jitlab.train.checkpoint import checkpoint_state
from jitlab.commands.cli import main
from jitlab.errors import ConfigError
from jitlab.experiments.grid import runner
from jitlab.experiments.grid.spec import list_grids, load_spec
from tests.conftest import tiny_fit_config
from tests.test_evaluate import quick_refnet  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
GRIDS = list_grids(REPO)
PAPER_ONLY = {"table7", "table8"}  # the released models' 600-epoch tables: no mini stand-in (tests/test_recipes.py)
MINI_ONLY = {"fig2"}  # Figure 2's toy (a spiral, a small MLP) is a CPU experiment in the paper too (tests/test_toy.py)

TINY_BASE = tiny_fit_config(30)  # a cell that trains in seconds
TINY_EVAL = {"features": "refnet", "num_images": 8, "sampler": "euler", "steps": 2, "cfg": [1.0],
             "cfg_interval": [[0.0, 1.0]], "ema": [0], "batch_size": 8}


def tiny_grid(root: Path, preds=("x", "eps"), extra_set: dict | None = None) -> str:
    (root / "experiments" / "grids").mkdir(parents=True, exist_ok=True)
    (root / "base.yaml").write_text(yaml.safe_dump(TINY_BASE))
    spec = {
        "name": "tiny", "title": "tiny", "paper_metric": "FID-50K",
        "axes": {"pred": {"key": "model.flow.pred", "values": list(preds)}},
        "scales": {"mini": {"config": "base.yaml", "set": extra_set or {}, "eval": TINY_EVAL}},
        "paper": [{"pred": "x", "value": 1.5}],
    }
    (root / "experiments" / "grids" / "tiny.yaml").write_text(yaml.safe_dump(spec))
    return "tiny"


def in_process(args, log, env):
    """Run a `jitlab` verb in this process (so the quick_refnet fixture applies); output to the log."""
    with open(log, "a") as out:
        out.write(f"\n$ {runner.command_line(args)}\n")
    return main(args)


# -- specs ---------------------------------------------------------------------------------------

def test_every_paper_grid_has_a_spec_with_all_three_scales():
    assert {"table2", "table3", "fig4", "table4", "table5", "table6"} <= set(GRIDS)
    for name in [g for g in GRIDS if g not in PAPER_ONLY | MINI_ONLY]:
        spec = load_spec(name, root=REPO)
        assert set(spec.scales) == {"mini", "lab", "paper"}, name
        for scale in ("mini", "lab", "paper"):
            cells = spec.cells(scale)
            assert cells and len({c.id for c in cells}) == len(cells), (name, scale)
            assert all(c.eval.get("num_images") for c in cells)


@pytest.mark.parametrize("name,scale", [(g, s) for g in GRIDS for s in ("mini", "lab", "paper")
                                        if s in load_spec(g, root=REPO).scales])
def test_dry_run_resolves_valid_configs(name, scale, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["grid", "run", name, "--scale", scale, "--dry_run", "--runs", "/nonexistent/runs"])
    out = capsys.readouterr().out
    n = len(load_spec(name, root=REPO).cells(scale))
    assert code == 0, out[-2000:]
    assert out.count("# config: valid") == n and f"# {n} cells, 0 invalid" in out
    assert out.count("# shape: ") == n  # every cell's ratios are shown (tests/test_ratios.py); the toy has none
    assert "patch/width" in out or name in MINI_ONLY
    assert not Path("/nonexistent/runs").exists()


def test_table2_cells_carry_the_papers_numbers_and_ratios():
    spec = load_spec("table2", root=REPO)
    mini = {c.id: c for c in spec.cells("mini", train_seeds=1)}
    paper = {c.id: c for c in spec.cells("paper")}
    assert len(paper) == 18 and len(mini) == 36  # the mini also runs (b) at 16x16/p4 and /p2
    assert len(spec.cells("mini")) == 3 * 36  # 3 trainings per cell
    a, b = mini["setting-a_loss-v_pred-x"], mini["setting-b_loss-v_pred-eps"]
    assert a.paper_value == 8.62 and b.paper_value == 3.63
    patch_dim = lambda c: c.config["model"]["net"]["init_args"]["patch_size"] ** 2 * 3  # noqa: E731
    width = a.config["model"]["net"]["init_args"]["hidden_size"]
    # (a) = the width, (b) 1/16 of it (tests/test_ratios.py)
    assert patch_dim(a) == width and 16 * patch_dim(b) == width
    assert a.config["model"]["flow"] == {**a.config["model"]["flow"], "pred": "x", "loss": "v"}
    p = paper["setting-a_loss-x_pred-eps"].config
    assert p["data"]["init_args"]["global_batch_size"] == 1024 and p["trainer"]["max_epochs"] == 200
    assert p["trainer"]["precision"] == "bf16-mixed" and p["model"]["optim"]["blr"] == 5e-5
    assert paper["setting-b_loss-x_pred-x"].eval["ref_stats"].endswith("in64_stats.npz")


def test_slurm_dry_run_of_table2_prints_18_cells_with_the_paper_recipe(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["grid", "run", "table2", "--scale", "paper", "--launcher", "slurm", "--dry_run",
                 "--data_root", "/data/imagenet", "--nodes", "2", "--partition", "gpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("# slurm job for cell") == 18
    assert "--trainer.devices=8" in out and "--trainer.num_nodes=2" in out and "'slurm_partition': 'gpu'" in out
    assert out.count("root: /data/imagenet") == 18 and "FID-50K" in out


def test_plan_prints_gmacs_and_gpu_hours(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["grid", "plan", "table5", "--scale", "paper"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| resolution-")]
    assert len(rows) == 3
    gmacs = [float(r.split("|")[3]) for r in rows]
    assert all(abs(g / 26 - 1) < 0.12 for g in gmacs), gmacs  # Table 5: about constant compute
    assert "GPU-hours" in out


def test_bad_specs_fail_naming_file_and_key(tmp_path):
    tiny_grid(tmp_path)
    path = tmp_path / "experiments" / "grids" / "tiny.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["scales"]["mini"]["evall"] = {}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="evall"):
        load_spec("tiny", root=tmp_path)
    with pytest.raises(ConfigError, match="no grid file"):
        load_spec("nope", root=tmp_path)


# -- the runner ----------------------------------------------------------------------------------

def test_failed_cell_is_recorded_and_the_grid_goes_on_then_skips_what_finished(tmp_path, quick_refnet):  # noqa: F811
    # eps-pred gets an accumulation that the global batch of 8 cannot be split into: it fails at set-up
    tiny_grid(tmp_path)
    spec = load_spec("tiny", root=tmp_path)
    cells = spec.cells("mini")
    cells[1].config["trainer"]["accumulate_grad_batches"] = 3
    runs = tmp_path / "runs"
    lines: list[str] = []
    outcomes = runner.run_local(cells, runs, threads=1, runner=in_process, echo=lines.append)
    status = {o.cell.id: o.status for o in outcomes}
    assert status == {"pred-x": "done", "pred-eps": "failed"}
    assert lines[0].startswith("[cell 1/2] tiny mini pred-x: done") and "left" in lines[0]
    done = json.loads((runs / "tiny" / "mini" / "pred-x" / "result.json").read_text())
    assert done["status"] == "done" and done["step"] == 30 and done["paper_value"] == 1.5
    assert done["rows"][0]["metric"].startswith("FD-ref") and done["rows"][0]["n_samples"] == 8
    # where it ran (trainings differ across CPUs): the machine, and the threads its processes were given
    assert done["machine"]["CPU"].endswith("logical cores") and done["machine"]["torch"] == torch.__version__
    assert done["machine"]["torch threads"] == "1"
    failed = json.loads((runs / "tiny" / "mini" / "pred-eps" / "result.json").read_text())
    assert failed["status"] == "failed" and "train.log" in failed["error"]
    # again: the finished cell is skipped untouched, the failed one is tried again
    mtime = (runs / "tiny" / "mini" / "pred-x" / "result.json").stat().st_mtime_ns
    outcomes = runner.run_local(cells, runs, runner=in_process, echo=lines.append)
    assert {o.cell.id: o.status for o in outcomes} == {"pred-x": "skipped", "pred-eps": "failed"}
    assert (runs / "tiny" / "mini" / "pred-x" / "result.json").stat().st_mtime_ns == mtime
    assert not list(runs.rglob(".*.tmp*"))


def test_diverged_cell_is_recorded_as_such_and_not_rerun(tmp_path):
    tiny_grid(tmp_path, preds=("x",))
    cell = load_spec("tiny", root=tmp_path).cells("mini")[0]
    calls = []

    def nan_training(args, log, env):
        calls.append(args[0])
        ckpt = runner.last_checkpoint(runner.cell_dir(tmp_path / "runs", cell))
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {"net.w": torch.tensor([1.0, float("nan")])}, "global_step": 12}, ckpt)
        return 0

    outcome = runner.run_local([cell], tmp_path / "runs", runner=nan_training, echo=lambda _: None)[0]
    assert outcome.status == "diverged" and calls == ["fit"]  # not evaluated
    result = json.loads((runner.cell_dir(tmp_path / "runs", cell) / "result.json").read_text())
    assert result["status"] == "diverged" and "step 12" in result["error"]
    assert runner.run_local([cell], tmp_path / "runs", runner=nan_training, echo=lambda _: None)[0].status == "skipped"
    assert calls == ["fit"]


def test_a_directory_of_another_config_is_refused(tmp_path):
    tiny_grid(tmp_path, preds=("x",))
    cell = load_spec("tiny", root=tmp_path).cells("mini")[0]
    directory = runner.cell_dir(tmp_path / "runs", cell)
    runner.prepare_cell(cell, directory)
    cell.config["trainer"]["max_steps"] = 31
    with pytest.raises(ConfigError, match=r"other settings, unfinished \(trainer.max_steps: 30 -> 31\)"):
        runner.prepare_cell(cell, directory)


def test_killed_cell_resumes_from_last_ckpt_nothing_lost_nothing_repeated(tmp_path, quick_refnet):  # noqa: F811
    tiny_grid(tmp_path, preds=("x",), extra_set={"trainer.max_steps": 200})
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the runner in a child process (its training is a grandchild): both are killed below
    child = ("from pathlib import Path; from jitlab.experiments.grid import runner; "
             "from jitlab.experiments.grid.spec import load_spec; "
             "cells = load_spec('tiny', root=Path('.')).cells('mini', {'trainer.max_steps': 200}); "
             f"runner.run_local(cells, Path({str(runs)!r}), jobs=1, threads=1)")
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cell = load_spec("tiny", root=tmp_path).cells("mini", {"trainer.max_steps": 200})[0]
    directory = runner.cell_dir(runs, cell)
    deadline = time.time() + 240
    step_at_kill = 0
    while time.time() < deadline and proc.poll() is None:
        if runner.last_checkpoint(directory).exists():
            try:
                step_at_kill = checkpoint_state(runner.last_checkpoint(directory))[0]
            except Exception:  # being written at this instant (Lightning writes in place)
                step_at_kill = 0
            if step_at_kill >= 20:
                break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the grid and its training subprocess, mid-run
    proc.wait()
    from jitlab.lock import CellLock, holder_alive

    gone = time.time() + 60  # the trainer (not a child of this test) may take a moment to die on a loaded machine;
    while time.time() < gone and holder_alive(CellLock(directory).read() or {}):  # until then its lock holds
        time.sleep(0.2)
    assert 20 <= step_at_kill < 200, "the cell was not caught mid-run"
    assert not (directory / "result.json").exists()

    # the grid file is unchanged, so the same run continues: resume from last.ckpt to step 200
    resume_step = checkpoint_state(runner.last_checkpoint(directory))[0]
    assert resume_step >= 20
    cells = load_spec("tiny", root=tmp_path).cells("mini", {"trainer.max_steps": 200})
    log_before = (directory / "train.log").read_text()
    outcome = runner.run_local(cells, runs, runner=in_process, echo=lambda _: None)[0]
    assert outcome.status == "done"
    second = (directory / "train.log").read_text()[len(log_before):]
    assert "--ckpt_path=auto" in second  # the newest checkpoint of the cell (the logged steps below show it)
    result = json.loads((directory / "result.json").read_text())
    assert result["step"] == 200 and result["status"] == "done"
    # the resumed run trained exactly the steps after its checkpoint: its logged steps start just
    # after resume_step (nothing repeated) and run to the end (nothing lost)
    steps = logged_steps(sorted((directory / "lightning_logs").glob("version_*"))[-1])
    assert resume_step < min(steps) <= resume_step + 5 and max(steps) >= 195
    assert len(steps) == len(set(steps))


def logged_steps(version_dir: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(version_dir))
    events.Reload()
    return [e.step for e in events.Scalars("train/loss")]


def test_a_cell_identical_to_a_finished_one_of_another_grid_is_reused(tmp_path):
    tiny_grid(tmp_path, preds=("x",))
    spec_path = tmp_path / "experiments" / "grids" / "tiny.yaml"
    other = yaml.safe_load(spec_path.read_text())
    other["name"] = "tiny2"
    (spec_path.parent / "tiny2.yaml").write_text(yaml.safe_dump(other))
    calls = []

    def nan_training(args, log, env):
        calls.append(args)
        ckpt = Path(args[args.index("--config") + 1]).parent / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {"net.w": torch.tensor([float("nan")])}, "global_step": 3}, ckpt)
        return 0

    first = load_spec("tiny", root=tmp_path).cells("mini")
    second = load_spec("tiny2", root=tmp_path).cells("mini")
    assert first[0].config_hash == second[0].config_hash
    runner.run_local(first, tmp_path / "runs", runner=nan_training, echo=lambda _: None)
    outcome = runner.run_local(second, tmp_path / "runs", runner=nan_training, echo=lambda _: None)[0]
    assert len(calls) == 1 and outcome.status == "diverged" and "same run as" in outcome.summary
    reused = json.loads((runner.cell_dir(tmp_path / "runs", second[0]) / "result.json").read_text())
    assert reused["grid"] == "tiny2" and reused["reused_from"].endswith("tiny/mini/pred-x")


def test_checkpoint_state_reads_weights_and_emas_not_other_callbacks(tmp_path):
    ckpt = {"state_dict": {"net.w": torch.ones(3)}, "global_step": 7,
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"kth_value": torch.tensor(float("inf"))},
                          "MultiEMA{'attr': 'net', 'decays': [0.999]}": {"averages": [{"w": torch.ones(3)}]}}}
    torch.save(ckpt, tmp_path / "a.ckpt")
    assert checkpoint_state(tmp_path / "a.ckpt") == (7, True, None)
    ckpt["callbacks"]["MultiEMA{'attr': 'net', 'decays': [0.999]}"]["averages"][0]["w"][1] = float("nan")
    torch.save(ckpt, tmp_path / "b.ckpt")
    assert checkpoint_state(tmp_path / "b.ckpt") == (7, False, None)


def test_train_time_comes_from_the_checkpoint_timer_so_a_resumed_cell_counts_every_attempt(tmp_path):
    tiny_grid(tmp_path, preds=("x",))
    cell = load_spec("tiny", root=tmp_path).cells("mini")[0]

    def resumed_training(args, log, env):  # returns at once, as a resume of a finished training does
        if "--config" not in args:
            return 1  # the evaluation: not under test here
        ckpt = Path(args[args.index("--config") + 1]).parent / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {"net.w": torch.ones(2)}, "global_step": 30,
                    "callbacks": {"Timer": {"time_elapsed": {"train": 512.5, "validate": 3.0}}}}, ckpt)
        return 0

    runner.run_local([cell], tmp_path / "runs", runner=resumed_training, echo=lambda _: None)
    result = json.loads((runner.cell_dir(tmp_path / "runs", cell) / "result.json").read_text())
    assert result["train_seconds"] == 512.5 and result["step"] == 30


@pytest.mark.parametrize("key, value, field", [("steps", 0, "steps"), ("final_step", "exact", "final_step"),
                                                ("num_images", -5, "num_images")])
def test_a_bad_eval_value_fails_when_the_grid_loads_naming_file_cell_and_key(tmp_path, key, value, field):
    name = tiny_grid(tmp_path)
    path = tmp_path / "experiments" / "grids" / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["scales"]["mini"]["eval"] = {**TINY_EVAL, key: value}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=rf"tiny.yaml: eval of cell pred-x.*{field}"):
        load_spec(name, root=tmp_path).cells("mini")
