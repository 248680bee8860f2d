"""Preflight: before the first training step, check everything a run needs up to its last step, in seconds.

A paper-scale run trains for days: missing reference statistics, an absent Inception file or a full disk would
otherwise be found at its end. Checked from the resolved config (only a meta-device network is built): the data,
every evaluation's reference statistics and weights, the network's local files (``FILE_ARGS``), the global batch
split, and the output directory's room for the kept checkpoints. Run by `jitlab fit` and `jitlab grid run`.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from jitlab.classpath import import_path
from jitlab.errors import ConfigError
from jitlab.fitview import FitView

BYTES_PER_PARAM = 4 * (1 + 2 + 2)  # fp32: the weights, two EMAs, AdamW's exp_avg and exp_avg_sq
INCEPTION_FEATURES = 2048  # torch-fidelity's InceptionV3 pool3
LIGHTNING_MAX_EPOCHS = 1000  # Lightning's default when neither max_epochs nor max_steps is set


@dataclass(frozen=True)
class Evaluation:
    where: str  # the config section a user edits: "evaluation" (jitlab fit) or "eval" (a grid cell)
    features: str  # refnet | inception
    ref_stats: str | None = None
    inception_weights: str | None = None


@dataclass
class Report:
    """Problems (each one line: the field, what is wrong, how to fix it) and notes of one or more runs."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, where: str, message: str) -> None:
        line = f"{where}: {message}"
        if line not in self.problems:
            self.problems.append(line)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def raise_if_failed(self) -> None:
        if len(self.problems) == 1:
            raise ConfigError("preflight", self.problems[0])
        if self.problems:
            raise ConfigError("preflight", f"{len(self.problems)} problems, nothing was started: "
                                           + "; ".join(f"({i}) {line}" for i, line in enumerate(self.problems, 1)))


def _is_imagenet(data: dict) -> bool:
    return str(data.get("class_path", "")).endswith("ImageNetDataModule")


def count_train_images(root: str, source: str = "auto") -> int:
    """Training images of a folder tree (file names only, nothing decoded) or of shards (their meta file)."""
    from jitlab.core.data.imagenet import folder_classes, resolve_source, scan_split

    if resolve_source(root, source) == "shards":  # type: ignore[arg-type]
        from jitlab.core.data.shards import read_meta

        return int(read_meta(root).get("splits", {}).get("train", {}).get("images", 0))
    return len(scan_split(Path(root) / "train", folder_classes(root))[0])


def check_data(config: dict, report: Report) -> tuple[dict[str, Any] | None, int | None]:
    """The data module's ``net_defaults`` (None: the data are unusable) and the training images (None: unknown)."""
    data = config.get("data") or {}
    args = dict(data.get("init_args") or {})
    try:
        data_cls = import_path(str(data["class_path"]))
        wanted = data_cls.net_defaults(**args) if hasattr(data_cls, "net_defaults") else {}
    except ConfigError as error:
        report.problem(error.field, str(error)[len(error.field) + 2:])
        return None, None
    if not _is_imagenet(data):
        size = args.get("train_size", inspect.signature(data_cls).parameters.get("train_size"))
        size = getattr(size, "default", size)
        return wanted, int(size) if isinstance(size, int) else None
    root = str(args.get("root") or "")
    images = count_train_images(root, args.get("source", "auto"))
    batch = int(args.get("global_batch_size", 1024))
    if images < batch:
        report.problem("data.init_args.global_batch_size", f"{batch} is more than the {images} training images "
                                                          f"of {root}")
    report.note(f"data: {root}: {wanted.get('num_classes')} classes, {images} training images")
    net_classes = FitView.of(config).net.get("num_classes")
    if net_classes is not None and net_classes != wanted.get("num_classes"):
        report.problem("model.net.init_args.num_classes", f"is {net_classes} but {root} has "
                                                          f"{wanted.get('num_classes')} classes")
    return wanted, images


def fid_stats_command(data: dict, resolution: int, out: str) -> str:
    root = ((data.get("init_args") or {}).get("root")) or "IMAGENET_ROOT"
    return (f"`jitlab fid-stats --root {root} --resolution {resolution} --features inception "
            f"--inception_weights WEIGHTS --out {out}`")


