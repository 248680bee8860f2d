"""The declared rules: strict parsing, every rule kind, and every grid's rules fed made-up numbers.

Each grid's rules are fed numbers where the paper's claim holds (on 3 training seeds and on 1), where it is
false, and where a tie decides it; each kind likewise on a small fixture grid. Every number below is a
FIXTURE made up for these tests, not a result.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from jitlab.errors import ConfigError
from jitlab.experiments.grid.spec import list_grids, load_spec
from jitlab.experiments.report.evidence import LEVEL, Margin, Spread, stat, t_quantile
from jitlab.experiments.report.kinds import judge, pick
from jitlab.experiments.report.rules import parse_rules
from jitlab.experiments.report.verdict import verdict

ROOT = Path(__file__).resolve().parents[1]
SPREAD = 0.02  # the made-up trainings: mean x (1 - 2%, 1, 1 + 2%)


def trainings(mean: float, seeds: int) -> list[float]:
    if mean in (math.inf, math.nan) or seeds == 1:
        return [mean] * seeds
    return [mean * (1 + SPREAD * (k - (seeds - 1) / 2)) for k in range(seeds)]


def frame(spec, value, seeds: int = 3, space=lambda labels: "refnet-shapes-32") -> pd.DataFrame:
    """A tidy report frame of every mini cell of ``spec``: ``value(labels)`` is the cell's mean (inf: diverged)."""
    rows = []
    for cell in spec.cells("mini", train_seeds=1):
        mean = value(cell.labels)
        for seed, v in enumerate(trainings(mean, seeds)):
            diverged = v == math.inf
            rows.append({"grid": spec.name, "scale": "mini", "cell": cell.id, "train_seed": seed, **cell.labels,
                         "status": "diverged" if diverged else "done", "metric": None if diverged else "FD-ref-500",
                         "value": math.nan if diverged else v, "paper_value": cell.paper_value or math.nan,
                         "feature_space": space(cell.labels)})
    return pd.DataFrame(rows)


def judged(grid: str, value, seeds: int = 3, **kwargs) -> tuple[list[str], str]:
    """The verdict's rule lines (by rule name) and its overall line."""
    spec = load_spec(grid, root=ROOT)
    lines = verdict(spec, frame(spec, value, seeds, **kwargs))
    return lines[:-1], lines[-1]


def outcome(line: str) -> str:
    return line.split("**")[3]


# -- every grid's rules: (the claim holds, values where one rule's claim is false, values where a tie decides)

def table2(a_x=40.0, a_eps=300.0, a_v=120.0, b_high=22.0, b16_high=None):
    """(b)'s panels: 18 everywhere but the x-loss eps-pred cell (b_high at 8x8, b16_high[panel] at 16x16)."""
    def value(labels):
        if labels["setting"] == "a":
            return {"x": a_x + {"x": 2.0, "eps": 4.0, "v": 0.0}[labels["loss"]], "eps": a_eps, "v": a_v}[labels["pred"]]
        high = b_high if labels["setting"] == "b" else (b16_high or {}).get(labels["setting"], 22.0)
        return high if (labels["loss"], labels["pred"]) == ("x", "eps") else 18.0
    return value


def table3(x=None, eps=250.0, v=180.0, v_at=None):
    x = x or {"0.0": 90.0, "-0.4": 70.0, "-0.8": 60.0, "-1.2": 75.0}
    return lambda labels: (x[labels["mu"]] if labels["pred"] == "x" else eps if labels["pred"] == "eps"
                           else (v_at or {}).get(labels["mu"], v))


def fig4(none=65.0, smallest=55.0, others=50.0):
    spec = load_spec("fig4", root=ROOT)
    first = [v.name for v in next(a for a in spec.axes if a.name == "bottleneck").for_scale("mini")][0]
    return lambda labels: none if labels["bottleneck"] == "none" else smallest if labels["bottleneck"] == first \
        else others


def by_axis(axis: str, values: dict[str, float]):
    return lambda labels: values[labels[axis]]


def reg(rep=None, control=None, rep_align=None):
    values = {"none": {"quarter": 80.0, "half": 65.0, "full": 55.0},
              "control": {"quarter": 82.0, "half": 66.0, "full": 56.0, **(control or {})},
              "rep": {"quarter": 60.0, "half": 50.0, "full": 45.0, **(rep or {})},
              "rep_align": {"quarter": 50.0, "half": 42.0, "full": 40.0, **(rep_align or {})}}
    return lambda labels: values[labels["token"]][labels["budget"]]


