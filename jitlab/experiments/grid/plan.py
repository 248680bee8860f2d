"""`jitlab grid plan`: what each cell costs, before anything runs.

Per cell: GMACs of one forward pass (counted on the meta device, as `jitlab info` does), images trained on, and
GPU-hours at a stated peak throughput and utilisation: training is 3 forwards per image at 2 FLOPs per
multiply-add, evaluation one forward per function evaluation, doubled throughout for CFG (an upper bound).
With ``--gpu_memory GB``, each cell's predicted memory plan on GPUs of that size (``jitlab.train.fitplan``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from jitlab.classpath import import_path
from jitlab.fitview import FitView
from jitlab.experiments.grid.spec import Cell
from jitlab.core.sampling import Sampler, nfe

if TYPE_CHECKING:
    from jitlab.train.fitplan import Plan

IMAGENET_TRAIN = 1_281_167


@dataclass
class CellCost:
    cell: str
    model: str
    gmacs: float
    train_images: float
    eval_images: int
    train_gpu_hours: float  # with the plan's recomputation (checkpointing: 4/3) when there is a plan
    eval_gpu_hours: float
    plan: Plan | None = None
    memory_note: str | None = None  # why a cell has no memory plan

    def as_dict(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("plan", "memory_note")}
        if self.plan is not None:
            row.update(self.plan.as_dict(), model=self.model, plan_model=self.plan.model)
            if not self.plan.fits:
                row["refusal"] = self.plan.refusal()
        elif self.memory_note:
            row["memory_note"] = self.memory_note
        return row


def build_meta_net(config: dict[str, Any]):
    """The cell's backbone on the meta device (no memory), with the data's image size filled in."""
    import torch

    fit = FitView.of(config)
    with torch.device("meta"):
        return import_path(fit.net_class)(**fit.net_args())


def train_images(config: dict[str, Any]) -> float:
    fit = FitView.of(config)
    if fit.max_steps is not None:
        return float(fit.max_steps) * fit.batch
    epochs = float(fit.trainer.get("max_epochs") or 1)
    return epochs * (int(fit.data.get("train_size") or IMAGENET_TRAIN) // fit.batch) * fit.batch


def cell_cost(cell: Cell, peak_tflops: float, utilisation: float, gpu_memory: float | None = None,
              gpus: int = 8) -> CellCost:
    """The cell's cost; with ``gpu_memory`` (GiB per GPU) its memory plan on ``gpus`` GPUs too."""
    from jitlab.core.models.flops import count_gmacs

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
    model = (f"{type(net).__name__} w{net.hidden_size} d{net.depth} /{net.patch_size} @{net.img_size}"
             if hasattr(net, "patch_size") else f"{type(net).__name__} {sum(p.numel() for p in net.parameters()):,} "
             f"parameters, sample {tuple(net.sample_shape)}")
    plan, note = None, None
    if gpu_memory is not None:
        from jitlab.train.fitplan import plan_config
        from jitlab.core.models.memory import NotCountable

        try:
            plan = plan_config(cell.config, gpu_memory, gpus)
            train_flops *= plan.flops_factor
        except NotCountable as error:
            note = str(error)
    return CellCost(cell.id, model, gmacs, images, n_eval, train_flops / rate / 3600, eval_flops / rate / 3600, plan,
                    note)


def plan_rows(cells: list[Cell], peak_tflops: float, utilisation: float, gpus: int,
              gpu_memory: float | None) -> list[CellCost]:
    return [cell_cost(c, peak_tflops, utilisation, gpu_memory, gpus) for c in cells]


def memory_table(rows: list[CellCost]) -> list[str]:
    """The memory plan of each cell (markdown), then one line per cell that does not fit."""
    from jitlab.train.fitplan import GiB

    lines = ["", "Memory per GPU (predicted from counted activations, not measured on a GPU):", "",
             "| cell | plan model | fixed GiB | activations MiB/sample | micro-batch x accumulate | checkpointing | "
             "strategy | peak GiB | of GiB |", "|---|---|---|---|---|---|---|---|---|"]
    refused = []
    for r in rows:
        p = r.plan
        if p is None:
            lines.append(f"| {r.cell} | not planned: {r.memory_note} | | | | | | | |")
            continue
        lines.append(f"| {r.cell} | {p.model} | {sum(p.fixed.values()) / GiB:.1f} | "
                     f"{p.activations_per_sample / 2**20:.0f} | {p.micro_batch} x {p.accumulate} | "
                     f"{'on' if p.checkpointing else 'off'} | {p.strategy} | {p.peak_bytes / GiB:.1f} | "
                     f"{p.gpu_memory / GiB:.0f} |")
        if not p.fits:
            refused.append(f"refused: cell {r.cell}: {p.refusal()}")
    return lines + ([""] + refused if refused else [])


def plan_table(cells: list[Cell], peak_tflops: float, utilisation: float, gpus: int | None = None,
               time_limit_min: int | None = None, gpu_memory: float | None = None) -> str:
    """The plan as markdown: assumptions, a row per cell, the total, each cell's memory plan with ``gpu_memory``
    (GiB), and a warning per cell whose wall time on ``gpus`` GPUs exceeds the job limit."""
    rows = plan_rows(cells, peak_tflops, utilisation, gpus or 8, gpu_memory)
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
    if gpu_memory is not None:
        lines += memory_table(rows) + ["", "Training GPU-hours include the recomputation of checkpointed blocks "
                                           "(4/3 of a step's FLOPs)."]
    else:
        lines += ["", "Memory per GPU: add --gpu_memory GB for each cell's plan (micro-batch, accumulation, "
                      "checkpointing, sharding)."]
    return "\n".join(lines + ([""] + warnings if warnings else []))
