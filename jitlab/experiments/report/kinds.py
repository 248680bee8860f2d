"""The rule kinds: each a pure function of the cells' values (mean, sd, number of trainings) and a margin.

``judge(rule, cells, margin, order)``: the cells of one group of a rule (its ``where`` and one combination of its
``per`` axes), the margin a difference must exceed, each axis' values in the grid's order -> a ``Finding`` (holds,
fails, a tie, or cannot be judged, with the numbers it turned on). Lower is better throughout.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from jitlab.experiments.report.evidence import Margin, Stat, fmt_sd
from jitlab.experiments.report.rules import Rule, Selector

Outcome = Literal["holds", "tie", "fails", "unjudged"]
OUTCOME = {"lower": "holds", "tie": "tie", "higher": "fails"}  # a move of the claimed kind -> the outcome
Order = dict[str, list[str]]  # axis -> its values at the report's scale, in the grid's order


@dataclass
class Finding:
    outcome: Outcome
    text: str  # the numbers the outcome turned on
    used: list[Stat] = field(default_factory=list)  # the cells compared (the verdict counts their trainings)
    tests: int = 1  # the cells a "best of" picked its lower side from (its test is Bonferroni-corrected for them)


def pick(selector: Selector, cells: list[Stat], order: Order) -> list[Stat]:
    """The cells matching every (axis, choice) of ``selector``."""
    allowed = {axis: set(choice.resolve(order.get(axis, []))) for axis, choice in selector}
    return [c for c in cells if all(c.labels.get(axis) in values for axis, values in allowed.items())]


def known(cells: list[Stat]) -> list[Stat]:
    return [c for c in cells if c.known]


def num(cell: Stat) -> str:
    """61.5, 61.5 ± 2.1 over several trainings, 'diverged'."""
    if cell.mean == math.inf:
        return "diverged"
    if math.isnan(cell.mean):
        return "no value"
    return f"{cell.mean:.4g}" + (f" ± {fmt_sd(cell.sd)}" if cell.n >= 2 and math.isfinite(cell.sd) else "")


def tag(cell: Stat, cells: list[Stat]) -> str:
    """The cell named by the axes that vary among ``cells`` ('pred v, loss eps'; the cell id if none vary)."""
    axes = [a for a in cell.labels if len({c.labels.get(a) for c in cells}) > 1]
    return ", ".join(f"{a} {cell.labels[a]}" for a in axes) or cell.cell


def ratio(a: Stat, b: Stat) -> str:
    if not (math.isfinite(a.mean) and math.isfinite(b.mean)) or b.mean <= 0:
        return "diverged" if math.inf in (a.mean, b.mean) else "-"
    return f"{a.mean / b.mean:.3g}x"


def a_vs_b(rule: Rule, cells: list[Stat], margin: Margin, order: Order) -> Finding:
    """below: every cell of a below every cell of b (the worst of a against the best of b; far_below: factor x the
    worst); beats: the best of a below the best of b."""
    a, b = known(pick(rule.a, cells, order)), known(pick(rule.b, cells, order))
    if not a or not b:
        return Finding("unjudged", f"no cell of {'a' if not a else 'b'} has a result")
    best_b = min(b, key=lambda c: c.mean)
    if rule.kind in ("below", "far_below"):
        worst = max(a, key=lambda c: c.mean)
        factor = float(rule.factor or 1.0) if rule.kind == "far_below" else 1.0
        claimed = f" (b at least {factor:g}x a claimed)" if rule.kind == "far_below" else ""
        return Finding(OUTCOME[margin.compare(worst, best_b, 1.0 / factor)], f"the worst of a ({tag(worst, cells)}) "
                       f"{num(worst)} vs the best of b ({tag(best_b, cells)}) {num(best_b)}: ratio "
                       f"{ratio(worst, best_b)}{claimed}", a + b)
    best_a = min(a, key=lambda c: c.mean)
    move = margin.compare(best_a, best_b, tests=len(a))
    better = [c for c in a if margin.compare(c, best_b, tests=len(a)) == "lower"]
    return Finding(OUTCOME[move], f"the best of a ({tag(best_a, cells)}) {num(best_a)} vs b ({tag(best_b, cells)}) "
                                  f"{num(best_b)}: ratio {ratio(best_a, best_b)}; {len(better)} of {len(a)} cell(s) "
                                  f"of a below it beyond the margin", a + b, tests=len(a))


def within_factor(rule: Rule, cells: list[Stat], margin: Margin, order: Order) -> Finding:
    """max(cells) <= factor x min(of); of defaults to cells (max/min <= factor). A diverged cell fails it."""
    members = known(pick(rule.cells, cells, order))
    reference = members if rule.of is None else known(pick(rule.of, cells, order))
    if not members or not reference or (rule.of is None and len(members) < 2):
        return Finding("unjudged", "fewer than two cells have a result")
    factor = float(rule.factor or 1.0)
    high, low = max(members, key=lambda c: c.mean), min(reference, key=lambda c: c.mean)
    move = margin.compare(high, low, factor)
    return Finding(OUTCOME[move], f"the highest ({tag(high, cells)}) {num(high)} / the lowest "
                                  f"{'' if rule.of is None else 'reference '}({tag(low, cells)}) {num(low)} = "
                                  f"{ratio(high, low)} (at most {factor:g}x claimed)",
                   members + [c for c in reference if c not in members])


def ladder(rule: Rule, cells: list[Stat], margin: Margin, order: Order) -> Finding:
    """Along ``axis`` in the grid's order each step lowers the metric; one chain per value of the other axes."""
    axis = str(rule.axis)
    rank = {value: i for i, value in enumerate(order.get(axis, []))}
    chains: dict[tuple, list[Stat]] = {}
    for cell in cells:
        if cell.labels.get(axis) in rank:
            chains.setdefault(tuple((a, v) for a, v in cell.labels.items() if a != axis), []).append(cell)
    texts, moves, used = [], [], []
    for key, chain in chains.items():
        steps = sorted(known(chain), key=lambda c: rank[c.labels[axis]])
        if len(steps) < 2:
            continue
        pairs = [(a, b, margin.compare(b, a)) for a, b in zip(steps, steps[1:])]
        moves += [m for _, _, m in pairs]
        used += steps
        text = " -> ".join(f"{c.labels[axis]} {num(c)}" for c in steps)
        for word, move in (("higher", "higher"), ("a tie", "tie")):
            at = [f"{a.labels[axis]} -> {b.labels[axis]}" for a, b, m in pairs if m == move]
            text += f" ({word} at {', '.join(at)})" if at else ""
        where = ", ".join(f"{a} {v}" for a, v in key if len({c.labels.get(a) for c in cells}) > 1)
        texts.append(f"{where}: {text}" if where else text)
    if not moves:
        return Finding("unjudged", f"fewer than two steps along {axis} have a result")
    outcome = "fails" if "higher" in moves else "tie" if "tie" in moves else "holds"
    return Finding(outcome, "; ".join(texts), used)


