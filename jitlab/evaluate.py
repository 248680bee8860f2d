"""`jitlab eval`: score a checkpoint over a sweep of EMA x CFG scale x CFG interval; write metrics.json.

Every point generates its images in memory (uint8, as a PNG round trip leaves them), scores them
with torchmetrics (``jitlab.metrics``), and records sampler, steps, NFE, final step, precision, score
resolution, number of samples, seed, EMA and CFG settings and the checkpoint step. The best point (lowest
Frechet distance) is named. Every input is checked before the first forward; ``metrics.json`` is written
(atomically) after each finished point, and a rerun with the same ``--out`` skips the points already in it.
Under ``torchrun`` each process generates a disjoint slice of the global indices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from jitlab import atomic
from jitlab.errors import ConfigError
from jitlab.generate import (Parser, SamplerSettings, add_sampler_flags, check_at_least, check_cfg, check_device,
                             check_ema, check_output, dist_info, generate_uint8, labels_for, parse_ema,
                             parse_resolution, rank_indices, read_jitlab_checkpoint, report_error)
from jitlab.metrics.features import FeatureExtractor


def parse_interval(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        interval = (float(low), float(high))
    except ValueError:
        interval = (1.0, 0.0)  # not two numbers: reported below
    if not 0 <= interval[0] < interval[1] <= 1:
        raise argparse.ArgumentTypeError(f"a CFG interval is 'T_MIN,T_MAX' with 0 <= T_MIN < T_MAX <= 1, got {text!r}")
    return interval


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="jitlab eval", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a jitlab checkpoint")
    p.add_argument("--features", choices=["refnet", "inception"], default="refnet",
                   help="refnet: FD-ref in a classifier trained on the embedded data; inception: FID (needs weights)")
    p.add_argument("--num_images", type=int, default=500, help="generated images per sweep point")
    p.add_argument("--ema", type=parse_ema, nargs="+", default=[0], help="EMA indices to try (0, 1, none)")
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0], help="CFG scales to try")
    p.add_argument("--cfg_interval", type=parse_interval, nargs="+", default=[(0.1, 1.0)],
                   help="CFG intervals to try, each as T_MIN,T_MAX")
    add_sampler_flags(p)
    p.add_argument("--score_resolution", type=parse_resolution, default=None,
                   help="resize generated and real images to this side before the features (and use this "
                        "resolution's refnet); None: the checkpoint's resolution")
    p.add_argument("--batch_size", type=int, default=100, help="images per forward")
    p.add_argument("--is", dest="inception_score", action="store_true", help="also the Inception Score")
    p.add_argument("--ref_stats", type=Path, default=None,
                   help="reference statistics .npz (keys mu, sigma); None: built from the checkpoint's data")
    p.add_argument("--ref_images", type=int, default=5000, help="real images for built reference statistics")
    p.add_argument("--inception_weights", default=None, help="torch-fidelity InceptionV3 weights file")
    p.add_argument("--out", type=Path, default=None, help="metrics.json (None: beside the checkpoint)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    return p


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

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint  # the same weights; built statistics are cached per data resolution too

    def extract(self, images: Tensor) -> dict[str, Tensor]:
        return self.inner.extract(resize_uint8(images, self.score_resolution))


def reference_stats(args: argparse.Namespace, extractor, data: dict | None):
    """Load ``--ref_stats``, or build (and cache) statistics of real images of the checkpoint's data."""
    from jitlab.metrics.stats import dataset_stats, load_stats

    if args.ref_stats is not None:
        return load_stats(args.ref_stats, extractor)
    if data is None or "kind" not in data:
        raise KeyError("no --ref_stats given and the checkpoint's data are not an embedded data set")
    from jitlab.data.embedded import make_dataset

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jitlab" / "stats"
    name = f"{data['kind']}-{data['resolution']}-{extractor.fingerprint}-{args.ref_images}.npz".replace("/", "_")
    path = cache / name
    if path.exists():
        return load_stats(path, extractor)
    # real images from a split no training or validation run draws (seed + 2)
    dataset = make_dataset(data["kind"], data["resolution"], args.ref_images, int(data.get("seed", 0)) + 2)
    return dataset_stats(dataset, extractor, path, device=args.device)


