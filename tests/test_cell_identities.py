"""A changed setting is a changed cell: every grid cell's identity stays put unless someone means to change it.

A cell's identity is its config hash and its evaluation settings (``Cell.config_hash``, ``Cell.eval``); a finished run
whose identity differs from its cell's is "of other settings" and is refused or re-run. This test resolves every cell
of every grid under ``experiments/grids`` at every scale it has (training seeds included) and compares them with
``tests/data/cell_identities.json``, so a refactor of the loader, the scale files or the grid files that moves a
single setting of a single cell fails here.

When a grid's design changes on purpose (and its ``history:`` says so), regenerate the file deliberately::

    .venv/bin/python -m tests.test_cell_identities

and review the diff of ``tests/data/cell_identities.json``: only the cells you meant to change may move.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jitlab.errors import ConfigError
from jitlab.experiments.grid.spec import SCALE_EVAL, list_grids, load_spec

ROOT = Path(__file__).resolve().parents[1]
GUARD = ROOT / "tests" / "data" / "cell_identities.json"


def resolve_identities() -> list[dict]:
    """{grid, scale, cell, config_hash, eval} of every cell of every grid at every scale, in a stable order."""
    rows = []
    for name in list_grids(ROOT):
        spec = load_spec(name, root=ROOT)
        for scale in spec.scales:
            for cell in spec.cells(scale):
                rows.append({"grid": name, "scale": scale, "cell": cell.id, "config_hash": cell.config_hash,
                             "eval": cell.eval})
    return json.loads(json.dumps(rows, sort_keys=True, default=str))  # as the file holds them (tuples -> lists)


def test_every_cells_identity_is_the_recorded_one():
    recorded = json.loads(GUARD.read_text())
    resolved = resolve_identities()
    key = lambda row: (row["grid"], row["scale"], row["cell"])  # noqa: E731
    assert [key(r) for r in resolved] == [key(r) for r in recorded], "the set of cells changed"
    changed = [f"{key(new)}: {old} -> {new}" for old, new in zip(recorded, resolved) if old != new]
    assert not changed, "cells changed identity:\n" + "\n".join(changed[:10])


def test_the_guard_sees_a_changed_setting(monkeypatch):
    """The claim's false case: one evaluation setting of one grid moved -> this guard fails for its cells."""
    from jitlab.experiments.grid import spec as spec_module

    real = spec_module.load_spec

    def moved(name, root=None):
        spec = real(name, root=root)
        if spec.name == "table2" and "mini" in spec.scales:
            mini = spec.scales["mini"]
            spec.scales = {**spec.scales, "mini": {**mini, "eval": {**mini.get("eval", {}), "steps": 26}}}
        return spec

    monkeypatch.setattr(f"{__name__}.load_spec", moved)
    resolved = resolve_identities()
    recorded = json.loads(GUARD.read_text())
    differ = {(new["grid"], new["scale"]) for old, new in zip(recorded, resolved) if old != new}
    assert differ == {("table2", "mini")}


def repeated_defaults(grid_file: Path, defaults: dict) -> list[str]:
    """``scales.SCALE.eval.KEY`` entries of a grid file that restate the scale's scoring default."""
    raw = yaml.safe_load(grid_file.read_text())
    return [f"{grid_file.name}: scales.{scale}.eval.{key}" for scale, body in raw["scales"].items()
            for key, value in (body.get("eval") or {}).items() if (defaults.get(scale) or {}).get(key) == value]


def test_no_grid_file_repeats_its_scales_scoring_defaults(tmp_path):
    defaults = yaml.safe_load((ROOT / SCALE_EVAL).read_text())
    grids = sorted((ROOT / "experiments" / "grids").glob("*.yaml"))
    assert not [repeat for grid in grids for repeat in repeated_defaults(grid, defaults)]
    copy = tmp_path / "table2.yaml"  # the false case: a grid that copies the mini block again is caught
    raw = yaml.safe_load((ROOT / "experiments" / "grids" / "table2.yaml").read_text())
    raw["scales"]["mini"]["eval"] = dict(defaults["mini"])
    copy.write_text(yaml.safe_dump(raw))
    assert len(repeated_defaults(copy, defaults)) == len(defaults["mini"])


def write_grid(root: Path, scale_eval: str, grid_eval: str) -> None:
    (root / "experiments" / "grids").mkdir(parents=True)
    (root / "experiments" / "scales").mkdir(parents=True)
    (root / SCALE_EVAL).write_text(scale_eval)
    (root / "base.yaml").write_text("seed_everything: 0\n")
    (root / "experiments" / "grids" / "g.yaml").write_text(
        f"name: g\naxes: {{seed: {{key: seed_everything, values: [0]}}}}\n"
        f"scales: {{mini: {{config: base.yaml, eval: {grid_eval}}}}}\n")


def test_a_cell_is_scored_by_its_scales_defaults_and_its_grids_differences(tmp_path):
    write_grid(tmp_path, "mini: {features: refnet, steps: 25, cfg: [2.0], ref_stats: a.npz}\n",
               "{cfg: [1.0, 2.0], ref_stats: null}")
    (cell,) = load_spec("g", root=tmp_path).cells("mini")
    assert cell.eval == {"features": "refnet", "steps": 25, "cfg": [1.0, 2.0]}  # null drops the default


def test_a_bad_key_of_the_scale_defaults_names_the_file_and_key(tmp_path):
    write_grid(tmp_path, "mini: {stepz: 25}\n", "{}")
    with pytest.raises(ConfigError, match=r"eval.yaml: mini.*stepz"):
        load_spec("g", root=tmp_path)


if __name__ == "__main__":
    GUARD.write_text(json.dumps(resolve_identities(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GUARD}")
