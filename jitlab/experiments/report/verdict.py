"""Does our grid say what the paper says? Each verdict is computed from the numbers by the grid file's rules.

One Markdown line per declared rule (``rules``), judged by its ``kinds`` on the cells' training seeds folded
into one value each (``evidence``) with a margin from the spread of the cells that rule reads, then an overall
line. Outcomes: "reproduces (N seeds)", "consistent, 1 seed" (holds on one training), "inconclusive" (a tie
decides it), "does not reproduce", "cannot be judged" (cells lack results). A grid without rules gets none.
"""

from __future__ import annotations

import itertools

import pandas as pd

from jitlab.experiments.grid.spec import GridSpec
from jitlab.experiments.report.evidence import LEVEL, Margin, Stat, cell_stats, measure_spread, stat
from jitlab.experiments.report.kinds import Finding, Order, judge, pick
from jitlab.experiments.report.layout import axis_values
from jitlab.experiments.report.rules import Rule, Selector, parse_rules


def verdict(spec: GridSpec, frame: pd.DataFrame) -> list[str]:
    """The verdict's Markdown lines."""
    rules = parse_rules(spec)
    if not rules or frame.empty:
        return []
    scale = "/".join(map(str, dict.fromkeys(frame["scale"])))
    stats = cell_stats(frame, [axis.name for axis in spec.axes])
    order = {axis.name: axis_values(spec, axis.name, scale if scale in spec.scales else None) for axis in spec.axes}
    lines, outcomes = [], []
    for rule in rules:
        cells = stats if rule.metric is None else cell_stats(metric_frame(frame, rule.metric), list(order))
        finding, margin = judge_rule(rule, cells, order)
        lines.append(rule_line(rule, finding, margin, cells, order, scale, spec.paper_metric))
        outcomes.append((rule.name, finding))
    return lines + [overall(spec.title.split(":")[0].strip() or spec.name, outcomes, scale, len(lacking(stats)),
                            len(stats))]


