"""One runner per cell: the cell lock, two concurrent runners of one grid, signals passed on to the cells."""

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

from jitlab import lock as cell_lock
from jitlab.experiments.grid import runner
from jitlab.experiments.grid.spec import load_spec
from jitlab.lock import CellLock
from tests.test_grid import tiny_grid

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_holder(directory: Path, **holder) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / cell_lock.LOCK_NAME).write_text(json.dumps({"since": "earlier", **holder}))


def test_a_held_lock_is_refused_and_released_on_exit(tmp_path):
    with CellLock(tmp_path / "cell") as first:
        assert first.held
        holder = json.loads((tmp_path / "cell" / cell_lock.LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == cell_lock.this_holder()["host"]
        second = CellLock(tmp_path / "cell")
        assert not second.acquire() and f"pid {os.getpid()}" in second.busy_message()
    assert not (tmp_path / "cell" / cell_lock.LOCK_NAME).exists()
    assert CellLock(tmp_path / "cell").acquire()


def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path):
    gone = dead_pid()
    write_holder(tmp_path, host=cell_lock.this_holder()["host"], pid=gone, job_id=None)
    lock = CellLock(tmp_path)
    assert lock.acquire() and lock.took_over["pid"] == gone


def test_a_lock_of_another_host_is_judged_by_its_slurm_job(tmp_path, monkeypatch):
    write_holder(tmp_path, host="node-17", pid=1234, job_id="4242")
    states = {"4242": "RUNNING"}
    monkeypatch.setattr(cell_lock, "job_state", lambda job: states.get(job))
    lock = CellLock(tmp_path)
    assert not lock.acquire() and "SLURM job 4242" in lock.busy_message()
    states["4242"] = None  # the job has ended (squeue no longer lists it)
    assert CellLock(tmp_path).acquire()


def test_a_lock_that_cannot_be_judged_is_respected_and_says_how_to_clear_it(tmp_path):
    write_holder(tmp_path, host="somewhere-else", pid=99, job_id=None)
    lock = CellLock(tmp_path)
    assert not lock.acquire()
    assert f"delete {tmp_path / cell_lock.LOCK_NAME}" in lock.busy_message()


def test_a_requeued_job_takes_over_the_lock_of_its_earlier_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setattr(cell_lock, "job_state", lambda job: "RUNNING")  # the job is running: it is this one
    write_holder(tmp_path, host="node-3", pid=4321, job_id="777")
    assert CellLock(tmp_path).acquire()


RUNNER_CHILD = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from jitlab.experiments.grid import runner
from jitlab.experiments.grid.spec import load_spec
from tests.test_grid_scheduling import Clock, fake_cell_runner

inner = fake_cell_runner(Clock(), seconds=1.0)

def recorded(args, log, env):
    with open({calls!r}, "a") as out:
        out.write(f"{{os.getpid()}} {{args[0]}} {{' '.join(args)}}\\n")
    return inner(args, log, env)

cells = load_spec("tiny", root=Path(".")).cells("mini")
for outcome in runner.run_local(cells, Path({runs!r}), jobs=1, runner=recorded, echo=print):
    pass
"""


def test_two_concurrent_runners_of_one_grid_train_each_cell_once(tmp_path):
    tiny_grid(tmp_path, preds=("x", "eps", "v"))
    runs, calls = tmp_path / "runs", tmp_path / "calls.txt"
    code = RUNNER_CHILD.format(repo=str(REPO), calls=str(calls), runs=str(runs))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    fits = [line.split() for line in calls.read_text().splitlines() if line.split()[1] == "fit"]
    trained = [next(a for a in line if a.startswith("--trainer.default_root_dir=")) for line in fits]
    assert len(trained) == 3 and len(set(trained)) == 3, calls.read_text()  # each cell once, no cell twice
    for cell in load_spec("tiny", root=tmp_path).cells("mini"):
        result = json.loads((runner.cell_dir(runs, cell) / "result.json").read_text())
        assert result["status"] == "done"
        assert not (runner.cell_dir(runs, cell) / cell_lock.LOCK_NAME).exists()
    assert "another runner holds it" in "".join(outputs) or len({line[0] for line in fits}) == 1


SIGNAL_CHILD = """
import sys
from pathlib import Path
from jitlab.experiments.grid import runner
from jitlab.experiments.grid.processes import CHILDREN
from jitlab.experiments.grid.spec import load_spec

cells = load_spec("tiny", root=Path(".")).cells("mini", {{"trainer.max_steps": 100000}})
outcomes = runner.run_local(cells, Path({runs!r}), jobs=1, threads=1, echo=print)
print("outcomes:", [o.status for o in outcomes], flush=True)
sys.exit(128 + CHILDREN.signum if CHILDREN.signum else 0)
"""


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])  # a closed terminal: as SIGTERM
def test_a_signal_to_the_runner_stops_its_training_with_a_checkpoint_and_waits_for_it(tmp_path, signum):
    tiny_grid(tmp_path, preds=("x", "eps"))
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_CHILD.format(runs=str(runs))], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cell = load_spec("tiny", root=tmp_path).cells("mini", {"trainer.max_steps": 100000})[0]
    directory = runner.cell_dir(runs, cell)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not runner.last_checkpoint(directory).exists():
        time.sleep(0.2)
    training = children_of(proc.pid)
    assert training, "the cell's training did not start"
    proc.send_signal(signum)  # to the runner only, as `kill PID` or a scheduler does
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signum, out[-3000:]
    assert "outcomes: ['interrupted', 'interrupted']" in out  # the second cell was not started
    for pid in training:
        assert not Path(f"/proc/{pid}").exists(), "the training outlived its runner"
    log = (directory / "train.log").read_text()
    assert "SIGTERM at step" in log and "Traceback" not in log
    step = torch.load(runner.last_checkpoint(directory), weights_only=True)["global_step"]
    assert f"SIGTERM at step {step}: saved" in log
    assert not (directory / "result.json").exists() and not (directory / cell_lock.LOCK_NAME).exists()
    assert not runner.cell_dir(runs, load_spec("tiny", root=tmp_path).cells("mini")[1]).exists()
