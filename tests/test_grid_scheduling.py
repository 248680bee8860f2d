"""The grid runner's scheduling: cells train while the reference classifiers do and evaluate after their own, a
classifier that fails to train fails only its cells; the fake processes here (Clock, fake_cell_runner) serve others."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from jitlab.experiments.grid import runner
from jitlab.experiments.grid.spec import load_spec
from tests.test_grid import tiny_grid


class Clock:
    """Records what the fake processes below do, in order, and how many run at once."""

    def __init__(self):
        self.events: list[str] = []
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def enter(self, what: str) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.events.append(f"start {what}")

    def leave(self, what: str) -> None:
        with self.lock:
            self.running -= 1
            self.events.append(f"end {what}")


def fake_train_ref(clock: Clock, seconds: dict[int, float], fail: set[int] = frozenset()):
    """Stands in for `subprocess.call` of `jitlab train-ref`: sleeps its resolution's time, fails if told."""

    def call(args, **_):
        resolution = int(args[args.index("--resolution") + 1])
        clock.enter(f"ref-{resolution} threads={args[args.index('--threads') + 1]}")
        time.sleep(seconds[resolution])
        clock.leave(f"ref-{resolution}")
        return 1 if resolution in fail else 0

    return call


def fake_cell_runner(clock: Clock, seconds: float = 0.05):
    """Stands in for a cell's `jitlab fit` (writes a finite checkpoint) and `jitlab eval` (writes a metric)."""

    def call(args, log, env):
        verb = args[0]
        directory = Path(args[args.index("--config") + 1]).parent if verb == "fit" else Path(args[1]).parents[1]
        what = f"{verb} {directory.name}"
        clock.enter(what)
        time.sleep(seconds)
        step = yaml.safe_load((directory / "config.yaml").read_text())["trainer"]["max_steps"]  # trained to the end
        if verb == "fit":
            ckpt = directory / "checkpoints" / "last.ckpt"
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": {"net.w": torch.ones(2)}, "global_step": step}, ckpt)
        else:
            row = {"metric": "FD-ref-10", "value": 5.0, "step": step}
            (directory / "metrics.json").write_text(json.dumps({"rows": [row], "best": row}))
        clock.leave(what)
        return 0

    return call


def two_resolution_cells(tmp_path: Path) -> list:
    tiny_grid(tmp_path, preds=("x",))
    spec_path = tmp_path / "experiments" / "grids" / "tiny.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["axes"]["res"] = {"key": "data.init_args.resolution", "values": [16, 8]}
    spec["paper"] = []
    spec_path.write_text(yaml.safe_dump(spec))
    return load_spec("tiny", root=tmp_path).cells("mini")


def test_cells_train_while_the_reference_classifiers_do_and_evaluate_after_theirs(tmp_path, monkeypatch):
    cells = two_resolution_cells(tmp_path)
    runs = tmp_path / "runs"
    clock = Clock()
    # the 16-px classifier is slow, the 8-px one quick: a freed core must start a cell, not wait for the slow one
    monkeypatch.setattr(runner.CHILDREN, "call", fake_train_ref(clock, {16: 0.6, 8: 0.05}))
    refs = runner.References(cells + cells, runs, threads=1, echo=lambda _: None)
    assert refs.keys == [("shapes", 16), ("shapes", 8)]  # each classifier once
    outcomes = runner.run_local(cells, runs, jobs=2, threads=1, runner=fake_cell_runner(clock),
                                echo=lambda _: None, references=refs)
    assert [o.status for o in outcomes] == ["done", "done"]
    events = clock.events
    assert events[:2] == ["start ref-16 threads=1", "start ref-8 threads=1"]
    assert clock.most == 2  # never more processes than jobs
    first_fit = min(i for i, e in enumerate(events) if e.startswith("start fit"))
    assert first_fit < events.index("end ref-16")  # a cell trained while the slow classifier did
    for cell in cells:
        ref = "end ref-16" if cell.config["data"]["init_args"]["resolution"] == 16 else "end ref-8"
        assert events.index(ref) < events.index(f"start eval {cell.id}")  # its evaluation waited for it
    # finished cells need no classifier: nothing to train on a re-run
    assert runner.References(cells, runs, threads=1).keys == []


