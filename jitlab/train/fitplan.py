"""How a run fits its GPUs: fixed bytes per parameter, counted activations, and the plan a fit uses.

Every GPU figure here is a prediction from counting (jitlab.core.models.memory), not a measurement (allocator
fragmentation, CUDA context, workspaces and pinned memory are not in it). Peak per GPU = fixed bytes +
micro-batch x activation bytes per sample, where the fixed bytes per parameter are

- ``ddp`` (replicated): fp32 weights 4, gradients 4, DDP's buckets 0 (``gradient_as_bucket_view=True``, as
  ``jitlab.train.strategy.strategy_config("ddp")`` sets; 4 with Lightning's plain ``ddp``), AdamW's moments 8, two fp32
  EMAs 8, the bfloat16 weight copies autocast keeps through a step 2 (0 in float32);
- ``fsdp2`` (sharded over the world): the weights, gradients, moments and EMAs divided by the world size, and,
  not per parameter, two blocks gathered at a time (bfloat16 weights and fp32 gradients before their reduce).

The plan keeps the global batch and picks, in this order: the largest micro-batch (the per-GPU batch or a
power-of-2 divisor of it, accumulating the rest with ``trainer.accumulate_grad_batches``) not below
``min_micro_batch``; then per-block activation checkpointing (one more forward: 4/3 of the step's FLOPs); then
sharding; then the same below ``min_micro_batch``. A setting the user gave is kept.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from jitlab.classpath import import_path
from jitlab.errors import ConfigError
from jitlab.fitview import FitView
from jitlab.core.models.memory import ActivationCount, count_activations
from jitlab.core.models.registry import MODELS
from jitlab.train.strategy import StrategyKind, strategy_config

GiB = 2 ** 30
# below this many images per micro-batch, checkpointing is tried before accumulating further: a GPU step on
# fewer images runs its kernels on small matrices (an assumption, not a measurement; --min_micro_batch)
MIN_MICRO_BATCH = 32
RECOMPUTE = 4 / 3  # a checkpointed step: forward + backward (3 forwards) + the forward again
ORDER: tuple[tuple[StrategyKind, bool], ...] = (("ddp", False), ("ddp", True), ("fsdp2", False), ("fsdp2", True))


def size(n: float) -> str:
    """Bytes as GiB (MiB below one GiB)."""
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 2**20:.0f} MiB"


def fixed_bytes_per_param(strategy: StrategyKind, world: int = 1, bf16: bool = True,
                          bucket_view: bool = True) -> dict[str, float]:
    """Bytes per parameter that do not depend on the batch, by part, on each GPU."""
    shards = max(1, world) if strategy == "fsdp2" else 1
    return {"weights": 4 / shards, "gradients": 4 / shards,
            "buckets": 0.0 if bucket_view or strategy == "fsdp2" else 4.0,
            "optimizer": 8 / shards, "emas": 8 / shards,
            "autocast_copies": 2.0 if bf16 and strategy == "ddp" else 0.0}


def fixed_bytes(count: ActivationCount, strategy: StrategyKind, world: int, bf16: bool = True,
                bucket_view: bool = True) -> dict[str, float]:
    """Fixed bytes on each GPU, by part (``gathered``: FSDP2's two unsharded blocks)."""
    parts = {k: v * count.params for k, v in fixed_bytes_per_param(strategy, world, bf16, bucket_view).items()}
    parts["gathered"] = 2 * count.block_params * ((2 if bf16 else 4) + 4) if strategy == "fsdp2" else 0.0
    return parts


@dataclass(frozen=True)
class Choices:
    """What the user set (None: the plan chooses)."""

    accumulate: int | None = None
    checkpointing: bool | None = None
    strategy: StrategyKind | None = None
    bucket_view: bool = True  # False: a plain Lightning ``ddp`` (its buckets are a second gradient copy)


@dataclass(frozen=True)
class Plan:
    model: str
    gpu_memory: float  # bytes
    world: int
    global_batch: int
    micro_batch: int
    accumulate: int
    checkpointing: bool
    strategy: StrategyKind
    compiled: bool
    activations_per_sample: float  # bytes, under this plan's compile and checkpointing
    fixed: dict[str, float] = field(default_factory=dict)
    given: bool = False  # the user set some of micro-batch / checkpointing / strategy

    @property
    def peak_bytes(self) -> float:
        return sum(self.fixed.values()) + self.micro_batch * self.activations_per_sample

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.gpu_memory

    @property
    def flops_factor(self) -> float:
        return RECOMPUTE if self.checkpointing else 1.0

    def line(self) -> str:
        return (f"{self.model}: micro-batch {self.micro_batch} x {self.accumulate} accumulated x {self.world} GPU(s) "
                f"= {self.global_batch}, checkpointing {'on' if self.checkpointing else 'off'}, {self.strategy}; "
                f"predicted peak {size(self.peak_bytes)} of {size(self.gpu_memory)} per GPU")

    def refusal(self) -> str:
        fix = ("leave trainer.accumulate_grad_batches, trainer.strategy and model.net.init_args.checkpointing "
               "unset so the plan chooses, or use " if self.given else "use ")
        return (f"{self.model} is predicted to need {size(self.peak_bytes)} per GPU (fixed "
                f"{size(sum(self.fixed.values()))} + {self.micro_batch} x {size(self.activations_per_sample)}; "
                f"{self.strategy}, checkpointing {'on' if self.checkpointing else 'off'}) but {size(self.gpu_memory)} "
                f"are available, {size(self.peak_bytes - self.gpu_memory)} short; fix: {fix}more GPUs (sharding "
                "divides the fixed part) or GPUs with more memory")

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "peak_bytes_per_gpu": int(self.peak_bytes), "gpu_memory": int(self.gpu_memory),
                "fits": self.fits, "micro_batch": self.micro_batch, "accumulate": self.accumulate,
                "checkpointing": self.checkpointing, "strategy": self.strategy, "world": self.world,
                "compiled": self.compiled, "activation_bytes_per_sample": int(self.activations_per_sample),
                "fixed_bytes": {k: int(v) for k, v in self.fixed.items()}, "flops_factor": self.flops_factor}


