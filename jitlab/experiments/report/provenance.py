"""What produced a report: scale, data set, metric and sample count, evaluation, training, commands, compute;
read from the cells' configs (what the grid file asks for) and their result.json files (what ran)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from jitlab.score.evaluation import split_reference_stats_name
from jitlab.fitview import FitView
from jitlab.experiments.report.collect import NOT_RUN, Collected
from jitlab.rows import is_frechet
from jitlab.experiments.rundir import clock, stats_name


@dataclass
class Provenance:
    scale: str
    why: str
    datasets: list[tuple[str, str]]  # (description, which cells)
    metrics: list[str]  # our metric names, in order of first appearance
    metric_notes: list[str]
    samples: list[int]
    evaluation: str
    training: str
    varies: list[str]  # dotted config keys that differ between cells
    commands: list[str]
    generated: str
    last_finished: str | None
    compute: str
    counts: dict[str, int]
    paper: str
    notes: list[str]
    history: list[str]  # the grid file's design changes made after a run, one line each

    @property
    def metric(self) -> str:
        """Our Frechet metric name(s), e.g. 'FD-ref-500' (joined with ' / ' when cells differ)."""
        frechet = [m for m in self.metrics if is_frechet(m)] or self.metrics
        return " / ".join(frechet) if frechet else "no metric yet"


def data_description(config: dict[str, Any]) -> str:
    fit = FitView.of(config)
    cls, args = (fit.data_class or "?").rsplit(".", 1)[-1], fit.data
    res = args.get("resolution")
    if res is None:  # points, not images (the Figure 2 spiral): no size to name
        return cls
    size = f"{res}x{res}"
    if "Embedded" in cls:
        return f"{args.get('kind', 'shapes')} {size} (embedded)"
    if "ImageNet" in cls:
        return f"ImageNet {size}"
    kind = args.get("kind")
    return f"{cls}{' ' + str(kind) if kind else ''} {size}"


def metric_note(metric: str, features: str | None) -> str:
    if metric.startswith("FD-ref"):
        return (f"{metric}: Frechet distance in the features of jitlab's reference classifier (refnet) trained on the "
                f"embedded data set at the cell's resolution. It is not FID: not comparable with the paper's "
                f"numbers, nor between cells of different resolutions (different feature spaces).")
    if metric.startswith("FID"):
        return f"{metric}: Frechet Inception Distance (Inception-V3 pool features) over the number of samples named."
    if metric.startswith("IS"):
        return f"{metric}: Inception Score (higher is better)."
    if metric.startswith("FD"):
        return f"{metric}: a Frechet distance in the feature space {features or 'named by the metric'} (not FID)."
    if metric.startswith("Chamfer"):
        return (f"{metric}: Chamfer distance (halved symmetric mean nearest-neighbour distance) between the generated "
                f"points projected back to the plane (P^T x) and as many fresh true spiral points.")
    if metric.startswith("residual"):
        return f"{metric}: mean off-plane residual ||x - P P^T x|| of the generated points (0 on the plane)."
    return f"{metric}: as recorded by `jitlab eval`."


def feature_notes(frame: pd.DataFrame) -> list[str]:
    """One line per classifier feature space: its validation accuracy and weights' digest, when the evaluation
    recorded them, and whether those weights are the shipped classifier's (the same instrument on every machine)."""
    rows = frame.dropna(subset=["feature_accuracy"]).drop_duplicates("feature_space")
    return [f"{r['feature_space']}: the reference classifier's validation accuracy is "
            f"{float(r['feature_accuracy']):.1%} (how well its features tell the data set's classes apart)"
            + _digest_note(r.get("feature_digest")) for _, r in rows.iterrows()]


def _digest_note(digest: Any) -> str:
    from jitlab.score.metrics.shipped import read_manifest

    if not isinstance(digest, str) or not digest:
        return "; its weights' digest was not recorded (scored before classifiers shipped)"
    files = [name for name, entry in read_manifest().items() if entry.digest == digest]
    where = f"the shipped classifier jitlab/score/metrics/weights/{files[0]}" if files else "not a shipped classifier"
    return f"; weights sha256 {digest[:16]}... ({where})"


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = json.dumps(value, sort_keys=True, default=str)
    return out


def _join(values) -> str:
    return ", ".join(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in values)


def _distinct(series: pd.Series) -> list:
    return list(dict.fromkeys(series.dropna()))


