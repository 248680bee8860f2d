"""Data-loading throughput: the folder source (per-sample PIL, the release's pipeline) against the shards.

`jitlab bench-data` writes a folder tree of full-size JPEGs in a temporary directory, runs ``jitlab
prepare-imagenet`` on it at each resolution, and measures the images per second the data module's own loaders
deliver from each source, per worker (``num_workers=0``) and with N workers. The report says how.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

RESOLUTIONS = (256, 512, 1024)


@dataclass
class DataBenchSettings:
    """What one data benchmark measures (the fields of `jitlab bench-data`)."""

    resolutions: list[int] = field(default_factory=lambda: list(RESOLUTIONS))
    workers: list[int] = field(default_factory=lambda: [os.cpu_count() or 1])  # besides per worker (0)
    images: int = 192  # source JPEGs to generate
    classes: int = 8
    short: tuple[int, int] = (375, 1500)  # range of the short side, pixels
    batch: int = 16
    seconds: float = 6.0  # minimum measuring time per cell
    seed: int = 0
    tmp: str | None = None  # where to make the temporary directory
    argv: list[str] = field(default_factory=list)  # the command line, for the report


def write_sources(root: Path, images: int, classes: int, short: tuple[int, int], seed: int) -> dict[str, Any]:
    """``images`` full-size JPEGs (quality 90) under ``root/train/<class>/``; their size statistics."""
    from jitlab.core.data.synth_imagenet import photo_image

    rng = np.random.default_rng(seed)
    sizes, nbytes = [], 0
    for i in range(images):
        folder = root / "train" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        side = int(rng.integers(short[0], short[1] + 1))
        width, height = (side * 4 // 3, side) if rng.random() < 0.75 else (side, side * 4 // 3)
        path = folder / f"img_{i:05d}.JPEG"
        photo_image(rng, width, height).save(path, "JPEG", quality=90)
        sizes.append((width, height))
        nbytes += path.stat().st_size
    pixels = np.array([w * h for w, h in sizes])
    return {"images": images, "classes": classes, "mean_megapixels": pixels.mean() / 1e6,
            "smallest": min(sizes, key=lambda s: s[0] * s[1]), "largest": max(sizes, key=lambda s: s[0] * s[1]),
            "mean_kb": nbytes / images / 1024}


def throughput(loader: Iterable, min_images: int, seconds: float) -> float:
    """Images per second delivered by passes over ``loader``, timed from each pass's first batch."""
    images, elapsed = 0, 0.0
    while elapsed < seconds or images < min_images:
        start, batches = time.perf_counter(), 0
        for x, _ in loader:
            batches += 1
            if batches == 1:  # includes worker start-up and the first decode: not throughput
                start = time.perf_counter()
                continue
            images += x.shape[0]
            if elapsed + (time.perf_counter() - start) >= seconds and images >= min_images:
                break
        if batches < 2:
            raise RuntimeError("a pass of the loader gave fewer than 2 batches: use more images or smaller batches")
        elapsed += time.perf_counter() - start
    return images / elapsed


def folder_loader(root: Path, resolution: int, workers: int, batch: int) -> Iterable:
    from torch.utils.data import DataLoader, RandomSampler

    from jitlab.core.data.imagenet import ImageFolderDataset

    dataset = ImageFolderDataset(root / "train", resolution, flip=True)
    sampler = RandomSampler(dataset, replacement=True, num_samples=10**7)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)


def shard_loader(root: Path, workers: int, batch: int) -> Iterable:
    from jitlab.core.data.shards import ShardDataset
    from jitlab.core.data.shards import shard_loader as make

    return make(ShardDataset(str(root), "train", flip=True), batch, workers, train=True)


