"""The settings part of the Figure 2 report: what was run, how long each training was and why, and its cost."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from datetime import datetime, timezone

from jitlab.core.data.toy import arm_gap
from jitlab.experiments.rundir import clock
from jitlab.experiments.toy import probe as length_probe
from jitlab.experiments.toy.cell import Settings, chamfer_floor
from jitlab.experiments.toy.stats import fmt

BUDGET_MINUTES = 30  # make fig2 on 2 cores; MAX_STEPS is chosen so the default grid fits it


def seconds_at(steps: int, results: list[dict], probe: dict | None, workers: int) -> float:
    """Wall seconds these trainings would take at ``steps`` each, from their recorded seconds per step at each D
    (plus each one's data and sampling time), ``workers`` at a time, after the probe (if any) ran to ``steps``."""
    per_step: dict[int, list[float]] = {}
    other = 0.0
    for r in results:
        per_step.setdefault(r["cell"]["D"], []).append(r["train_seconds"] / r["settings"]["steps"])
        other += r["seconds"] - r["train_seconds"]
    cells = sum(steps * statistics.fmean(per_step[r["cell"]["D"]]) for r in results) + other
    probe_seconds = 0.0 if probe is None else steps * probe["seconds"] / probe["steps"]  # it trained that long
    return cells / workers + probe_seconds


def budget_lines(s: Settings, results: list[dict], probe: dict | None, workers: int) -> list[str]:
    cap = probe["max_steps"] if probe else length_probe.MAX_STEPS
    per_d = {}
    for r in results:
        per_d.setdefault(r["cell"]["D"], []).append(1000 * r["train_seconds"] / r["settings"]["steps"])
    costs = ", ".join(f"D={d}: {statistics.fmean(v):.1f} ms" for d, v in sorted(per_d.items()))
    return [
        f"Budget: the cap of {cap} steps is chosen so that `make fig2` (24 trainings, 2 workers) fits "
        f"{BUDGET_MINUTES} minutes on 2 cores even when the probe runs to the cap. Seconds per training step in "
        f"these {len(results)} trainings ({workers} at a time): {costs}; at the cap they would take about "
        f"{clock(seconds_at(cap, results, probe, workers))} wall (probe included; at {s.steps} steps: "
        f"{clock(seconds_at(s.steps, results, probe, workers))}).",
    ]


def length_lines(s: Settings, probe: dict | None) -> list[str]:
    if probe is None:
        return [f"Training length: {s.steps} steps, given by `--steps` (no length probe)."]
    return [length_probe.describe(probe, s.schedule)]


def header_lines(command: str, s: Settings, loss: str, seeds: dict[int, int], workers: int, results: list[dict],
                 probe: dict | None) -> list[str]:
    compute = sum(r["seconds"] for r in results)
    seed_text = ", ".join(f"D={d}: {n} (seed{'s' if n > 1 else ''} {', '.join(map(str, range(n)))})"
                          for d, n in seeds.items())
    return [
        f"Produced by `{command}` (`make fig2`) on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        "Settings (every cell the same; only D, the prediction space and the training seed change):",
        "",
        f"- data: 2-D spiral (2.17 turns, each coordinate of unit std, thickness {s.noise}) embedded as x = P s with "
        f"a fixed random column-orthogonal P (D x 2, projection seed 0); {s.num_points} training points per seed.",
        f"- net: ToyMLP, {s.layers} linear layers with ReLU between them, {s.hidden} hidden units, "
        f"64 sinusoidal time features concatenated to z; trained through JiTModule (the images' flow, loss and "
        "sampler).",
        f"- training: {s.steps} steps (the same for every cell; see the training length below), batch "
        f"{s.batch_size}, AdamW lr {s.lr:g} (betas 0.9/0.95, no warm-up), {s.schedule} schedule, {loss}-loss, "
        f"logit-normal t with mu {s.mu:g}, sigma {s.sigma:g}, noise_scale 1, t_eps 0.05; no EMA.",
        f"- training seeds per cell: {seed_text}. The claims are at the lowest and highest D, which get the most "
        "seeds; the D between them are information.",
        f"- sampling: {s.samples} points per training, Euler, {s.sample_steps} steps (`JiTModule.generate`), "
        "generation seed 10000 + training seed.",
        f"- metrics: Chamfer distance (symmetric mean nearest-neighbour distance, halved) between P^T x of the "
        f"generated points and {s.samples} fresh true spiral points; its floor (two independent true samples) is "
        f"{fmt(chamfer_floor(s))}. Off-manifold residual: mean ||x - P P^T x||. The gap between spiral arms is "
        f"{arm_gap():.3g}.",
        "",
        *length_lines(s, probe),
        "",
        *budget_lines(s, results, probe, workers),
        "",
        f"Why the other defaults ({why_note(s)}): cosine decay for the cells because constant-lr weights stay "
        "noisy at the end of a short run (no EMA here); the probe uses a constant lr so that its loss flattens by "
        "convergence, not by the decay. mu 0, sigma 1 (the unshifted logit-normal) rather than the paper's "
        "-0.8/0.8, because the paper's shift is tuned for 256x256 images (more noise for higher-dimensional data, "
        "Table 3), while the toy's data are 2-D and unit-scale at every D; with -0.8/0.8 a probe at D=2 gave "
        "x-pred a Chamfer of 0.13-0.20 (vs 0.05), since the net rarely sees t > 0.8, where x-pred's 1/(1-t) "
        "conversion amplifies its errors. These choices were made from D=2 probes (can every space learn the 2-D "
        "spiral?), not tuned towards the D=512 result. One-thread workers: one-thread matmuls for these tiny "
        "MLPs are faster than two threads contending.",
        "",
        f"Compute: {len(results)} trainings, {clock(compute)} summed over cells (run {workers} at a time; "
        f"panel titles and tables give mean ± sd over training seeds).",
    ]


def why_note(s: Settings) -> str:
    """Whether this run used the defaults (the length aside), and if not which settings differ."""
    changed = [f"{k} {v}" for k, v in asdict(s).items() if k != "steps" and v != getattr(Settings(), k)]
    return "this run uses them" if not changed else "this run changes: " + ", ".join(changed)
