"""`jitlab report`: run directories -> CSV, Markdown, LaTeX, PNG (Table 2's verdict: test_report_verdict.py).

Every number below is a FIXTURE made up for these tests (written into tmp_path), not a result.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from jitlab.experiments.grid.spec import load_spec
from jitlab.experiments.report import build_report
from jitlab.commands.report import ReportError, main
from jitlab.experiments.report.plots import positions

ROOT = Path(__file__).resolve().parents[1]

# made-up FD values (NOT results): setting a, x-pred far below eps/v; setting b, all nine within 1.5x
REPRODUCING = {
    ("a", "x", "x"): 40.0, ("a", "x", "eps"): 300.0, ("a", "x", "v"): 120.0,
    ("a", "eps", "x"): 42.0, ("a", "eps", "eps"): 310.0, ("a", "eps", "v"): 130.0,
    ("a", "v", "x"): 38.0, ("a", "v", "eps"): 290.0, ("a", "v", "v"): 110.0,
    ("b", "x", "x"): 20.0, ("b", "x", "eps"): 22.0, ("b", "x", "v"): 21.0,
    ("b", "eps", "x"): 18.0, ("b", "eps", "eps"): 19.0, ("b", "eps", "v"): 20.5,
    ("b", "v", "x"): 17.0, ("b", "v", "eps"): 19.5, ("b", "v", "v"): 18.5,
}  # keys: (setting, loss, pred)


def spec():
    """Table 2's grid file as these fixtures know it: settings (a) and (b), their two rules, one training per cell
    (panels, rules and seeds the grid file adds later are not in the fixtures)."""
    grid = load_spec("table2", root=ROOT)
    grid.axes = tuple(replace(a, scale_values={**a.scale_values, "mini": ("a", "b")}) if a.name == "setting" else a
                      for a in grid.axes)
    grid.rules = [rule for rule in grid.rules if rule["name"] in ("(a)", "(b)")]
    grid.scales = {**grid.scales, "mini": {**grid.scales["mini"], "train_seeds": 1}}
    return grid


def resolution(setting: str) -> int:
    cell = next(c for c in spec().cells("mini") if c.labels["setting"] == setting)
    return cell.config["data"]["init_args"]["resolution"]


def write_fixture(runs: Path, values: dict, failed=(), diverged=(), missing=(), reused=(), metric="FD-ref-500",
                  extra_is: bool = False, seeds: int = 1, spread: float = 0.02) -> Path:
    """FIXTURE run directories RUNS/table2/mini/CELL[_seed-K]/result.json, shaped like the grid runner's.

    With ``seeds`` > 1 every cell is trained under seeds 0..seeds-1: seed K's value is the cell's value times
    (1 + spread x (K - (seeds - 1) / 2)), so the seeds' mean is the value given."""
    grid = spec()
    for cell in grid.cells("mini", train_seeds=seeds):
        key = (cell.labels["setting"], cell.labels["loss"], cell.labels["pred"])
        directory = runs / "table2" / "mini" / cell.id
        directory.mkdir(parents=True, exist_ok=True)
        if key in missing:
            continue  # not run yet: a directory (maybe a config) but no result.json
        status = "failed" if key in failed else "diverged" if key in diverged else "done"
        last = cell.config["trainer"]["max_steps"]  # scored at its training's last step (else it is stale)
        point = {"n_samples": 500, "seed": 0, "sampler": "heun", "steps": 50, "nfe": 99, "cfg_scale": 2.0,
                 "cfg_interval": [0.0, 1.0], "ema": 0.999, "step": last,
                 "feature_space": f"refnet-shapes-{cell.config['data']['init_args']['resolution']}",
                 "feature_accuracy": 0.999 if cell.labels["setting"] == "a" else 0.772}
        value = values[key] * (1 + spread * (cell.train_seed - (seeds - 1) / 2))
        rows = [{"metric": metric, "value": value, **point}] if status == "done" else []
        if extra_is and rows:
            rows.append({"metric": "IS-500", "value": 3.5, **point})
        result = {"grid": "table2", "scale": "mini", "cell": cell.id, "labels": cell.labels,
                  "config_hash": cell.config_hash, "eval": cell.eval, "paper_value": cell.paper_value,
                  "paper_metric": cell.paper_metric, "status": status,
                  "error": "training exited with code 1; see train.log" if status == "failed" else
                  ("non-finite weights at step 700" if status == "diverged" else None),
                  "step": last if status == "done" else 700, "rows": rows,
                  "commands": ["jitlab fit ...", "jitlab eval ..."], "train_seconds": 100.0, "seconds": 120.0,
                  "finished_at": "2026-11-22 08:10:00 UTC"}
        if cell.train_seed:
            result["train_seed"] = cell.train_seed
        if key in reused:  # the runner reused another grid's identical run
            result["reused_from"] = str(runs / "table3" / "mini" / "mu--0.8_pred-x")
        (directory / "result.json").write_text(json.dumps(result))
    return runs