def table11(cls_b=55.0):
    values = {("B", "none"): 60.0, ("L", "none"): 50.0, ("B", "cls"): cls_b, ("L", "cls"): 45.0}
    return lambda labels: values[(labels["model"], labels["cls"])]


DSD = {"v": 150.0, "v_sg": 120.0, "x_sg": 60.0, "x_sg_ema": 58.0, "v_unit": 140.0, "v_sg_unit": 110.0,
       "x_sg_unit": 60.0}
RAE = {"x-w0.5": 32.0, "x-w1": 28.0, "v-w0.5": 200.0, "v-w1": 100.0, "v-w1.5": 90.0, "v-w0.5+head": 85.0}
T4 = {"baseline": 60.0, "rope": 52.0, "qk_norm": 54.0, "rope_qknorm": 47.0, "in_context": 42.0}
PRE = {"eps": 250.0, "v": 100.0, "lambda-0.5": 60.0, "x": 30.0, "edm": 45.0, "v+skip": 80.0, "eps+skip": 150.0}


GRIDS = {  # grid -> (holds, {rule name: values where it is false}, {rule name: values where a tie decides it})
    "table2": (table2(), {"(a)": table2(a_v=41.0), "(b)": table2(b_high=40.0),
                          "(b) at 16x16": table2(b16_high={"b16p4": 40.0})},  # one panel decides: every panel read
               {"(a)": table2(a_v=45.0), "(b)": table2(b_high=36.5), "(b) at 16x16": table2(b16_high={"b16p2": 36.5})}),
    "table3": (table3(),
               {"x-pred best": table3(v_at={"-1.2": 70.0}),
                "more noise helps": table3(x={"0.0": 50.0, "-0.4": 70.0, "-0.8": 60.0, "-1.2": 75.0}),
                "optimum near -0.8": table3(x={"0.0": 90.0, "-0.4": 70.0, "-0.8": 60.0, "-1.2": 50.0})},
               {"x-pred best": table3(v_at={"-1.2": 77.0}),
                "more noise helps": table3(x={"0.0": 61.0, "-0.4": 70.0, "-0.8": 60.0, "-1.2": 75.0}),
                "optimum near -0.8": table3(x={"0.0": 90.0, "-0.4": 70.0, "-0.8": 60.0, "-1.2": 59.0})}),
    "fig4": (fig4(),
             {"a bottleneck helps": fig4(smallest=80.0, others=80.0), "the smallest d' works": fig4(smallest=200.0)},
             {"a bottleneck helps": fig4(smallest=64.0, others=64.0), "the smallest d' works": fig4(smallest=131.0)}),
    "table4": (by_axis("component", T4),
               {"each component helps": by_axis("component", {**T4, "in_context": 50.0}),
                "RoPE alone": by_axis("component", {**T4, "rope": 65.0}),
                "qk-norm alone": by_axis("component", {**T4, "qk_norm": 65.0}),
                "together beat either": by_axis("component", {**T4, "rope": 44.0})},
               {"each component helps": by_axis("component", {**T4, "in_context": 46.0}),
                "RoPE alone": by_axis("component", {**T4, "rope": 59.0}),
                "qk-norm alone": by_axis("component", {**T4, "qk_norm": 59.0}),
                "together beat either": by_axis("component", {**T4, "rope": 48.0})}),
    "table5": (by_axis("resolution", {"256": 40.0, "512": 45.0, "1024": 50.0}),
               {"degrades only slightly": by_axis("resolution", {"256": 40.0, "512": 45.0, "1024": 80.0})},
               {"degrades only slightly": by_axis("resolution", {"256": 40.0, "512": 45.0, "1024": 61.0})}),
    "table6": (by_axis("model", {"B": 50.0, "L": 45.0, "H": 40.0}),
               {"larger is better": by_axis("model", {"B": 50.0, "L": 56.0, "H": 40.0})},
               {"larger is better": by_axis("model", {"B": 50.0, "L": 49.0, "H": 40.0})}),
    # issue 15's grids (REG, Table 11, DSD): fixtures as above, made up
    "reg_token": (reg(), {"faster early": reg(rep={"quarter": 85.0}), "half reaches full": reg(rep={"half": 62.0}),
                          "the control carries nothing": reg(control={"quarter": 100.0}),
                          "REG's full loss is faster": reg(rep_align={"quarter": 85.0}),
                          "the alignment adds to the token": reg(rep_align={"full": 50.0})},
                  {"faster early": reg(rep={"quarter": 78.0}, rep_align={"quarter": 77.0}),
                   "half reaches full": reg(rep={"half": 56.0}),
                   "the control carries nothing": reg(control={"quarter": 93.0}),
                   "REG's full loss is faster": reg(rep={"quarter": 79.0}, rep_align={"quarter": 78.0}),
                   "the alignment adds to the token": reg(rep_align={"full": 44.0})}),
    "table11": (table11(), {"the loss helps": table11(cls_b=65.0)}, {"the loss helps": table11(cls_b=59.0)}),
    "dsd_latent": (by_axis("variant", DSD),
                   {"x prevents collapse": by_axis("variant", {**DSD, "x_sg": 130.0}),
                    "a stop-gradient helps v": by_axis("variant", {**DSD, "v_sg": 160.0}),
                    "x prevents collapse at a fixed scale": by_axis("variant", {**DSD, "x_sg_unit": 130.0}),
                    "a stop-gradient helps v at a fixed scale": by_axis("variant", {**DSD, "v_sg_unit": 150.0})},
                   {"x prevents collapse": by_axis("variant", {**DSD, "x_sg": 118.0}),
                    "a stop-gradient helps v": by_axis("variant", {**DSD, "v_sg": 148.0}),
                    "x prevents collapse at a fixed scale": by_axis("variant", {**DSD, "x_sg_unit": 108.0}),
                    "a stop-gradient helps v at a fixed scale": by_axis("variant", {**DSD, "v_sg_unit": 138.0})}),
    # issue 15's RAE width and pre-conditioner grids: made up as above
    "rae_width": (by_axis("model", RAE),
                  {"v fails below the width": by_axis("model", {**RAE, "v-w0.5": 80.0}),
                   "the head rescues v": by_axis("model", {**RAE, "v-w0.5+head": 240.0}),
                   "x does not need the width": by_axis("model", {**RAE, "x-w0.5": 70.0}),
                   "not just the width theorem": by_axis("model", {**RAE, "v-w1.5": 25.0})},
                  {"v fails below the width": by_axis("model", {**RAE, "v-w0.5": 92.0}),
                   "the head rescues v": by_axis("model", {**RAE, "v-w0.5+head": 93.0}),
                   "x does not need the width": by_axis("model", {**RAE, "x-w0.5": 57.0}),
                   "not just the width theorem": by_axis("model", {**RAE, "v-w0.5+head": 33.0})}),
    "preconditioners": (by_axis("target", PRE),
                        {"more noise is worse": by_axis("target", {**PRE, "lambda-0.5": 110.0}),
                         "EDM above x": by_axis("target", {**PRE, "edm": 25.0}),
                         "EDM below v": by_axis("target", {**PRE, "edm": 110.0}),
                         "a skip helps v": by_axis("target", {**PRE, "v+skip": 120.0}),
                         "a skip helps eps": by_axis("target", {**PRE, "eps+skip": 300.0}),
                         "only partly": by_axis("target", {**PRE, "v+skip": 20.0})},
                        {"more noise is worse": by_axis("target", {**PRE, "lambda-0.5": 31.0}),
                         "EDM above x": by_axis("target", {**PRE, "edm": 31.0}),
                         "EDM below v": by_axis("target", {**PRE, "edm": 98.0}),
                         "a skip helps v": by_axis("target", {**PRE, "v+skip": 98.0}),
                         "a skip helps eps": by_axis("target", {**PRE, "eps+skip": 245.0}),
                         "only partly": by_axis("target", {**PRE, "v+skip": 31.0})}),
}


