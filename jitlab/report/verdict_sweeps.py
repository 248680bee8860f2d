"""Verdicts of the sweeps (Table 3, Figure 4, Table 4, Table 6), computed from the numbers like Table 2's.

Each rule restates one sentence of the paper's claim (the grid file's ``claim``) as a comparison of cells
within one panel (lower is better); a diverged cell counts as worse than any number, a failed or
not-run cell is missing evidence. Orders (the ladder of Table 4, the model sizes of Table 6, the
values of ``mu`` and ``d'``) are the grid file's, as the cells come.
"""

from __future__ import annotations

import math

import pandas as pd

from jitlab.grid.spec import GridSpec
from jitlab.report.collect import primary_frame
from jitlab.report.verdict import CLOSE_FACTOR, _metric, _missing_note, _ratio, _scale, _value

# One seed and a few hundred samples per cell, so a step of the sweeps counts as lower only when it is lower by
# more than this fraction; smaller differences are ties, and a claim resting on a tie is called inconclusive.
# Measured (`jitlab grid seeds`, reports/{fig4,table4,table6}-seeds.md, 64x64, 500 samples, Heun 25): the
# sampling seed alone moves a cell's FD-ref-500 by a median sd of 1.1-1.5% of its value (per grid; at most 1.7%),
# so the difference of two single-seed values has an sd of about 2%, and 5% is over two of those. Trainings were
# not repeated: their spread is not in this margin. (At 8x8 with Heun 13, reports/table2-seeds.md: nearer 2.7%.)
TIE = 0.05


def _worse(row) -> float:
    """The cell's value; a diverged cell is worse than any number; no result is NaN."""
    return math.inf if row["status"] == "diverged" else _value(row)


def _fmt(value: float) -> str:
    return "diverged" if value == math.inf else f"{value:.4g}"


def _overall(name: str, outcomes: list[bool | str | None], scale: str) -> str:
    judged = [o for o in outcomes if o is not None]
    if not judged:
        return f"**Overall**: {name}'s claim cannot be judged yet at {scale} scale."
    if False in judged:
        return f"**Overall**: {name}'s claim does not reproduce at {scale} scale."
    if len(judged) < len(outcomes):
        return f"**Overall**: {name}'s claim cannot be fully judged at {scale} scale (a part lacks cells)."
    if "tie" in judged:
        return f"**Overall**: {name}'s claim is inconclusive at {scale} scale (differences within the tie margin)."
    return f"**Overall**: {name}'s claim reproduces at {scale} scale."


def _move(before: float, after: float) -> str:
    """``after`` vs ``before`` (lower is better): "lower" by more than TIE, "higher" by more than TIE, else "tie"."""
    if after < before * (1 - TIE):
        return "lower"
    if after > before * (1 + TIE):
        return "higher"
    return "tie"


OUTCOME = {"lower": True, "tie": "tie", "higher": False}  # a move of the claimed kind -> the verdict's outcome


def _says(holds: bool | str, scale: str) -> str:
    if holds == "tie":
        return f"Inconclusive at {scale} scale: within the {TIE:.0%} tie margin of one seed."
    return ("Reproduces" if holds else "Does not reproduce") + f" at {scale} scale."


def table3(spec: GridSpec, df: pd.DataFrame) -> list[str]:
    """x-pred best at every mu; shifting towards more noise (mu < 0) helps x-pred."""
    cells, scale = primary_frame(df), _scale(df)
    metric, lines, outcomes = _metric(cells), [], []
    mus = list(dict.fromkeys(cells["mu"].astype(str)))
    by = {(str(r["mu"]), r["pred"]): _worse(r) for _, r in cells.iterrows()}
    # (1) at every mu, x-pred is below eps- and v-pred
    rows, fails, missing = [], [], []
    for mu in mus:
        x = by.get((mu, "x"), math.nan)
        others = {p: by.get((mu, p), math.nan) for p in ("eps", "v")}
        if math.isnan(x) or any(math.isnan(v) for v in others.values()):
            missing.append(mu)
            continue
        rows.append(f"mu {mu}: x {_fmt(x)} vs eps {_fmt(others['eps'])}, v {_fmt(others['v'])}")
        if _move(min(others.values()), x) != "lower":  # x-pred must be lower by more than the tie margin
            fails.append(mu)
    if rows:
        holds = not fails
        outcomes.append(holds)
        lines.append(f"**x-pred below eps- and v-pred at every mu** ({metric}): {'; '.join(rows)}. "
                     + ("" if holds else f"Not (by more than {TIE:.0%}) at mu {', '.join(fails)}. ")
                     + _says(holds, scale)
                     + (f" Not judged at mu {', '.join(missing)} (cells without a result)." if missing else ""))
    else:
        outcomes.append(None)
        lines.append("**x-pred below eps- and v-pred at every mu**: cannot be judged (no complete mu row).")
    # (2) more noise helps x-pred: its best value at some mu < 0 is below its value at mu = 0
    x_by_mu = {mu: by.get((mu, "x"), math.nan) for mu in mus}
    zero = [mu for mu in mus if float(mu) == 0.0]
    shifted = {mu: v for mu, v in x_by_mu.items() if float(mu) < 0 and not math.isnan(v)}
    if zero and not math.isnan(x_by_mu[zero[0]]) and shifted:
        at_zero = x_by_mu[zero[0]]
        best_mu, best = min(shifted.items(), key=lambda kv: kv[1])
        move = _move(at_zero, best)
        holds = OUTCOME[move]
        outcomes.append(holds)
        relation = f"{_ratio(at_zero, best)} lower" if move == "lower" and best > 0 else f"{move}"
        lines.append(f"**more noise helps x-pred (its best mu < 0 beats mu 0)**: x-pred {_fmt(at_zero)} at mu 0, "
                     f"best {_fmt(best)} at mu {best_mu} ({relation}). " + _says(holds, scale))
    else:
        outcomes.append(None)
        lines.append("**more noise helps x-pred**: cannot be judged (x-pred lacks mu 0 or every mu < 0)."
                     + _missing_note(cells, judged=False))
    return lines + [_overall("Table 3", outcomes, scale)]


