"""Write uint8 centre crops of an ImageNet folder tree once, as litdata shards.

    jitlab prepare-imagenet --src /data/imagenet --out /data/imagenet-256 --resolution 256

Crops ``SRC/train/<class>/*`` (and ``SRC/val/...``) with the ADM centre crop into the layout of
``jitlab.core.data.shards``: training images in a fixed random order (mixed classes in every chunk), validation in
file order; ``--classes`` writes a class subset, labelled 0..N-1 in sorted order and recorded in the meta file.
``--workers`` processes each write whole parts; a finished part is recorded in ``OUT/.prepare/``, so the same
command resumes an interrupted run, and the meta file is written last (without it the shards are never used).
An undecodable image is skipped with a warning; grey, palette, CMYK, 16-bit and alpha images become RGB.
"""

from __future__ import annotations

import argparse  # run() takes the verb's options (jitlab.commands.prepare_imagenet)
import concurrent.futures as futures
import contextlib
import glob
import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from jitlab import atomic
from jitlab.core.data.imagenet import SPLITS, check_split_classes, crop_file, find_classes, scan_split
from jitlab.core.data.shards import INDEX_NAME, META_NAME, write_meta
from jitlab.core.data.subsets import Classes, select_classes
from jitlab.errors import ConfigError

STATE_DIR = ".prepare"
ORDER_SEED = 0  # the fixed shuffle of the training images before they are cut into parts
PART_BYTES = 256 * 2**20  # target size of one part (the unit of work and of resumption)


class UsageError(Exception):
    """Bad command-line input: reported as ``jitlab: error: ...`` with exit code 2."""


@dataclass
class Part:
    split: str
    number: int
    paths: list[str]  # absolute
    labels: list[int]
    indices: list[int]  # position of each file in the split's sorted file list


def class_spec(text: str) -> Classes:
    """``--classes``: a number of classes, else a list file or a shipped list's name."""
    return int(text) if text.strip().lstrip("-").isdigit() else text


def default_part_size(resolution: int, images: int, workers: int) -> int:
    """About ``PART_BYTES`` of crops per part, and at least four parts per worker for small trees."""
    by_bytes = PART_BYTES // (3 * resolution * resolution)
    by_workers = math.ceil(images / (4 * max(1, workers)))
    return int(max(1, min(4096, max(16, by_bytes), by_workers)))


def scan_source(src: Path, splits: list[str], selection: Classes = None
                ) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
    """The classes of ``src`` that ``selection`` chooses (default: all); the sorted files and labels of each split."""
    train = src / "train"
    if not src.is_dir():
        raise UsageError(f"--src {src}: no such directory")
    if not train.is_dir():
        raise UsageError(f"--src {src}: no train/ folder (expected {train}/<class>/<image files>)")
    every = find_classes(train)
    if not every:
        raise UsageError(f"--src {src}: {train} has no class folders (expected {train}/<class>/<image files>)")
    try:
        classes = select_classes(every, selection, str(train), field="--classes")
    except ConfigError as error:
        raise UsageError(str(error)) from None
    files = {}
    for split in splits:
        split_dir = src / split
        if not split_dir.is_dir():
            continue
        try:
            check_split_classes(split_dir, every)
        except ConfigError as error:
            raise UsageError(f"--src {src}: {str(error).split(': ', 1)[1]}") from None
        paths, labels = scan_split(split_dir, classes)
        if not paths:
            chosen = "" if len(classes) == len(every) else f" of the {len(classes)} chosen classes"
            raise UsageError(f"--src {src}: {split_dir} has no image files in its class folders{chosen}")
        files[split] = (paths, labels)
    return classes, files