def test_every_mini_grid_has_rules_and_each_rule_has_its_false_and_tie_cases():
    for grid in list_grids(ROOT):
        spec = load_spec(grid, root=ROOT)
        names = [rule.name for rule in parse_rules(spec)]  # every grid file's rules parse
        if grid == "fig2":  # its rules read two metrics per cell: tests/test_toy.py gives each its false case
            continue
        if "mini" in spec.scales or names:  # (paper-only grids of the released models may have none)
            _, false, tie = GRIDS[grid]
            assert names and set(false) == set(names) and set(tie) == set(names), grid


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_a_grid_whose_claim_holds_reproduces_on_three_seeds_and_is_consistent_on_one(grid):
    holds = GRIDS[grid][0]
    lines, overall = judged(grid, holds, seeds=3)
    assert all(outcome(line) == "Reproduces (3 seeds)" for line in lines), lines
    assert all("Rests on 3 trainings per cell" in line and "pooled over the rule's" in line for line in lines)
    # the test in every line: t on the rule's degrees of freedom, at the engine's level
    assert all(re.search(r"one-sided t test at 2\.5%: t\(\d+\) = \d[\d.]* standard errors", line) for line in lines)
    assert overall.endswith("claim reproduces (3 seeds) at mini scale.")
    lines, overall = judged(grid, holds, seeds=1)
    assert all(outcome(line) == "Consistent, 1 seed" for line in lines), lines
    assert all("declared 5% (one training per cell: the margin is not measured from trainings, no t test)" in line
               for line in lines)
    assert "consistent, 1 seed" in overall


