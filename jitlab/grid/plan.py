"""`jitlab grid plan`: what each cell costs, before anything runs.

Per cell: GMACs of one forward pass (counted with torch's flop counter on the meta device, as
`jitlab info` does), images trained on, and GPU-hours for training and evaluation at a stated
peak throughput and utilisation. Training costs about 3 forward passes per image (the backward
pass is about twice the forward) at 2 FLOPs per multiply-add; evaluation costs one forward per
function evaluation, doubled inside the CFG interval (counted as doubled throughout: an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jitlab.classpath import import_path
from jitlab.grid.spec import Cell
from jitlab.sampling import Sampler, nfe

IMAGENET_TRAIN = 1_281_167


@dataclass
class CellCost:
    cell: str
    model: str
    gmacs: float
    train_images: float
    eval_images: int
    train_gpu_hours: float
    eval_gpu_hours: float


def build_meta_net(config: dict[str, Any]):
    """The cell's backbone on the meta device (no memory), with the data's image size filled in."""
    import torch

    net_cfg = config["model"]["net"]
    data_args = (config.get("data") or {}).get("init_args") or {}
    cls = import_path(net_cfg["class_path"])
    args = dict(net_cfg.get("init_args") or {})
    if args.get("img_size") is None:
        args["img_size"] = data_args.get("resolution", 256)
    if args.get("num_classes") is None:
        args["num_classes"] = 1000  # the label table barely changes the count; ImageNet's size
    with torch.device("meta"):
        return cls(**args)


def train_images(config: dict[str, Any]) -> float:
    trainer = config.get("trainer") or {}
    data_args = (config.get("data") or {}).get("init_args") or {}
    batch = int(data_args.get("global_batch_size", 1))
    steps = trainer.get("max_steps")
    if steps is not None and int(steps) > 0:
        return float(steps) * batch
    epochs = float(trainer.get("max_epochs") or 1)
    size = data_args.get("train_size") or IMAGENET_TRAIN
    return epochs * (int(size) // batch) * batch


def cell_cost(cell: Cell, peak_tflops: float, utilisation: float) -> CellCost:
    from jitlab.models.flops import count_gmacs

    net = build_meta_net(cell.config)
    gmacs = count_gmacs(net)
    images = train_images(cell.config)
    rate = peak_tflops * 1e12 * utilisation  # FLOP/s actually delivered
    train_flops = 3 * 2 * gmacs * 1e9 * images
    evals = cell.eval
    points = len(evals.get("ema", [0])) * len(evals.get("cfg", [1.0])) * len(evals.get("cfg_interval", [(0.1, 1.0)]))
    n_eval = int(evals.get("num_images", 0)) * points
    per_image = nfe(Sampler(evals.get("sampler", "heun")), int(evals.get("steps", 50))) * 2
    eval_flops = 2 * gmacs * 1e9 * per_image * n_eval
    model = f"{type(net).__name__} w{net.hidden_size} d{net.depth} /{net.patch_size} @{net.img_size}"
    return CellCost(cell.id, model, gmacs, images, n_eval, train_flops / rate / 3600, eval_flops / rate / 3600)


def plan_table(cells: list[Cell], peak_tflops: float, utilisation: float, gpus: int | None = None,
               time_limit_min: int | None = None) -> str:
    """The plan as markdown: its assumptions first, a row per cell, the total, and a warning per cell whose
    wall time on ``gpus`` GPUs (training, then evaluation on the same GPUs) exceeds the job limit."""
    rows = [cell_cost(c, peak_tflops, utilisation) for c in cells]
    lines = [f"Assumed: {peak_tflops:g} TFLOP/s peak per GPU at {utilisation:.0%} model FLOP utilisation (set "
             "--peak_tflops / --utilisation from a measurement, e.g. `jitlab bench`); the data loader keeps up "
             "(the folder source decodes every JPEG per sample and is the bottleneck at 512 px and above: use "
             "`jitlab prepare-imagenet` shards); training = 3 forward passes per image; evaluation = images x "
             "NFE x sweep points, CFG's second pass counted throughout (an upper bound).", ""]
    per_job = f" | wall h on {gpus} GPUs" if gpus else ""
    lines += [f"| cell | model | GMACs | images trained | eval images | train GPU-h | eval GPU-h{per_job} |",
              "|---|---|---|---|---|---|---|" + ("---|" if gpus else "")]
    warnings = []
    for r in rows:
        wall = (r.train_gpu_hours + r.eval_gpu_hours) / gpus if gpus else None
        lines.append(f"| {r.cell} | {r.model} | {r.gmacs:.2f} | {r.train_images:.3g} | {r.eval_images} | "
                     f"{r.train_gpu_hours:.1f} | {r.eval_gpu_hours:.1f} |" + (f" {wall:.1f} |" if gpus else ""))
        if wall is not None and time_limit_min and wall * 60 > time_limit_min:
            warnings.append(f"warning: {r.cell} needs ~{wall:.1f} h on {gpus} GPUs, over the {time_limit_min / 60:g} h "
                            f"job limit (--time): its job is requeued {int(wall * 60 // time_limit_min)} time(s) "
                            "and resumes from its newest checkpoint; raise --time or --nodes to avoid the waits")
    total = sum(r.train_gpu_hours + r.eval_gpu_hours for r in rows)
    lines += ["", f"Total: {total:.1f} GPU-hours for {len(rows)} cells (training and evaluation)."]
    return "\n".join(lines + ([""] + warnings if warnings else []))
