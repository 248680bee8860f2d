"""Issue 15's grid files rae_width and preconditioners: cells, ratios, the restated wrapped nets, the mini budget,
the configs through `jitlab fit`'s parser and builder, and the plan."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from jitlab.commands.cli import main
from jitlab.core.flow import FlowConfig
from jitlab.experiments.grid.plan import build_meta_net
from jitlab.experiments.grid.ratios import shape_of
from jitlab.experiments.grid.spec import load_spec
from jitlab.core.models import JiT, LearnedSkip, WideHead
from jitlab.core.models.flops import count_gmacs

REPO = Path(__file__).resolve().parents[1]
SCALES = ("mini", "lab", "paper")


def cells(grid: str, scale: str, seeds: int = 1) -> dict[str, object]:
    return {c.id: c for c in load_spec(grid, root=REPO).cells(scale, train_seeds=seeds)}


def test_cell_counts_and_two_training_seeds_at_mini():
    assert len(load_spec("rae_width", root=REPO).cells("mini")) == 12  # 6 cells x 2 trainings
    assert len(load_spec("preconditioners", root=REPO).cells("mini")) == 14  # 7 x 2
    for grid in ("rae_width", "preconditioners"):
        assert load_spec(grid, root=REPO).train_seeds("mini") == 2
        assert len(cells(grid, "paper")) == 7 and cells(grid, "paper").keys() == cells(grid, "lab").keys()
        assert all(c.paper_value is None for c in cells(grid, "paper").values())  # no paper column is invented


@pytest.mark.parametrize("scale", SCALES)
def test_rae_widths_are_the_same_fractions_of_the_patch_at_every_scale(scale):
    by_id = cells("rae_width", scale)
    expected = {"w0.5": Fraction(1, 2), "w1": Fraction(1), "w1.5": Fraction(3, 2)}
    for cell_id, cell in by_id.items():
        shape, net = shape_of(cell.config), cell.config["model"]["net"]
        assert shape.full_rank_output or "w0.5" in cell_id
        assert shape.patch_dim == (192 if scale == "mini" else 768)
        assert shape.tokens == {"mini": 16, "lab": 64, "paper": 256}[scale]
        width = Fraction(shape.width, shape.patch_dim)
        assert width == expected[cell_id.split("-")[-1].split("+")[0]], cell_id
        if cell_id.endswith("+head"):
            assert net["class_path"] == "jitlab.core.models.WideHead" and cell.config["model"]["flow"]["pred"] == "v"
            assert Fraction(net["init_args"]["head_width"], shape.patch_dim) == Fraction(3, 2)
            assert net["init_args"]["head_depth"] == 2
        else:
            assert net["class_path"] == "jitlab.core.models.JiT"


@pytest.mark.parametrize("scale", SCALES)
def test_the_skip_cells_wrap_the_scales_own_jit(scale):
    by_id = cells("preconditioners", scale)
    plain = by_id["target-v"].config["model"]["net"]
    for cell_id in ("target-v+skip", "target-eps+skip"):
        net = by_id[cell_id].config["model"]["net"]
        assert net["class_path"] == "jitlab.core.models.LearnedSkip"
        assert net["init_args"]["net"] == plain, (cell_id, scale)  # restated in the grid file: kept equal here
    for cell in by_id.values():
        FlowConfig(**cell.config["model"]["flow"])  # every cell's flow is valid
    flows = {k: c.config["model"]["flow"] for k, c in by_id.items()}
    assert flows["target-lambda-0.5"]["precond"] == "lambda" and flows["target-lambda-0.5"]["target_lambda"] == 0.5
    assert flows["target-edm"]["precond"] == "edm" and {f["loss"] for f in flows.values()} == {"v"}


@pytest.mark.parametrize("grid", ["rae_width", "preconditioners"])
def test_the_mini_grid_fits_30_minutes_on_2_cores(grid):
    """Trainings x their multiply-adds relative to Table 2(a)'s width-192 cell (about 4 core-minutes with scoring)."""
    base = count_gmacs(build_meta_net(cells("table2", "mini")["setting-a_loss-v_pred-x"].config))
    spec = load_spec(grid, root=REPO)
    relative = sum(count_gmacs(build_meta_net(c.config)) / base for c in spec.cells("mini"))
    assert relative * 4 / 2 <= 30, relative


def test_the_mini_configs_build_through_jitlab_fit(tmp_path):
    from jitlab.score.fitconfig import instantiate_fit  # the builder `jitlab fit` uses

    for grid, cell_id, cls in [("rae_width", "model-v-w0.5+head", WideHead),
                               ("preconditioners", "target-v+skip", LearnedSkip)]:
        path = tmp_path / f"{grid}.yaml"
        config = dict(cells(grid, "mini")[cell_id].config)
        config["trainer"] = {**config["trainer"], "default_root_dir": str(tmp_path), "logger": False}
        path.write_text(yaml.safe_dump(config))
        cli = instantiate_fit(["--config", str(path)])
        net = cli.model.net
        assert isinstance(net, cls) and net.img_size == 32 and net.num_classes is not None
        if cls is LearnedSkip:
            assert isinstance(net.net, JiT) and net.hidden_size == 192 and cli.model.flow.config.pred.value == "v"


@pytest.mark.parametrize("grid", ["rae_width", "preconditioners"])
def test_paper_plan_has_a_row_per_cell(grid, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["grid", "plan", grid, "--scale", "paper"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| model-", "| target-"))]
    assert len(rows) == 7 and "GPU-hours" in out
    if grid == "rae_width":
        assert any("WideHead" in row for row in rows)