@pytest.mark.parametrize("grid, rule", [(g, r) for g, (_, false, _) in sorted(GRIDS.items()) for r in false])
def test_numbers_where_the_claim_is_false_do_not_reproduce(grid, rule):
    for seeds in (1, 3):
        lines, overall = judged(grid, GRIDS[grid][1][rule], seeds=seeds)
        line = next(line for line in lines if line.startswith(f"**{rule}**"))
        assert outcome(line) == "Does not reproduce", line
        assert "does not reproduce" in overall and rule in overall


@pytest.mark.parametrize("grid, rule", [(g, r) for g, (_, _, tie) in sorted(GRIDS.items()) for r in tie])
def test_a_difference_within_the_margin_is_inconclusive(grid, rule):
    lines, overall = judged(grid, GRIDS[grid][2][rule], seeds=1)
    line = next(line for line in lines if line.startswith(f"**{rule}**"))
    assert outcome(line) == "Inconclusive", line
    assert "inconclusive" in overall


def test_table5_across_feature_spaces_cannot_be_judged():
    holds = GRIDS["table5"][0]
    lines, overall = judged("table5", holds, space=lambda labels: f"refnet-shapes-{labels['resolution']}")
    assert outcome(lines[0]) == "Cannot be judged" and "different feature spaces" in lines[0]
    assert "cannot be judged" in overall


def test_a_diverged_cell_is_worse_than_any_number():
    spec = load_spec("table5", root=ROOT)
    lines, _ = judged("table5", by_axis("resolution", {"256": 40.0, "512": 45.0, "1024": math.inf}))
    assert outcome(lines[0]) == "Does not reproduce" and "diverged" in lines[0]
    lines, _ = judged("table2", lambda labels: math.inf if labels["pred"] == "eps" else table2()(labels))
    assert outcome(lines[0]) == "Reproduces (3 seeds)"  # eps-pred diverged: x-pred is below it
    assert spec.rules  # the grid file declares its rules


# -- each kind on a fixture grid ---------------------------------------------------------------------

KIND_GRID = """
name: kinds
title: "Kinds: a fixture grid (not a paper grid)"
claim: fixture
layout: {kind: line, x: step, hue: arm}
axes:
  step: {key: model.flow.mu, values: ["0", "1", "2"]}
  arm: {key: model.flow.pred, values: [x, v]}
scales:
  mini: {config: experiments/scales/mini.yaml, eval: {features: refnet}}
rules: RULES
"""

KIND_RULES = {
    "below": "{name: r, claim: c, kind: below, a: {arm: x}, b: {arm: v}, margin: 0.05}",
    "within_factor": "{name: r, claim: c, kind: within_factor, cells: {arm: x}, factor: 1.5, margin: 0.05}",
    "ladder": "{name: r, claim: c, kind: ladder, axis: step, where: {arm: x}, margin: 0.05}",
    "argmin_in": "{name: r, claim: c, kind: argmin_in, axis: step, values: ['1'], where: {arm: x}, margin: 0.05}",
    "beats": "{name: r, claim: c, kind: beats, a: {arm: x, step: {not: '0'}}, b: {arm: x, step: '0'}, margin: 0.05}",
}
# kind -> x-arm values by step (the v arm is 100 throughout): (holds, false, a tie at 5%)
KIND_CASES = {
    "below": ([50, 60, 70], [50, 60, 120], [50, 60, 97]),
    "within_factor": ([50, 60, 70], [50, 60, 90], [50, 60, 76]),
    "ladder": ([70, 60, 50], [70, 80, 50], [70, 68, 50]),
    "argmin_in": ([70, 50, 60], [70, 60, 50], [70, 50, 51]),
    "beats": ([70, 60, 50], [50, 60, 70], [70, 69, 68]),
}