def check_reference(ev: Evaluation, data: dict, resolution: int, report: Report,
                    build_hint: str = "") -> None:
    """The reference statistics of one evaluation (none given: only embedded data can build their own)."""
    from jitlab.score.metrics.stats import StatsFileError, load_stats

    where = f"{ev.where}.ref_stats"
    if ev.features == "refnet" and _is_imagenet(data):
        report.problem(f"{ev.where}.features", "refnet is a classifier of the embedded data; ImageNet runs are "
                                               "measured with features: inception")
        return
    if not ev.ref_stats:
        if _is_imagenet(data):
            report.problem(where, f"is required for ImageNet data (the statistics of its training split at "
                                  f"{resolution}px); make them with {fid_stats_command(data, resolution, 'FILE')}")
        return  # embedded data: evaluation builds (and caches) statistics of real images itself
    path = Path(ev.ref_stats)
    if not path.is_file():
        report.problem(where, f"{path}: no such file; make it with {fid_stats_command(data, resolution, str(path))}"
                              + build_hint)
        return
    try:
        stats = load_stats(path)
    except StatsFileError as error:
        report.problem(where, f"{error} (make it again with {fid_stats_command(data, resolution, str(path))})")
        return
    width = stats.mu.shape[0]
    if ev.features == "inception" and width != INCEPTION_FEATURES:
        report.problem(where, f"{path} holds statistics of {width}-d features; Inception's are {INCEPTION_FEATURES}-d")
    if ev.features == "inception" and stats.fingerprint not in (None, "inception-v3-pool3"):
        report.problem(where, f"{path} holds statistics in feature space {stats.fingerprint}, not inception-v3-pool3")
    if stats.resolution is None:
        report.note(f"{path}: the file does not record its resolution (as the release's files); taken as "
                    f"{resolution}px")
    elif stats.resolution != resolution:
        report.problem(where, f"{path} was made at {stats.resolution}px but the run is at {resolution}px; make "
                              f"{resolution}px statistics with {fid_stats_command(data, resolution, 'FILE')}")


def check_inception(ev: Evaluation, report: Report) -> None:
    """The weights file is found (argument, $JITLAB_INCEPTION_WEIGHTS, torch hub's cache) and is a state dict."""
    import torch

    from jitlab.score.metrics.features import find_inception_weights

    try:
        path = find_inception_weights(ev.inception_weights)
    except ConfigError as error:
        report.problem(f"{ev.where}.inception_weights", str(error)[len(error.field) + 2:])
        return
    try:
        fc = torch.load(path, map_location="cpu", weights_only=True)["fc.weight"]  # (1008, 2048): the head
        ok = tuple(fc.shape) == (1008, INCEPTION_FEATURES)
    except Exception:  # noqa: BLE001 -- any unreadable or foreign file is the same problem to the user
        ok = False
    if not ok:
        report.problem(f"{ev.where}.inception_weights", f"{path} is not torch-fidelity's InceptionV3 state dict "
                                                        "(weights-inception-2015-12-05-6726825d.pth)")


def parameter_count(config: dict, wanted: dict[str, Any]) -> int:
    """Parameters of the configured network, built on the meta device (no memory) with the data's sizes."""
    import torch

    fit = FitView.of(config)
    with torch.device("meta"):
        model = import_path(fit.net_class)(**fit.net_args(wanted))
    return sum(p.numel() for p in model.parameters())


