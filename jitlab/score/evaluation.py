"""Scoring a checkpoint: the library behind `jitlab eval`, the periodic evaluation and the grids.

``evaluate(ckpt, settings)`` runs the sweep EMA x CFG scale x CFG interval of an ``EvalSettings``: every point
generates its images (uint8, as a PNG round trip leaves them; in memory, or as resumable shards), scores them
with torchmetrics (``jitlab.score.metrics``), and records sampler, steps, NFE, final step, precision, score
resolution, number of samples, seed, EMA and CFG settings and the checkpoint step. Under ``torchrun`` each
process generates a disjoint slice of the global indices and the metric states sync.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from jitlab import atomic
from jitlab.errors import ConfigError
from jitlab.score.generate import check_ema, dist_info, generate_uint8, labels_for, rank_indices, read_jitlab_checkpoint
from jitlab.score.metrics.features import FeatureExtractor
from jitlab.rows import is_frechet, point_key, same_measurement
from jitlab.core.settings import EvalSettings, Features, SamplerSettings, ScoreSettings
from jitlab.score.shards import ShardStore, block_indices, block_size, sharded_uint8


# -- one feature space for every resolution -------------------------------------------------------------------

def resize_uint8(images: Tensor, resolution: int) -> Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, R, R), the one resize for real and generated images alike.

    Downsampling averages each output pixel's input window ("area": the exact box filter for the integer factors
    of Table 5, 64 -> 32 is the mean of 2x2 pixels); upsampling is antialiased bilinear. Rounded back to uint8.
    """
    if tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    x = images.float()  # (N, 3, H, W)
    if min(images.shape[-2:]) >= resolution:
        x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="area")  # (N, 3, R, R)
    else:
        x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)  # (N, 3, R, R)


class ScoredAt(FeatureExtractor):
    """A feature extractor that sees every image resized to ``score_resolution`` first (Table 5: one space)."""

    def __init__(self, inner: FeatureExtractor, score_resolution: int):
        super().__init__()
        self.inner = inner
        self.score_resolution = score_resolution
        self.name, self.num_features, self.metric_names = inner.name, inner.num_features, inner.metric_names
        self.has_logits, self.logits_dim = inner.has_logits, inner.logits_dim
        self.accuracy = getattr(inner, "accuracy", None)
        self.digest = getattr(inner, "digest", None)

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint  # the same weights; built statistics are cached per data resolution too

    def extract(self, images: Tensor) -> dict[str, Tensor]:
        return self.inner.extract(resize_uint8(images, self.score_resolution))


def reference_stats_name(kind: str, resolution: int, fingerprint: str, n: int) -> str:
    """The cached statistics file of ``n`` real images of an embedded data set in one extractor's features."""
    return f"{kind}-{resolution}-{fingerprint}-{n}.npz".replace("/", "_")


def split_reference_stats_name(name: str, space: str) -> tuple[str, str]:
    """``reference_stats_name``'s (data set, classifier) parts, the fingerprint starting with the feature space's
    name; a name in another layout (a user's ``ref_stats``) is its own data set and classifier."""
    at = name.find(f"-{space.replace('/', '_')}-")
    if at < 0:
        return name, name
    return name[:at], name[at + 1:].rsplit("-", 1)[0]


def reference_stats(score: ScoreSettings, extractor, data: dict | None, device: str):
    """Load ``score.ref_stats``, or build (and cache) statistics of real images of the checkpoint's data."""
    from jitlab.score.metrics.stats import dataset_stats, load_stats

    if score.ref_stats is not None:
        return load_stats(score.ref_stats, extractor)
    if data is None or "kind" not in data:
        raise KeyError("no --ref_stats given and the checkpoint's data are not an embedded data set")
    from jitlab.core.data.embedded import make_dataset

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jitlab" / "stats"
    name = reference_stats_name(data["kind"], data["resolution"], extractor.fingerprint, score.ref_images)
    path = cache / name
    if path.exists():
        return load_stats(path, extractor)
    # real images from a split no training or validation run draws (seed + 2)
    dataset = make_dataset(data["kind"], data["resolution"], score.ref_images, int(data.get("seed", 0)) + 2)
    return dataset_stats(dataset, extractor, path, device=device)


