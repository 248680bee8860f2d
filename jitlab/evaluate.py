"""`jitlab eval`: score a checkpoint over a sweep of EMA x CFG scale x CFG interval; write metrics.json.

Every point generates its images in memory (uint8, as a PNG round trip leaves them), scores them
with torchmetrics (``jitlab.metrics``), and records sampler, steps, NFE, number of samples, seed,
EMA and CFG settings and the checkpoint step. The best point (lowest Frechet distance) is named.
Under ``torchrun`` each process generates a disjoint slice of the global indices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import torch

from jitlab import atomic
from jitlab.generate import SamplerSettings, dist_info, generate_uint8, labels_for, rank_indices
from jitlab.sample import parse_ema
from jitlab.sampling import Sampler


def parse_interval(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    interval = (float(low), float(high))
    if not 0 <= interval[0] < interval[1] <= 1:
        raise argparse.ArgumentTypeError(f"a CFG interval is 'T_MIN,T_MAX' with 0 <= T_MIN < T_MAX <= 1, got {text!r}")
    return interval


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jitlab eval", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a jitlab checkpoint")
    p.add_argument("--features", choices=["refnet", "inception"], default="refnet",
                   help="refnet: FD-ref in a classifier trained on the embedded data; inception: FID (needs weights)")
    p.add_argument("--num_images", type=int, default=500, help="generated images per sweep point")
    p.add_argument("--ema", type=parse_ema, nargs="+", default=[0], help="EMA indices to try (0, 1, none)")
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0], help="CFG scales to try")
    p.add_argument("--cfg_interval", type=parse_interval, nargs="+", default=[(0.1, 1.0)],
                   help="CFG intervals to try, each as T_MIN,T_MAX (default 0.1,1.0)")
    p.add_argument("--sampler", type=Sampler, choices=list(Sampler), default=Sampler.heun)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--is", dest="inception_score", action="store_true", help="also the Inception Score")
    p.add_argument("--ref_stats", type=Path, default=None,
                   help="reference statistics .npz (keys mu, sigma); default: built from the checkpoint's data")
    p.add_argument("--ref_images", type=int, default=5000, help="real images for built reference statistics")
    p.add_argument("--inception_weights", default=None, help="torch-fidelity InceptionV3 weights file")
    p.add_argument("--out", type=Path, default=None, help="metrics.json (default: beside the checkpoint)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


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


def point_key(row: dict) -> tuple:
    return (row["metric"], row["ema"], row["cfg_scale"], tuple(row["cfg_interval"]), row["sampler"], row["steps"],
            row["seed"], row["n_samples"], row["step"])


def write_json(path: Path, payload: dict) -> None:
    """Atomic: write a temporary file, then rename; a reader never sees half a file."""
    atomic.write_json(path, payload)


def merge_rows(path: Path, rows: list[dict]) -> list[dict]:
    """Earlier points stay; a point measured again with identical settings is replaced."""
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    new_keys = {point_key(r) for r in rows}
    return [r for r in old if point_key(r) not in new_keys] + rows


def best_row(rows: list[dict]) -> dict | None:
    """The lowest Frechet distance among the rows of the newest row's Frechet metric (same name, same count)."""
    frechet = [r for r in rows if r["metric"].startswith(("FID", "FD"))]
    if not frechet:
        return None
    same = [r for r in frechet if r["metric"] == frechet[-1]["metric"]]
    return min(same, key=lambda r: r["value"])


def instruments(features: str, data: dict | None, inception_weights: str | None, ref_stats: Path | None,
                ref_images: int, device: str):
    """The feature extractor and the reference statistics (shared by `jitlab eval` and PeriodicEval)."""
    from jitlab.metrics.features import build_extractor

    if features == "refnet":
        if not data:
            raise KeyError("the checkpoint records no data module; pass --ref_stats to score against a statistics file")
        extractor = build_extractor("refnet", kind=data.get("kind", "shapes"), resolution=data["resolution"])
    else:
        extractor = build_extractor("inception", inception_weights=inception_weights)
    extractor = extractor.to(device)
    args = argparse.Namespace(ref_stats=ref_stats, ref_images=ref_images, device=device)
    return extractor, reference_stats(args, extractor, data)


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
    return [{**result, **settings.record(), **feature} for result in scores.compute()]


def evaluate(args: argparse.Namespace) -> dict:
    from jitlab.checkpoint import load_module, read_checkpoint

    rank, world = dist_info()
    ckpt = read_checkpoint(args.ckpt)
    data = ckpt.get("datamodule_hyper_parameters") or None
    extractor, ref = instruments(args.features, data, args.inception_weights, args.ref_stats, args.ref_images,
                                 args.device)
    rows: list[dict] = []
    indices = rank_indices(args.num_images, rank, world)
    total = len(args.ema) * len(args.cfg) * len(args.cfg_interval)
    started, done = time.time(), 0
    for ema in args.ema:
        module = load_module(args.ckpt, ema=ema, device=args.device, ckpt=ckpt)  # once per EMA, not per point
        for cfg_scale, interval in itertools.product(args.cfg, args.cfg_interval):
            settings = SamplerSettings(args.sampler, args.steps, cfg_scale, interval, args.seed)
            results = score_samples(module, indices, settings, extractor, ref, args.batch_size,
                                    args.inception_score, progress=rank == 0)
            rows += [{**r, "ema": "none" if ema is None else module.ema_decay, "step": module.checkpoint_step,
                      "checkpoint": str(args.ckpt), "reference": str(ref.path) if ref.path else None}
                     for r in results]
            done += 1
            if rank == 0:
                elapsed = time.time() - started
                print(f"jitlab eval: point {done}/{total} (ema {ema}, cfg {cfg_scale}, interval {interval}): "
                      + ", ".join(f"{r['metric']} {r['value']:.4g}" for r in results)
                      + f"  [{elapsed:.0f}s, ~{elapsed / done * (total - done):.0f}s left]", flush=True)
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_images < 2 or args.steps < 1:
        raise SystemExit("jitlab eval: --num_images must be >= 2 and --steps >= 1")
    rank, world = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    try:
        result = evaluate(args)
    except (KeyError, FileNotFoundError, ValueError) as error:
        print(f"jitlab eval: error: {error.args[0] if error.args else error}")
        return 2
    if rank == 0:
        out = args.out or Path(args.ckpt).with_name("metrics.json")
        rows = merge_rows(out, result["rows"])
        write_json(out, {"rows": rows, "best": best_row(rows)})
        best = best_row(rows)
        print(f"jitlab eval: wrote {len(result['rows'])} rows to {out}"
              + (f"; best: {best['metric']} {best['value']:.4g} (ema {best['ema']}, cfg {best['cfg_scale']}, "
                 f"interval {best['cfg_interval']})" if best else ""))
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