def prepare(src: Path, out: Path, resolution: int, workers: int) -> float:
    """Run ``jitlab prepare-imagenet`` in a subprocess; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jitlab.commands.cli", "prepare-imagenet", "--src", str(src),
                    "--out", str(out), "--resolution", str(resolution), "--workers", str(workers), "--no_progress"],
                   check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def run(args: DataBenchSettings) -> str:
    torch.set_num_threads(1)  # a loader worker is one process on one core
    workers = sorted(set(args.workers))
    tmp = Path(tempfile.mkdtemp(prefix="jitlab-bench-", dir=args.tmp))
    rows, prepared = [], []
    load_before = os.getloadavg()
    try:
        t0 = time.perf_counter()
        sources = write_sources(tmp / "src", args.images, args.classes, tuple(args.short), args.seed)
        print(f"bench: wrote {args.images} JPEGs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for resolution in args.resolutions:
            out = tmp / f"shards{resolution}"
            seconds = prepare(tmp / "src", out, resolution, max(workers))
            prepared.append((resolution, seconds, sum(p.stat().st_size for p in out.rglob("*.bin")) / args.images))
            print(f"bench: prepare-imagenet at {resolution}: {seconds:.1f} s", file=sys.stderr)
            for n in [0, *[w for w in workers if w > 0]]:
                folder = throughput(folder_loader(tmp / "src", resolution, n, args.batch), args.batch * 3, args.seconds)
                shards = throughput(shard_loader(out, n, args.batch), args.batch * 20, args.seconds)
                rows.append((resolution, n, folder, shards))
                print(f"bench: {resolution} px, {n} workers: folder {folder:.1f} img/s, shards {shards:.1f} img/s "
                      f"({shards / folder:.0f}x)", file=sys.stderr)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(args, sources, rows, prepared, load_before, os.getloadavg())


def report(args: DataBenchSettings, sources, rows, prepared, load_before, load_after) -> str:
    """The markdown page: paragraphs, lists and tables separated by blank lines."""
    import litdata
    import PIL

    from jitlab.experiments.bench.machine import machine_facts

    command = "jitlab bench-data " + " ".join(args.argv) if args.argv else "jitlab bench-data"
    facts = machine_facts({"Pillow": PIL.__version__, "litdata": litdata.__version__})
    per_worker = {r: s / f for r, n, f, s in rows if n == 0}
    verdict = ", ".join(f"{r}: {x:.0f}x" for r, x in per_worker.items())
    target = all(per_worker.get(r, 0) >= 5 for r in (512, 1024) if r in per_worker)
    blocks = [
        "# Data-loading throughput: folder tree vs. prepared shards",
        f"Made by `{command}` (`make bench-data`) on {time.strftime('%Y-%m-%d %H:%M')}.",
        "Images per second delivered by the training data loader, for the two sources of "
        "`ImageNetDataModule`: the **folder** tree read per sample with PIL (open, decode the full-size JPEG, "
        "convert to RGB, ADM centre crop, flip: the pipeline of the JiT release) and the **shards** written by "
        "`jitlab prepare-imagenet` (uint8 crops at the target resolution streamed by litdata, then the flip).",
        "- *per worker* = the loading runs in the training process (`num_workers=0`): what one data-loader "
        "worker process delivers.\n"
        "- *N workers* = `num_workers=N` worker processes feeding the training process.\n"
        f"- Timed from the first batch of each pass (worker start-up excluded), at least {args.seconds:g} s per "
        f"cell, batches of {args.batch}; files in the page cache, so the folder numbers are the decoding and "
        "resizing, not the disk.",
        "## Machine",
        "".join(f"- {key}: {value}\n" for key, value in facts.items())
        + f"- load average (1 min) before / after the run: {load_before[0]:.1f} / {load_after[0]:.1f} "
        "(the machine is shared; other jobs take cores)",
        "## Source images",
        f"{sources['images']} JPEGs (quality 90) in {sources['classes']} class folders: crops of the photographs "
        f"bundled with scikit-image / scikit-learn, short side {args.short[0]} to {args.short[1]} px, 4:3 or 3:4; "
        f"mean {sources['mean_megapixels']:.2f} megapixels and {sources['mean_kb']:.0f} KB per file, from "
        f"{sources['smallest'][0]}x{sources['smallest'][1]} to {sources['largest'][0]}x{sources['largest'][1]}. "
        "(ImageNet's training JPEGs average roughly 400 x 350 pixels and 110 KB, so at 512 and 1024 most of "
        "them are upsampled and cheaper to decode; the files here are the costly end of the range.)",
        "## Throughput",
        "\n".join(["| resolution | loader workers | folder (img/s) | shards (img/s) | shards / folder |",
                   "|---:|---|---:|---:|---:|"]
                  + [f"| {resolution} | {'per worker (0)' if n == 0 else n} | {folder:.1f} | {shards:.0f} | "
                     f"{shards / folder:.0f}x |" for resolution, n, folder, shards in rows]),
        f"Per worker, the shards deliver {verdict} the folder source's images per second "
        f"(target: at least 5x at 512 and 1024: {'met' if target else 'NOT met'}).",
        "On a machine with few cores the N-worker rows can be below the per-worker ones: the N workers and the "
        "training process that receives their batches share the cores (here "
        f"{os.cpu_count()}, with other jobs), and every batch crosses from a worker to the trainer through shared "
        "memory (3 x R x R bytes per image, 3 MB at 1024). On a GPU node with a core or more per worker, the "
        "folder source scales with the number of workers (cores); the ratio per worker is the number to compare.",
        "## Writing the shards (`jitlab prepare-imagenet`)",
        "\n".join(["| resolution | wall time | images/s | on disk per image |", "|---:|---:|---:|---:|"]
                  + [f"| {resolution} | {seconds:.1f} s | {sources['images'] / seconds:.1f} | "
                     f"{per_image / 1024:.0f} KB |" for resolution, seconds, per_image in prepared]),
        f"With {max(args.workers)} worker process(es), including the start of the command. Shards are uncompressed "
        "uint8: 3 x R x R bytes per image (ImageNet train, 1.28 M images: about 250 GB at 256, 1 TB at 512, "
        "4 TB at 1024; 64 x 64 is 16 GB).",
        "## Reading the numbers",
        "A run on G GPUs needs G x (images per second per GPU) from its loaders. The folder source scales with "
        "the number of worker processes (cores) and is the bottleneck at 512 and 1024; the shards need no "
        "decoding, so a few workers per GPU suffice and the limit moves to the disk or network bandwidth "
        "(3 x R x R bytes per image: 3 MB at 1024).",
    ]
    return "\n\n".join(blocks) + "\n"