def fig4(spec: GridSpec, df: pd.DataFrame) -> list[str]:
    """A bottleneck beats none (best d' below none); x-pred still works at the smallest d' (within 2x of none)."""
    cells, scale = primary_frame(df), _scale(df)
    metric, lines, outcomes = _metric(cells), [], []
    x = cells[cells["pred"] == "x"] if "pred" in cells else cells
    values = {str(r["bottleneck"]): _worse(r) for _, r in x.iterrows()}
    none = values.get("none", math.nan)
    widths = {d: v for d, v in values.items() if d != "none" and not math.isnan(v)}
    if math.isnan(none) or not widths:
        lines.append("**a bottleneck beats none**: cannot be judged (no result for d' = none or for any d')."
                     + _missing_note(cells, judged=False))
        return lines + [_overall("Figure 4", [None], scale)]
    better = [d for d, v in widths.items() if _move(none, v) == "lower"]
    best_d, best = min(widths.items(), key=lambda kv: kv[1])
    holds = OUTCOME[_move(none, best)]
    outcomes.append(holds)
    lines.append(f"**a bottleneck beats none (the best d' below d' = none)** ({metric}): none {_fmt(none)}, best "
                 f"d' = {best_d} {_fmt(best)}; {len(better)} of {len(widths)} d' values are below none by more than "
                 f"{TIE:.0%} ({', '.join(better) or 'none of them'}). " + _says(holds, scale))
    smallest = min(widths, key=int)
    ratio = widths[smallest] / none if none > 0 else math.inf
    works = ratio <= CLOSE_FACTOR
    outcomes.append(works)
    lines.append(f"**x-pred still works at the smallest d' (within {CLOSE_FACTOR:g}x of none)**: d' = {smallest} "
                 f"{_fmt(widths[smallest])} vs none {_fmt(none)} ({ratio:.3g}x). " + _says(works, scale)
                 + _missing_note(cells))
    return lines + [_overall("Figure 4", outcomes, scale)]


def _ladder(name: str, axis: str, what: str):
    """Rule: along ``axis`` in the grid's order, every step lowers the metric (within each panel)."""

    def rule(spec: GridSpec, df: pd.DataFrame) -> list[str]:
        cells, scale = primary_frame(df), _scale(df)
        lines, outcomes = [], []
        groups = cells.groupby("resolution", sort=False) if "resolution" in cells.columns else [(None, cells)]
        for panel, group in groups:
            where = f" at {panel}" if panel is not None else ""
            steps = [(str(r[axis]), _worse(r)) for _, r in group.iterrows()]
            known = [(k, v) for k, v in steps if not math.isnan(v)]
            if len(known) < 2:
                outcomes.append(None)
                lines.append(f"**{what}{where}**: cannot be judged (fewer than two cells with a result)."
                             + _missing_note(group, judged=False))
                continue
            moves = [_move(a, b) for (_, a), (_, b) in zip(known, known[1:])]
            holds = False if "higher" in moves else ("tie" if "tie" in moves else True)
            outcomes.append(holds)
            chain = " -> ".join(f"{k} {_fmt(v)}" for k, v in known)
            named = {m: [f"{known[i][0]} -> {known[i + 1][0]}" for i, x in enumerate(moves) if x == m]
                     for m in ("higher", "tie")}
            lines.append(f"**{what}{where}** ({_metric(group)}): {chain}. "
                         + (f"Higher at {', '.join(named['higher'])}. " if named["higher"] else "")
                         + (f"Within {TIE:.0%} (a tie) at {', '.join(named['tie'])}. " if named["tie"] else "")
                         + _says(holds, scale) + _missing_note(group))
        return lines + [_overall(name, outcomes, scale)]

    return rule


RULES = {
    "table3": table3,
    "fig4": fig4,
    "table4": _ladder("Table 4", "component", "each component lowers the metric, in the paper's order"),
    "table6": _ladder("Table 6", "model", "each larger model lowers the metric"),
}


def tie_margin(grid: str) -> float | None:
    """TIE for a grid whose verdict uses it (the sweeps); None for the others (Table 2's rule is a factor)."""
    return TIE if grid in RULES else None
