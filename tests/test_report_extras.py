"""A grid file's extra figures (``figures:``): RAE's value vs width, DSD's effective rank vs step.

Every number below is a FIXTURE made up for these tests (written into tmp_path), not a result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from jitlab.errors import ConfigError
from jitlab.experiments.grid.spec import LogCurveFigure, load_spec
from jitlab.experiments.report import build_report
from jitlab.experiments.report.collect import collect
from jitlab.experiments.report.extras import last_values, log_curves, width_data
from jitlab.experiments.report.logs import scalars
from tests.test_report import REPRODUCING, spec as table2_spec, write_fixture

ROOT = Path(__file__).resolve().parents[1]
RAE_MEANS = {"x-w0.5": 30.0, "x-w1": 25.0, "v-w0.5": 200.0, "v-w1": 90.0, "v-w1.5": 80.0, "v-w0.5+head": 70.0}


def write_results(runs: Path, grid, value_of, seeds: int = 2, not_done=()) -> None:
    """FIXTURE result.json of every training of ``grid`` at mini, shaped like the grid runner's (as
    tests/test_report.write_fixture): ``value_of(cell)`` its FD; ids in ``not_done`` failed."""
    for cell in grid.cells("mini", train_seeds=seeds):
        directory = runs / grid.name / "mini" / cell.id
        directory.mkdir(parents=True, exist_ok=True)
        done = cell.id not in not_done
        rows = [{"metric": "FD-ref-500", "value": value_of(cell), "n_samples": 500, "seed": 0, "step": 1000}]
        result = {"grid": grid.name, "scale": "mini", "cell": cell.id, "labels": cell.labels,
                  "config_hash": cell.config_hash, "status": "done" if done else "failed",
                  "rows": rows if done else [], "train_seconds": 10.0, "step": 1000}
        if cell.train_seed:
            result["train_seed"] = cell.train_seed
        (directory / "result.json").write_text(json.dumps(result))


def log_scalars(cell_dir: Path, tag: str, points, version: int = 0) -> None:
    """FIXTURE training log: ``points`` (step, value) of ``tag`` in CELL/lightning_logs/version_N."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(cell_dir / "lightning_logs" / f"version_{version}"))
    for step, value in points:
        writer.add_scalar(tag, value, step)
    writer.close()


def edited_spec(tmp_path: Path, name: str, figures) -> Path:
    """A copy of experiments/grids/NAME.yaml with its ``figures:`` replaced."""
    raw = yaml.safe_load((ROOT / "experiments" / "grids" / f"{name}.yaml").read_text())
    raw["figures"] = figures
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def rae_value(cell) -> float:
    # seed 0 at mean - 1, seed 1 at mean + 1: mean as given, sd sqrt(2)
    return RAE_MEANS[cell.labels["model"]] + (1.0 if cell.train_seed else -1.0)


def test_width_figure_places_the_cells_by_the_spec_and_writes_its_png(tmp_path):
    from PIL import Image

    grid = load_spec("rae_width", root=ROOT)
    runs = tmp_path / "runs"
    write_results(runs, grid, rae_value, not_done={"model-v-w1"})  # v-w1 seed 0 failed: one training left
    figure = grid.figures[0]
    data = width_data(collect(grid, "mini", runs), figure)
    points = data.points.set_index("value")
    assert list(points.index) == list(RAE_MEANS)  # every mini cell placed, x-w1.5 is not run at mini
    assert points.loc["v-w0.5+head", "series"] == "v-pred + wide head" and points.loc["x-w1", "series"] == "x-pred"
    assert points.loc["v-w1.5", "x"] == 1.5 and points.loc["x-w0.5", "x"] == 0.5
    assert points.loc["v-w0.5", "mean"] == pytest.approx(200.0)
    assert points.loc["v-w0.5", "sd"] == pytest.approx(math.sqrt(2)) and points.loc["v-w0.5", "n"] == 2
    assert points.loc["v-w1", "mean"] == pytest.approx(91.0) and points.loc["v-w1", "n"] == 1
    assert math.isnan(points.loc["v-w1", "sd"])
    assert figure.threshold == 1.0 and "RAE Theorem 1" in figure.threshold_label

    paths = build_report(grid, "mini", runs, tmp_path / "reports")
    assert paths["png-width"].name == "rae_width-width.png"
    with Image.open(paths["png-width"]) as image:
        assert image.format == "PNG" and image.size[0] > 500
    md = paths["md"].read_text()
    assert "## Figures" in md and "`rae_width-width.png`" in md and "at 1" in md
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "rae_width-width.png", "rae_width.csv", "rae_width.md", "rae_width.png", "rae_width.tex"]

    # another mapping in the grid file moves the points: the positions and series are the spec's, not built in
    moved = edited_spec(tmp_path, "rae_width", [{"name": "w", "kind": "width", "axis": "model",
                                                 "x": {"v-w0.5": 2.0, "v-w1": 4.0}, "series": {"v-w0.5": "narrow",
                                                                                             "v-w1": "full"}}])
    other = load_spec(moved, root=ROOT)
    data = width_data(collect(other, "mini", runs), other.figures[0])
    assert data.points[["value", "x", "series"]].values.tolist() == [["v-w0.5", 2.0, "narrow"], ["v-w1", 4.0, "full"]]
    assert data.unplaced == ["x-w0.5", "x-w1", "v-w1.5", "v-w0.5+head"] and other.figures[0].threshold is None