def test_a_classifier_that_fails_to_train_fails_only_the_cells_that_need_it(tmp_path, monkeypatch):
    cells = two_resolution_cells(tmp_path)
    runs = tmp_path / "runs"
    clock = Clock()
    monkeypatch.setattr(runner.CHILDREN, "call", fake_train_ref(clock, {16: 0.05, 8: 0.05}, fail={16}))
    refs = runner.References(cells, runs, threads=1, echo=lambda _: None)
    outcomes = runner.run_local(cells, runs, jobs=1, threads=1, runner=fake_cell_runner(clock),
                                echo=lambda _: None, references=refs)
    status = {o.cell.config["data"]["init_args"]["resolution"]: o.status for o in outcomes}
    assert status == {16: "failed", 8: "done"}
    failed = [o.cell for o in outcomes if o.status == "failed"][0]
    log = (runner.cell_dir(runs, failed) / "eval.log").read_text()
    assert "training the reference classifier for shapes-16 failed" in log
    assert clock.most == 1


# -- the progress line -------------------------------------------------------------------------------------------

def test_the_time_left_weighs_each_cell_by_its_counted_work():
    from jitlab.experiments.grid.progress import Progress, cell_work

    cells = load_spec("table2").cells("mini")  # 108: 4 settings x 9 loss/pred cells x 3 seeds
    p2 = [c for c in cells if c.labels["setting"] == "b16p2"]
    p4 = [c for c in cells if c.labels["setting"] == "b16p4"]
    assert 3.5 < cell_work(p2[0]) / cell_work(p4[0]) < 4.5  # 64 tokens vs 16: Table 2's p2 cells cost ~4x
    counted: list[str] = []

    def work(cell) -> float:
        counted.append(cell.labels["setting"])
        return {"b": float("nan"), "b16p2": 4.0}.get(cell.labels["setting"], 1.0)

    progress = Progress(cells, jobs=2, work=work)
    assert progress.line(p2[2], "skipped", "done earlier", 0.0).endswith("time left unknown until a cell is timed")
    # once per network, trainer, data and evaluation: the loss, prediction and seed do not change the FLOPs
    assert sorted(counted) == ["a", "b", "b16p2", "b16p4"]
    # 120 s per unit of work; left: 27 (a) + 27 x 2 (b: not countable, the mean of the others) + 26 + 26 x 4
    line = progress.line(p4[0], "done", "FD-ref-500 30", 120.0)
    assert line.startswith("[cell 2/108] table2 mini setting-b16p4_") and line.endswith("~3h31m left")
    # a skipped cell (done earlier) takes its work off what is left and leaves the rate alone: 207 x 120 / 2
    assert progress.line(p2[0], "skipped", "done earlier", 0.0).endswith("~3h27m left")
    # (the mean cell time would have said 120 x 105 / 2 s: 1h45m)
    # a timed p2 cell (300 s: 2.5x the p4 cell where the FLOPs count 4x) sets its 24 twins' time; the rest go at
    # the pace of both, 420 s / 5 units: (27 x 84 + 27 x 2 x 84 + 26 x 120 + 24 x 300) / 2 s (FLOPs alone: 2h29m)
    assert progress.line(p2[1], "done", "FD-ref-500 25", 300.0).endswith("~2h22m left")


@pytest.mark.parametrize("extra, threads", [([], 2), (["--threads", "1"], 1)])
def test_grid_run_gives_each_cell_the_cores_over_the_jobs_or_threads(monkeypatch, capsys, tmp_path, extra,
                                                                       threads):
    from jitlab.commands.cli import main
    from jitlab.experiments.grid import actions

    calls: list[dict] = []
    monkeypatch.setattr(actions.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(actions, "run_local", lambda cells, runs, **kw: calls.append(kw) or [])
    only = [c.id for c in load_spec("table2").cells("mini")[:3]]
    verb = ["grid", "run", "table2", "--only", *only, "--jobs", "2", "--skip_preflight", "--runs", str(tmp_path)]
    assert main([*verb, *extra]) == 0
    assert calls[0]["jobs"] == 2 and calls[0]["threads"] == threads and calls[0]["references"].threads == threads
    assert f"9 cells, 2 at a time ({threads} thread(s) each)" in capsys.readouterr().out  # 3 cells x 3 seeds


def test_lines_printed_at_once_by_the_cells_threads_stay_whole(monkeypatch):
    import io
    import sys

    from jitlab.experiments.grid import actions

    class SlowOut(io.StringIO):  # a terminal that takes its time: print's text and newline are two writes
        def write(self, text: str) -> int:
            written = super().write(text)
            time.sleep(0.01)
            return written

    out = SlowOut()
    monkeypatch.setattr(sys, "stdout", out)
    workers = [threading.Thread(target=actions.echo, args=(f"jitlab grid: line {i}",)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(out.getvalue().splitlines()) == [f"jitlab grid: line {i}" for i in range(4)]