def metric_frame(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of a rule's ``metric`` (``residual`` also names ``residual-2000``) and the rows without a value."""
    named = frame["metric"].map(lambda m: isinstance(m, str) and metric in (m, m.rsplit("-", 1)[0]))
    return frame[named | frame["metric"].isna()]


def judge_rule(rule: Rule, stats: list[Stat], order: Order) -> tuple[Finding, Margin]:
    """(the rule's finding, its margin): the margin's spread is pooled over the cells this rule compares only (a
    noisy cell elsewhere in the table does not decide it), found by a first pass with the declared margin."""
    read, _ = evaluate(rule, stats, Margin(rule.margin), order)
    cells = list({c.cell: c for c in read.used}.values())
    margin = Margin(rule.margin, measure_spread(cells))
    finding, _ = evaluate(rule, stats, margin, order)
    return finding, margin


def level_note(claims: int, measured: bool) -> str:
    """At what level each of a table's ``claims`` is judged, and why no correction across them."""
    if not measured:
        return ("How the claims are judged: every cell rests on one training, so each rule's declared margin "
                "decides; there is no measured spread, no test and no level.")
    several = (f" No correction across this table's {claims} claims: its overall \"reproduces\" needs every claim "
               f"to hold, so its error stays at most {LEVEL:.1%}; one \"does not reproduce\" among {claims} claims "
               f"can arise by chance in up to {claims} x {LEVEL:.1%} = {min(claims * LEVEL, 1):.1%} of tables with "
               f"no real effect." if claims > 1 else "")
    return (f"How the claims are judged: each claim on its own, by a one-sided t test at {LEVEL:.1%} in each "
            f"direction (two-sided {1 - 2 * LEVEL:.0%}): \"reproduces\" and \"does not reproduce\" each have at "
            f"most a {LEVEL:.1%} chance under no real difference; Student-t quantiles on the degrees of freedom of "
            f"the spread pooled over the rule's own cells. Within a rule every comparison must hold (no correction "
            f"needed); where a rule takes the best of several cells, that test is at {LEVEL:.1%} / their number "
            f"(Bonferroni)." + several)


def evaluate(rule: Rule, stats: list[Stat], margin: Margin, order: Order) -> tuple[Finding, list[str]]:
    """The rule over every group of its ``per`` axes: (the combined finding, one evidence text per group)."""
    scope = pick(rule.where, stats, order)
    groups = [[]] if not rule.per else [list(key) for key in itertools.product(*(order[a] for a in rule.per))]
    findings, texts = [], []
    for key in groups:
        cells = [c for c in scope if all(c.labels.get(a) == v for a, v in zip(rule.per, key))]
        if rule.per and not cells:
            continue
        finding = judge(rule, cells, margin, order)
        findings.append(finding)
        where = ", ".join(f"{a} {v}" for a, v in zip(rule.per, key))
        texts.append(f"at {where}: {finding.text}" if where else finding.text)
    if not findings:
        return Finding("unjudged", "no cell matches the rule"), ["no cell matches the rule"]
    kinds = [f.outcome for f in findings]
    outcome = next(o for o in ("fails", "unjudged", "tie", "holds") if o in kinds)
    return Finding(outcome, "; ".join(texts), [c for f in findings for c in f.used],
                   max(f.tests for f in findings)), texts


def trainings(finding: Finding) -> int:
    """The fewest trainings any compared cell rests on."""
    return min((c.n for c in finding.used), default=0)


def outcome_word(finding: Finding) -> str:
    if finding.outcome == "holds":
        n = trainings(finding)
        return f"reproduces ({n} seeds)" if n >= 2 else "consistent, 1 seed"
    return {"tie": "inconclusive", "fails": "does not reproduce", "unjudged": "cannot be judged"}[finding.outcome]


def rule_line(rule: Rule, finding: Finding, margin: Margin, stats: list[Stat], order: Order, scale: str,
              paper_metric: str | None) -> str:
    word = outcome_word(finding)
    counts = sorted({c.n for c in finding.used})
    rests = ("no training" if not counts else f"{counts[0]} training{'s' if counts[0] != 1 else ''} per cell"
             if len(counts) == 1 else f"{counts[0]}-{counts[-1]} trainings per cell")
    line = (f"**{rule.name}** {rule.claim} [rule `{rule.kind}`: {describe(rule, order)}]: {finding.text}. "
            f"**{word[0].upper() + word[1:]}** at {scale} scale. Margin: {margin.describe(finding.tests)}. "
            f"Rests on {rests}.")
    return line + paper_check(rule, stats, order, paper_metric) + missing_note(pick(rule.where, stats, order))


def paper_check(rule: Rule, stats: list[Stat], order: Order, paper_metric: str | None) -> str:
    """The same rule on the paper's numbers for these cells, without a margin (omitted when it lacks them)."""
    paper = [stat(c.labels, [c.paper], cell=c.cell) for c in stats]
    finding, _ = evaluate(rule, paper, Margin(0.0), order)
    if finding.outcome == "unjudged":
        return ""
    says = {"holds": "holds", "fails": "fails", "tie": "is a tie"}[finding.outcome]
    return f" (The paper's {paper_metric or 'numbers'} under the same rule: {says}; {finding.text}.)"


def lacking(cells: list[Stat]) -> list[Stat]:
    """The cells without a result for some training (failed, not run)."""
    return [c for c in cells if c.missing or not c.known]


def missing_note(cells: list[Stat]) -> str:
    """Cells the rule looks at that lack a result for some training (failed, not run)."""
    short = lacking(cells)
    if not short:
        return ""
    listed = ", ".join(f"{c.cell} ({c.status if not c.known else f'{c.missing} training(s) without a result'})"
                       for c in short[:3]) + (f", and {len(short) - 3} more" if len(short) > 3 else "")
    return f" Provisional: {len(short)} of {len(cells)} cells lack a result ({listed})."


def selector_text(selector: Selector | None, order: Order) -> str:
    if not selector:
        return "every cell"
    return ", ".join(f"{axis} {'/'.join(choice.resolve(order.get(axis, [])))}" for axis, choice in selector)


def describe(rule: Rule, order: Order) -> str:
    """The rule in words: which cells, compared how."""
    if rule.kind in ("below", "beats", "far_below"):
        each = "the best" if rule.kind == "beats" else "every cell"
        far = f"{rule.factor:g}x " if rule.kind == "far_below" else ""
        text = f"{far}{each} of a ({selector_text(rule.a, order)}) below {each} of b ({selector_text(rule.b, order)})"
    elif rule.kind in ("under", "over"):
        side = "below" if rule.kind == "under" else "above"
        text = f"every cell of {selector_text(rule.cells, order)} {side} {rule.threshold:g}"
    elif rule.kind == "within_factor":
        cells = selector_text(rule.cells, order)
        text = (f"max/min of {cells} at most {rule.factor:g}" if rule.of is None else
                f"every cell of {cells} at most {rule.factor:g}x the best of {selector_text(rule.of, order)}")
    elif rule.kind == "ladder":
        steps = order.get(str(rule.axis), [])
        for axis, choice in rule.where:  # a `where` on the ladder's own axis shortens it
            steps = choice.resolve(steps) if axis == rule.axis else steps
        text = f"each step along {rule.axis} ({' -> '.join(steps)}) lowers the metric"
    else:
        text = f"the lowest value along {rule.axis} is at {' or '.join(rule.values)}, below every other {rule.axis}"
    text += f"; metric {rule.metric}" if rule.metric else ""
    scope = f"; cells: {selector_text(rule.where, order)}" if rule.where else ""
    per = f"; judged per {', '.join(rule.per)}" if rule.per else ""
    return text + scope + per


def overall(name: str, outcomes: list[tuple[str, Finding]], scale: str, short: int, cells: int) -> str:
    """The table's verdict; ``short`` of its ``cells`` lack some training's result (failed or not run yet)."""
    words = [outcome_word(f) for _, f in outcomes]
    failing = [n for n, f in outcomes if f.outcome == "fails"]
    says = (f"does not reproduce at {scale} scale ({', '.join(failing)} fails)" if failing else
            f"cannot be judged yet at {scale} scale" if all(w == "cannot be judged" for w in words) else
            f"cannot be fully judged at {scale} scale (a part lacks cells)" if "cannot be judged" in words else
            f"is inconclusive at {scale} scale (a difference within the margin)" if "inconclusive" in words else
            f"is consistent, 1 seed, at {scale} scale (one training per cell)" if "consistent, 1 seed" in words else
            f"reproduces ({min(trainings(f) for _, f in outcomes)} seeds) at {scale} scale")
    provisional = (f" Provisional: {short} of {cells} cells lack a training's result (failed or not run yet); the "
                   f"verdict may change when they have one." if short else "")
    return f"**Overall**: {name}'s claim {says}.{provisional}"