def make_plan(src: Path, classes: list[str], files: dict[str, tuple[list[str], np.ndarray]], resolution: int,
              part_size: int) -> tuple[dict, list[Part]]:
    """Which files go into which part; the plan (a dict) is stored to check that a resumed run matches."""
    plan: dict[str, Any] = {"src": str(src), "resolution": resolution, "part_size": part_size,
                            "classes": classes, "splits": {}}
    parts: list[Part] = []
    for split, (paths, labels) in files.items():
        # training: mixed classes in every chunk
        order = np.random.default_rng(ORDER_SEED).permutation(len(paths)) if split == "train" else np.arange(len(paths))
        digest = hashlib.sha1("\n".join(paths).encode()).hexdigest()
        plan["splits"][split] = {"files": len(paths), "sha1": digest}
        for number in range(math.ceil(len(paths) / part_size)):
            chosen = order[number * part_size:(number + 1) * part_size].tolist()
            parts.append(Part(split, number, [str(src / split / paths[i]) for i in chosen],
                              [int(labels[i]) for i in chosen], chosen))
    return plan, parts


def part_record(out: Path, part: Part) -> Path:
    return out / STATE_DIR / part.split / f"part-{part.number:06d}.json"


def write_part(out: str, part: Part, resolution: int, chunk_bytes: str) -> dict[str, Any]:
    """Crop the images of ``part`` and write them as litdata chunks ``chunk-<part>-<k>.bin``; record the part."""
    os.environ["DATA_OPTIMIZER_GLOBAL_RANK"] = str(part.number)  # litdata names the chunks and index by it
    from litdata.streaming.writer import BinaryWriter

    split_dir = os.path.join(out, part.split)
    os.makedirs(split_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(split_dir, f"chunk-{part.number}-*.bin")):
        os.remove(stale)  # left by an interrupted attempt at this part
    writer = BinaryWriter(split_dir, chunk_bytes=chunk_bytes)
    skipped: list[tuple[str, str]] = []
    written = 0
    for path, label, index in zip(part.paths, part.labels, part.indices):
        try:
            image = crop_file(path, resolution)  # uint8 (3, R, R)
        except Exception as error:  # noqa: BLE001 -- any undecodable file is skipped and reported
            skipped.append((path, f"{type(error).__name__}: {error}"))
            continue
        writer[written] = {"image": image, "label": label, "index": index}
        written += 1
    chunks, config = [], None
    if written:
        writer.done()
        worker_index = os.path.join(split_dir, f"{part.number}.{INDEX_NAME}")
        index = json.loads(Path(worker_index).read_text())
        chunks, config = index["chunks"], index["config"]
        os.remove(worker_index)
    record = {"images": written, "skipped": skipped, "chunks": chunks, "config": config}
    atomic.write_json(part_record(Path(out), part), record)
    return record


def _write_part_quietly(out: str, part: Part, resolution: int, chunk_bytes: str) -> dict[str, Any]:
    # litdata prints the inferred data format per writer; the environment is restored so that in this process
    # (--workers 0) litdata does not think it is inside its optimizer afterwards
    with contextlib.redirect_stdout(io.StringIO()), mock.patch.dict(os.environ):
        return write_part(out, part, resolution, chunk_bytes)


