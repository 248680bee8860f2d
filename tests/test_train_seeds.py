"""Training seeds: a grid trains each cell under several seeds, each its own run directory, skipped when finished."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from jitlab.commands.cli import main
from jitlab.errors import ConfigError
from jitlab.experiments.grid import runner
from jitlab.experiments.grid.spec import load_spec
from tests.test_evaluate import quick_refnet  # noqa: F401  (fixture)
from tests.test_grid import in_process, tiny_grid


def test_cells_expand_over_training_seeds_seed_major(tmp_path):
    tiny_grid(tmp_path, preds=("x", "eps"))
    spec = load_spec("tiny", root=tmp_path)
    assert [c.id for c in spec.cells("mini")] == ["pred-x", "pred-eps"]  # the grid file's default: one seed
    cells = spec.cells("mini", train_seeds=3)
    assert [c.id for c in cells] == ["pred-x", "pred-eps", "pred-x_seed-1", "pred-eps_seed-1",
                                     "pred-x_seed-2", "pred-eps_seed-2"]
    assert [c.config["seed_everything"] for c in cells] == [0, 0, 1, 1, 2, 2]
    assert [c.train_seed for c in cells] == [0, 0, 1, 1, 2, 2]
    assert cells[2].labels == cells[0].labels == {"pred": "x"}
    assert len({c.config_hash for c in cells}) == 6  # a seed is part of a run's identity
    assert cells[0].config_hash == spec.cells("mini")[0].config_hash  # seed 0 is the single-seed run


def test_grid_file_train_seeds_and_bad_values(tmp_path):
    tiny_grid(tmp_path, preds=("x",))
    path = tmp_path / "experiments" / "grids" / "tiny.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["scales"]["mini"]["train_seeds"] = 2
    path.write_text(yaml.safe_dump(raw))
    assert [c.id for c in load_spec("tiny", root=tmp_path).cells("mini")] == ["pred-x", "pred-x_seed-1"]
    for bad in (0, "two", 1.5):
        raw["scales"]["mini"]["train_seeds"] = bad
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match="train_seeds"):
            load_spec("tiny", root=tmp_path)
    raw["scales"]["mini"]["train_seeds"] = 1
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="--train_seeds"):
        load_spec("tiny", root=tmp_path).cells("mini", train_seeds=0)


def test_only_selects_every_seed_of_a_cell_or_one(tmp_path, monkeypatch, capsys):
    tiny_grid(tmp_path, preds=("x", "eps"))
    monkeypatch.chdir(tmp_path)
    assert main(["grid", "run", "tiny", "--train_seeds", "2", "--only", "pred-x", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "cell 1/2: tiny mini pred-x " in out and "cell 2/2: tiny mini pred-x_seed-1 " in out
    assert main(["grid", "run", "tiny", "--train_seeds", "2", "--only", "pred-eps_seed-1", "--dry_run"]) == 0
    assert "cell 1/1: tiny mini pred-eps_seed-1 " in capsys.readouterr().out
    assert main(["grid", "run", "tiny", "--train_seeds", "2", "--only", "pred-v", "--dry_run"]) == 2
    assert "--only" in capsys.readouterr().err


def test_two_seeds_train_differently_record_their_seed_and_are_skipped_when_done(tmp_path, quick_refnet):  # noqa: F811
    tiny_grid(tmp_path, preds=("x",))
    cells = load_spec("tiny", root=tmp_path).cells("mini", train_seeds=2)
    for cell in cells:
        cell.config["trainer"]["max_steps"] = 10
    runs = tmp_path / "runs"
    outcomes = runner.run_local(cells, runs, runner=in_process, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["done", "done"]
    results = [json.loads((runs / "tiny" / "mini" / c.id / "result.json").read_text()) for c in cells]
    assert [r["train_seed"] for r in results] == [0, 1]
    assert results[0]["labels"] == results[1]["labels"] == {"pred": "x"}
    weights = [torch.load(runner.last_checkpoint(runs / "tiny" / "mini" / c.id), map_location="cpu",
                          weights_only=False)["state_dict"] for c in cells]
    first = next(k for k in weights[0] if k.endswith("blocks.0.attn.qkv.weight"))
    assert not torch.equal(weights[0][first], weights[1][first])  # another initialisation and noise
    again = runner.run_local(cells, runs, runner=in_process, echo=lambda line: None)
    assert [o.status for o in again] == ["skipped", "skipped"]
