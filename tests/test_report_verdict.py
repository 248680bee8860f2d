"""`jitlab report`'s verdict: Table 2's claim judged by its declared rules, on one training per cell or on several
training seeds by a t test on their spread, and a malformed rule failing the report.

Every number below is a FIXTURE made up for these tests (written into tmp_path), not a result.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from jitlab.experiments.grid.spec import load_spec
from jitlab.experiments.report import build_report
from jitlab.experiments.report.collect import collect
from jitlab.experiments.report.verdict import verdict
from tests.test_report import REPRODUCING, ROOT, spec, write_fixture


def judged(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("**Overall**")]


def test_verdict_on_one_training_is_consistent_and_says_so(tmp_path):
    collected = collect(spec(), "mini", write_fixture(tmp_path / "runs", REPRODUCING))
    lines = verdict(spec(), collected.frame)
    a, b = judged(lines)
    assert a.startswith("**(a)** With high-dimensional patches") and "[rule `below`:" in a
    assert "the worst of a (loss eps, pred x) 42 vs the best of b (loss v, pred v) 110" in a
    assert "**Consistent, 1 seed** at mini scale" in a and "Rests on 1 training per cell" in a
    assert "the rule's declared 5% (one training per cell: the margin is not measured from trainings, no t test)" in a
    assert "The paper's FID-50K under the same rule: holds" in a
    assert b.startswith("**(b)**") and "[rule `within_factor`: max/min of every cell at most 2; cells: setting b]" in b
    assert "= 1.29x" in b and "**Consistent, 1 seed**" in b
    assert lines[-1] == "**Overall**: Table 2's claim is consistent, 1 seed, at mini scale (one training per cell)."
    assert "not reproduce" not in "\n".join(lines) and "Provisional" not in "\n".join(lines)


def test_verdict_not_reproducing(tmp_path):
    values = dict(REPRODUCING)
    values[("a", "v", "v")] = 30.0  # a v-pred cell below an x-pred cell
    values[("b", "eps", "eps")] = 60.0  # a low-dimensional cell far from the rest
    collected = collect(spec(), "mini", write_fixture(tmp_path / "runs", values, missing=[("b", "x", "x")]))
    a, b, overall = verdict(spec(), collected.frame)
    assert "**Does not reproduce**" in a and "(loss v, pred v) 30: ratio 1.4x" in a
    assert "**Does not reproduce**" in b and "60 / the lowest (loss v, pred x) 17 = 3.53x" in b
    assert "Provisional: 1 of 9 cells lack a result (setting-b_loss-x_pred-x (not run))" in b
    assert overall == ("**Overall**: Table 2's claim does not reproduce at mini scale ((a), (b) fails). Provisional: "
                       "1 of 18 cells lack a training's result (failed or not run yet); the verdict may change when "
                       "they have one.")


def test_verdict_counts_diverged_as_worse_and_grids_without_rules_have_none(tmp_path):
    collected = collect(spec(), "mini", write_fixture(tmp_path / "runs", REPRODUCING,
                                                      diverged=[("a", "x", "eps"), ("b", "v", "v")]))
    a, b = judged(verdict(spec(), collected.frame))
    assert "**Consistent, 1 seed**" in a  # a diverged eps-pred cell is above every x-pred cell
    assert "the highest (loss v, pred v) diverged" in b and "**Does not reproduce**" in b
    other = spec()
    other.rules = []
    assert verdict(other, collected.frame) == []


def test_several_training_seeds_are_read_averaged_and_judged_by_their_spread(tmp_path):
    runs = write_fixture(tmp_path / "runs", REPRODUCING, seeds=3, spread=0.02, failed=[("a", "eps", "eps")])
    (runs / "table2" / "mini" / "setting-a_loss-x_pred-x_seed-3").mkdir()  # a seed beyond the grid's: not run yet
    paths = build_report(spec(), "mini", runs, tmp_path / "reports")
    df = pd.read_csv(paths["csv"])
    assert len(df) == 18 * 4 - 17 and df["cell"].nunique() == 18  # seeds 0-2 of every cell, seed 3 of one
    assert sorted(df.loc[df["cell"] == "setting-a_loss-x_pred-x", "train_seed"]) == [0, 1, 2, 3]
    one = df[(df["cell"] == "setting-a_loss-v_pred-x")].sort_values("train_seed")
    assert list(one["value"].round(6)) == [37.24, 38.0, 38.76] and list(one["paper_value"]) == [8.62] * 3
    md = paths["md"].read_text()
    row = [line for line in md.split("### (a)")[1].splitlines() if line.startswith("| v-loss")][0]
    assert "| 38 ± 0.76 (n=3) | 8.62 |" in row  # the mean, the sd over the 3 trainings, their number
    assert "| 40 ± 0.8 (n=3 of 4) |" in md.split("### (a)")[1]  # seed 3 of x-loss/x-pred has no result yet
    seeds = md.split("## Every training seed")[1].split("\n## ")[0]
    assert "| `setting-a_loss-v_pred-x` | 37.24 | 38 | 38.76 | - | 38 | 0.76 | 2.0% |" in seeds
    assert "`setting-a_loss-v_pred-x_seed-2`" in md.split("## Every cell and training seed")[1]
    assert "training seeds 0-3 (`seed_everything` + K), 3 of them with a result per cell" in md
    assert "(of 55 trainings of 18 cells)" in md and "ignored" not in md  # seed directories are not strays
    verdict_lines = [line for line in md.splitlines() if line.startswith("- **(")]
    assert all("**Reproduces (3 seeds)**" in line for line in verdict_lines)
    # each rule's t test on its own cells' spread: (a) reads the 8 of its 9 cells with a result, (b) its 9
    assert ("one-sided t test at 2.5%: t(16) = 2.12 standard errors of the difference, from the training-seed sd 2.0% "
            "of the mean pooled over the rule's 8 cell(s) with >= 2 trainings (16 degrees of freedom)"
            ) in verdict_lines[0]
    assert "t(18) = 2.1 standard errors" in verdict_lines[1] and "the rule's 9 cell(s)" in verdict_lines[1]
    assert "How the claims are judged: each claim on its own, by a one-sided t test at 2.5% in each direction" in md
    assert "No correction across this table's 2 claims" in md
    assert "Rests on 3 trainings per cell" in verdict_lines[1]
    assert ("Provisional: 2 of 9 cells lack a result (setting-a_loss-x_pred-x (1 training(s) without a result), "
            "setting-a_loss-eps_pred-eps (failed))") in verdict_lines[0]
    assert "**Overall**: Table 2's claim reproduces (3 seeds) at mini scale. Provisional: 2 of 18 cells" in md
    tex = paths["tex"].read_text()
    assert r"38 $\pm$ 0.76 (n=3)" in tex and not re.search(r"\bnan\b", tex)


def test_a_difference_within_two_standard_errors_of_the_trainings_is_a_tie(tmp_path):
    values = dict(REPRODUCING)
    values[("a", "x", "x")] = 100.0  # x-pred's worst, 10% under v-pred's best: real at 1% spread, a tie at 20%
    for spread, word in ((0.01, "**Reproduces (3 seeds)**"), (0.2, "**Inconclusive**")):
        runs = write_fixture(tmp_path / f"runs{spread}", values, seeds=3, spread=spread)
        a = verdict(spec(), collect(spec(), "mini", runs).frame)[0]
        assert word in a, a


def test_the_measured_margin_says_sampling_seeds_are_not_measured(tmp_path):
    runs = write_fixture(tmp_path / "runs3", REPRODUCING, seeds=3)
    md = build_report(spec(), "mini", runs, tmp_path / "reports", png=False)["md"].read_text()
    assert "training-seed sd 2.0% of the mean pooled over the rule's 9 cell(s) with >= 2 trainings (18 degrees of " \
           "freedom); sampling seeds not measured" in md


def test_a_malformed_rule_fails_the_report_naming_the_rule(tmp_path):
    path = tmp_path / "table2.yaml"
    path.write_text((ROOT / "experiments/grids/table2.yaml").read_text().replace("kind: below", "kind: lower"))
    runs = write_fixture(tmp_path / "runs", REPRODUCING)
    with pytest.raises(Exception, match=r"rules\[0\] \(\(a\)\)\.kind: unknown kind 'lower'; valid: below"):
        build_report(load_spec(path, root=ROOT), "mini", runs, tmp_path / "reports", png=False)