def finish(out: Path, plan: dict, parts: list[Part]) -> dict[str, Any]:
    """Merge the parts' chunk lists into ``OUT/<split>/index.json`` and write the meta file."""
    splits: dict[str, Any] = {}
    for split in plan["splits"]:
        chunks, config, images, skipped = [], None, 0, 0
        for part in (p for p in parts if p.split == split):
            record = json.loads(part_record(out, part).read_text())
            chunks += record["chunks"]
            config = config or record["config"]
            images += record["images"]
            skipped += len(record["skipped"])
        if not images:
            raise UsageError(f"--src {plan['src']}: not one readable image in {split}/")
        atomic.write_json(out / split / INDEX_NAME, {"chunks": chunks, "config": config})
        splits[split] = {"images": images, "skipped": skipped}
    meta = {"resolution": plan["resolution"], "classes": plan["classes"], "splits": splits, "source": plan["src"],
            "crop": "ADM centre crop (box halving, bicubic, centre square)",
            "item": "image uint8 (3, R, R), label, index", "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_meta(str(out), meta)
    return meta


def worker_context() -> Any:
    """Worker processes that start fast and clean: a fork server that has imported this module once."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__ if __name__ != "__main__" else "jitlab.core.data.prepare"])
        return context
    return multiprocessing.get_context("spawn")


def run(args: argparse.Namespace) -> int:
    if args.resolution <= 0:
        raise UsageError(f"--resolution must be a positive image size, got {args.resolution}")
    if args.part_size is not None and args.part_size <= 0:
        raise UsageError(f"--part_size must be positive, got {args.part_size}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    src, out = Path(args.src).expanduser().resolve(), Path(args.out).expanduser().resolve()
    if out == src or any(out == src / s or src / s in out.parents for s in SPLITS):
        raise UsageError(f"--out {out} must not be --src or inside its train/ or val/ folders")
    classes, files = scan_source(src, args.splits, args.classes)
    plan_path = out / STATE_DIR / "plan.json"
    previous = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    part_size = args.part_size
    if part_size is None:  # a resumed run keeps the parts it started with
        part_size = previous["part_size"] if previous else default_part_size(
            args.resolution, len(files.get("train", ([],))[0]), args.workers)
    plan, parts = make_plan(src, classes, files, args.resolution, part_size)
    if previous not in (None, plan):
        changed = [k for k in plan if previous.get(k) != plan[k]]
        raise UsageError(f"--out {out} holds an unfinished or finished run with other settings or files "
                         f"({', '.join(changed)} differ); use another --out or delete it")
    if previous is None and out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not a shard directory of prepare-imagenet; use an empty or "
                         "new directory")
    atomic.write_json(plan_path, plan)  # a killed write must not leave a plan that later runs compare against

    todo = [p for p in parts if not part_record(out, p).is_file()]
    if (out / META_NAME).is_file() and not todo:
        print(f"jitlab: {out} is complete ({args.resolution} x {args.resolution}); nothing to do", file=sys.stderr)
        return 0
    (out / META_NAME).unlink(missing_ok=True)
    total = sum(len(p.paths) for p in parts)
    resuming = f"; resuming, {len(parts) - len(todo)} parts done" if len(todo) < len(parts) else ""
    print(f"jitlab: {total} images of {len(classes)} classes of {src} -> {out} at {args.resolution} x "
          f"{args.resolution}, {len(parts)} parts{resuming}", file=sys.stderr)

    from tqdm import tqdm

    bar = tqdm(total=total, initial=total - sum(len(p.paths) for p in todo), unit="img", disable=args.no_progress,
               dynamic_ncols=True, file=sys.stderr)
    new_skips = 0

    def report(part: Part, record: dict[str, Any]) -> None:
        nonlocal new_skips
        for path, reason in record["skipped"]:
            bar.write(f"jitlab: warning: skipped unreadable image {path} ({reason})", file=sys.stderr)
        new_skips += len(record["skipped"])
        bar.update(len(part.paths))

    try:
        if args.workers == 0:
            for part in todo:
                report(part, _write_part_quietly(str(out), part, args.resolution, args.chunk_bytes))
        elif todo:
            context = worker_context()
            with futures.ProcessPoolExecutor(max_workers=min(args.workers, len(todo)), mp_context=context) as pool:
                jobs = {pool.submit(_write_part_quietly, str(out), p, args.resolution, args.chunk_bytes): p
                        for p in todo}
                try:
                    for job in futures.as_completed(jobs):
                        report(jobs[job], job.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    except KeyboardInterrupt:
        bar.close()
        print(f"\njitlab: interrupted; run the same command again to resume ({out})", file=sys.stderr)
        return 130
    bar.close()
    meta = finish(out, plan, parts)
    skipped = sum(s["skipped"] for s in meta["splits"].values())
    counts = ", ".join(f"{k} {v['images']}" for k, v in meta["splits"].items())
    print(f"jitlab: wrote {counts} images to {out}; skipped {skipped} unreadable file(s)"
          + (f" ({new_skips} in this run)" if skipped != new_skips else ""), file=sys.stderr)
    return 0