def instruments(score: ScoreSettings, data: dict | None, device: str):
    """The feature extractor and the reference statistics (shared by `jitlab eval` and PeriodicEval).

    ``score.score_resolution``: every image (generated, and real for built statistics) is resized to it before
    the features, and the refnet is that resolution's; None: the data's resolution, no resizing.
    """
    from jitlab.score.metrics.features import build_extractor

    if score.features == Features.refnet:
        if not data:
            raise KeyError("the checkpoint records no data module; pass --ref_stats to score against a statistics file")
        extractor = build_extractor("refnet", kind=data.get("kind", "shapes"),
                                    resolution=score.score_resolution or data["resolution"])
    else:
        extractor = build_extractor("inception", inception_weights=score.inception_weights)
    if score.score_resolution is not None:
        extractor = ScoredAt(extractor, score.score_resolution)
    extractor = extractor.to(device)
    return extractor, reference_stats(score, extractor, data, device)


# -- rows ---------------------------------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text())["rows"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError("--out", f"{path} exists but is not a metrics.json of `jitlab eval` (no 'rows'); "
                          f"move it away or name another file") from None


def merge_rows(path: Path, rows: list[dict]) -> list[dict]:
    """Earlier points stay; a point measured again with identical settings is replaced."""
    new_keys = {point_key(r) for r in rows}
    return [r for r in read_rows(path) if point_key(r) not in new_keys] + rows


def best_row(rows: list[dict]) -> dict | None:
    """The lowest Frechet distance among the rows of the newest row's Frechet metric (same name, same count);
    without a Frechet distance (``features: spiral``) the lowest of the first row's metric."""
    frechet = [r for r in rows if is_frechet(r["metric"])] or [r for r in rows if r["metric"] == rows[0]["metric"]]
    if not frechet:
        return None
    same = [r for r in frechet if r["metric"] == frechet[-1]["metric"]]
    return min(same, key=lambda r: r["value"])


def write_rows(path: Path, rows: list[dict]) -> None:
    """Merge ``rows`` into the metrics.json at ``path`` and name its best point (atomically)."""
    merged = merge_rows(path, rows)
    atomic.write_json(path, {"rows": merged, "best": best_row(merged)})


def score_samples(module, indices: list[int], settings: SamplerSettings, extractor, ref, batch_size: int,
                  inception_score: bool = False, progress: bool = False,
                  shards: ShardStore | None = None) -> list[dict]:
    """Generate this process's slice of images (or load it from ``shards``), score them (synced over processes)
    and record the settings."""
    from jitlab.score.metrics.scores import SampleScores

    labels = labels_for(indices, module.null_class)
    scores = SampleScores(extractor, reference=ref.pair, inception_score=inception_score).to(module.device)
    if shards is None:
        batches = generate_uint8(module, indices, labels, settings, batch_size, progress=progress)
    else:
        batches = sharded_uint8(module, shards, indices, labels, settings, batch_size, progress=progress)
    for _, images, _ in batches:
        scores.update(images.to(module.device))
    accuracy = getattr(extractor, "accuracy", None)  # refnet only: the report states what its features can tell
    feature = {} if accuracy is None else {"feature_accuracy": round(float(accuracy), 4)}
    if getattr(extractor, "digest", None):  # the classifier's weights (sha256): reports name the instrument
        feature["feature_digest"] = extractor.digest
    scored_at = {"score_resolution": getattr(extractor, "score_resolution", None)}
    return [{**result, **settings.record(), **scored_at, **feature} for result in scores.compute()]


# -- the sweep ------------------------------------------------------------------------------------------------