def mixed_references(collected: Collected) -> list[str]:
    """A warning per feature space whose done cells were scored by more than one classifier (retrained between
    cells, or a reused run of another grid), and per data set whose done cells were scored against more than one
    reference statistics file (the reference changed): such values are not comparable with one another. Cells on
    different data sets (Table 5's resolutions) have different files by design."""
    by_space: dict[str, dict[str, dict[str, list[str]]]] = {}
    for cell_id, result in collected.results.items():
        if (result or {}).get("status") != "done":
            continue
        for row in result.get("rows") or []:
            if is_frechet(row.get("metric")) and stats_name(row):
                space = str(row.get("feature_space"))
                data, _ = split_reference_stats_name(stats_name(row), space)
                files = by_space.setdefault(space, {}).setdefault(data, {})
                files.setdefault(stats_name(row), []).append(cell_id)
    warnings = []
    for space, by_data in by_space.items():
        every = {name: ids for files in by_data.values() for name, ids in files.items()}
        classifiers = {split_reference_stats_name(name, space)[1] for name in every}
        if len(classifiers) > 1:
            warnings.append(_mixed(f"cells in feature space {space} were scored by {len(classifiers)} different "
                                   "reference classifiers (retrained between them)", every))
        else:
            warnings += [_mixed(f"cells on data set {data} in feature space {space} were scored against "
                                f"{len(files)} different reference statistics", files)
                         for data, files in by_data.items() if len(files) > 1]
    return warnings


def _mixed(what: str, files: dict[str, list[str]]) -> str:
    return (f"{what}: " + "; ".join(f"{name}: {', '.join(dict.fromkeys(ids))}" for name, ids in files.items())
            + ". Their values are not comparable with one another")


def _datasets(cells: list) -> list[tuple[str, str]]:
    """The data sets: the cells grouped by description, each group named by the axis values it shares."""
    groups: dict[str, list] = {}
    for cell in cells:
        groups.setdefault(data_description(cell.config), []).append(cell)
    if len(groups) == 1:
        return [(description, "every cell") for description in groups]
    datasets = []
    for description, members in groups.items():
        shared = [f"{axis} {value}" for axis, value in members[0].labels.items()
                  if all(m.labels[axis] == value for m in members)]
        datasets.append((description, ", ".join(shared) if shared else f"{len(members)} cells"))
    return datasets


def _evaluation(cells: list, done: pd.DataFrame) -> str:
    """What the grid sweeps, and what the reported (best) points used."""
    ev = cells[0].eval if cells else {}
    sampler = _distinct(done["sampler"]) or [ev.get("sampler", "?")]
    steps = _distinct(done["steps"]) or [ev.get("steps", "?")]
    parts = [f"sampler {_join(sampler)}, {_join(steps)} steps"]
    nfe = _distinct(done["nfe"])
    if nfe:
        parts[-1] += f" (NFE {_join(int(n) for n in nfe)})"
    final = _distinct(done["final_step"])
    if final:  # euler: the release's last step (leaves a sample_t_eps residual); x: lands on the x prediction
        parts[-1] += f", final step {_join(final)}"
    scored_at = _distinct(done["score_resolution"])
    if scored_at:
        parts.append(f"samples resized to {_join(int(r) for r in scored_at)}px before the features")
    if ev.get("cfg") is not None:
        parts.append(f"CFG scale swept over {ev['cfg']} with interval(s) {ev.get('cfg_interval', '?')}")
    chosen = _distinct(done.loc[done["metric"].map(is_frechet), "cfg_scale"])
    if chosen:
        parts.append(f"reported: each cell's best point (lowest Frechet distance), CFG {_join(sorted(chosen))}")
    emas = _distinct(done["ema"])
    if emas:
        parts.append(f"EMA {_join(emas)}")
    elif ev.get("ema") is not None:
        parts.append(f"EMA index {ev['ema']}")
    seeds = _distinct(done["seed"])
    if seeds:
        parts.append(f"sampling seed {_join(seeds)}")
    return "; ".join(parts)