def argmin_in(rule: Rule, cells: list[Stat], margin: Margin, order: Order) -> Finding:
    """The lowest cell along ``axis`` has one of ``values``: their best below the best of the other values."""
    axis = str(rule.axis)
    inside = known([c for c in cells if c.labels.get(axis) in rule.values])
    outside = known([c for c in cells if c.labels.get(axis) in order.get(axis, []) and c not in inside])
    if not inside or not outside:
        what = f"{axis} in {{{', '.join(rule.values)}}}" if not inside else f"the other {axis} values"
        return Finding("unjudged", f"no cell of {what} has a result")
    best_in, best_out = min(inside, key=lambda c: c.mean), min(outside, key=lambda c: c.mean)
    move = margin.compare(best_in, best_out, tests=len(inside))
    lowest = min(inside + outside, key=lambda c: c.mean)
    return Finding(OUTCOME[move], f"the lowest is at {axis} {lowest.labels[axis]}; the best at "
                                  f"{{{', '.join(rule.values)}}} ({axis} {best_in.labels[axis]}) {num(best_in)} vs the "
                                  f"best elsewhere ({axis} {best_out.labels[axis]}) {num(best_out)}: ratio "
                                  f"{ratio(best_in, best_out)}", inside + outside, tests=len(inside))


def threshold(rule: Rule, cells: list[Stat], margin: Margin, order: Order) -> Finding:
    """under: every cell below the absolute threshold (the highest against it); over: every cell above it (the
    lowest against it). The threshold is a constant: no spread, so only the cells' own spread counts."""
    members = known(pick(rule.cells, cells, order))
    if not members:
        return Finding("unjudged", "no cell has a result")
    line = Stat("threshold", {}, float(rule.threshold or 0.0), 0.0, sys.maxsize)
    under = rule.kind == "under"
    cell = (max if under else min)(members, key=lambda c: c.mean)
    move = margin.compare(cell, line) if under else margin.compare(line, cell)
    return Finding(OUTCOME[move], f"the {'highest' if under else 'lowest'} ({tag(cell, cells)}) {num(cell)} vs the "
                                  f"threshold {line.mean:.4g}: {ratio(cell, line)} of it", members)


KINDS: dict[str, Callable[[Rule, list[Stat], Margin, Order], Finding]] = {
    "below": a_vs_b, "within_factor": within_factor, "ladder": ladder, "argmin_in": argmin_in, "beats": a_vs_b,
    "far_below": a_vs_b, "under": threshold, "over": threshold,
}


def judge(rule: Rule, cells: list[Stat], margin: Margin, order: Order) -> Finding:
    """The rule's finding on one group of cells; cells scored in different feature spaces are not compared."""
    spaces = sorted({c.space for c in known(cells) if c.space})
    metrics = sorted({c.metric for c in known(cells) if c.metric})
    if len(spaces) > 1 or len(metrics) > 1:
        apart = ", ".join(spaces if len(spaces) > 1 else metrics)
        return Finding("unjudged", f"its cells were scored in different feature spaces or metrics ({apart}), so "
                                   f"their values are not comparable with one another")
    return KINDS[rule.kind](rule, cells, margin, order)
