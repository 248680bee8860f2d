"""The sweeps' verdicts (Table 3, Figure 4, Table 4, Table 6) from made-up frames.

Every number below is a FIXTURE made up for these tests, not a result.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from jitlab.grid.spec import load_spec
from jitlab.report import verdict

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
    return verdict(load_spec(grid, root=ROOT), frame(grid, cells))


def table3_cells(x: dict[str, float], eps: float = 160.0, v: float = 140.0) -> list[dict]:
    return [{"mu": mu, "pred": p, "value": {"x": x[mu], "eps": eps, "v": v}[p]}
            for mu in ("0.0", "-0.4", "-0.8", "-1.2") for p in ("x", "eps", "v")]


def test_table3_reproduces_when_x_wins_every_mu_and_noise_helps():
    lines = judge("table3", table3_cells({"0.0": 90.0, "-0.4": 77.0, "-0.8": 65.0, "-1.2": 50.0}))
    assert "Reproduces" in lines[0] and "1.8x lower" in lines[1]
    assert lines[-1] == "**Overall**: Table 3's claim reproduces at mini scale."


def test_table3_fails_when_v_beats_x_at_one_mu_or_mu_zero_is_best():
    cells = table3_cells({"0.0": 40.0, "-0.4": 77.0, "-0.8": 65.0, "-1.2": 150.0}, v=140.0)
    lines = judge("table3", cells)
    assert "Not (by more than 5%) at mu -1.2" in lines[0] and "Does not reproduce" in lines[0]
    assert "x-pred 40 at mu 0" in lines[1] and "Does not reproduce" in lines[1]
    assert "does not reproduce" in lines[-1]


def test_ladder_ties_are_inconclusive_and_reversals_fail():
    sizes = lambda b, l, h: [{"resolution": "256", "model": m, "value": v}  # noqa: E731
                             for m, v in (("B", b), ("L", l), ("H", h))]
    assert "reproduces at mini" in judge("table6", sizes(50.0, 40.0, 30.0))[-1]
    tie = judge("table6", sizes(46.7, 45.5, 44.2))
    assert "Within 5% (a tie) at B -> L, L -> H" in tie[0] and "inconclusive" in tie[-1]
    reversed_ = judge("table6", sizes(40.0, 50.0, 30.0))
    assert "Higher at B -> L" in reversed_[0] and "does not reproduce" in reversed_[-1]


def test_ladder_counts_a_diverged_step_as_worse_and_notes_missing_cells():
    cells = [{"component": "baseline", "value": 50.0}, {"component": "rope_qknorm", "value": 0, "status": "diverged"},
             {"component": "in_context", "value": 0, "status": "failed"}]
    lines = judge("table4", cells)
    assert "rope_qknorm diverged" in lines[0] and "Higher at baseline -> rope_qknorm" in lines[0]
    assert "Provisional: 1 of 3 cells have no result (component-in_context (failed))" in lines[0]


def test_fig4_bottleneck_beats_none_and_the_smallest_still_works():
    values = {"8": 49.0, "16": 54.0, "32": 53.0, "64": 57.0, "none": 65.0}
    lines = judge("fig4", [{"bottleneck": d, "pred": "x", "value": v} for d, v in values.items()])
    assert "best d' = 8 49" in lines[0] and "4 of 4" in lines[0] and "Reproduces" in lines[0]
    assert "d' = 8 49 vs none 65 (0.754x)" in lines[1] and "Reproduces" in lines[1]
    broken = {"8": 200.0, "16": 64.0, "none": 65.0}
    lines = judge("fig4", [{"bottleneck": d, "pred": "x", "value": v} for d, v in broken.items()])
    assert "0 of 2" in lines[0] and "Inconclusive" in lines[0]  # 64 vs 65: a tie, not a win
    assert "(3.08x)" in lines[1] and "Does not reproduce" in lines[1] and "does not reproduce" in lines[-1]


def test_fig4_without_the_none_cell_cannot_be_judged():
    lines = judge("fig4", [{"bottleneck": "16", "pred": "x", "value": 50.0},
                           {"bottleneck": "none", "pred": "x", "value": 0, "status": "failed"}])
    assert "cannot be judged" in lines[0] and "cannot be judged yet" in lines[-1]
