"""Every mini and lab grid keeps the ratio its table is about, as the paper scale of the same grid file has it.

Each check compares the mini cells with the paper cells of the same grid (never with numbers written here),
so a mini that shrinks the width below the patch dimension, or moves d' off the paper's fractions, fails.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from jitlab.experiments.grid.ratios import shape_of
from jitlab.experiments.grid.spec import list_grids, load_spec

MINI_GRIDS = [name for name in list_grids() if "mini" in load_spec(name).scales]
SMALL_SCALES = pytest.mark.parametrize("scale", ["mini", "lab"])


def shapes(grid: str, scale: str) -> dict[tuple, object]:
    return {tuple(c.labels.items()): shape_of(c.config) for c in load_spec(grid).cells(scale, train_seeds=1)}


def by_axis(grid: str, scale: str, axis: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for labels, shape in shapes(grid, scale).items():
        out.setdefault(dict(labels)[axis], []).append(shape)
    return out


@SMALL_SCALES
def test_table2_patch_over_width_as_the_paper(scale):
    mini, paper = by_axis("table2", scale, "setting"), by_axis("table2", "paper", "setting")
    # (a): patch dimension = width, so the output layer is full rank (the paper: 768 into 768)
    assert {s.patch_per_width for s in paper["a"]} == {Fraction(1)}
    assert {s.patch_per_width for s in mini["a"]} == {s.patch_per_width for s in paper["a"]}
    assert all(s.full_rank_output for s in mini["a"])
    # (b): patch dimension 1/16 of the width, as the paper's 48/768
    assert {s.patch_per_width for s in mini["b"]} == {s.patch_per_width for s in paper["b"]} == {Fraction(1, 16)}
    # equal tokens in (a) and (b), as the paper's 256 and 256
    assert len({s.tokens for s in mini["a"] + mini["b"]}) == 1
    assert len({s.tokens for s in paper["a"] + paper["b"]}) == 1
    assert all(s.full_rank_output for panel in mini.values() for s in panel)


def test_table2_b_is_a_trend_over_panels_at_16x16_in_the_mini_only():
    mini, paper = by_axis("table2", "mini", "setting"), by_axis("table2", "paper", "setting")
    assert set(mini) == {"a", "b", "b16p4", "b16p2"} and set(paper) == {"a", "b"}
    assert set(by_axis("table2", "lab", "setting")) == {"a", "b"}
    (a,), (p4,), (p2,) = ({s.tokens for s in mini[k]} for k in ("a", "b16p4", "b16p2"))
    assert {s.resolution for s in mini["b16p4"] + mini["b16p2"]} == {16}
    # p4: the paper's (b) patch dimension (48), at 1/4 of the mini width, (a)'s tokens
    assert {s.patch_dim for s in mini["b16p4"]} == {s.patch_dim for s in paper["b"]} == {48}
    assert {s.patch_per_width for s in mini["b16p4"]} == {Fraction(1, 4)} and p4 == a
    # p2: the paper's (b) ratio 1/16, with 4x the tokens
    assert {s.patch_per_width for s in mini["b16p2"]} == {s.patch_per_width for s in paper["b"]} == {Fraction(1, 16)}
    assert p2 == 4 * a
    # every panel of (b) has 9 cells and the same model as (a)
    assert all(len(panel) == 9 for panel in mini.values())
    assert len({(s.width, s.depth) for panel in mini.values() for s in panel}) == 1


def paper_cells_with_a_mini_twin(grid: str, scale: str = "mini") -> dict[tuple, object]:
    """The paper cells whose labels the scale also runs (Table 4's JiT-L/16 row is paper-only: another size)."""
    mini = shapes(grid, scale)
    return {k: s for k, s in shapes(grid, "paper").items() if k in mini}


@SMALL_SCALES
@pytest.mark.parametrize("grid", ["table3", "fig4", "table4"])
def test_sweeps_at_table2a_ratio(grid, scale):
    mini = {s.patch_per_width for s in shapes(grid, scale).values()}
    paper = {s.patch_per_width for s in paper_cells_with_a_mini_twin(grid, scale).values()}
    assert mini == paper == {Fraction(1)}


@SMALL_SCALES
def test_fig4_bottleneck_fractions_of_the_patch_as_the_paper(scale):
    mini = {s.bottleneck_per_patch for s in shapes("fig4", scale).values()}
    paper = {s.bottleneck_per_patch for s in shapes("fig4", "paper").values()}
    assert None in mini and None in paper  # d' = none is a cell at both scales
    assert mini == paper


@SMALL_SCALES
def test_table4_baseline_bottleneck_fraction_as_the_paper(scale):
    mini = {s.bottleneck_per_patch for s in shapes("table4", scale).values()}
    paper = {s.bottleneck_per_patch for s in paper_cells_with_a_mini_twin("table4", scale).values()}
    assert mini == paper == {Fraction(128, 768)}


def test_table5_patch_over_width_1_4_16_at_equal_tokens():
    for scale in ("mini", "lab", "paper"):
        cells = load_spec("table5").cells(scale, train_seeds=1)
        ratios = [shape_of(c.config).patch_per_width for c in cells]
        assert ratios == [1, 4, 16], scale
        assert len({shape_of(c.config).tokens for c in cells}) == 1, scale


@SMALL_SCALES
def test_table6_sizes_grow_as_b_l_h_with_full_rank_output(scale):
    # mini and lab run the 256 column only; there (as in the paper's 256 column) every size is full rank
    at256 = {s_: {dict(k)["model"]: s for k, s in shapes("table6", s_).items() if dict(k)["resolution"] == "256"}
             for s_ in (scale, "paper")}
    for s_, sizes in at256.items():
        assert all(s.full_rank_output for s in sizes.values()), s_
    mini, paper = at256[scale], at256["paper"]
    for m in ("L", "H"):  # widths and depths grow in the paper's proportions (within 15%)
        assert mini[m].width / mini["B"].width == pytest.approx(paper[m].width / paper["B"].width, rel=0.15)
        assert mini[m].depth / mini["B"].depth == pytest.approx(paper[m].depth / paper["B"].depth, rel=0.15)
    assert mini["B"].patch_per_width == paper["B"].patch_per_width  # B: patch dimension = width


def test_table5_mini_scored_in_one_feature_space():
    evals = {c.eval.get("score_resolution") for c in load_spec("table5").cells("mini", train_seeds=1)}
    assert evals == {32}


def test_shape_line_names_rank():
    shape = shape_of({"model": {"net": {"init_args": {"patch_size": 16, "hidden_size": 96, "depth": 4}}},
                      "data": {"init_args": {"resolution": 64}}})
    assert shape.patch_dim == 768 and shape.tokens == 16 and not shape.full_rank_output
    assert "output rank below the patch dimension" in shape.line()