def total_steps(config: dict, train_images: int | None) -> int | None:
    fit = FitView.of(config)
    if fit.max_steps is not None or train_images is None:
        return fit.max_steps
    return int(fit.trainer.get("max_epochs") or LIGHTNING_MAX_EPOCHS) * max(1, train_images // fit.batch)


def kept_checkpoints(config: dict, steps: int | None) -> int | None:
    """Checkpoint files on disk at the end (plus the one being written); None when it cannot be told."""
    ck = config.get("checkpoint") or {}
    top_k = int(ck.get("save_top_k", 1))
    last = 1 if ck.get("save_last") in (True, "true") else 0
    if top_k != -1:
        return top_k + last + 1
    every = ck.get("every_n_train_steps")
    if steps is None:
        return None
    if every:
        saved = math.ceil(steps / int(every))
    else:
        epochs = FitView.of(config).trainer.get("max_epochs") or LIGHTNING_MAX_EPOCHS
        saved = math.ceil(int(epochs) / int(ck.get("every_n_epochs") or 1))
    return saved + last + 1


def check_output(directory: Path, bytes_needed: int, report: Report, what: str = "trainer.default_root_dir") -> None:
    """``directory`` (or its nearest existing parent) is writable and has ``bytes_needed`` free."""
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        report.problem(what, f"{directory}: cannot write there ({error.strerror or error}); choose a writable "
                             "directory")
        return
    free = shutil.disk_usage(existing).free
    if bytes_needed > free:
        report.problem(what, f"{directory}: the kept checkpoints need about {bytes_needed / 1e9:.1f} GB but "
                             f"{free / 1e9:.1f} GB are free; free space, choose another directory or keep fewer "
                             "(checkpoint.save_top_k)")
    else:
        report.note(f"output {directory}: checkpoints need ~{bytes_needed / 1e9:.2f} GB, {free / 1e9:.0f} GB free")


def world_size(trainer: dict) -> int:
    """Processes of the run: devices per node x nodes (``WORLD_SIZE`` when a launcher set it)."""
    if int(os.environ.get("WORLD_SIZE", "0") or 0) > 0:
        return int(os.environ["WORLD_SIZE"])
    devices, nodes = trainer.get("devices", "auto"), int(trainer.get("num_nodes") or 1)
    if isinstance(devices, (list, tuple)):
        per_node = len(devices)
    elif str(devices).lstrip("-").isdigit() and int(devices) != -1:
        per_node = int(devices)
    else:  # "auto" or -1: every accelerator of the node, one process on CPU
        import torch

        gpu = str(trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        per_node = torch.cuda.device_count() if gpu else 1
    return per_node * nodes


def check_net_files(config: dict, report: Report) -> None:
    """The local files the network reads when built (its class's ``FILE_ARGS``, e.g. REG's encoder weights)."""
    fit = FitView.of(config)
    try:
        cls = import_path(fit.net_class)
    except Exception:  # noqa: BLE001 -- an unknown class is reported where the network is built
        return
    for name in getattr(cls, "FILE_ARGS", ()):
        path = fit.net.get(name)
        if path is not None and not Path(str(path)).is_file():
            report.problem(f"model.net.init_args.{name}", f"{path}: no such file; give it as a local file "
                                                          "(jitlab never downloads weights)")


def check_run(config: dict, evaluations: Iterable[Evaluation], world: int, report: Report,
              build_hint: str = "") -> int:
    """Every check of one run (``config``: a resolved `jitlab fit` config); returns its checkpoint bytes."""
    import torch

    data, fit = config.get("data") or {}, FitView.of(config)
    resolution = int(fit.data.get("resolution") or 0)
    wanted, images = check_data(config, report)
    check_net_files(config, report)
    for ev in evaluations:
        check_reference(ev, data, resolution, report, build_hint)
        if ev.features == "inception":
            check_inception(ev, report)
    if fit.batch % (world * fit.accumulate):
        report.problem("data.init_args.global_batch_size",
                       f"{fit.batch} does not divide into {world} process(es) x {fit.accumulate} accumulation "
                       f"step(s); choose a multiple of {world * fit.accumulate}")
    accelerator = str(fit.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        report.problem("trainer.accelerator", f"is {accelerator} but no CUDA device is visible; use cpu or auto")
    if wanted is None:  # the network's size depends on the data
        return 0
    try:
        params = parameter_count(config, wanted)
    except ConfigError as error:
        report.problem(error.field, str(error)[len(error.field) + 2:])
        return 0
    kept = kept_checkpoints(config, total_steps(config, images))
    if kept is None:
        report.note("checkpoint.save_top_k = -1 with an unknown number of steps: the kept checkpoints are not counted")
        kept = 2
    return params * BYTES_PER_PARAM * kept


def check_fit(config: dict) -> None:
    """`jitlab fit`'s preflight of the resolved ``config`` (off with ``skip_preflight``): one ConfigError listing
    every problem."""
    if config.get("skip_preflight"):
        return
    report, section = Report(), config.get("evaluation") or {}
    evaluations = [Evaluation("evaluation", str(section.get("features", "refnet")), section.get("ref_stats"),
                              section.get("inception_weights"))] if int(section.get("every_n_steps") or 0) > 0 else []
    needed = check_run(config, evaluations, world_size(FitView.of(config).trainer), report)
    dirpath = (config.get("checkpoint") or {}).get("dirpath")
    directory = Path(dirpath or FitView.of(config).trainer.get("default_root_dir") or ".")
    check_output(directory, needed, report, "checkpoint.dirpath" if dirpath else "trainer.default_root_dir")
    report.raise_if_failed()
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        for line in report.notes:
            print(f"jitlab preflight: {line}", file=sys.stderr, flush=True)


def check_cells(cells: Iterable[Any], runs: Path, world: int | None, resolve: Callable[[dict], dict],
                build_hint: str = "", echo: Callable[[str], None] = print) -> Report:
    """The preflight of a grid: every cell (``.id``, ``.config``, ``.eval``) before any is launched.

    ``resolve``: a cell's config -> the config `jitlab fit` would resolve (or a ConfigError); ``world``: processes
    per cell (None: the cell's devices x nodes). A problem of several cells is listed once, naming them.
    """
    report, owners, total = Report(), {}, 0
    for cell in cells:
        own = Report()
        try:
            config = resolve(cell.config)
        except ConfigError as error:
            own.problem("config", str(error))
        else:
            ranks = world if world is not None else world_size(FitView.of(config).trainer)
            # a cell's Inception weights come from $JITLAB_INCEPTION_WEIGHTS
            evaluation = Evaluation("eval", str(cell.eval.get("features", "refnet")), cell.eval.get("ref_stats"))
            total += check_run(config, [evaluation], ranks, own, build_hint)
        for line in own.problems:
            owners.setdefault(line, []).append(cell.id)
        for line in own.notes:
            report.note(line)
    for line, ids in owners.items():
        named = ids[0] if len(ids) == 1 else f"{len(ids)} cells ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
        report.problem(f"cell {named}", line)
    check_output(Path(runs), total, report, "--runs")
    report.raise_if_failed()
    for line in report.notes:
        echo(f"jitlab preflight: {line}")
    return report