def evaluate(ckpt_path: str | Path, settings: EvalSettings, on_point: Callable[[list[dict]], None] | None = None,
             done: list[dict] | None = None, shards: Path | None = None, shard_size: int | None = None) -> list[dict]:
    """Score every point of the sweep; ``on_point(rows)`` after each; points whose rows are in ``done`` are skipped.

    ``shards``: keep each point's images as shards under this directory while it runs (a rerun resumes from
    them; removed once the point's rows are written); ``shard_size`` images each (None: 10 batches; at most
    a process's share).
    """
    from jitlab.train.checkpoint import load_module
    from jitlab.score.metrics.scores import metric_name

    if str(settings.score.features) == "spiral":
        return evaluate_spiral(ckpt_path, settings, on_point, done)
    rank, world = dist_info()
    device = settings.device or "cpu"
    score = settings.score
    ckpt = read_jitlab_checkpoint(ckpt_path)
    decays = check_ema(ckpt, settings.ema, ckpt_path)
    extractor, ref = instruments(score, ckpt.get("datamodule_hyper_parameters") or None, device)
    finished = {same_measurement(r) for r in done or []}
    kinds = ["frechet"] + (["inception_score"] if score.inception_score else [])
    step = int(ckpt.get("global_step", 0))
    common = {"n_samples": score.num_images, "step": step, "checkpoint": str(ckpt_path),
              "score_resolution": score.score_resolution, "feature_space": extractor.name,
              "reference": str(ref.path) if ref.path else None}
    size = block_size(score.num_images, world, score.batch_size, shard_size)
    indices = (rank_indices(score.num_images, rank, world) if shards is None
               else block_indices(score.num_images, size, rank, world))
    points = settings.points()
    rows: list[dict] = []
    started, module, loaded, count = time.time(), None, object(), 0
    for number, (ema, sampling) in enumerate(points, 1):
        ema_value = "none" if ema is None else decays[ema]
        where = (f"point {number}/{len(points)} (ema {ema_value}, cfg {sampling.cfg_scale}, "  # the decay, as the
                 f"interval {sampling.cfg_interval})")  # rows and the best line name it (--ema takes its index)
        planned = [{"metric": metric_name(extractor.metric_names[k], score.num_images), "ema": ema_value,
                    **sampling.record(), **common} for k in kinds]
        if all(same_measurement(p) in finished for p in planned):
            if rank == 0:
                print(f"jitlab eval: {where} is in the results already: skipped", flush=True)
            continue
        if loaded != ema:  # once per EMA, not per point
            module, loaded = load_module(ckpt_path, ema=ema, device=device, ckpt=ckpt), ema
        store = None if shards is None else ShardStore(Path(shards), {
            "checkpoint": module.checkpoint_path, "step": step, "ema": ema_value,
            "num_classes": module.null_class, **sampling.record()}, size)
        results = score_samples(module, indices, sampling, extractor, ref, score.batch_size, score.inception_score,
                                progress=rank == 0, shards=store)
        point = [{**r, "ema": ema_value, "step": module.checkpoint_step, "checkpoint": common["checkpoint"],
                  "reference": common["reference"]} for r in results]
        rows += point
        if on_point is not None:
            on_point(point)
        if store is not None and rank == 0:  # the rows are kept: the point's images are not needed again
            store.remove()
        count += 1
        if rank == 0:
            elapsed = time.time() - started
            print(f"jitlab eval: {where}: " + ", ".join(f"{r['metric']} {r['value']:.4g}" for r in results)
                  + f"  [{elapsed:.0f}s, at most ~{elapsed / count * (len(points) - number):.0f}s left]", flush=True)
    return rows


def evaluate_spiral(ckpt_path: str | Path, settings: EvalSettings, on_point: Callable[[list[dict]], None] | None = None,
                    done: list[dict] | None = None) -> list[dict]:
    """Figure 2's scoring (``features: spiral``): per point, ``num_images`` generated vectors against fresh true
    spiral points after ``P^T`` (``Chamfer-N``) and their mean distance from the plane (``residual-N``). The
    Chamfer row keeps the points on the plane for the report's scatter panels."""
    from jitlab.core.data.toy import SpiralDataModule
    from jitlab.score.metrics.spiral import spiral_scores
    from jitlab.train.checkpoint import load_module

    ckpt = read_jitlab_checkpoint(ckpt_path)
    decays = check_ema(ckpt, settings.ema, ckpt_path)
    hparams = ckpt.get("datamodule_hyper_parameters") or {}
    data = SpiralDataModule(**{k: v for k, v in hparams.items() if not k.startswith("_")})  # not _class_path
    n = settings.score.num_images
    finished = {same_measurement(r) for r in done or []}
    rows: list[dict] = []
    for ema, sampling in settings.points():
        module = load_module(ckpt_path, ema=ema, device=settings.device or "cpu", ckpt=ckpt)
        common = {"ema": "none" if ema is None else decays[ema], **sampling.record(), "n_samples": n,
                  "step": module.checkpoint_step, "checkpoint": str(ckpt_path), "score_resolution": None,
                  "feature_space": "spiral", "reference": None}
        if same_measurement({"metric": f"Chamfer-{n}", **common}) in finished:
            continue
        x = module.generate(range(n), None, **sampling.generate_kwargs())  # (n, D)
        values, plane = spiral_scores(x, data)  # plane: (n, 2)
        point = [{"metric": f"Chamfer-{n}", "value": values["chamfer"], **common,
                  "points": [[round(a, 4), round(b, 4)] for a, b in plane.tolist()]},
                 {"metric": f"residual-{n}", "value": values["residual"], **common}]
        rows += point
        if on_point is not None:
            on_point(point)
        print(f"jitlab eval: ema {common['ema']}: " + ", ".join(f"{r['metric']} {r['value']:.4g}" for r in point),
              flush=True)
    return rows