def test_csv_is_tidy_with_every_cell(tmp_path):
    runs = write_fixture(tmp_path / "runs", REPRODUCING, failed=[("a", "eps", "eps")], missing=[("b", "v", "v")],
                         extra_is=True)
    paths = build_report(spec(), "mini", runs, tmp_path / "reports", png=False)
    assert paths["csv"].name == "table2.csv"
    df = pd.read_csv(paths["csv"], keep_default_na=False, na_values=[""])
    for column in ("grid", "scale", "train_seed", "setting", "pred", "loss", "metric", "value", "paper_value",
                   "n_samples",
                   "seed", "step", "status", "paper_metric", "cfg_scale", "ema", "sampler", "steps", "nfe",
                   "train_seconds"):
        assert column in df.columns, column
    assert df["cell"].nunique() == 18 and set(df["train_seed"]) == {0}
    # 16 done cells x (FD + IS) + one failed + one not-run row
    assert len(df) == 16 * 2 + 2
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and pd.isna(failed["value"]).all() and failed["paper_value"].iloc[0] == 394.58
    assert (df["status"] == "not run").sum() == 1
    fd = df[df["metric"] == "FD-ref-500"]
    row = fd[(fd["setting"] == "a") & (fd["loss"] == "v") & (fd["pred"] == "x")].iloc[0]
    assert row["value"] == 38.0 and row["paper_value"] == 8.62 and row["paper_metric"] == "FID-50K"
    assert row["n_samples"] == 500 and row["seed"] == 0 and row["step"] == 1000
    # the paper's FID sits beside our FD only, never beside our IS
    assert df.loc[df["metric"] == "IS-500", "paper_value"].isna().all()
    assert set(df["setting"]) == {"a", "b"}


def test_markdown_layout_and_provenance(tmp_path):
    runs = write_fixture(tmp_path / "runs", REPRODUCING, failed=[("a", "eps", "eps")], missing=[("b", "v", "v")],
                         reused=[("a", "v", "x")])
    md = build_report(spec(), "mini", runs, tmp_path / "reports", png=False)["md"].read_text()
    tables = [block.split("\n## ")[0] for block in md.split("\n### ")[1:] if block.startswith("(")]
    assert len(tables) == 2 and tables[0].startswith("(a) high patch dimension")
    assert tables[1].startswith("(b) low patch dimension")
    for block in tables:
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert len(rows) == 2 + 3  # header, rule, three loss rows
        header = rows[0]
        assert "loss \\ pred" in header and header.count("ours: FD-ref-500 (mini)") == 3
        assert header.count("paper: FID-50K") == 3
        assert [r.split("|")[1].strip() for r in rows[2:]] == ["x-loss", "eps-loss", "v-loss"]
    table_a = [line for line in tables[0].splitlines() if line.startswith("| v-loss")][0]
    assert [c.strip() for c in table_a.split("|")[2:4]] == ["38", "8.62"]  # ours, then the paper's beside it
    eps_row = [line for line in tables[0].splitlines() if line.startswith("| eps-loss")][0]
    assert "| failed | 394.58 |" in eps_row
    v_row_b = [line for line in tables[1].splitlines() if line.startswith("| v-loss")][0]
    assert v_row_b.rstrip().endswith("| not run | 3.46 |")
    a, b = resolution("a"), resolution("b")
    for text in ("**scale**: mini", f"**data set** (setting a): shapes {a}x{a}",
                 f"**data set** (setting b): shapes {b}x{b}",
                 "**our metric**: FD-ref-500; 500 generated samples per cell", "It is not FID",
                 "**the paper's metric**: FID-50K", "sampler heun, 50 steps (NFE 99)", "CFG 2",
                 f"max_steps {spec().cells('mini')[0].config['trainer']['max_steps']}",
                 "`jitlab grid run table2 --scale mini", "`jitlab report table2 --scale mini",
                 "**date**: generated", "**compute**: 26m40s of training summed over 16 cells",
                 "1 more cell(s) reuse the identical run of another grid (1m40s of training, counted there)",
                 "same run as `",
                 "16 done, 1 failed, 1 not run (of 18)", "The paper's claim:",
                 f"refnet-shapes-{a}: the reference classifier's validation accuracy is 99.9%",
                 f"refnet-shapes-{b}: the reference classifier's validation accuracy is 77.2%",
                 "one training per cell (training seed 0)", "Ours is one training per cell."):
        assert text in md, text
    assert "FID-50K" not in md.split("**the paper's metric**")[0].split("Grid `table2`")[1].split("ours:")[0]
    assert not re.search(r"\bnan\b", md) and "±" not in md and "## Every training seed" not in md  # one seed: plain


