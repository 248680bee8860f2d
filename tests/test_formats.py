"""One owner per format: the metrics row (jitlab.rows), the typed view of a fit config (jitlab.fitview), the
network's shape derived once (FitView.net_args, used by the cost plan, the ratios, the memory plan and the
preflight)."""

from __future__ import annotations

import json

import pytest

from jitlab.fitview import DRY_CLASSES, FitView
from jitlab.experiments.grid.plan import build_meta_net, train_images
from jitlab.experiments.grid.ratios import shape_of
from jitlab.experiments.grid.spec import load_spec
from jitlab.rows import REPORT_FIELDS, Point, point_key, same_measurement
from jitlab.experiments.rundir import best_rows

ROW = {"metric": "FD-ref-500", "value": 12.0, "ema": 0.9999, "cfg_scale": 2.0, "cfg_interval": [0.1, 1.0],
       "sampler": "heun", "steps": 25, "seed": 0, "n_samples": 500, "step": 1000}


def test_a_row_older_than_a_field_is_the_same_point_as_one_with_its_default():
    assert Point.of(ROW) == Point.of({**ROW, "final_step": "euler", "precision": "fp32", "score_resolution": None})
    assert Point.of(ROW).cfg_interval == (0.1, 1.0)  # a list in JSON, hashable in the key
    for field, other in [("final_step", "x"), ("precision", "bf16"), ("score_resolution", 32), ("cfg_scale", 1.5)]:
        assert Point.of({**ROW, field: other}) != Point.of(ROW), field
    assert point_key(ROW) != point_key({**ROW, "metric": "IS-500"})  # two metrics of one point
    assert same_measurement(ROW) != same_measurement({**ROW, "reference": "/other/stats.npz"})


def test_best_rows_keep_the_best_points_metrics_and_not_a_point_with_another_final_step(tmp_path):
    rows = [ROW, {**ROW, "metric": "IS-500", "value": 3.0}, {**ROW, "metric": "IS-500", "final_step": "x"}]
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"rows": rows, "best": ROW}))
    assert best_rows(path) == rows[:2]


def test_merge_rows_replaces_a_point_measured_again_and_keeps_the_others(tmp_path):
    from jitlab.score.evaluation import merge_rows

    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"rows": [ROW, {**ROW, "cfg_scale": 1.0}]}))
    again = {**ROW, "value": 11.0, "final_step": "euler"}  # the same point, written with the newer field
    assert merge_rows(path, [again]) == [{**ROW, "cfg_scale": 1.0}, again]


def test_the_report_columns_keep_their_order():
    assert REPORT_FIELDS[:5] == ("n_samples", "seed", "step", "sampler", "steps")
    assert REPORT_FIELDS[-3:] == ("feature_space", "feature_accuracy", "feature_digest")
    assert set(f for f in Point.__dataclass_fields__) <= set(REPORT_FIELDS)  # every point setting is a column


def test_fit_view_reads_each_section_once_with_defaults():
    empty = FitView.of({})
    assert (empty.data_class, empty.data, empty.net, empty.trainer) == ("", {}, {}, {})
    assert empty.batch == 1 and empty.accumulate == 1 and empty.max_steps is None and not empty.bf16
    fit = FitView.of({"data": {"class_path": "D", "init_args": {"global_batch_size": 64, "resolution": 32}},
                      "model": {"net": {"class_path": "N", "init_args": {"depth": 2}}, "compile": True},
                      "trainer": {"max_steps": 500, "accumulate_grad_batches": 2, "precision": "bf16-mixed"}})
    assert (fit.data_class, fit.net_class, fit.net, fit.model["compile"]) == ("D", "N", {"depth": 2}, True)
    assert fit.batch == 64 and fit.accumulate == 2 and fit.max_steps == 500 and fit.bf16
    for steps in (-1, 0, True, None, "500"):  # no step count: Lightning's -1, a flag, a string
        assert FitView.of({"trainer": {"max_steps": steps}}).max_steps is None, steps


def test_net_args_fill_only_what_is_unset_and_what_the_class_takes():
    jit = {"class_path": "jitlab.core.models.JiT", "init_args": {"patch_size": 4, "img_size": None}}
    fit = FitView.of({"model": {"net": jit}, "data": {"init_args": {"resolution": 16}}})
    assert fit.net_args()["img_size"] == 16 and fit.net_args()["num_classes"] == DRY_CLASSES
    assert fit.net_args({"img_size": 16, "num_classes": 10})["num_classes"] == 10  # the data module's answer
    set_ = FitView.of({"model": {"net": {**jit, "init_args": {"img_size": 8, "num_classes": 3}}},
                       "data": {"init_args": {"resolution": 16}}})
    assert set_.net_args()["img_size"] == 8 and set_.net_args()["num_classes"] == 3  # the config's own values
    toy = FitView.of({"model": {"net": {"class_path": "jitlab.core.models.mlp.ToyMLP", "init_args": {"dim": 8}}}})
    assert toy.net_args() == {"dim": 8}  # the toy network takes no image size or classes


@pytest.mark.parametrize("grid", ["table2", "fig4"])
def test_plan_ratios_and_memory_plan_see_one_shape(grid):
    for cell in load_spec(grid).cells("mini", train_seeds=1):
        net, shape = build_meta_net(cell.config), shape_of(cell.config)
        fit = FitView.of(cell.config)
        assert net.img_size == shape.resolution == fit.net_args()["img_size"], cell.id
        assert net.hidden_size == shape.width == fit.net_args()["hidden_size"], cell.id
        assert train_images(cell.config) == fit.max_steps * fit.batch
