"""One model's measurements as one row: the Trainer, the plain loop, both samplers, MFU and peak memory.

``mini`` is the model and data of the mini scale (``experiments/scales/mini.yaml``); any registry name
(``JiT-B/16``) runs on the built-in `jitlab fit` defaults with that network at the given resolution. On a GPU
the Trainer runs bf16-mixed with ``torch.compile`` (the paper's recipe); on a CPU fp32, compiled only on request.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jitlab.experiments.bench.machine import matmul_dtype, peak_memory_mb, reset_peak_memory
from jitlab.score.generate import SamplerSettings
from jitlab.core.sampling import Sampler, nfe

MINI = "mini"
MINI_CONFIG = Path("experiments/scales/mini.yaml")
LARGE_GMACS = 5.0  # models above this many GMACs per image get the small default batches


@dataclass
class BenchSettings:
    """What one bench run measures; ``None`` batches pick a default from the model's size."""

    steps: int = 10
    warmup: int = 2
    batch_size: int | None = None
    sample_batch: int | None = None
    sample_steps: int = 50
    cfg_scale: float = 2.9
    cfg_interval: tuple[float, float] = (0.1, 1.0)
    device: str = "cpu"
    compile: bool | None = None  # None: on for a GPU, off for a CPU
    attn_impl: str | None = None  # None: the config's (mini) or the release's fp32 attention (registry names)
    config: Path = MINI_CONFIG


def net_override(model: str, attn_impl: str | None) -> list[str]:
    """The `--model.net` of a registry name (the whole init_args, so no default of the preset leaks in)."""
    from jitlab.core.models.registry import model_kwargs

    init_args = {"img_size": None, "num_classes": None, **model_kwargs(model), "attn_impl": attn_impl or "fp32"}
    return ["--model.net", json.dumps({"class_path": "jitlab.core.models.JiT", "init_args": init_args})]


def fit_args(model: str, img_size: int | None, batch: int | None, settings: BenchSettings, root: Path) -> list[str]:
    """`jitlab fit` arguments (no verb) for warm-up + timed steps in ``root`` at the device's precision;
    ``batch``: the global batch (``None``: the config's)."""
    gpu = torch.device(settings.device).type == "cuda"
    compiled = gpu if settings.compile is None else settings.compile
    args = ["--config", str(settings.config)] if model == MINI else net_override(model, settings.attn_impl)
    if model == MINI and settings.attn_impl:
        args.append(f"--model.net.init_args.attn_impl={settings.attn_impl}")
    if img_size is not None:
        args.append(f"--data.init_args.resolution={img_size}")
    if batch is not None:
        args.append(f"--data.init_args.global_batch_size={batch}")
    return args + [
        f"--trainer.max_steps={settings.warmup + settings.steps}",
        f"--trainer.default_root_dir={root}", f"--checkpoint.dirpath={root / 'checkpoints'}",
        "--samples.num_images=2", "--samples.steps=1",  # the end-of-training grid: outside the clock, kept cheap
        f"--model.compile={str(compiled).lower()}",
        f"--trainer.accelerator={'gpu' if gpu else 'cpu'}", "--trainer.devices=1",
        f"--trainer.precision={'bf16-mixed' if gpu else '32-true'}",
    ]


def model_gmacs(module) -> float:
    """Multiply-adds (1e9) of one forward of one image, counted on the meta device."""
    from jitlab.core.models.flops import count_gmacs
    from jitlab.core.models.spec import build_net

    with torch.device("meta"):
        net = build_net(module.hparams["net"])
    return count_gmacs(net)


def describe(model: str, net) -> str:
    args = getattr(net, "init_args", {})
    size = f"{args.get('img_size')}px/p{args.get('patch_size')}"
    return f"{model} ({size}, width {args.get('hidden_size')}, depth {args.get('depth')})"


def bench_model(model: str, img_size: int | None, settings: BenchSettings) -> dict[str, Any]:
    """Measure one model; a flat dict of numbers and the settings they were measured at."""
    from jitlab.experiments.bench.machine import matmul_peak_gflops
    from jitlab.experiments.bench.sample import sample_rates
    from jitlab.experiments.bench.train import find_callback, raw_rate, trainer_rate
    from jitlab.score.fitconfig import instantiate_fit
    from jitlab.train.ema import MultiEMA

    device = torch.device(settings.device)
    reset_peak_memory(device)
    with tempfile.TemporaryDirectory(prefix="jitlab-bench-") as tmp:
        probe = instantiate_fit(fit_args(model, img_size, None, settings, Path(tmp)))  # only to read the sizes
        gmacs = model_gmacs(probe.model)
        large = gmacs > LARGE_GMACS  # the flags' batches, else the config's and 16 (4 and 2 for large models)
        batch = settings.batch_size or (4 if large else int(probe.datamodule.global_batch_size))
        sample_batch = settings.sample_batch or (2 if large else 16)
        del probe
        cli = instantiate_fit(fit_args(model, img_size, batch, settings, Path(tmp)))
        bf16 = cli.trainer.precision == "bf16-mixed"
        train = trainer_rate(cli, settings.warmup, batch)
        module = cli.model
        raw = raw_rate(cli.trainer, module, cli.datamodule, find_callback(cli.trainer, MultiEMA), settings.warmup,
                       settings.steps, bf16)
        compiled = bool(module.compile)
        reference_net = torch.compile(module.net) if compiled else module.net
        sampler = SamplerSettings(Sampler.heun, settings.sample_steps, settings.cfg_scale,
                                  tuple(settings.cfg_interval), 0)
        sampling = sample_rates(module, sampler, sample_batch, reference_net, bf16)
    peak = matmul_peak_gflops(device)
    evaluations = nfe(Sampler.heun, settings.sample_steps)  # per image; a CFG pair counts once
    train_gflop = 6 * gmacs  # per image: 2 FLOPs per multiply-add, backward = 2 x forward
    ref_gflop = 2 * 2 * evaluations * gmacs  # per image: two forwards per evaluation
    return {
        "model": describe(model, module.net), "device": str(device), "torch": torch.__version__,
        "precision": "bf16-mixed" if bf16 else "fp32", "compile": compiled, "threads": torch.get_num_threads(),
        "batch_size": batch, "steps": settings.steps, "warmup": settings.warmup,
        "train_img_per_s": train, "raw_train_img_per_s": raw, "trainer_vs_raw": train / raw,
        "sample_batch": sample_batch, "sampler": "heun", "sample_steps": settings.sample_steps,
        "cfg_scale": settings.cfg_scale, "cfg_interval": list(settings.cfg_interval), "nfe": evaluations,
        **sampling,
        "sample_speedup": sampling["sample_img_per_s"] / sampling["ref_sample_img_per_s"],
        "nfe_per_s": sampling["sample_img_per_s"] * evaluations,
        "gmacs_per_image": gmacs, "matmul_peak_gflops": peak, "matmul_dtype": str(matmul_dtype(device)).split(".")[-1],
        "mfu": train * train_gflop / peak, "raw_mfu": raw * train_gflop / peak,
        "ref_sample_mfu": sampling["ref_sample_img_per_s"] * ref_gflop / peak,
        "peak_mem_mb": peak_memory_mb(device),
    }