def test_tex_png_and_atomic_outputs(tmp_path):
    from PIL import Image

    runs = write_fixture(tmp_path / "runs", REPRODUCING, diverged=[("a", "eps", "v")])
    out = tmp_path / "reports"
    paths = build_report(spec(), "mini", runs, out)
    tex = paths["tex"].read_text()
    assert tex.count(r"\begin{tabular}") == 2 and r"\toprule" in tex and r"\bottomrule" in tex
    assert "ours: FD-ref-500 (mini)" in tex and "paper: FID-50K" in tex and r"\textit{diverged}" in tex
    with Image.open(paths["png"]) as image:
        image.verify()
    with Image.open(paths["png"]) as image:
        assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 400
    assert sorted(p.name for p in out.iterdir()) == ["table2.csv", "table2.md", "table2.png", "table2.tex"]
    again = build_report(spec(), "mini", runs, tmp_path / "again")
    assert again["png"].read_bytes() == paths["png"].read_bytes()  # deterministic
    assert again["csv"].read_text() == paths["csv"].read_text()


def test_paper_scale_has_its_own_names(tmp_path):
    runs = tmp_path / "runs"
    grid = spec()
    cell = grid.cells("paper")[0]
    directory = runs / "table2" / "paper" / cell.id
    directory.mkdir(parents=True)
    (directory / "result.json").write_text(json.dumps({
        "status": "done", "config_hash": cell.config_hash, "step": 250000, "train_seconds": 3600.0,
        "rows": [{"metric": "FID-50K", "value": 9.9, "n_samples": 50000, "seed": 0, "step": 250000}]}))
    paths = build_report(grid, "paper", runs, tmp_path / "reports", png=False)
    assert paths["md"].name == "table2-paper.md"
    md = paths["md"].read_text()
    assert "ours: FID-50K (paper)" in md and "17 not run" in md and "ImageNet 256x256" in md
    assert "`jitlab grid run table2 --scale paper --runs " in md and " --data_root DIR`" in md


