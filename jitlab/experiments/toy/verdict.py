"""The Figure 2 verdict: the paper's claims as rules fixed before any result, each evaluated on the numbers.

The claims (paper.md section 5): at D=2 all three prediction spaces recover the spiral; at D=512 x-prediction
still does and eps- and v-prediction fail. Each check states its rule, its margin and the trainings (seeds) it
rests on; a claim holds when all of its checks do.
"""

from __future__ import annotations

from dataclasses import dataclass

from jitlab.experiments.toy.stats import Stat, fmt

FAR = 3.0  # "far below / far larger": the means differ by at least 3x AND the seed ranges do not overlap
CLOSE = 2.0  # information only (not a rule): whether the largest D=2 mean Chamfer is within 2x of the smallest
RECOVERED_FRACTION = 0.1  # a space "recovers the spiral" if its mean Chamfer is below 1/10 of the gap between arms


@dataclass(frozen=True)
class Check:
    """One rule applied to the numbers: ``ok`` is its outcome; ``seeds`` the fewest trainings behind a side."""

    claim: str
    failure: str  # what is true instead when the rule fails, for the claim's summary
    rule: str
    evidence: str
    ok: bool
    seeds: int

    def line(self) -> str:
        return (f"**{self.claim}**: {'YES' if self.ok else 'NO'}. Rule: {self.rule}. Measured: {self.evidence}; "
                f"rests on {seeds_text(self.seeds)}.")


def seeds_text(n: int) -> str:
    return f"{n} training seed{'s' if n != 1 else ''}"


def outcome(checks: list[Check]) -> str:
    """``reproduces (3 seeds)``, ``consistent, 1 seed`` or ``does NOT reproduce (...)`` for one claim."""
    n = min(c.seeds for c in checks)
    failed = [c.failure for c in checks if not c.ok]
    if failed:
        return f"does NOT reproduce ({n} seed{'s' if n != 1 else ''} per cell): " + "; ".join(failed)
    return f"reproduces ({n} seeds per cell)" if n > 1 else "consistent, 1 seed per cell"


def recovers(stat: Stat, gap: float, d: int, pred: str, want: bool = True) -> Check:
    """``pred`` at ``d`` recovers the spiral (``want``) or fails to (not ``want``): mean Chamfer vs a tenth of
    the arm ``gap``."""
    threshold = RECOVERED_FRACTION * gap
    below = stat.mean < threshold
    side = "below" if below else "not below"
    margin = abs(threshold - stat.mean)
    evidence = (f"mean Chamfer {fmt(stat.mean)} ± {stat.sd:.2g} (seeds {fmt(stat.lo)}..{fmt(stat.hi)}), {side} the "
                f"threshold {fmt(threshold)}: margin {fmt(margin)} (the mean is {stat.mean / threshold:.2g}x the "
                f"threshold)")
    claim = f"D={d}: {pred}-pred recovers the spiral" if want else f"D={d}: {pred}-pred fails to recover the spiral"
    failure = f"{pred}-pred does not recover the spiral" if want else f"{pred}-pred still recovers the spiral"
    rule = (f"mean Chamfer over seeds {'<' if want else '>='} {fmt(threshold)} "
            f"(RECOVERED_FRACTION {RECOVERED_FRACTION:g} x the arm gap {fmt(gap)})")
    return Check(claim, f"at D={d} {failure}", rule, evidence, below == want, len(stat.values))


def far_apart(low: Stat, high: Stat) -> bool:
    """``high`` is far above ``low``: a FAR-fold gap in the means and no overlap of the seed ranges."""
    return high.mean >= FAR * low.mean and high.lo > low.hi


def far_check(low: Stat, high: Stat, claim: str, failure: str, metric: str) -> Check:
    """``high`` far above ``low`` (FAR-fold means, disjoint seed ranges), with the ratio and the range gap."""
    ratio = high.mean / low.mean if low.mean > 0 else float("inf")
    evidence = (f"means {fmt(low.mean)} vs {fmt(high.mean)}: {ratio:.3g}x (need >= {FAR:g}x); seed ranges "
                f"[{fmt(low.lo)}, {fmt(low.hi)}] vs [{fmt(high.lo)}, {fmt(high.hi)}]: "
                + ("disjoint" if high.lo > low.hi else "overlap"))
    rule = f"mean {metric} at least {FAR:g}x larger (FAR) and the seed ranges disjoint"
    return Check(claim, failure, rule, evidence, far_apart(low, high), min(len(low.values), len(high.values)))


def high_d_checks(stats: dict, d: int, gap: float) -> list[Check]:
    """At the largest D only x-prediction recovers the spiral, far below eps and v, with far smaller residuals."""
    x_c, x_r = stats[(d, "x", "chamfer")], stats[(d, "x", "residual")]
    checks = [far_check(x_c, stats[(d, p, "chamfer")], f"D={d}: x-pred's Chamfer far below {p}-pred's",
                        f"at D={d} x-pred's Chamfer is not far below {p}-pred's", "Chamfer") for p in ("eps", "v")]
    checks += [far_check(x_r, stats[(d, p, "residual")], f"D={d}: {p}-pred's off-manifold residual far larger "
                         f"than x-pred's", f"at D={d} {p}-pred's residual is not far larger", "residual")
               for p in ("eps", "v")]
    checks.append(recovers(x_c, gap, d, "x"))
    checks += [recovers(stats[(d, p, "chamfer")], gap, d, p, want=False) for p in ("eps", "v")]
    return checks


def information(stats: dict, dims: list[int], preds: list[str], threshold: float) -> list[str]:
    """Lines that are not rules: the D=2 spread and every D's recovery (the middle D are not a claim)."""
    lo = min(dims)
    means = {p: stats[(lo, p, "chamfer")].mean for p in preds}
    spread = max(means.values()) / min(means.values())
    lines = [f"D={lo} spread (information, not a rule): the largest mean Chamfer is {spread:.2g}x the smallest ("
             + ", ".join(f"{p} {fmt(m)}" for p, m in means.items()) + "); "
             + (f"within {CLOSE:g}x." if spread <= CLOSE else f"more than {CLOSE:g}x apart.")]
    for d in dims:
        ok = [p for p in preds if stats[(d, p, "chamfer")].mean < threshold]
        bad = [p for p in preds if p not in ok]
        n = min(len(stats[(d, p, "chamfer")].values) for p in preds)
        lines.append(f"D={d} ({seeds_text(n)} per space): recovers the spiral (mean Chamfer < {fmt(threshold)}): "
                     f"{', '.join(ok) or 'none'}" + (f"; fails: {', '.join(bad)}." if bad else "."))
    return lines


def verdict(stats: dict, dims: list[int], preds: list[str], gap: float) -> list[str]:
    """The verdict's lines: the rules with their outcomes, the two claims, then information."""
    threshold = RECOVERED_FRACTION * gap
    lo, hi = min(dims), max(dims)
    if not {"x", "eps", "v"} <= set(preds) or lo == hi:
        return ["The D-comparison needs all of x, eps and v in --preds and two or more D; only the tables are given."]
    low = [recovers(stats[(lo, p, "chamfer")], gap, lo, p) for p in preds]
    high = high_d_checks(stats, hi, gap)
    lines = [c.line() for c in low + high]
    lines.append(f"**Claim at D={lo}** (every prediction space recovers the spiral): {outcome(low)}.")
    lines.append(f"**Claim at D={hi}** (only x-prediction recovers it; eps and v fail, off the plane): "
                 f"{outcome(high)}.")
    return lines + information(stats, dims, preds, threshold)
