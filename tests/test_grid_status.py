"""`jitlab grid status`: each cell's state read from its run directory, and the time left weighed by counted work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from jitlab.atomic import write_json
from jitlab.experiments.grid.runner import cell_meta, prepare_cell
from jitlab.experiments.grid.slurm import JOB_RECORD
from jitlab.experiments.grid.spec import load_spec
from jitlab.experiments.grid.status import cell_status, seconds_left, status_lines
from jitlab.experiments.rundir import cell_dir
from jitlab.lock import LOCK_NAME, this_holder
from tests.conftest import run_cli

STATES = ["done", "stale", "failed", "interrupted", "running", "dead-lock", "other", "empty", "diverged"]


def result(cell, status: str, step: int, seconds: float | None, error: str | None = None) -> dict:
    rows = [{"metric": "FD-ref-500", "value": 31.25, "n_samples": 500}] if status == "done" else []
    return {**cell_meta(cell), "rows": rows, "status": status, "step": step, "seconds": seconds, "error": error}


def fake_checkpoint(path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {}, "optimizer_states": [], "loops": {},
                "global_step": step}, path)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture()
def grid_runs(tmp_path):
    """Nine Table 2 mini cells (1,000 steps each), one per state, their run directories written by hand."""
    every = load_spec("table2").cells("mini", {}, 1)
    p2 = next(c for c in every if c.labels["setting"] == "b16p2")  # 64 tokens where (a) has 16: more work
    cells = every[:len(STATES) - 2] + [p2, every[len(STATES) - 2]]  # "empty" is the p2 cell
    runs = tmp_path / "runs"
    for name, cell in zip(STATES, cells):
        directory = cell_dir(runs, cell)
        if name == "empty":
            continue
        prepare_cell(cell, directory)
        if name == "done":
            write_json(directory / "result.json", result(cell, "done", 1000, 100.0))
        elif name == "stale":  # scored at an interruption's checkpoint
            write_json(directory / "result.json", result(cell, "done", 500, 60.0))
        elif name == "failed":
            write_json(directory / "result.json", result(cell, "failed", 0, 5.0, "fit exited with code 1"))
        elif name == "interrupted":
            fake_checkpoint(directory / "checkpoints" / "last.ckpt", 250)
        elif name == "running":
            write_json(directory / LOCK_NAME, this_holder())  # this test's process: alive
        elif name == "dead-lock":
            write_json(directory / LOCK_NAME, {**this_holder(), "pid": dead_pid()})
        elif name == "other":
            meta = json.loads((directory / "cell.json").read_text())
            write_json(directory / "cell.json", {**meta, "config_hash": "0123456789abcdef"})
        elif name == "diverged":
            write_json(directory / "result.json", result(cell, "diverged", 400, 300.0, "loss is nan at step 400"))
    return cells, runs


def test_each_cell_state_is_read_from_its_run_directory(grid_runs):
    cells, runs = grid_runs
    got = {name: cell_status(cell, runs) for name, cell in zip(STATES, cells)}
    assert {name: s.state for name, s in got.items()} == {
        "done": "done", "stale": "stale", "failed": "failed", "interrupted": "interrupted", "running": "running",
        "dead-lock": "not started", "other": "other settings", "empty": "not started", "diverged": "diverged"}
    assert got["done"].detail == "FD-ref-500 31.25 at step 1000" and got["done"].seconds == 100.0
    assert "scored at step 500 of 1000" in got["stale"].detail
    assert "fit exited with code 1" in got["failed"].detail and "runs again" in got["failed"].detail
    assert got["interrupted"].step == 250 and "step 250 of 1000; resumes" in got["interrupted"].detail
    assert f"pid {os.getpid()}" in got["running"].detail and "no checkpoint yet" in got["running"].detail
    assert "other settings" in got["other"].detail and "loss is nan" in got["diverged"].detail
    assert not cell_dir(runs, cells[STATES.index("empty")]).exists()  # reading writes nothing
    released = cell_status(cells[0], runs, released=True)  # a training is no run of the release's weights
    assert released.state == "other settings" and "trained and converted weights are never mixed" in released.detail


def test_time_left_is_the_finished_cells_pace_times_the_work_still_to_do(grid_runs):
    cells, runs = grid_runs
    statuses = [cell_status(cell, runs) for cell in cells]
    # every cell weighs 2 units: done (100 s) and diverged (300 s) give 100 s per unit; left are stale, failed,
    # running and both not-started cells whole, the interrupted one 3/4 (step 250 of 1000): 5.75 cells = 11.5 units
    left, timed = seconds_left(statuses, work=lambda cell: 2.0)
    assert timed == 2 and left == pytest.approx(1150.0)
    # a cell of 10 units left (other work: the p2 panel's network) weighs five times the others
    left, _ = seconds_left(statuses, work=lambda cell: 10.0 if cell.labels["setting"] == "b16p2" else 2.0)
    assert left == pytest.approx(1150.0 + 800.0)
    lines = status_lines(statuses, 1150.0, timed, jobs=2)
    assert lines[-1].startswith("# 9 cells: 1 done, 1 diverged, 1 running, 1 interrupted, 1 stale, 1 failed, "
                                "2 not started, 1 other settings; ~9m35s left at 2 cell(s) at a time (19m10s")
    assert seconds_left([s for s in statuses if s.state != "done" and s.state != "diverged"])[0] is None


def test_the_verb_prints_a_line_per_cell_and_json(grid_runs, capsys):
    cells, runs = grid_runs
    only = [c.id for c in cells]
    code, out = run_cli(["grid", "status", "table2", "--runs", str(runs), "--only", *only, "--jobs", "1",
                         "--train_seeds", "1"], capsys)
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0] == f"# {load_spec('table2').title} at mini scale, runs under {runs}" and len(lines) == 11
    assert lines[1].split()[:2] == ["done", cells[0].id] and "not started    setting-b16p2" in out
    assert "left at 1 cell(s) at a time" in lines[-1]
    code, out = run_cli(["grid", "status", "table2", "--runs", str(runs), "--only", *only, "--json",
                         "--train_seeds", "1"], capsys)
    payload = json.loads(out)
    assert payload["counts"]["not started"] == 2 and sorted(c["cell"] for c in payload["cells"]) == sorted(only)
    assert payload["cell_seconds_left"] > 0 and payload["timed_cells"] == 2


@pytest.mark.parametrize("state, word", [("PENDING", "queued"), ("REQUEUED", "queued"), ("RUNNING", "running")])
def test_a_cell_whose_slurm_job_waits_is_queued_not_running(grid_runs, monkeypatch, state, word):
    cells, runs = grid_runs
    empty = cells[STATES.index("empty")]
    directory = cell_dir(runs, empty)
    prepare_cell(empty, directory)
    write_json(directory / JOB_RECORD, {"job_id": "4242"})
    monkeypatch.setattr("jitlab.experiments.grid.slurm.job_state", lambda job_id: state if job_id == "4242" else None)
    got = cell_status(empty, runs)
    assert (got.state, got.detail) == (word, f"no checkpoint yet; job 4242 is {state}")
    assert got.left == 1.0  # a queued or running cell's work is still to do
    monkeypatch.setattr("jitlab.experiments.grid.slurm.job_state", lambda job_id: None)  # gone from the queue
    assert cell_status(empty, runs).state == "not started"