def micro_batches(per_gpu: int) -> list[int]:
    """The per-GPU batch, then its power-of-2 divisors, largest first."""
    found = [per_gpu] + [2 ** k for k in range(per_gpu.bit_length(), -1, -1) if per_gpu % 2 ** k == 0]
    return sorted(set(found), reverse=True)


def choose(count: ActivationCount, model: str, gpu_memory: float, world: int, global_batch: int, compiled: bool,
           bf16: bool = True, choices: Choices = Choices(), min_micro_batch: int = MIN_MICRO_BATCH) -> Plan:
    """The plan (``fits`` False: the smallest predicted peak, to be refused). ``gpu_memory`` in bytes."""
    if global_batch % world:
        raise ConfigError("data.init_args.global_batch_size", f"{global_batch} does not divide into {world} GPUs")
    per_gpu = global_batch // world
    if choices.accumulate is not None:
        if per_gpu % choices.accumulate:
            raise ConfigError("trainer.accumulate_grad_batches", f"{choices.accumulate} does not divide the "
                                                                 f"per-GPU batch {per_gpu}")
        micros = [per_gpu // choices.accumulate]
    else:
        micros = micro_batches(per_gpu)
    order = [(s, ck) for s, ck in ORDER if choices.strategy in (None, s) and choices.checkpointing in (None, ck)
             and (world > 1 or s == "ddp" or choices.strategy == s)]  # one GPU: nothing to shard over
    given = choices.accumulate is not None or choices.checkpointing is not None or choices.strategy is not None
    tried = []
    for floor in (min(min_micro_batch, per_gpu), 1):
        for strategy, checkpointing in order:
            for micro in (m for m in micros if m >= floor or choices.accumulate is not None):
                tried.append(Plan(model, gpu_memory, world, global_batch, micro, per_gpu // micro, checkpointing,
                                  strategy, compiled, count.per_sample(compiled, checkpointing),
                                  fixed_bytes(count, strategy, world, bf16, choices.bucket_view), given))
                if tried[-1].fits:
                    return tried[-1]
    return min(tried, key=lambda p: p.peak_bytes)


# -- from a resolved `jitlab fit` config ---------------------------------------------------------------------

def model_label(net: dict[str, Any]) -> str:
    """A registry name (``JiT-G/16 @256``) when the network is one, else its class and widths."""
    args = net.get("init_args") or {}
    for name, kwargs in MODELS.items():
        if str(net.get("class_path", "")).endswith(".JiT") and all(args.get(k) == v for k, v in kwargs.items()):
            return f"{name} @{args.get('img_size')}"
    return (f"{str(net.get('class_path')).rsplit('.', 1)[-1]} w{args.get('hidden_size')} d{args.get('depth')} "
            f"/{args.get('patch_size')} @{args.get('img_size')}")


def user_choices(config: dict[str, Any]) -> Choices:
    """The memory settings a config gives explicitly: checkpointing and accumulation set (not None: `jitlab fit`'s
    parser leaves both None, unlike Lightning's default of 1 accumulation), a strategy other than ``auto``."""
    fit = FitView.of(config)
    accumulate = fit.trainer.get("accumulate_grad_batches")
    checkpointing = fit.net.get("checkpointing")
    strategy: Any = fit.trainer.get("strategy")
    kind, bucket_view = None, True
    if isinstance(strategy, dict) and strategy.get("class_path"):
        path = str(strategy["class_path"])
        kind = "fsdp2" if path.endswith(("ShardedStrategy", "ModelParallelStrategy")) else "ddp"
        bucket_view = bool((strategy.get("init_args") or {}).get("gradient_as_bucket_view", False))
    elif strategy not in (None, "auto"):
        kind, bucket_view = ("fsdp2" if "fsdp" in str(strategy) else "ddp"), False
    return Choices(accumulate, None if checkpointing is None else bool(checkpointing), kind, bucket_view)


def plan_config(config: dict[str, Any], gpu_memory_gib: float, world: int,
                min_micro_batch: int = MIN_MICRO_BATCH) -> Plan:
    """The plan of a resolved fit config on ``world`` GPUs of ``gpu_memory_gib`` GiB (a prediction)."""
    fit = FitView.of(config)
    net = {"class_path": fit.net_class, "init_args": fit.net_args()}  # the data's image size filled in
    bf16, compiled = fit.bf16, bool(fit.model.get("compile"))
    count = count_activations(net, fit.model.get("flow"), bf16=bf16, compiled=compiled)
    choices = user_choices(config)
    if "checkpointing" not in inspect.signature(import_path(net["class_path"])).parameters:
        choices = replace(choices, checkpointing=False)  # a network without the switch is never checkpointed
    return choose(count, model_label(net), gpu_memory_gib * GiB, world, fit.batch, compiled, bf16, choices,
                  min_micro_batch)


def overrides(plan: Plan, net_class: Any = None) -> dict[str, Any]:
    """The dotted config keys that carry ``plan`` (the strategy only on more than one GPU)."""
    keys: dict[str, Any] = {"trainer.accumulate_grad_batches": plan.accumulate}
    if net_class is None or "checkpointing" in inspect.signature(net_class).parameters:
        keys["model.net.init_args.checkpointing"] = plan.checkpointing
    if plan.world > 1 or plan.strategy == "fsdp2":
        keys["trainer.strategy"] = strategy_config(plan.strategy)
    return keys


# -- at `jitlab fit` -------------------------------------------------------------------------------------------

def device_memory_gib(accelerator: Any = "auto") -> float | None:
    """The memory of this process's GPU in GiB; None on CPU (no plan unless ``--gpu_memory`` is given)."""
    if str(accelerator) == "cpu" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GiB


def plan_fit(config: dict[str, Any], gpu_memory_gib: float, world: int,
             refuse: bool = True) -> tuple[Plan, dict[str, Any]]:
    """The plan of a resolved fit config and the dotted keys to set (those the user did not set).

    A config predicted not to fit (with the user's settings, or with any choice) raises one ConfigError naming
    the model, the predicted and the available memory, and the fix; with ``refuse`` False nothing is set.
    """
    plan = plan_config(config, gpu_memory_gib, world)
    if not plan.fits:
        if refuse:
            raise ConfigError("gpu_memory", plan.refusal())
        return plan, {}
    given = user_choices(config)
    keys = overrides(plan, import_path(FitView.of(config).net_class))
    kept = {"trainer.accumulate_grad_batches": given.accumulate, "model.net.init_args.checkpointing":
            given.checkpointing, "trainer.strategy": given.strategy}
    return plan, {k: v for k, v in keys.items() if kept.get(k) is None}
