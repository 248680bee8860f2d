"""The run-directory format (jitlab.experiments.rundir), the class-path importer, and the experiments layer's one-way
imports."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from jitlab.experiments import rundir
from jitlab.classpath import current_path, import_path
from jitlab.rows import is_frechet

ROOT = Path(__file__).resolve().parents[1]


def test_read_result_is_none_for_a_missing_broken_or_non_object_file(tmp_path):
    assert rundir.read_result(tmp_path) is None  # a cell still running has no result.json
    (tmp_path / "result.json").write_text("{half")
    assert rundir.read_result(tmp_path) is None
    (tmp_path / "result.json").write_text("[1, 2]")
    assert rundir.read_result(tmp_path) is None
    (tmp_path / "result.json").write_text(json.dumps({"status": "done"}))
    assert rundir.read_result(tmp_path) == {"status": "done"}
    assert "done" in rundir.FINISHED and "diverged" in rundir.FINISHED and "failed" not in rundir.FINISHED


def test_best_rows_are_the_rows_of_the_point_eval_named_best(tmp_path):
    point = {"ema": 0, "cfg_scale": 2.0, "cfg_interval": [0.0, 1.0], "sampler": "heun", "steps": 25, "seed": 0,
             "n_samples": 500, "step": 1000}
    best = {"metric": "FD-ref-500", "value": 10.0, **point}
    rows = [{"metric": "FD-ref-500", "value": 12.0, **point, "cfg_scale": 1.0}, best,
            {"metric": "IS-500", "value": 3.0, **point}]
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"rows": rows, "best": best}))
    assert [r["metric"] for r in rundir.best_rows(path)] == ["FD-ref-500", "IS-500"]  # not the CFG 1.0 point
    assert rundir.best_rows(path)[0]["value"] == 10.0
    path.write_text(json.dumps({"rows": rows, "best": None}))
    assert rundir.best_rows(path) == []
    assert rundir.primary_index([{"metric": "IS-500"}, {"metric": "FID-50K"}]) == 1
    assert rundir.primary_index([{"metric": "IS-500"}]) == 0
    assert is_frechet("FD-ref-500") and is_frechet("FID-50K") and not is_frechet("IS-500")
    assert rundir.stats_name({"reference": "/moved/cache/stats-A.npz"}) == "stats-A.npz"
    assert rundir.stats_name({"reference": None}) is None


@pytest.mark.parametrize("seconds, text", [(0, "0m00s"), (59.6, "1m00s"), (605, "10m05s"), (3599.4, "59m59s"),
                                           (3600, "1h00m"), (11220, "3h07m")])
def test_clock(seconds, text):
    assert rundir.clock(seconds) == text


def test_import_path_names_the_object_or_fails():
    assert import_path("jitlab.experiments.rundir.clock") is rundir.clock
    with pytest.raises(ValueError, match="dotted"):
        import_path("JiT")
    with pytest.raises(AttributeError):
        import_path("jitlab.experiments.rundir.NoSuchThing")
    with pytest.raises(ImportError):
        import_path("jitlab.no_such_module.Name")
    # a path written before the modules moved into the layer folders (an older checkpoint's) names the same class
    from jitlab.core.models import JiT
    from jitlab.train.strategy import ShardedStrategy

    assert import_path("jitlab.models.JiT") is JiT and import_path("jitlab.strategy.ShardedStrategy") is ShardedStrategy
    with pytest.raises(ImportError):
        import_path("jitlab.no_such_module.models.JiT")
    with pytest.raises(ImportError):
        import_path("torch.no_such_module.Name")


def test_current_path_spells_a_moved_module_as_today_and_leaves_others():
    assert current_path("jitlab.data.EmbeddedDataModule") == "jitlab.core.data.EmbeddedDataModule"
    assert current_path("jitlab.strategy.ShardedStrategy") == "jitlab.train.strategy.ShardedStrategy"
    for path in ("jitlab.core.models.JiT", "jitlab.no_such_module.Name", "torch.nn.Linear", "JiT"):
        assert current_path(path) == path


def test_an_old_runs_config_naming_moved_modules_is_read_as_today_and_left_as_written(tmp_path, capsys):
    """An older run's config.yaml names ``jitlab.data.EmbeddedDataModule``: jsonargparse imports class paths itself,
    so without the rewrite `jitlab fit --config` fails on ``module 'jitlab' has no attribute 'data'``."""
    import yaml

    from jitlab.commands.cli import main
    from jitlab.commands.fit import current_config_args

    config = yaml.safe_load((ROOT / "jitlab" / "mini.yaml").read_text())
    config["model"]["net"]["class_path"] = "jitlab.models.JiT"
    config["data"] = {"class_path": "jitlab.data.EmbeddedDataModule", "init_args": {"kind": "shapes"}}
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump(config, sort_keys=False))
    written = old.read_text()
    for argv in (["fit", "--config", str(old), "--print_config"], ["fit", f"--config={old}", "--print_config"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        out, err = capsys.readouterr()
        assert stop.value.code == 0 and "jitlab.data.EmbeddedDataModule -> jitlab.core.data.EmbeddedDataModule" in err
        printed = yaml.safe_load(out[out.index("\n") + 1:] if out.startswith("#") else out)
        assert printed["data"]["class_path"] == "jitlab.core.data.EmbeddedDataModule"
        assert printed["model"]["net"]["class_path"] == "jitlab.core.models.JiT"
        assert printed["data"]["init_args"]["kind"] == "shapes"
    assert old.read_text() == written  # the run's file is never rewritten
    today = tmp_path / "today.yaml"
    today.write_text((ROOT / "jitlab" / "mini.yaml").read_text())
    assert current_config_args(["fit", "--config", str(today)]) == ["fit", "--config", str(today)]


def test_a_group_config_file_naming_moved_modules_is_read_as_today(tmp_path, capsys):
    """``--data FILE`` / ``--model=FILE``: a group's own config file, which jsonargparse also reads, is rewritten
    the same way; a class name given to ``--data`` is not taken for a file."""
    import yaml

    from jitlab.commands.cli import main
    from jitlab.commands.fit import current_config_args

    model = yaml.safe_load((ROOT / "jitlab" / "mini.yaml").read_text())["model"]
    model["net"]["class_path"] = "jitlab.models.JiT"
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
    data = {"class_path": "jitlab.data.EmbeddedDataModule", "init_args": {"kind": "shapes"}}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--data", str(tmp_path / "data.yaml"), f"--model={tmp_path / 'model.yaml'}", "--print_config"])
    out, err = capsys.readouterr()
    assert stop.value.code == 0, err
    assert "jitlab.data.EmbeddedDataModule -> jitlab.core.data.EmbeddedDataModule" in err
    assert "jitlab.models.JiT -> jitlab.core.models.JiT" in err
    printed = yaml.safe_load(out[out.index("\n") + 1:] if out.startswith("#") else out)
    assert printed["data"]["class_path"] == "jitlab.core.data.EmbeddedDataModule"
    assert printed["data"]["init_args"]["kind"] == "shapes"
    assert printed["model"]["net"]["class_path"] == "jitlab.core.models.JiT"
    assert current_config_args(["fit", "--data", "EmbeddedDataModule"]) == ["fit", "--data", "EmbeddedDataModule"]


def imported_modules(path: Path) -> set[str]:
    """Every jitlab module a file imports, at any depth of the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("jitlab")}


def test_grid_writes_run_directories_report_reads_them_neither_imports_the_other():
    for path in sorted((ROOT / "jitlab" / "experiments" / "report").glob("*.py")):
        grid = {m for m in imported_modules(path) if m.startswith("jitlab.experiments.grid")}
        # the grid file format only
        assert all(m.startswith("jitlab.experiments.grid.spec") for m in grid), (path.name, grid)
    for path in sorted((ROOT / "jitlab" / "experiments" / "grid").glob("*.py")):
        assert not {m for m in imported_modules(path) if m.startswith("jitlab.experiments.report")}, path.name
    shared = imported_modules(ROOT / "jitlab" / "experiments" / "rundir.py")
    assert not {m for m in shared if m.startswith(("jitlab.experiments.report", "jitlab.experiments.grid.runner",
                                                   "jitlab.commands"))}, shared