def instruments(features: str, data: dict | None, inception_weights: str | None, ref_stats: Path | None,
                ref_images: int, device: str, score_resolution: int | None = None):
    """The feature extractor and the reference statistics (shared by `jitlab eval` and PeriodicEval).

    ``score_resolution``: every image (generated, and real for built statistics) is resized to it before the
    features, and the refnet is that resolution's; None: the data's resolution, no resizing.
    """
    from jitlab.metrics.features import build_extractor

    if features == "refnet":
        if not data:
            raise KeyError("the checkpoint records no data module; pass --ref_stats to score against a statistics file")
        extractor = build_extractor("refnet", kind=data.get("kind", "shapes"),
                                    resolution=score_resolution or data["resolution"])
    else:
        extractor = build_extractor("inception", inception_weights=inception_weights)
    if score_resolution is not None:
        extractor = ScoredAt(extractor, score_resolution)
    extractor = extractor.to(device)
    args = argparse.Namespace(ref_stats=ref_stats, ref_images=ref_images, device=device)
    return extractor, reference_stats(args, extractor, data)


# -- rows ---------------------------------------------------------------------------------------------------

def point_key(row: dict) -> tuple:
    """What a row measured; rows older than an option count as its default."""
    return (row["metric"], row["ema"], row["cfg_scale"], tuple(row["cfg_interval"]), row["sampler"], row["steps"],
            row["seed"], row["n_samples"], row["step"], row.get("final_step", "euler"), row.get("precision", "fp32"),
            row.get("score_resolution"))


def same_measurement(row: dict) -> tuple:
    """``point_key`` plus against what and of which checkpoint: a rerun skips a point only when all agree."""
    return point_key(row) + (row.get("feature_space"), row.get("reference"), row.get("checkpoint"))


def write_json(path: Path, payload: dict) -> None:
    """Atomic: write a temporary file, then rename; a reader never sees half a file."""
    atomic.write_json(path, payload)


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
    """The lowest Frechet distance among the rows of the newest row's Frechet metric (same name, same count)."""
    frechet = [r for r in rows if r["metric"].startswith(("FID", "FD"))]
    if not frechet:
        return None
    same = [r for r in frechet if r["metric"] == frechet[-1]["metric"]]
    return min(same, key=lambda r: r["value"])


def score_samples(module, indices: list[int], settings: SamplerSettings, extractor, ref, batch_size: int,
                  inception_score: bool = False, progress: bool = False) -> list[dict]:
    """Generate this process's slice of images, score them (synced over processes) and record the settings."""
    from jitlab.metrics.scores import SampleScores

    labels = labels_for(indices, module.null_class)
    scores = SampleScores(extractor, reference=ref.pair, inception_score=inception_score).to(module.device)
    for _, images, _ in generate_uint8(module, indices, labels, settings, batch_size, progress=progress):
        scores.update(images.to(module.device))
    accuracy = getattr(extractor, "accuracy", None)  # refnet only: the report states what its features can tell
    feature = {} if accuracy is None else {"feature_accuracy": round(float(accuracy), 4)}
    scored_at = {"score_resolution": getattr(extractor, "score_resolution", None)}
    return [{**result, **settings.record(), **scored_at, **feature} for result in scores.compute()]


# -- the sweep ------------------------------------------------------------------------------------------------