def kind_spec(tmp_path: Path, kind: str):
    path = tmp_path / f"{kind}.yaml"
    path.write_text(KIND_GRID.replace("RULES", f"[{KIND_RULES[kind]}]"))
    return load_spec(path, root=ROOT)


def kind_line(tmp_path: Path, kind: str, x: list[float], seeds: int) -> str:
    spec = kind_spec(tmp_path, kind)
    steps = {"0": x[0], "1": x[1], "2": x[2]}
    return verdict(spec, frame(spec, lambda labels: steps[labels["step"]] if labels["arm"] == "x" else 100.0,
                               seeds))[0]


@pytest.mark.parametrize("kind", sorted(KIND_RULES))
def test_each_kind_holds_fails_and_ties(tmp_path, kind):
    holds, false, tie = KIND_CASES[kind]
    assert outcome(kind_line(tmp_path, kind, holds, 3)) == "Reproduces (3 seeds)"
    assert outcome(kind_line(tmp_path, kind, holds, 1)) == "Consistent, 1 seed"
    assert outcome(kind_line(tmp_path, kind, false, 1)) == "Does not reproduce"
    assert outcome(kind_line(tmp_path, kind, false, 3)) == "Does not reproduce"
    assert outcome(kind_line(tmp_path, kind, tie, 1)) == "Inconclusive"
    assert f"[rule `{kind}`:" in kind_line(tmp_path, kind, holds, 1)


@pytest.mark.parametrize("kind", sorted(KIND_RULES))
def test_with_trainings_a_difference_counts_only_beyond_the_t_margin(tmp_path, kind):
    """The kinds' pure functions on (mean, sd, n): the same numbers are a tie at a 50% spread, real at 1%."""
    holds = KIND_CASES[kind][0]
    (rule,) = parse_rules(kind_spec(tmp_path, kind))
    order = {"step": ["0", "1", "2"], "arm": ["x", "v"]}
    cells = [stat({"step": s, "arm": "x"}, [holds[int(s)]] * 3) for s in "012"]
    cells += [stat({"step": s, "arm": "v"}, [100.0] * 3) for s in "012"]
    for train, expected in ((0.01, "holds"), (0.5, "tie")):
        margin = Margin(0.05, Spread(train=train, train_cells=6, train_dof=12))
        assert judge(rule, pick(rule.where, cells, order), margin, order).outcome == expected, (train, expected)


def test_the_measured_margin_is_t_standard_errors_of_the_difference_on_the_pooled_degrees_of_freedom():
    assert LEVEL == 0.025 and t_quantile(3) == pytest.approx(3.182, abs=1e-3)  # the table value t(3), two-sided 95%
    assert t_quantile(1e6) == pytest.approx(1.960, abs=1e-3) and t_quantile(2, 0.025 / 3) > t_quantile(2)
    lo, hi = stat({}, [90.0, 90.0, 90.0]), stat({}, [100.0, 100.0, 100.0])
    alone = Margin(0.05, Spread(train=0.03, train_cells=4, train_dof=8))
    se = math.sqrt((0.03 * 90) ** 2 / 3 + (0.03 * 100) ** 2 / 3)
    assert alone.dof == 8 and alone.threshold(lo, hi) == pytest.approx(t_quantile(8) * se)
    assert "t(8) = 2.31 standard errors" in alone.describe() and "8 degrees of freedom" in alone.describe()
    assert "); sampling seeds not measured" in alone.describe()
    assert alone.compare(lo, hi) == "lower"  # 10 > t(8) x 2.33 = 2.31 x 2.33
    tight = Margin(0.05, Spread(train=0.045, train_cells=2, train_dof=2))  # the same gap on 2 degrees of freedom
    assert tight.compare(lo, hi) == "tie" and Margin(0.05, Spread(0.045, 2, train_dof=200)).compare(lo, hi) == "lower"
    assert Margin(0.05).compare(stat({}, [96.0]), hi) == "tie"  # the declared 5% of 100
    assert Margin(0.05).compare(stat({}, [math.inf]), hi) == "higher"  # diverged: never the lower one
    assert Margin(0.05).compare(hi, stat({}, [math.inf])) == "lower"