def test_log_curve_last_values_missing_cells_and_png(tmp_path):
    from PIL import Image

    grid = load_spec("dsd_latent", root=ROOT)
    variants = ("v", "v_sg", "x_sg", "x_sg_ema")  # the fixture's cells (variants the grid file adds are not in it)
    grid.axes = tuple(dataclasses.replace(a, scale_values={**a.scale_values, "mini": variants})
                      if a.name == "variant" else a
                      for a in grid.axes)
    runs = tmp_path / "runs"
    write_results(runs, grid, lambda cell: 50.0, not_done={"variant-v_sg_seed-1"})
    base = runs / "dsd_latent" / "mini"
    last = {"v": 2.0, "v_sg": 3.0, "x_sg": 10.0, "x_sg_ema": 12.0}
    for cell in grid.cells("mini", train_seeds=2):
        if cell.id == "variant-x_sg_ema_seed-1":
            continue  # trained, but its log has no effective rank
        end = last[cell.labels["variant"]] + (1.0 if cell.train_seed else -1.0)  # seeds: mean - 1, mean + 1
        log_scalars(base / cell.id, "train/latent_erank", [(0, 16.0), (50, 9.0), (100, end)])
    log_scalars(base / "variant-x_sg_ema_seed-1", "train/loss", [(0, 1.0), (100, 0.5)])

    figure = grid.figures[0]
    assert isinstance(figure, LogCurveFigure) and figure.tag == "train/latent_erank" and figure.panels == ()
    curves = log_curves(collect(grid, "mini", runs), figure)
    assert curves.missing == ["variant-x_sg_ema_seed-1"] and curves.not_done == ["variant-v_sg_seed-1"]
    table = last_values(curves).set_index("hue")
    assert table.loc["v-prediction", "mean"] == pytest.approx(2.0) and table.loc["v-prediction", "n"] == 2
    assert table.loc["v-prediction", "sd"] == pytest.approx(math.sqrt(2))
    assert table.loc["x-prediction + stop-gradient", "mean"] == pytest.approx(10.0)
    assert table.loc["x-prediction + stop-gradient", "seed 0"] == 9.0
    assert table.loc["x-prediction + stop-gradient", "seed 1"] == 11.0
    assert table.loc["v-prediction + stop-gradient", "n"] == 1  # its seed 1 failed: not read
    ema = table.loc["x-prediction + stop-gradient + EMA target"]
    assert ema["n"] == 1 and ema["mean"] == pytest.approx(11.0) and math.isnan(ema["sd"])

    paths = build_report(grid, "mini", runs, tmp_path / "reports")
    with Image.open(paths["png-erank"]) as image:
        assert image.format == "PNG"
    md = paths["md"].read_text()
    section = md.split("## Figures")[1].split("\n## ")[0]
    assert "`dsd_latent-erank.png`" in section and "### `train/latent_erank`: the last logged value" in section
    assert "| v-prediction | 2 ± 1.4 (n=2) | 100 | 1 | 3 |" in section
    assert "missing (done, never logged the tag): `variant-x_sg_ema_seed-1`" in section
    assert "not read (no done result): `variant-v_sg_seed-1`" in section


def test_a_cell_that_reused_another_grids_run_reads_that_runs_log(tmp_path):
    grid = load_spec("dsd_latent", root=ROOT)
    runs = tmp_path / "moved" / "runs"  # the runner saw runs/grids/...; the directory has moved since (kept)
    write_results(runs, grid, lambda cell: 50.0, seeds=1)
    base = runs / "dsd_latent" / "mini"
    for cell in grid.cells("mini", train_seeds=1):
        log_scalars(base / cell.id, "train/latent_erank", [(0, 16.0), (100, 4.0)])
    reused = grid.cells("mini", train_seeds=1)[0].id
    shutil.rmtree(base / reused / "lightning_logs")
    result = json.loads((base / reused / "result.json").read_text())
    (base / reused / "result.json").write_text(json.dumps({**result, "reused_from": "runs/grids/other/mini/twin"}))
    figure = grid.figures[0]
    assert log_curves(collect(grid, "mini", runs), figure).missing == [reused]  # the twin has no log here
    log_scalars(runs / "other" / "mini" / "twin", "train/latent_erank", [(0, 16.0), (100, 7.0)])
    curves = log_curves(collect(grid, "mini", runs), figure)
    assert curves.missing == [] and reused in {c for c, *_ in curves.trainings}
    assert curves.points[curves.points.cell == reused].value.tolist() == [16.0, 7.0]  # the twin's, not another's


