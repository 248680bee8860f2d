"""What produced a report: scale, data set, metric and sample count, evaluation, training, commands, compute.

Read from the cells' configs (what the grid file asks for) and their result.json files (what ran).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from jitlab.grid.seeds import stats_name, summary_line
from jitlab.report.collect import NOT_RUN, Collected, is_frechet
from jitlab.report.verdict_sweeps import tie_margin


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
    notes: list[str] = field(default_factory=list)
    seed_spread: str | None = None  # the metric's measured sampling-seed spread (`jitlab grid seeds`), if any

    @property
    def metric(self) -> str:
        """Our Frechet metric name(s), e.g. 'FD-ref-500' (joined with ' / ' when cells differ)."""
        frechet = [m for m in self.metrics if is_frechet(m)] or self.metrics
        return " / ".join(frechet) if frechet else "no metric yet"


def data_description(config: dict[str, Any]) -> str:
    data = config.get("data") or {}
    cls = str(data.get("class_path", "?")).rsplit(".", 1)[-1]
    args = data.get("init_args") or {}
    res = args.get("resolution")
    size = f"{res}x{res}" if res is not None else "?"
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
    return f"{metric}: as recorded by `jitlab eval`."


def feature_notes(frame: pd.DataFrame) -> list[str]:
    """One line per classifier feature space: its validation accuracy, when the evaluation recorded it."""
    if "feature_accuracy" not in frame:
        return []
    rows = frame.dropna(subset=["feature_accuracy"]).drop_duplicates("feature_space")
    return [f"{r['feature_space']}: the reference classifier's validation accuracy is "
            f"{float(r['feature_accuracy']):.1%} (how well its features tell the data set's classes apart)"
            for _, r in rows.iterrows()]


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = json.dumps(value, sort_keys=True, default=str)
    return out


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _join(values) -> str:
    return ", ".join(_plain(v) for v in values)


def _distinct(series: pd.Series) -> list:
    return list(dict.fromkeys(v for v in series if not (isinstance(v, float) and math.isnan(v)) and v is not None))


def mixed_references(collected: Collected) -> list[str]:
    """A warning per feature space whose done cells were scored against more than one reference statistics file.

    The file's name carries the reference classifier's config key and weights digest, so two names in one feature
    space mean the classifier was retrained between cells (or a cell reused another grid's run scored with another
    one): such values are not comparable with one another.
    """
    by_space: dict[str, dict[str, list[str]]] = {}
    for cell_id, result in collected.results.items():
        if (result or {}).get("status") != "done":
            continue
        for row in result.get("rows") or []:
            if is_frechet(row.get("metric")) and stats_name(row):
                space = by_space.setdefault(str(row.get("feature_space")), {})
                space.setdefault(stats_name(row), []).append(cell_id)
    return [f"cells in feature space {space} were scored against {len(refs)} different reference statistics "
            f"(a reference classifier retrained between them): "
            + "; ".join(f"{name}: {', '.join(dict.fromkeys(ids))}" for name, ids in refs.items())
            + ". Their values are not comparable with one another"
            for space, refs in by_space.items() if len(refs) > 1]


def provenance(collected: Collected) -> Provenance:
    spec, scale, frame = collected.spec, collected.scale, collected.frame
    cells = collected.cells

    # data sets: group the cells by description, name each group by the axis values they share
    groups: dict[str, list] = {}
    for cell in cells:
        groups.setdefault(data_description(cell.config), []).append(cell)
    datasets = []
    for description, members in groups.items():
        if len(groups) == 1:
            datasets.append((description, "every cell"))
            continue
        shared = [f"{axis} {value}" for axis, value in members[0].labels.items()
                  if all(m.labels[axis] == value for m in members)]
        datasets.append((description, ", ".join(shared) if shared else f"{len(members)} cells"))

    metrics = _distinct(frame["metric"])
    features = _distinct(pd.Series([c.eval.get("features") for c in cells]))
    notes = [metric_note(m, features[0] if features else None) for m in metrics] + feature_notes(frame)
    samples = sorted({int(v) for v in frame.loc[frame["metric"].notna(), "n_samples"].dropna()})

    # evaluation: what the grid sweeps, and what the reported (best) points used
    ev = cells[0].eval if cells else {}
    done = frame[frame["status"] == "done"]
    parts = []
    sampler = _distinct(done["sampler"]) or [ev.get("sampler", "?")]
    steps = _distinct(done["steps"]) or [ev.get("steps", "?")]
    parts.append(f"sampler {_join(sampler)}, {_join(steps)} steps")
    nfe = _distinct(done["nfe"])
    if nfe:
        parts[-1] += f" (NFE {_join(int(n) for n in nfe)})"
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
    evaluation = "; ".join(parts)

    # training
    trainer = (cells[0].config.get("trainer") or {}) if cells else {}
    data_args = ((cells[0].config.get("data") or {}).get("init_args") or {}) if cells else {}
    steps_done = sorted({int(s) for s in done.drop_duplicates("cell")["step"].dropna()})
    training = f"max_steps {trainer.get('max_steps', '?')}, global batch {data_args.get('global_batch_size', '?')}"
    if steps_done:
        training += f"; the reported checkpoints are at step {_join(steps_done)}"

    flat = [flatten(c.config) for c in cells]
    keys = sorted(set().union(*flat)) if flat else []
    varies = [k for k in keys if len({f.get(k) for f in flat}) > 1]

    scale_flag = f" --scale {scale}"
    runs_flag = "" if str(collected.runs) == "runs/grids" else f" --runs {collected.runs}"
    data_root = " --data-root DIR" if any("ImageNet" in data_description(c.config) for c in cells) else ""
    commands = [f"jitlab grid run {spec.name}{scale_flag}{runs_flag}{data_root}",
                f"jitlab report {spec.name}{scale_flag}{runs_flag}"]

    per_cell = frame.drop_duplicates("cell")
    reused = per_cell["reused_from"].notna()
    own = per_cell[~reused]
    train, total = own["train_seconds"].dropna(), own["seconds"].dropna()
    compute = (f"{clock(train.sum())} of training summed over {len(train)} cells"
               + (f" ({clock(total.sum())} with evaluation)" if len(total) else "")) if len(train) else "none recorded"
    if reused.any():
        borrowed = per_cell.loc[reused, "train_seconds"].dropna()
        compute += (f"; {int(reused.sum())} more cell(s) reuse the identical run of another grid "
                    f"({clock(borrowed.sum())} of training, counted there)")
    finished = _distinct(per_cell["finished_at"])
    counts = {status: int((per_cell["status"] == status).sum()) for status in _distinct(per_cell["status"])}
    counts = {k: counts[k] for k in sorted(counts, key=lambda s: (s != "done", s == NOT_RUN, s))}

    paper = f"{spec.paper_metric or 'no metric'}"
    if spec.paper_note:
        paper += f"; {spec.paper_note}"

    notes_extra = []
    if collected.stale:
        notes_extra.append(f"{len(collected.stale)} cell(s) were run with a config other than the one the grid file "
                           f"gives now (stale; re-run them after moving their directories): "
                           f"{', '.join(collected.stale)}")
    if collected.strays:
        notes_extra.append(f"ignored {len(collected.strays)} run director(ies) of cells this grid does not have: "
                           f"{', '.join(collected.strays)}")

    notes_extra += mixed_references(collected)

    return Provenance(
        scale=scale, why=" ".join(str(spec.scales.get(scale, {}).get("why", "")).split()), datasets=datasets,
        metrics=metrics, metric_notes=notes, samples=samples, evaluation=evaluation, training=training,
        varies=varies, commands=commands, generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        last_finished=max(finished) if finished else None, compute=compute, counts=counts, paper=paper,
        notes=notes_extra,
        seed_spread=summary_line(cells, collected.runs, tie_margin(spec.name)),
    )