def test_errors_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    empty = tmp_path / "empty"
    assert main(["table2", "--runs", str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jitlab report: error:") and str(empty / "table2" / "mini") in err
    assert not (tmp_path / "out").exists()
    assert main(["no-such-grid", "--runs", str(empty)]) == 2
    assert "jitlab report: error:" in capsys.readouterr().err
    with pytest.raises(ReportError):
        build_report(spec(), "mini", empty, tmp_path / "out")


def test_cli_writes_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = write_fixture(tmp_path / "runs", REPRODUCING, missing=[("a", "x", "x")])
    out = tmp_path / "reports"
    assert main(["table2", "--runs", str(runs), "--out", str(out)]) == 0
    assert "jitlab report: wrote" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["table2.csv", "table2.md", "table2.png", "table2.tex"]  # no temporary files left
    assert f"--runs {runs}" in (out / "table2.md").read_text()


SWEEP_SPEC = """
name: sweep
title: "A fixture sweep (not a paper grid)"
claim: "fixture"
paper_metric: FID-50K
layout: LAYOUT
axes:
  bottleneck: {key: model.net.init_args.bottleneck_dim, values: ["16", "32", "64", "none"]}
  pred: {key: model.flow.pred, values: [x, v]}
scales:
  mini:
    config: experiments/scales/mini.yaml
    eval: {features: refnet, num_images: 100}
paper:
  - {bottleneck: "none", pred: x, value: 8.62}
  - {bottleneck: "64", pred: x, value: 7.5}
"""


@pytest.mark.parametrize("layout, tables", [
    ("{kind: line, x: bottleneck, hue: pred}", 1),
    ("{kind: points, x: bottleneck}", 2),  # pred is not placed: one table per prediction
    ("{kind: ladder, x: bottleneck, hue: pred}", 1),
])
def test_sweep_layouts(tmp_path, layout, tables):
    from PIL import Image

    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP_SPEC.replace("LAYOUT", layout))
    grid = load_spec(path, root=ROOT)
    runs = tmp_path / "runs"
    for i, cell in enumerate(grid.cells("mini")):  # FIXTURE values
        directory = runs / "sweep" / "mini" / cell.id
        directory.mkdir(parents=True)
        failed = cell.labels == {"bottleneck": "32", "pred": "v"}
        rows = [] if failed else [{"metric": "FD-ref-100", "value": 10.0 + 7 * i, "n_samples": 100, "seed": 0,
                                   "step": 2000}]
        (directory / "result.json").write_text(json.dumps(
            {"status": "failed" if failed else "done", "config_hash": cell.config_hash, "rows": rows,
             "train_seconds": 10.0}))
    paths = build_report(grid, "mini", runs, tmp_path / "reports")
    md = paths["md"].read_text()
    blocks = [b.split("\n## ")[0] for b in md.split("\n### ")[1:]]
    assert len(blocks) == tables
    first = [line for line in blocks[0].splitlines() if line.startswith("|")]
    assert [r.split("|")[1].strip() for r in first[2:]] == ["16", "32", "64", "none"]
    assert "ours: FD-ref-100 (mini)" in first[0] and "paper: FID-50K" in first[0]
    assert "| none | 52 | 8.62 |" in md  # cell 6 (none, x): 10 + 7 * 6
    assert "failed" in md and "No automatic verdict" in md
    with Image.open(paths["png"]) as image:
        image.verify()


def test_sweep_positions_put_none_at_the_right_end():
    xs, numeric = positions(["16", "32", "64", "128", "none"])
    assert numeric and xs[:4] == [4.0, 5.0, 6.0, 7.0] and xs[4] == 8.0
    xs, numeric = positions(["-0.4", "-0.8", "-1.2"])
    assert numeric and xs == [-0.4, -0.8, -1.2]
    assert positions(["a", "b"]) == ([0.0, 1.0], False)


def _scored_against(runs, names: dict[str, str]):
    """Rewrite the seed-0 setting-a results' reference files (cell name -> stats file name, default ``names['*']``)."""
    for path in (runs / "table2" / "mini").glob("setting-a_*/result.json"):
        result = json.loads(path.read_text())
        space = result["rows"][0]["feature_space"]
        name = names.get(path.parent.name, names["*"]).format(space=space)
        result["rows"][0]["reference"] = f"/cache/stats/{name}"
        path.write_text(json.dumps(result))


def _mixed_notes(md: str) -> list[str]:
    return [line for line in md.splitlines() if "not comparable with one another" in line]


def test_cells_scored_by_a_retrained_classifier_are_flagged(tmp_path):
    runs = write_fixture(tmp_path / "runs", REPRODUCING)
    _scored_against(runs, {"*": "shapes-64-{space}-AAAA-d1-5000.npz",
                           "setting-a_loss-v_pred-x": "shapes-64-{space}-BBBB-d1-5000.npz"})
    note = _mixed_notes(build_report(spec(), "mini", runs, tmp_path / "reports", png=False)["md"].read_text())
    assert len(note) == 1 and f"feature space refnet-shapes-{resolution('a')} were scored by 2 different" in note[0]
    assert f"shapes-64-refnet-shapes-{resolution('a')}-BBBB-d1-5000.npz: setting-a_loss-v_pred-x." in note[0]


def test_one_data_set_scored_against_two_statistics_files_is_flagged(tmp_path):
    runs = write_fixture(tmp_path / "runs", REPRODUCING)
    _scored_against(runs, {"*": "shapes-64-{space}-AAAA-d1-5000.npz",
                           "setting-a_loss-v_pred-x": "shapes-64-{space}-AAAA-d1-1000.npz"})
    note = _mixed_notes(build_report(spec(), "mini", runs, tmp_path / "reports", png=False)["md"].read_text())
    assert len(note) == 1 and "on data set shapes-64 in feature space" in note[0]
    assert "against 2 different reference statistics" in note[0]


def test_different_data_sets_scored_by_one_classifier_are_not_flagged(tmp_path):
    """Table 5's case: every resolution has its own reference statistics, all in one classifier's features."""
    runs = write_fixture(tmp_path / "runs", REPRODUCING)
    _scored_against(runs, {"*": "shapes-64-{space}-AAAA-d1-5000.npz",
                           "setting-a_loss-v_pred-x": "shapes-128-{space}-AAAA-d1-5000.npz"})
    md = build_report(spec(), "mini", runs, tmp_path / "reports", png=False)["md"].read_text()
    assert _mixed_notes(md) == []


def test_the_reference_stats_name_splits_back_into_its_data_set_and_classifier():
    from jitlab.score.evaluation import reference_stats_name, split_reference_stats_name

    name = reference_stats_name("shapes", 128, "refnet-shapes-32-f416c58ed376-4a42f34a73", 5000)
    assert split_reference_stats_name(name, "refnet-shapes-32") == ("shapes-128",
                                                                    "refnet-shapes-32-f416c58ed376-4a42f34a73")
    assert split_reference_stats_name("jit_in256_stats.npz", "inception") == ("jit_in256_stats.npz",) * 2