def evaluate(args: argparse.Namespace, on_point: Callable[[list[dict]], None] | None = None,
             done: list[dict] | None = None) -> dict:
    """Score every point of the sweep; ``on_point(rows)`` after each; points whose rows are in ``done`` are skipped."""
    from jitlab.checkpoint import load_module
    from jitlab.metrics.scores import metric_name

    rank, world = dist_info()
    ckpt = read_jitlab_checkpoint(args.ckpt)
    decays = check_ema(ckpt, args.ema, args.ckpt)
    data = ckpt.get("datamodule_hyper_parameters") or None
    extractor, ref = instruments(args.features, data, args.inception_weights, args.ref_stats, args.ref_images,
                                 args.device, args.score_resolution)
    finished = {same_measurement(r) for r in done or []}
    kinds = ["frechet"] + (["inception_score"] if args.inception_score else [])
    common = {"n_samples": args.num_images, "step": int(ckpt.get("global_step", 0)), "checkpoint": str(args.ckpt),
              "score_resolution": args.score_resolution, "feature_space": extractor.name,
              "reference": str(ref.path) if ref.path else None}
    points = [(ema, SamplerSettings(args.sampler, args.steps, cfg_scale, interval, args.seed, args.final_step,
                                    args.precision))
              for ema, cfg_scale, interval in itertools.product(args.ema, args.cfg, args.cfg_interval)]
    rows: list[dict] = []
    indices = rank_indices(args.num_images, rank, world)
    started, module, loaded, count = time.time(), None, object(), 0
    for number, (ema, settings) in enumerate(points, 1):
        ema_value = "none" if ema is None else decays[ema]
        planned = [{"metric": metric_name(extractor.metric_names[k], args.num_images), "ema": ema_value,
                    **settings.record(), **common} for k in kinds]
        if all(same_measurement(p) in finished for p in planned):
            if rank == 0:
                print(f"jitlab eval: point {number}/{len(points)} (ema {ema}, cfg {settings.cfg_scale}, interval "
                      f"{settings.cfg_interval}) is in the results already: skipped", flush=True)
            continue
        if loaded != ema:  # once per EMA, not per point
            module, loaded = load_module(args.ckpt, ema=ema, device=args.device, ckpt=ckpt), ema
        results = score_samples(module, indices, settings, extractor, ref, args.batch_size,
                                args.inception_score, progress=rank == 0)
        point = [{**r, "ema": ema_value, "step": module.checkpoint_step, "checkpoint": common["checkpoint"],
                  "reference": common["reference"]} for r in results]
        rows += point
        if on_point is not None:
            on_point(point)
        count += 1
        if rank == 0:
            elapsed = time.time() - started
            left = len(points) - number
            print(f"jitlab eval: point {number}/{len(points)} (ema {ema}, cfg {settings.cfg_scale}, interval "
                  f"{settings.cfg_interval}): " + ", ".join(f"{r['metric']} {r['value']:.4g}" for r in results)
                  + f"  [{elapsed:.0f}s, at most ~{elapsed / count * left:.0f}s left]", flush=True)
    return {"rows": rows}


def check_args(args: argparse.Namespace) -> Path:
    """Everything that needs no checkpoint; returns the metrics.json path."""
    check_at_least("--num_images", args.num_images, 2, " (a Frechet distance needs two images)")
    check_at_least("--steps", args.steps, 1)
    check_at_least("--batch_size", args.batch_size, 1)
    if args.ref_stats is None:
        check_at_least("--ref_images", args.ref_images, 2)
    check_cfg(args.cfg, args.cfg_interval)
    out = args.out or Path(args.ckpt).with_name("metrics.json")
    check_output("--out", out)
    check_device(args.device)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank, world = dist_info()
    if args.device == "cuda" and world > 1:  # torchrun: one GPU per process, as `jitlab sample`
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        out = check_args(args)
        done = read_rows(out)
    except ConfigError as error:
        return report_error(error)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")

    def write_point(point: list[dict]) -> None:  # every finished point is kept, whatever happens later
        if rank == 0:
            rows = merge_rows(out, point)
            write_json(out, {"rows": rows, "best": best_row(rows)})

    try:
        result = evaluate(args, write_point, done)
    except (KeyError, FileNotFoundError, ValueError) as error:  # ConfigError is a ValueError
        return report_error(error)
    if rank == 0:
        rows = read_rows(out) if out.exists() else []
        best = best_row(rows)
        print(f"jitlab eval: wrote {len(result['rows'])} rows to {out}"
              + (f"; best: {best['metric']} {best['value']:.4g} (ema {best['ema']}, cfg {best['cfg_scale']}, "
                 f"interval {best['cfg_interval']})" if best else ""))
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
