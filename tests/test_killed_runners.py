"""Trainers die with their grid runner and hold the cell's lock until they have (issue 25): a lock held by a dead
runner's live trainer, SIGHUP passed on to the children, kill -9 of a runner mid-training, and the killed cell resumed
to its max_steps with the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jitlab.experiments.grid import runner
from jitlab.experiments.grid.processes import Children, forward_signals
from jitlab.experiments.grid.spec import load_spec
from jitlab.lock import LOCK_NAME, CellLock
from tests.test_evaluate import quick_refnet  # noqa: F401  (fixture)
from tests.test_grid import in_process, tiny_grid
from tests.test_stale_runs import ENV, REPO, step_of


def test_a_lock_is_held_while_the_holders_trainer_lives_though_the_runner_is_gone(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        holder = {"host": os.uname().nodename, "pid": dead.pid, "job_id": None, "since": "earlier",
                  "child_pid": sleeper.pid}
        (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
        lock = CellLock(tmp_path)
        assert not lock.acquire() and f"its subprocess pid {sleeper.pid}" in lock.busy_message()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert CellLock(tmp_path).acquire()  # both gone: taken over


def test_children_name_their_pids_to_the_lock_and_sighup_stops_them(tmp_path):
    children, seen = Children(), []
    with children.watched(lambda pid: seen.append(("start", pid)), lambda pid: seen.append(("end", pid))):
        assert children.call([sys.executable, "-c", "pass"]) == 0
    assert [what for what, _ in seen] == ["start", "end"] and seen[0][1] == seen[1][1]
    with forward_signals(children):
        os.kill(os.getpid(), signal.SIGHUP)  # a closed terminal: as SIGTERM, the runner stops its cells
        time.sleep(0.1)
        assert children.signum == signal.SIGHUP
        assert children.call([sys.executable, "-c", "pass"]) == 128 + signal.SIGHUP  # nothing new starts


RUNNER_CHILD = """
from pathlib import Path
from jitlab.experiments.grid import runner
from jitlab.experiments.grid.spec import load_spec

cells = load_spec("tiny", root=Path(".")).cells("mini", {{"trainer.max_steps": {steps}}})
runner.run_local(cells, Path({runs!r}), jobs=1, threads=1, echo=print)
"""


def alive(pid: int) -> bool:
    """The process runs (a zombie, ended but not yet reaped by whoever adopted it, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def start_runner(tmp_path: Path, steps: int, at_least: int) -> tuple[subprocess.Popen, Path]:
    """A grid runner in a process of its own session; returns once its cell's last.ckpt has ``at_least`` steps."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", RUNNER_CHILD.format(runs=str(runs), steps=steps)], cwd=tmp_path,
                            env={**ENV, "PYTHONPATH": str(REPO)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cell = load_spec("tiny", root=tmp_path).cells("mini", {"trainer.max_steps": steps})[0]
    directory = runner.cell_dir(runs, cell)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ckpt = runner.last_checkpoint(directory)
        if ckpt.exists() and step_of(ckpt) >= at_least:  # written atomically: never half a file
            return proc, directory
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the cell was not caught mid-run")


def test_kill_9_of_the_runner_stops_its_trainer_which_held_the_cell_lock(tmp_path):
    tiny_grid(tmp_path, preds=("x",))
    proc, directory = start_runner(tmp_path, steps=100000, at_least=5)
    trainers = children_of(proc.pid)
    assert len(trainers) == 1
    holder = json.loads((directory / LOCK_NAME).read_text())
    assert holder["pid"] == proc.pid and holder["child_pid"] == trainers[0]  # a second runner waits for it
    proc.kill()  # SIGKILL of the runner alone: its trainer is not signalled by anyone but the kernel
    proc.wait()
    deadline = time.time() + 120
    while time.time() < deadline and alive(trainers[0]):
        time.sleep(0.1)
    assert not alive(trainers[0]), "the trainer outlived its runner"
    log = (directory / "train.log").read_text()
    assert "SIGTERM at step" in log  # it stopped as on SIGTERM: with a checkpoint at its step
    assert CellLock(directory).acquire()  # runner and trainer gone: the next runner takes the cell over


def test_a_cell_killed_mid_training_resumes_to_max_steps_and_equals_an_uninterrupted_run(
        tmp_path, quick_refnet, one_thread):  # noqa: F811
    steps = 150
    tiny_grid(tmp_path, preds=("x",))
    cells = load_spec("tiny", root=tmp_path).cells("mini", {"trainer.max_steps": steps})
    whole = runner.run_local(cells, tmp_path / "whole", runner=in_process, echo=lambda _: None)[0]
    assert whole.status == "done"
    expected = json.loads((runner.cell_dir(tmp_path / "whole", cells[0]) / "result.json").read_text())

    proc, directory = start_runner(tmp_path, steps=steps, at_least=10)
    trainers = children_of(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole runner, its trainer with it
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(map(alive, trainers)):  # until then the lock names it: skipped
        time.sleep(0.1)
    killed_at = step_of(runner.last_checkpoint(directory))
    assert 10 <= killed_at < steps and not (directory / "result.json").exists()
    again = runner.run_local(cells, tmp_path / "runs", runner=in_process, echo=lambda _: None)[0]
    assert again.status == "done", again.summary
    result = json.loads((directory / "result.json").read_text())
    assert result["step"] == steps and step_of(runner.final_checkpoint(directory)) == steps
    assert [r["value"] for r in result["rows"]] == [r["value"] for r in expected["rows"]]