def _training(collected: Collected, done: pd.DataFrame) -> str:
    fit = FitView.of(collected.plain_cells[0].config if collected.plain_cells else {})
    steps_done = sorted({int(s) for s in _per_training(done)["step"].dropna()})
    training = f"max_steps {fit.trainer.get('max_steps', '?')}, global batch {fit.data.get('global_batch_size', '?')}"
    if steps_done:
        training += f"; the reported checkpoints are at step {_join(steps_done)}"
    seeds = collected.train_seeds
    if seeds > 1:
        ran = _per_training(collected.frame)
        ran = ran[ran["status"] != NOT_RUN].groupby("cell", sort=False).size()
        counts = sorted(set(ran)) or [0]
        some = " or ".join(filter(None, [_join(counts[:-1]), _join(counts[-1:])]))  # "1, 2 or 3"
        training += (f"; training seeds 0-{seeds - 1} (`seed_everything` + K), {some} of them with a result per cell: "
                     f"each table shows the mean ± sd over a cell's trainings, every training in the table of seeds")
    else:
        training += "; one training per cell (training seed 0): a cell's value is one training, not a mean"
    return training


def _per_training(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop_duplicates(["cell", "train_seed"])


def _compute(frame: pd.DataFrame) -> str:
    per = _per_training(frame)
    reused = per["reused_from"].notna()
    own = per[~reused]
    train, total = own["train_seconds"].dropna(), own["seconds"].dropna()
    unit = "trainings" if len(per) > per["cell"].nunique() else "cells"
    compute = (f"{clock(train.sum())} of training summed over {len(train)} {unit}"
               + (f" ({clock(total.sum())} with evaluation)" if len(total) else "")) if len(train) else "none recorded"
    if reused.any():
        borrowed = per.loc[reused, "train_seconds"].dropna()
        compute += (f"; {int(reused.sum())} more cell(s) reuse the identical run of another grid "
                    f"({clock(borrowed.sum())} of training, counted there)")
    return compute


def _notes(collected: Collected) -> list[str]:
    notes = []
    if collected.stale:
        notes.append(f"{len(collected.stale)} cell(s) were run with a config other than the one the grid file "
                     f"gives now (stale; re-run them after moving their directories): {', '.join(collected.stale)}")
    if collected.strays:
        notes.append(f"ignored {len(collected.strays)} run director(ies) of cells this grid does not have: "
                     f"{', '.join(collected.strays)}")
    return notes + mixed_references(collected)


def provenance(collected: Collected) -> Provenance:
    spec, scale, frame = collected.spec, collected.scale, collected.frame
    cells = collected.plain_cells
    metrics = _distinct(frame["metric"])
    features = next((c.eval["features"] for c in cells if c.eval.get("features") is not None), None)
    notes = [metric_note(m, features) for m in metrics] + feature_notes(frame)
    samples = sorted({int(v) for v in frame.loc[frame["metric"].notna(), "n_samples"].dropna()})
    done = frame[frame["status"] == "done"]

    flat = [flatten(c.config) for c in cells]
    keys = sorted(set().union(*flat)) if flat else []
    varies = [k for k in keys if len({f.get(k) for f in flat}) > 1]

    scale_flag = f" --scale {scale}"
    runs_flag = "" if str(collected.runs) == "runs/grids" else f" --runs {collected.runs}"
    data_root = " --data_root DIR" if any("ImageNet" in data_description(c.config) for c in cells) else ""
    more = collected.train_seeds > spec.train_seeds(scale)
    seeds_flag = f" --train_seeds {collected.train_seeds}" if more else ""
    commands = [f"jitlab grid run {spec.name}{scale_flag}{runs_flag}{data_root}{seeds_flag}",
                f"jitlab report {spec.name}{scale_flag}{runs_flag}"]

    per = _per_training(frame)
    finished = _distinct(per["finished_at"])
    counts = {s: int(n) for s, n in sorted(per["status"].value_counts().items(),
                                           key=lambda item: (item[0] != "done", item[0] == NOT_RUN, item[0]))}

    paper = (spec.paper_metric or "no metric") + (f"; {spec.paper_note}" if spec.paper_note else "")

    return Provenance(
        scale=scale, why=" ".join(str(spec.scales.get(scale, {}).get("why", "")).split()),
        datasets=_datasets(cells), metrics=metrics, metric_notes=notes, samples=samples,
        evaluation=_evaluation(cells, done), training=_training(collected, done), varies=varies,
        commands=commands, generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        last_finished=max(finished) if finished else None, compute=_compute(frame), counts=counts, paper=paper,
        notes=_notes(collected), history=[change.text() for change in spec.history])
