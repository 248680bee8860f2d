"""The sweeps' verdicts (Table 3, Figure 4, Table 4, Table 6) from the grid files' rules, on made-up frames.

The frames here are today's single-training layout (no ``train_seed`` column, one row per cell); the
rules themselves are tested kind by kind in test_rules.py. Every number below is a FIXTURE made up for
these tests, not a result.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from jitlab.experiments.grid.spec import load_spec
from jitlab.experiments.report.verdict import verdict

ROOT = Path(__file__).resolve().parents[1]


def frame(grid: str, cells: list[dict]) -> pd.DataFrame:
    """A report frame: one row per cell with a made-up FD-ref-500 (status done unless given)."""
    rows = []
    for cell in cells:
        status = cell.pop("status", "done")
        value = cell.pop("value")
        rows.append({"grid": grid, "scale": "mini", "cell": "_".join(f"{k}-{v}" for k, v in cell.items()),
                     "status": status, "metric": "FD-ref-500" if status == "done" else None,
                     "value": value if status == "done" else float("nan"), **cell})
    return pd.DataFrame(rows)


def judge(grid: str, cells: list[dict]) -> list[str]:
    spec = load_spec(grid, root=ROOT)
    data = frame(grid, cells)
    axes = [axis.name for axis in spec.axes]
    data["paper_value"] = [spec.paper_value({a: row[a] for a in axes}) for _, row in data.iterrows()]
    return verdict(spec, data)


def table3_cells(x: dict[str, float], eps: float = 160.0, v: float = 140.0) -> list[dict]:
    return [{"mu": mu, "pred": p, "value": {"x": x[mu], "eps": eps, "v": v}[p]}
            for mu in ("0.0", "-0.4", "-0.8", "-1.2") for p in ("x", "eps", "v")]


def test_table3_with_an_interior_optimum_is_consistent_on_one_training():
    lines = judge("table3", table3_cells({"0.0": 90.0, "-0.4": 70.0, "-0.8": 60.0, "-1.2": 66.0}))
    assert len(lines) == 4 and all("**Consistent, 1 seed** at mini scale" in line for line in lines[:3])
    assert "at mu -1.2: the worst of a (pred x) 66 vs the best of b (pred v) 140" in lines[0]
    assert "the lowest is at mu -0.8; the best at {-0.4, -0.8} (mu -0.8) 60 vs the best elsewhere (mu -1.2) 66" \
        in lines[2]
    assert "(The paper's FID-50K under the same rule: holds; the lowest is at mu -0.8" in lines[2]
    assert lines[-1] == "**Overall**: Table 3's claim is consistent, 1 seed, at mini scale (one training per cell)."


def test_table3_monotone_to_the_most_noise_does_not_reproduce_the_optimum():
    """The mini of main was monotone to mu = -1.2 and still said "reproduces": the optimum's rule catches it."""
    lines = judge("table3", table3_cells({"0.0": 92.43, "-0.4": 75.37, "-0.8": 61.5, "-1.2": 54.35}))
    assert "**Consistent, 1 seed**" in lines[0] and "**Consistent, 1 seed**" in lines[1]
    assert "the lowest is at mu -1.2" in lines[2] and "ratio 1.13x. **Does not reproduce**" in lines[2]
    assert lines[-1] == "**Overall**: Table 3's claim does not reproduce at mini scale (optimum near -0.8 fails)."


def test_table3_fails_when_v_beats_x_at_one_mu():
    lines = judge("table3", table3_cells({"0.0": 90.0, "-0.4": 77.0, "-0.8": 65.0, "-1.2": 150.0}))
    assert "at mu -1.2: the worst of a (pred x) 150 vs the best of b (pred v) 140" in lines[0]
    assert "**Does not reproduce**" in lines[0] and "x-pred best" in lines[-1]


def test_ladder_ties_are_inconclusive_and_reversals_fail():
    sizes = lambda b, l, h: [{"resolution": "256", "model": m, "value": v}  # noqa: E731
                             for m, v in (("B", b), ("L", l), ("H", h))]
    assert "is consistent, 1 seed" in judge("table6", sizes(50.0, 40.0, 30.0))[-1]
    tie = judge("table6", sizes(46.7, 45.5, 44.2))
    assert "B 46.7 -> L 45.5 -> H 44.2 (a tie at B -> L, L -> H)" in tie[0] and "inconclusive" in tie[-1]
    reversed_ = judge("table6", sizes(40.0, 50.0, 30.0))
    assert "(higher at B -> L)" in reversed_[0] and "does not reproduce" in reversed_[-1]


def test_ladder_counts_a_diverged_step_as_worse_and_notes_missing_cells():
    cells = [{"component": "baseline", "value": 50.0}, {"component": "rope_qknorm", "value": 0, "status": "diverged"},
             {"component": "in_context", "value": 0, "status": "failed"}]
    lines = judge("table4", cells)
    assert "baseline 50 -> rope_qknorm diverged (higher at baseline -> rope_qknorm)" in lines[0]
    assert "Provisional: 1 of 3 cells lack a result (component-in_context (failed))" in lines[0]


def test_fig4_bottleneck_beats_none_and_the_smallest_still_works():
    spec = load_spec("fig4", root=ROOT)
    widths = [v.name for v in next(a for a in spec.axes if a.name == "bottleneck").for_scale("mini")]
    values = {d: 50.0 + i for i, d in enumerate(widths[:-1])} | {"none": 65.0}
    lines = judge("fig4", [{"bottleneck": d, "pred": "x", "value": v} for d, v in values.items()])
    assert f"the best of a (bottleneck {widths[0]}) 50 vs b (bottleneck none) 65" in lines[0]
    assert f"{len(widths) - 1} of {len(widths) - 1} cell(s) of a below it" in lines[0]
    assert f"[rule `within_factor`: every cell of pred x, bottleneck {widths[0]} at most 2x the best of pred x, " \
           "bottleneck none]" in lines[1]
    assert "**Consistent, 1 seed**" in lines[0] and "**Consistent, 1 seed**" in lines[1]
    broken = {widths[0]: 200.0, widths[1]: 64.0, "none": 65.0}
    lines = judge("fig4", [{"bottleneck": d, "pred": "x", "value": v} for d, v in broken.items()])
    assert "0 of 2" in lines[0] and "**Inconclusive**" in lines[0]  # 64 vs 65: a tie, not a win
    assert "= 3.08x (at most 2x claimed)" in lines[1] and "**Does not reproduce**" in lines[1]
    assert "does not reproduce" in lines[-1]


def test_fig4_without_the_none_cell_cannot_be_judged():
    lines = judge("fig4", [{"bottleneck": "16", "pred": "x", "value": 50.0},
                           {"bottleneck": "none", "pred": "x", "value": 0, "status": "failed"}])
    assert "no cell of b has a result" in lines[0] and "**Cannot be judged**" in lines[0]
    assert "cannot be judged yet" in lines[-1]


def test_a_ladder_restricted_by_where_names_only_its_own_steps():
    values = {"eps": 250.0, "v": 100.0, "lambda-0.5": 70.0, "x": 28.0, "edm": 110.0, "v+skip": 80.0,
              "eps+skip": 100.0}
    lines = judge("preconditioners", [{"target": t, "value": v} for t, v in values.items()])
    assert "each step along target (eps -> v -> lambda-0.5 -> x) lowers the metric" in lines[0]