# -- parsing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, message", [
    ("{name: r, claim: c, kind: lower, a: {arm: x}, b: {arm: v}, margin: 0.05}",
     r"rules\[0\] \(r\)\.kind: unknown kind 'lower'; valid: below, within_factor, ladder, argmin_in, beats"),
    ("{name: r, claim: c, kind: below, a: {arm: x}, b: {arm: v}, margin: 0.05, tie: 1}",
     r"rules\[0\] \(r\): unknown key\(s\) tie for kind below; valid: a, b, claim, kind, margin, name, per, where"),
    ("{name: r, claim: c, kind: below, a: {arm: x}, margin: 0.05}", r"rules\[0\] \(r\): missing key\(s\) b"),
    ("{name: r, claim: c, kind: below, a: {arm: x}, b: {arm: v}}", r"missing key\(s\) margin"),
    ("{name: r, claim: c, kind: below, a: {size: x}, b: {arm: v}, margin: 0.05}",
     r"rules\[0\] \(r\)\.a: unknown axis 'size'; the grid's axes: step, arm"),
    ("{name: r, claim: c, kind: below, a: {arm: eps}, b: {arm: v}, margin: 0.05}",
     r"rules\[0\] \(r\)\.a\.arm: unknown value 'eps'; valid: x, v"),
    ("{name: r, claim: c, kind: below, a: {arm: {only: x}}, b: {arm: v}, margin: 0.05}",
     r"\.a\.arm: is a value, a list of values, \{not: VALUES\} or \{index: I\}"),
    ("{name: r, claim: c, kind: below, a: {arm: {index: first}}, b: {arm: v}, margin: 0.05}",
     r"\.a\.arm\.index: must be a position"),
    ("{name: r, claim: c, kind: below, a: {arm: x}, b: {arm: v}, margin: 5}",
     r"rules\[0\] \(r\)\.margin: must be at least 0 and below 1, got 5"),
    ("{name: r, claim: c, kind: within_factor, factor: 0.5, margin: 0.05}", r"\.factor: must be at least 1"),
    ("{name: r, claim: c, kind: ladder, axis: size, margin: 0.05}", r"\.axis: unknown axis 'size'"),
    ("{name: r, claim: c, kind: argmin_in, axis: step, values: ['7'], margin: 0.05}",
     r"\.values: unknown value '7'; valid: 0, 1, 2"),
    ("{name: r, claim: '', kind: ladder, axis: step, margin: 0.05}", r"\.claim: must be a non-empty string"),
    ("{name: r, claim: c, kind: ladder, axis: step, per: [size], margin: 0.05}", r"\.per: unknown axis 'size'"),
    ("[1, 2]", r"rules\[0\]: a rule is a mapping"),
])
def test_a_malformed_rule_names_the_file_the_rule_and_what_is_valid(tmp_path, rule, message):
    path = tmp_path / "kinds.yaml"
    path.write_text(KIND_GRID.replace("RULES", f"[{rule}]"))
    with pytest.raises(ConfigError, match=message) as error:
        parse_rules(load_spec(path, root=ROOT))
    assert str(error.value).startswith(str(path))


def test_rules_must_be_a_list_with_distinct_names(tmp_path):
    path = tmp_path / "kinds.yaml"
    path.write_text(KIND_GRID.replace("RULES", "{name: r}"))
    with pytest.raises(ConfigError, match="rules: must be a list of rules"):
        parse_rules(load_spec(path, root=ROOT))
    twice = KIND_RULES["ladder"]
    path.write_text(KIND_GRID.replace("RULES", f"[{twice}, {twice}]"))
    with pytest.raises(ConfigError, match=r"rules: names \['r'\] more than once"):
        parse_rules(load_spec(path, root=ROOT))


def test_a_malformed_rule_fails_jitlab_report_with_one_line(tmp_path, capsys, monkeypatch):
    from jitlab.commands.report import main

    monkeypatch.chdir(ROOT)
    path = tmp_path / "kinds.yaml"
    path.write_text(KIND_GRID.replace("RULES", "[{name: r, claim: c, kind: lower, margin: 0.05}]"))
    assert main([str(path), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jitlab report: error: {path}: rules[0] (r).kind: unknown kind 'lower'")
    assert len(err.strip().splitlines()) == 1
