"""Runs that are never scored stale, never trained twice, never cut short (issue 25).

The checkpoint of a run at its final step (always saved, overwritten on resume, written atomically), a cell's
identity (a finished cell of other settings is not this cell's result) and the smaller one-line errors; trainers
that die with their runner and hold the cell's lock until they have are in test_killed_runners.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from jitlab.train.checkpoint import (AtomicCheckpointIO, RunCheckpoint, checkpoint_state, checkpoint_step,
                                     read_checkpoint)
from jitlab.errors import ConfigError
from jitlab.experiments.grid import runner
from jitlab.experiments.grid.spec import load_spec
from jitlab.experiments.rundir import is_finished
from tests.conftest import run_cli, tiny_net
from tests.test_evaluate import quick_refnet  # noqa: F401  (fixture)
from tests.test_grid import TINY_BASE, tiny_grid
from tests.test_grid_scheduling import Clock, fake_cell_runner
from tests.test_sampling import tiny_checkpoint  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train(root: Path, steps: int, callback: ModelCheckpoint) -> L.Trainer:
    """A few steps of a tiny JiT with ``callback`` as its checkpointing."""
    from jitlab.core.data import EmbeddedDataModule
    from jitlab.train.module import JiTModule, OptimConfig

    L.seed_everything(0)
    module = JiTModule(tiny_net(depth=1, in_context_len=0), optim=OptimConfig(lr=1e-2, warmup_steps=0))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=root, callbacks=[callback])
    trainer.fit(module, EmbeddedDataModule(resolution=16, global_batch_size=8, train_size=64, num_workers=0))
    return trainer


def step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


# -- the checkpoint of a run at its final step ----------------------------------------------------

def test_the_final_step_is_saved_whatever_the_interval_and_written_atomically(tmp_path, one_thread):
    plain = tmp_path / "plain"
    train(plain, 7, ModelCheckpoint(dirpath=plain, every_n_train_steps=5, save_last=True, save_top_k=0))
    assert step_of(plain / "last.ckpt") == 5  # Lightning's own: the last 2 steps are lost
    ours = tmp_path / "ours"
    trainer = train(ours, 7, RunCheckpoint(dirpath=ours, every_n_train_steps=5, save_last=True, save_top_k=0))
    assert step_of(ours / "last.ckpt") == 7
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert not list(ours.glob(".*.tmp*"))


def test_a_new_run_in_the_same_directory_overwrites_last_ckpt_never_last_v1(tmp_path, one_thread):
    plain = tmp_path / "plain"
    for steps in (6, 4):
        train(plain, steps, ModelCheckpoint(dirpath=plain, every_n_train_steps=2, save_last=True, save_top_k=0))
    assert step_of(plain / "last.ckpt") == 6 and step_of(plain / "last-v1.ckpt") == 4  # Lightning's: two "lasts"
    ours = tmp_path / "ours"
    for steps in (6, 4):
        train(ours, steps, RunCheckpoint(dirpath=ours, every_n_train_steps=2, save_last=True, save_top_k=0))
    assert step_of(ours / "last.ckpt") == 4 and sorted(p.name for p in ours.glob("*.ckpt")) == ["last.ckpt"]


def test_jitlab_fit_of_30_steps_with_an_interval_of_20_ends_with_its_checkpoint_at_30(tmp_path, capsys, one_thread):
    config = tmp_path / "tiny.yaml"
    tiny = {**TINY_BASE, "checkpoint": {"save_last": True, "every_n_train_steps": 20, "save_top_k": 0},
            "trainer": {**TINY_BASE["trainer"], "max_steps": 30}}
    config.write_text(yaml.safe_dump(tiny))
    code, out = run_cli(["fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path / 'run'}",
                         f"--checkpoint.dirpath={tmp_path / 'ckpts'}"], capsys)
    assert code == 0, out[-2000:]
    assert step_of(tmp_path / "ckpts" / "last.ckpt") == 30
    # resumed to 40 steps: last.ckpt itself moves on (the file a grid scores), no last-v1.ckpt beside it
    code, out = run_cli(["fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path / 'run'}",
                         f"--checkpoint.dirpath={tmp_path / 'ckpts'}", "--trainer.max_steps=40",
                         "--ckpt_path=last"], capsys)
    assert code == 0, out[-2000:]
    assert step_of(tmp_path / "ckpts" / "last.ckpt") == 40 and not list((tmp_path / "ckpts").glob("last-v*"))


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_last_ckpt_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 10, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    written_in = []
    real_save = torch.save

    def half_then_full_disk(obj, f, *args, **kwargs):
        written_in.append(Path(f.name).parent)
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full_disk)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"global_step": 20, "w": torch.zeros(1000)}, path)
    assert path.read_bytes() == before and step_of(path) == 10
    assert written_in == [path.parent]  # the bytes go where they stay: the run directory's disk check covers them
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_evaluation_reads_a_checkpoint_memory_mapped_without_its_optimizer_state(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    torch.save({"state_dict": {"net.w": torch.ones(3)}, "optimizer_states": [{"exp_avg": torch.ones(3)}],
                "lr_schedulers": [{"last_epoch": 3}], "global_step": 3}, path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ckpt = read_checkpoint(path)
    assert set(ckpt) == {"state_dict", "global_step"} and calls[-1]["mmap"] is True and calls[-1]["weights_only"]
    legacy = tmp_path / "legacy.ckpt"  # torch's pre-zip format cannot be memory-mapped: read normally
    torch.save({"state_dict": {}, "global_step": 1}, legacy, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)
    assert read_checkpoint(legacy)["global_step"] == 1 and calls[-1]["mmap"] is False
    assert checkpoint_state(path).step == checkpoint_step(path) == 3 and checkpoint_step(tmp_path / "no.ckpt") is None


# -- what a grid counts as done ---------------------------------------------------------------------

def test_a_cell_scored_short_of_its_max_steps_is_not_done_and_the_newest_step_is_scored(tmp_path):
    tiny_grid(tmp_path, preds=("x",))
    cell = load_spec("tiny", root=tmp_path).cells("mini")[0]  # max_steps 30
    directory = runner.cell_dir(tmp_path / "runs", cell)
    runner.prepare_cell(cell, directory)
    stale = {**runner.cell_meta(cell), "status": "done", "step": 20, "rows": []}
    assert not is_finished(stale, cell) and is_finished({**stale, "step": 30}, cell)
    assert is_finished({**stale, "status": "diverged"}, cell)  # a diverged cell needs no more steps
    assert not is_finished({**stale, "step": 30, "config_hash": "other"}, cell)
    # an older jitlab's leftovers: a stale last.ckpt at 20 beside last-v1.ckpt at 30; scored by step, not by name
    (directory / "checkpoints").mkdir()
    for name, step in (("last.ckpt", 20), ("last-v1.ckpt", 30)):
        torch.save({"state_dict": {"net.w": torch.ones(2)}, "global_step": step}, directory / "checkpoints" / name)
    assert runner.final_checkpoint(directory).name == "last-v1.ckpt"
    (directory / "result.json").write_text(json.dumps(stale))
    calls = []

    def evaluation_only(args, log, env):
        calls.append(args[0])
        if args[0] == "eval":
            assert args[1].endswith("last-v1.ckpt")
            row = {"metric": "FD-ref-8", "value": 4.0, "step": 30}
            (directory / "metrics.json").write_text(json.dumps({"rows": [row], "best": row}))
        return 0

    outcome = runner.run_local([cell], tmp_path / "runs", runner=evaluation_only, echo=lambda _: None)[0]
    assert outcome.status == "done" and calls == ["fit", "eval"]
    assert json.loads((directory / "result.json").read_text())["step"] == 30


def test_training_that_ends_short_of_max_steps_is_failed_not_done(tmp_path):
    tiny_grid(tmp_path, preds=("x",))
    cell = load_spec("tiny", root=tmp_path).cells("mini")[0]

    def stops_at_20(args, log, env):
        ckpt = runner.last_checkpoint(runner.cell_dir(tmp_path / "runs", cell))
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {"net.w": torch.ones(2)}, "global_step": 20}, ckpt)
        return 0

    outcome = runner.run_local([cell], tmp_path / "runs", runner=stops_at_20, echo=lambda _: None)[0]
    assert outcome.status == "failed" and "at step 20, not the trainer.max_steps 30" in outcome.summary


def test_a_finished_cell_run_again_with_other_max_steps_is_refused_naming_the_difference(tmp_path):
    tiny_grid(tmp_path, preds=("x", "eps"))
    spec, runs = load_spec("tiny", root=tmp_path), tmp_path / "runs"
    trial = spec.cells("mini", {"trainer.max_steps": 20})
    outcomes = runner.run_local(trial, runs, runner=fake_cell_runner(Clock(), 0.0), echo=lambda _: None)
    assert [o.status for o in outcomes] == ["done", "done"]
    again = runner.run_local(trial, runs, runner=fake_cell_runner(Clock(), 0.0), echo=lambda _: None)
    assert [o.status for o in again] == ["skipped", "skipped"]  # the same settings: the result stands
    calls = []
    for extra in ({"trainer.max_steps": 40}, {}):  # --set trainer.max_steps=40, or the grid's default (30)
        with pytest.raises(ConfigError, match=r"a run of other settings, done \(trainer.max_steps: 20 -> "
                                              rf"{extra.get('trainer.max_steps', 30)}\)"):
            runner.run_local(spec.cells("mini", extra), runs, runner=lambda *a: calls.append(a) or 0,
                             echo=lambda _: None)
    assert not calls  # refused before anything ran
    # the data's location is not a setting: another --data_root is the same cell
    moved = spec.cells("mini", {"trainer.max_steps": 20, "data.init_args.root": "/elsewhere"})
    assert [o.status for o in runner.run_local(moved, runs, runner=fake_cell_runner(Clock(), 0.0),
                                               echo=lambda _: None)] == ["skipped", "skipped"]


# -- the smaller items ------------------------------------------------------------------------------

def test_bad_trainer_values_and_unreadable_configs_are_one_error_line(tmp_path, capsys):
    code, out = run_cli(["fit", "--trainer.max_steps=-5", f"--trainer.default_root_dir={tmp_path}"], capsys)
    assert code == 2 and "Traceback" not in out
    assert "jitlab: error: trainer: `max_steps` must be a non-negative integer or -1" in out
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    code, out = run_cli(["fit", "--config", str(binary)], capsys)
    assert code == 2 and "Traceback" not in out
    assert f"jitlab: error: --config: {binary} cannot be read as a YAML text file (UnicodeDecodeError" in out


def test_a_batch_larger_than_the_data_set_is_an_error_not_a_run_that_trained_nothing(tmp_path, capsys, one_thread):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_BASE))
    common = ["fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path / 'run'}",
              "--data.init_args.train_size=64", "--trainer.max_steps=2", "--checkpoint.every_n_train_steps=1"]
    code, out = run_cli([*common, "--data.init_args.global_batch_size=128"], capsys)
    assert code == 2 and "Traceback" not in out
    assert "jitlab: error: data.init_args.global_batch_size: 128 is larger than the training data give" in out
    code, out = run_cli([*common, "--data.init_args.global_batch_size=64"], capsys)  # one full batch: trains
    assert code == 0, out[-2000:]


def test_an_absurd_cfg_scale_is_refused_before_anything_is_generated(tmp_path, capsys):
    from jitlab.commands import evaluate

    code = evaluate.main([str(tmp_path / "none.ckpt"), "--cfg", "1.0", "1e30", "--out", str(tmp_path / "m.json")])
    out = capsys.readouterr().err
    assert code == 2 and "jitlab: error: --cfg: a CFG scale above 100 makes no images" in out and "1e+30" in out
    from jitlab.core.settings import EvalSettings

    assert EvalSettings.from_dict({"cfg": [1.0, 3.0, 100.0]}).cfg == (1.0, 3.0, 100.0)


def test_eval_names_each_ema_by_its_decay_in_every_line(tiny_checkpoint, quick_refnet, tmp_path, capsys):  # noqa: F811
    from jitlab.commands import evaluate

    code = evaluate.main([str(tiny_checkpoint), "--num_images", "8", "--steps", "1", "--ema", "1", "--cfg", "1.0",
                          "--ref_images", "16", "--batch_size", "8", "--out", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert code == 0
    point = next(line for line in out.splitlines() if "point 1/1" in line)
    best = next(line for line in out.splitlines() if "best:" in line)
    assert "(ema 0.5," in point and "(ema 0.5," in best and "at step 5" in best  # decays [0.9, 0.5]: index 1


def test_grid_list_and_plan_find_the_grids_outside_the_repository(tmp_path, monkeypatch, capsys):
    from jitlab.commands.cli import main

    monkeypatch.chdir(tmp_path)  # no experiments/grids here: the checkout jitlab runs from is used, as `report` does
    assert main(["grid", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("dsd_latent") and "table2" in listed
    assert main(["grid", "plan", "table2", "--scale", "paper"]) == 0 and "GPU" in capsys.readouterr().out
    tiny_grid(tmp_path)  # a directory with its own grids: those, as before
    assert main(["grid", "list"]) == 0 and capsys.readouterr().out.split()[0] == "tiny"


@pytest.mark.parametrize("verb", [["grid", "list"], ["--help"]])
def test_a_listing_into_a_closed_pipe_exits_quietly(verb):
    """`jitlab grid list | head`, `jitlab | head`: the dispatcher ends quietly for every verb."""
    buffered = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}  # as in a shell: the pipe fails at the flush
    proc = subprocess.Popen([sys.executable, "-m", "jitlab.commands.cli", *verb], cwd=REPO, env=buffered,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("action", ["run"])
def test_jobs_0_is_an_error(action, capsys):
    from jitlab.commands.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["grid", action, "table2", "--jobs", "0"])
    assert exit_.value.code == 2
    assert "argument --jobs: must be a whole number >= 1, got 0" in capsys.readouterr().err


def test_report_marks_a_result_scored_short_of_its_last_step_stale():
    from types import SimpleNamespace

    from jitlab.experiments.rundir import is_stale

    cell = SimpleNamespace(config_hash="abc", config={"trainer": {"max_steps": 80}})
    done = {"status": "done", "config_hash": "abc"}
    assert is_stale({**done, "step": 66}, cell)  # scored on the checkpoint of an interruption
    assert not is_stale({**done, "step": 80}, cell)
    assert not is_stale(done, cell)  # an older result without its step is not judged by it
    assert not is_stale({"status": "diverged", "config_hash": "abc", "step": 12}, cell)
    assert is_stale({**done, "step": 80, "config_hash": "other"}, cell)
    assert not is_stale(None, cell)