def test_scalars_newest_version_wins_where_versions_overlap(tmp_path):
    cell = tmp_path / "cell"
    log_scalars(cell, "train/latent_erank", [(0, 16.0), (50, 8.0), (100, 7.0)], version=0)
    log_scalars(cell, "train/latent_erank", [(50, 5.0), (150, 4.0)], version=1)  # resumed from step 50
    assert scalars(cell, "train/latent_erank") == [(0, 16.0), (50, 5.0), (150, 4.0)]
    log_scalars(cell, "train/latent_erank", [(0, 3.0)], version=10)  # a rerun from scratch (10 > 1, not "1" > "10")
    assert scalars(cell, "train/latent_erank") == [(0, 3.0)]
    assert scalars(cell, "train/other") == [] and scalars(tmp_path / "no-such-cell", "train/latent_erank") == []


@pytest.mark.parametrize("entry, key, says", [
    ({"name": "w", "kind": "violin", "axis": "model"}, "figures[0].kind", "unknown kind 'violin'"),
    ({"name": "w", "kind": "width", "axis": "model", "x": {"v-w1": 1.0}, "colour": "red"}, "figures[0].colour",
     "unknown key(s) colour"),
    ({"name": "w", "kind": "width", "axis": "model", "x": {"v-w1": 1.0, "v-w3": 3.0}}, "figures[0].x",
     "names value(s) ['v-w3']"),
    ({"name": "w", "kind": "width", "axis": "width", "x": {"v-w1": 1.0}}, "figures[0].axis", "names axis 'width'"),
    ({"name": "w", "kind": "width", "axis": "model", "x": {"v-w1": "one"}}, "figures[0].x.v-w1", "must be a number"),
    ({"name": "w", "kind": "width", "axis": "model", "x": {"v-w1": 1.0}, "series": {"v-w0.5": "a"}},
     "figures[0].series", "must name exactly the values of x"),
    ({"name": "e", "kind": "log_curve", "hue": "model"}, "figures[0].tag", "must name a logged scalar"),
    ({"name": "../e", "kind": "log_curve", "tag": "t", "hue": "model"}, "figures[0].name", "file-name part"),
])
def test_a_bad_figure_fails_at_load_naming_the_file_and_key(tmp_path, entry, key, says):
    path = edited_spec(tmp_path, "rae_width", [entry])
    with pytest.raises(ConfigError) as error:
        load_spec(path, root=ROOT)
    assert str(error.value).startswith(f"{path}: {key}") and says in str(error.value)


def test_grids_without_figures_keep_their_report_byte_identical(tmp_path):
    from jitlab.experiments.report.layout import view_of
    from jitlab.experiments.report.markdown import markdown
    from jitlab.experiments.report.provenance import provenance
    from jitlab.experiments.report.verdict import verdict

    runs = write_fixture(tmp_path / "runs", REPRODUCING, failed=[("a", "eps", "eps")], seeds=2)
    plain = table2_spec()
    assert plain.figures == []
    before = build_report(plain, "mini", runs, tmp_path / "plain", png=False)
    # the same grid with a figure: the csv and tex are unchanged, the md only gains its "## Figures" section
    widened = dataclasses.replace(plain, figures=load_spec(edited_spec(tmp_path, "table2", [
        {"name": "by-pred", "kind": "width", "axis": "pred", "x": {"x": 1.0, "eps": 2.0, "v": 3.0}}]),
        root=ROOT).figures)
    after = build_report(widened, "mini", runs, tmp_path / "widened", png=False)
    for kind in ("csv", "tex"):
        assert after[kind].read_bytes() == before[kind].read_bytes(), kind

    def undated(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("- **date**"))

    with_figures = after["md"].read_text()
    head, rest = with_figures.split("## Figures\n", 1)
    assert "`table2-by-pred.png` (not drawn" in rest
    assert undated(head + "## " + rest.split("\n## ", 1)[1]) == undated(before["md"].read_text())
    # and the report of a grid without figures is what markdown() writes without the new argument
    collected = collect(plain, "mini", runs)
    direct = markdown(collected, view_of(plain), provenance(collected), verdict(plain, collected.frame))
    assert undated(direct) == undated(before["md"].read_text())
