"""`jitlab grid seeds`: done cells evaluated again under other sampling seeds, once, with the grid's settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from jitlab.errors import ConfigError
from jitlab.grid import runner, seeds
from jitlab.commands.grid import main as grid_main
from jitlab.grid.spec import load_spec
from tests.test_grid import TINY_EVAL, tiny_grid

# the value a fake evaluation reports for (cell's pred, seed)
VALUES = {("x", 0): 10.0, ("x", 1): 11.0, ("x", 2): 9.0, ("eps", 0): 100.0, ("eps", 1): 102.0, ("eps", 2): 101.0}


def eval_settings(args: list[str]) -> dict:
    """The settings a `jitlab eval` command line hands over (its --settings JSON file)."""
    return json.loads(Path(args[args.index("--settings") + 1]).read_text())


class FakeCLI:
    """Stands in for the `jitlab` subprocess: `fit` writes a finite checkpoint, `eval` a metrics.json."""

    def __init__(self, reference: str = "stats-A.npz"):
        self.calls: list[list[str]] = []
        self.reference = reference

    def __call__(self, args, log, env):
        self.calls.append(list(args))
        if args[0] == "fit":
            ckpt = Path(args[args.index("--config") + 1]).parent / "checkpoints" / "last.ckpt"
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": {"net.w": torch.ones(2)}, "global_step": 30}, ckpt)
            return 0
        out = Path(args[args.index("--out") + 1])
        seed = eval_settings(args)["seed"]
        pred = yaml.safe_load((out.parent / "config.yaml").read_text())["model"]["flow"]["pred"]
        best = {"metric": "FD-ref-8", "value": VALUES[(pred, seed)], "seed": seed, "step": 30,
                "reference": self.reference, "ema": 0.999, "cfg_scale": 1.0}
        out.write_text(json.dumps({"rows": [best], "best": best}))
        return 0


def done_grid(tmp_path: Path):
    tiny_grid(tmp_path, preds=("x", "eps"))
    cells = load_spec("tiny", root=tmp_path).cells("mini")
    runner.run_local(cells, tmp_path / "runs", runner=FakeCLI(), echo=lambda _: None)
    return cells


def test_each_done_cell_is_evaluated_under_each_seed_with_its_own_settings_and_only_once(tmp_path):
    cells = done_grid(tmp_path)
    fake = FakeCLI()
    frame = seeds.measure(cells, tmp_path / "runs", [1, 2], jobs=2, runner=fake, echo=lambda _: None)
    assert len(fake.calls) == 4
    for args in fake.calls:
        assert args[0] == "eval" and eval_settings(args)["num_images"] == TINY_EVAL["num_images"]
        seed = eval_settings(args)["seed"]
        assert args[args.index("--out") + 1].endswith(f"metrics-seed{seed}.json")
    got = {(r.cell, r.seed): r.value for r in frame.itertuples()}
    assert got == {(f"pred-{p}", s): v for (p, s), v in VALUES.items()}
    for cell in cells:  # the grid's own evaluation (seed 0) is untouched
        metrics = json.loads((runner.cell_dir(tmp_path / "runs", cell) / "metrics.json").read_text())
        assert metrics["best"]["seed"] == 0
    again = FakeCLI()
    seeds.measure(cells, tmp_path / "runs", [1, 2], runner=again, echo=lambda _: None)
    assert again.calls == []


def test_spread_per_cell_is_sd_and_range_over_the_mean(tmp_path):
    cells = done_grid(tmp_path)
    frame = seeds.measure(cells, tmp_path / "runs", [1, 2], runner=FakeCLI(), echo=lambda _: None)
    stats = seeds.spread(frame)
    assert stats.loc["pred-x", "mean"] == pytest.approx(10.0)
    assert stats.loc["pred-x", "rel_sd"] == pytest.approx(1.0 / 10.0)  # sd of 10, 11, 9 is 1
    assert stats.loc["pred-x", "rel_range"] == pytest.approx(2.0 / 10.0)
    assert stats.loc["pred-eps", "rel_range"] == pytest.approx(2.0 / 101.0)
    text = seeds.markdown(frame, "tiny", "jitlab grid seeds tiny", tie=0.05)
    assert "| pred-x | 10 | 11 | 9 | 10 | 10.0% | 20.0% |" in text
    assert "Largest (max - min) / mean: 20.0% (pred-x)" in text and "is not evidence" in text
    assert "every cell's seeds stay within it" in seeds.markdown(frame, "tiny", "cmd", tie=0.25)
    assert "tie" not in seeds.markdown(frame, "tiny", "cmd", tie=None)  # a grid whose verdict has no tie margin
    assert "under sampling seeds [0, 1, 2] (seed 0" in text


def test_cells_not_done_are_left_out_and_a_shared_run_is_measured_once(tmp_path):
    cells = done_grid(tmp_path)
    failed = runner.cell_dir(tmp_path / "runs", cells[1]) / "result.json"
    failed.write_text(json.dumps({**json.loads(failed.read_text()), "status": "failed"}))
    twin = runner.cell_dir(tmp_path / "runs", cells[0]).parent / "pred-x-again"
    twin.mkdir()
    (twin / "result.json").write_text(json.dumps({"status": "done",
                                                  "reused_from": str(runner.cell_dir(tmp_path / "runs", cells[0]))}))
    again = dataclasses.replace(cells[0], labels={"pred": "x-again"})
    fake = FakeCLI()
    frame = seeds.measure([cells[0], again, cells[1]], tmp_path / "runs", [1], runner=fake, echo=lambda _: None)
    assert len(fake.calls) == 1  # pred-x's run once; pred-eps failed
    assert sorted(set(frame["cell"])) == ["pred-x", "pred-x-again"]
    assert frame.loc[frame.cell == "pred-x-again", "value"].tolist() == [10.0, 11.0]


def test_a_seed_scored_against_other_reference_statistics_is_refused_naming_the_file(tmp_path):
    cells = done_grid(tmp_path)
    moved = FakeCLI(reference="/another/cache/stats/stats-A.npz")  # the same statistics from a moved cache: fine
    assert len(seeds.measure(cells, tmp_path / "runs", [1], runner=moved, echo=lambda _: None)) == 4
    with pytest.raises(ConfigError, match="metrics-seed2.json.*another reference classifier"):
        seeds.measure(cells, tmp_path / "runs", [2], runner=FakeCLI(reference="stats-B.npz"), echo=lambda _: None)


def test_cli_writes_the_seed_report_and_refuses_a_grid_without_done_cells(tmp_path, monkeypatch, capsys):
    done_grid(tmp_path)
    monkeypatch.chdir(tmp_path)  # the grid file's base config is found from the working directory
    grid = "tiny"
    monkeypatch.setattr(seeds, "run_subprocess", FakeCLI())
    runs, out = str(tmp_path / "runs"), str(tmp_path / "out")
    assert grid_main(["seeds", grid, "--runs", runs, "--seeds", "1", "2", "--out", out, "--jobs", "1"]) == 0
    csv = (tmp_path / "out" / "tiny-seeds.csv").read_text().splitlines()
    assert csv[0] == "grid,scale,cell,seed,metric,value" and len(csv) == 1 + 6
    assert "jitlab grid seeds tiny --scale mini --seeds 1 2" in (tmp_path / "out" / "tiny-seeds.md").read_text()
    assert grid_main(["seeds", grid, "--runs", runs, "--seeds", "1", "--out", out, "--only", "pred-x"]) == 0
    report = (tmp_path / "out" / "tiny-seeds.md").read_text()
    assert "jitlab grid seeds tiny --scale mini --seeds 1 --only pred-x" in report
    assert grid_main(["seeds", grid, "--runs", str(tmp_path / "elsewhere"), "--out", out]) == 2
    assert "no done cell" in capsys.readouterr().err


def test_a_report_states_the_measured_seed_spread_once_it_exists(tmp_path):
    from jitlab.report.collect import collect
    from jitlab.report.provenance import provenance, summary_line

    cells = done_grid(tmp_path)
    spec = load_spec("tiny", root=tmp_path)
    assert provenance(collect(spec, "mini", tmp_path / "runs")).seed_spread is None
    seeds.measure(cells, tmp_path / "runs", [1, 2], runner=FakeCLI(), echo=lambda _: None)
    line = provenance(collect(spec, "mini", tmp_path / "runs")).seed_spread
    assert "2 cell(s) evaluated again under sampling seeds [0, 1, 2]" in line
    assert "largest 20.0% (pred-x)" in line and "tie margin" not in line  # a grid without a sweep verdict
    assert "; the verdicts' tie margin is 5%." in summary_line(cells, tmp_path / "runs", 0.05)
