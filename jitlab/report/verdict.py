"""Does our grid say what the paper says? Each verdict is computed from the numbers, never written by hand.

``verdict(spec, df)`` takes the tidy frame of a report (one row per cell and metric) and returns
Markdown lines; grids without a rule get none. Table 2's rule is here, the sweeps' in ``verdict_sweeps``.
A rule judges each cell by its Frechet distance (lower is better) and compares cells only within one
panel (cells of different resolutions are scored in different feature spaces). A diverged cell counts
as worse than any number (it did not work); a failed or not-run cell is missing evidence, and a verdict
that lacks cells says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from jitlab.grid.spec import GridSpec
from jitlab.report.collect import primary_frame

# Table 2(b): "all nine cells work and are close" -- close means the worst is at most this factor
# above the best (the paper's nine are within 6.20 / 3.46 = 1.8x).
CLOSE_FACTOR = 2.0


def verdict(spec: GridSpec, df: pd.DataFrame) -> list[str]:
    from jitlab.report.verdict_sweeps import RULES as SWEEPS  # they build on the helpers below

    rule = {**RULES, **SWEEPS}.get(spec.name)
    if rule is None or df.empty:
        return []
    return rule(spec, df)


def _scale(df: pd.DataFrame) -> str:
    scales = list(dict.fromkeys(df["scale"]))
    return scales[0] if len(scales) == 1 else "/".join(map(str, scales))


def _metric(cells: pd.DataFrame) -> str:
    names = list(dict.fromkeys(m for m in cells["metric"] if isinstance(m, str)))
    return " / ".join(names) if names else "metric"


def _value(row) -> float:
    return float(row["value"]) if row["status"] == "done" and math.isfinite(float(row["value"])) else math.nan


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}x" if b > 0 else "inf"


def _missing_note(cells: pd.DataFrame, judged: bool = True) -> str:
    missing = cells[~cells["status"].isin(["done", "diverged"])]
    if missing.empty:
        return ""
    if len(missing) <= 3:
        listed = ", ".join(f"{r['cell']} ({r['status']})" for _, r in missing.iterrows())
    else:
        listed = ", ".join(f"{n} {status}" for status, n in missing["status"].value_counts(sort=False).items())
    return f" {'Provisional' if judged else 'Missing'}: {len(missing)} of {len(cells)} cells have no result ({listed})."


def table2(spec: GridSpec, df: pd.DataFrame) -> list[str]:
    cells = primary_frame(df)
    scale = _scale(df)
    lines: list[str] = []
    outcome: dict[str, bool | None] = {}

    # (a): x-prediction's best loss is below every eps- and v-prediction cell
    a = cells[cells["setting"] == "a"]
    if not a.empty:
        metric = _metric(a)
        x = a[a["pred"] == "x"]
        others = a[a["pred"] != "x"]
        x_values = [(_value(r), r["loss"]) for _, r in x.iterrows() if math.isfinite(_value(r))]
        other_values = [(_value(r), r["pred"], r["loss"]) for _, r in others.iterrows()]
        finite_others = [v for v in other_values if math.isfinite(v[0])]
        diverged = [f"{p}-pred/{l}-loss" for v, p, l in other_values
                    if not math.isfinite(v) and others.loc[(others["pred"] == p) & (others["loss"] == l), "status"]
                    .eq("diverged").any()]
        note = _missing_note(a)
        if not x_values:
            outcome["a"] = None
            lines.append(f"**(a)** cannot be judged: no x-prediction cell has a value.{_missing_note(a, False)}")
        elif not finite_others and not diverged:
            outcome["a"] = None
            lines.append(f"**(a)** cannot be judged: no eps- or v-prediction cell has a result.{_missing_note(a, False)}")
        else:
            best, best_loss = min(x_values)
            rule = "x-pred's best loss below every eps-/v-pred cell"
            if finite_others:
                low, low_pred, low_loss = min(finite_others)
                holds = best < low
                if best < low:
                    relation = f"x-pred is {_ratio(low, best)} lower"
                elif best > low:
                    relation = f"x-pred is {_ratio(best, low)} higher"
                else:
                    relation = "equal"
                comparison = (f"x-pred's best ({best_loss}-loss) {metric} {best:.4g} vs the best eps-/v-pred cell "
                              f"({low_pred}-pred, {low_loss}-loss) {low:.4g}: {relation}")
            else:
                holds = True
                comparison = f"x-pred's best ({best_loss}-loss) {metric} {best:.4g}; every eps-/v-pred cell diverged"
            if diverged and finite_others:
                comparison += f"; diverged (no value, counted as worse): {', '.join(diverged)}"
            worst = max(v for v, _ in x_values)
            if finite_others and len(x_values) > 1:
                every = worst < low
                comparison += (f". Every x-pred cell (worst {worst:.4g}) is "
                               + ("also below every eps-/v-pred cell" if every
                                  else f"not below every eps-/v-pred cell (worst x-pred {worst:.4g} >= {low:.4g})"))
            paper = _paper_ratio(a, spec.paper_metric)
            outcome["a"] = holds
            lines.append(f"**(a) {rule}**: {comparison}. " + ("Reproduces" if holds else "Does not reproduce")
                         + f" at {scale} scale.{paper}{note}")
            lines += _reading("a", a)

    # (b): all nine cells work and are within CLOSE_FACTOR of each other
    b = cells[cells["setting"] == "b"]
    if not b.empty:
        metric = _metric(b)
        values = [(_value(r), r["pred"], r["loss"]) for _, r in b.iterrows() if math.isfinite(_value(r))]
        diverged = [f"{r['pred']}-pred/{r['loss']}-loss" for _, r in b.iterrows() if r["status"] == "diverged"]
        note = _missing_note(b)
        rule = f"all cells within a factor {CLOSE_FACTOR:g} (max/min <= {CLOSE_FACTOR:g})"
        if len(values) < 2 and not diverged:
            outcome["b"] = None
            lines.append(f"**(b)** cannot be judged: fewer than two cells have a value.{_missing_note(b, False)}")
        else:
            if values:
                high, low = max(values), min(values)
                spread = high[0] / low[0] if low[0] > 0 else math.inf
                text = (f"{metric} from {low[0]:.4g} ({low[1]}-pred, {low[2]}-loss) to {high[0]:.4g} "
                        f"({high[1]}-pred, {high[2]}-loss): max/min = {spread:.3g}")
            else:
                spread, text = math.inf, "no cell has a value"
            holds = spread <= CLOSE_FACTOR and not diverged
            if diverged:
                text += f"; diverged: {', '.join(diverged)}"
            outcome["b"] = holds
            paper = b["paper_value"].dropna()
            paper_text = (f" (The paper's {spec.paper_metric}: max/min = {paper.max() / paper.min():.3g}.)"
                          if len(paper) > 1 and paper.min() > 0 else "")
            lines.append(f"**(b) {rule}**: {text}. " + ("Reproduces" if holds else "Does not reproduce")
                         + f" at {scale} scale.{paper_text}{note}")
            lines += _reading("b", b)

    if outcome:
        judged = {k: v for k, v in outcome.items() if v is not None}
        if judged and all(judged.values()) and len(judged) == len(outcome):
            overall = f"Table 2's claim reproduces at {scale} scale"
        elif judged and not all(judged.values()):
            failing = ", ".join(f"({k})" for k, v in judged.items() if not v)
            overall = f"Table 2's claim does not reproduce at {scale} scale: {failing} fails"
        else:
            overall = f"Table 2's claim cannot be judged yet at {scale} scale"
        incomplete = cells[(cells["setting"].isin(list(outcome))) & ~cells["status"].isin(["done", "diverged"])]
        if not incomplete.empty:
            overall += f" (provisional: {len(incomplete)} cell(s) without a result)"
        lines.append(f"**Overall**: {overall}.")
    return lines


def _reading(setting: str, cells: pd.DataFrame) -> list[str]:
    """A line beside a setting's verdict: each loss row's spread over the prediction spaces (none if unknown)."""
    rows = _row_spreads(cells)
    return [f"({setting}), for reading (not part of the rule): within each loss row the three prediction spaces "
            f"span {rows}."] if rows else []


def _row_spreads(cells: pd.DataFrame) -> str:
    """max/min over the predictions of each loss row, ours (and the paper's): how far apart the spaces are."""
    parts = []
    for loss, row in cells.groupby("loss", sort=False):
        ours = [v for v in (_value(r) for _, r in row.iterrows()) if math.isfinite(v)]
        paper = row["paper_value"].dropna()
        if len(ours) < 2 or min(ours) <= 0:
            continue
        text = f"{loss}-loss {max(ours) / min(ours):.3g}x"
        if len(paper) > 1 and paper.min() > 0:
            text += f" (paper {paper.max() / paper.min():.3g}x)"
        parts.append(text)
    return ", ".join(parts)


def _paper_ratio(a: pd.DataFrame, metric: str | None) -> str:
    x = a.loc[a["pred"] == "x", "paper_value"].dropna()
    others = a.loc[a["pred"] != "x", "paper_value"].dropna()
    if x.empty or others.empty or x.min() <= 0:
        return ""
    return (f" (The paper's {metric or 'value'}: x-pred's best {x.min():g} vs the best eps-/v-pred cell "
            f"{others.min():g}, {others.min() / x.min():.3g}x lower.)")


RULES: dict[str, Callable[[GridSpec, pd.DataFrame], list[str]]] = {"table2": table2}
