"""Convert a release checkpoint to jitlab's Lightning layout (what :func:`jitlab.train.checkpoint.load_module` reads).

``ema=0`` -> ``model_ema1``, ``ema=1`` -> ``model_ema2``, ``ema=None`` -> ``model``. The release's training flags
in ``args`` become the module's flow and optimiser settings; a flag the args lack takes the release's default,
and the written checkpoint lists every such assumption.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import Tensor

from jitlab.atomic import atomic_path
from jitlab.train.convert.network import build_official, check_state_dict, infer_architecture
from jitlab.train.convert.read import WEIGHTS, OfficialCheckpointError, plain, read_official, release_args, weights_of
from jitlab.core.models.jit import JiT

IMAGENET_TRAIN_IMAGES = 1_281_167  # the release trains on ImageNet-1k train
# The release's training defaults (its argument parser; paper.md section 4), used when ``args`` lacks a field.
RELEASE_DEFAULTS: dict[str, Any] = {"P_mean": -0.8, "P_std": 0.8, "t_eps": 0.05, "label_drop_prob": 0.1,
                                    "ema_decay1": 0.9999, "ema_decay2": 0.9996, "blr": 5e-5, "warmup_epochs": 5,
                                    "weight_decay": 0.0}
NOISE_SCALE_BY_IMG = {256: 1.0, 512: 2.0}  # the release's noise_scale per resolution (jitlab.core.flow)


def _arg(args: dict[str, Any], name: str, assumed: list[str]) -> Any:
    """``args[name]``, else the release's default (noted in ``assumed``)."""
    if args.get(name) is not None:
        return args[name]
    assumed.append(f"{name}={RELEASE_DEFAULTS[name]} (release default; not in args)")
    return RELEASE_DEFAULTS[name]


def _noise_scale(args: dict[str, Any], img_size: int, assumed: list[str]) -> float:
    if args.get("noise_scale") is not None:
        return float(args["noise_scale"])
    if img_size not in NOISE_SCALE_BY_IMG:
        raise OfficialCheckpointError(f"args has no noise_scale and the release's value at {img_size}px is unknown")
    assumed.append(f"noise_scale={NOISE_SCALE_BY_IMG[img_size]} (release value at {img_size}px; not in args)")
    return NOISE_SCALE_BY_IMG[img_size]


def estimate_steps_per_epoch(args: dict[str, Any]) -> int | None:
    """Optimizer steps per epoch of the release on ImageNet-1k (per-GPU batch x GPUs, last batch dropped)."""
    batch, world = args.get("batch_size"), args.get("world_size")
    if not batch or not world or args.get("class_num", 1000) != 1000:
        return None
    per_rank = math.ceil(IMAGENET_TRAIN_IMAGES / int(world))  # DistributedSampler pads to equal shards
    return per_rank // int(batch) // int(args.get("accumulation_steps") or 1)


def official_sampling(args: dict[str, Any]) -> dict[str, Any]:
    """The release's sampling settings, named as ``JiTModule.generate``'s arguments (None = not recorded)."""
    lo, hi = args.get("interval_min"), args.get("interval_max")
    return {
        "cfg_scale": args.get("cfg"),
        "cfg_interval": None if lo is None or hi is None else [float(lo), float(hi)],
        "steps": args.get("num_sampling_steps"),
        "method": args.get("sampling_method"),
    }


def _module(net: JiT, args: dict[str, Any], assumed: list[str]):
    """``JiTModule(net, flow, optim, label_drop)`` with the release's flags: its hparams and state dict are saved."""
    from jitlab.core.flow import FlowConfig
    from jitlab.train.module import JiTModule, OptimConfig

    t_eps = float(_arg(args, "t_eps", assumed))
    flow = FlowConfig(mu=float(_arg(args, "P_mean", assumed)), sigma=float(_arg(args, "P_std", assumed)),
                      noise_scale=_noise_scale(args, net.img_size, assumed), t_eps=t_eps, sample_t_eps=t_eps)
    schedule = args.get("lr_schedule") if args.get("lr_schedule") in ("constant", "cosine") else "constant"
    optim = OptimConfig(blr=float(_arg(args, "blr", assumed)),
                        warmup_epochs=float(_arg(args, "warmup_epochs", assumed)),
                        weight_decay=float(_arg(args, "weight_decay", assumed)), schedule=schedule)
    return JiTModule(net, flow=flow, optim=optim, label_drop=float(_arg(args, "label_drop_prob", assumed)))


def _ema_state(net: JiT, averages: Sequence[Mapping[str, Tensor]], decays: Sequence[float],
               step: int) -> tuple[str, dict]:
    """(state_key, state) of a ``MultiEMA`` holding ``averages`` as float32, as its ``state_dict()`` lays it out."""
    from jitlab.train.ema import MultiEMA

    ema = MultiEMA(decays=decays)
    names = [n for n, p in net.named_parameters() if p.is_floating_point()]
    ema.averages = [{n: avg[n].detach().to(torch.float32) for n in names} for avg in averages]
    ema.num_updates, ema.last_step = step, step
    return ema.state_key, ema.state_dict()


def build_converted(src: str | Path, *, in_context_start: int | None = None, steps_per_epoch: int | None = None,
                    attn_impl: Literal["fp32", "sdpa"] = "fp32") -> tuple[dict[str, Any], list[str]]:
    """The jitlab checkpoint dict for release checkpoint ``src``, and the assumptions it rests on."""
    import lightning

    ckpt = read_official(src)
    args = release_args(ckpt)
    raw, ema1, ema2 = (weights_of(ckpt, key, src) for key in WEIGHTS)
    arch = infer_architecture(raw, args, in_context_start=in_context_start)
    net = build_official(raw, arch, f"{src} [model]", attn_impl, args)
    check_state_dict(net, ema1, f"{src} [model_ema1]", args)
    check_state_dict(net, ema2, f"{src} [model_ema2]", args)
    assumed: list[str] = []
    if not args:
        assumed.append("the file has no args: every flag below is a release default")
    module = _module(net, args, assumed)
    decays = [float(_arg(args, "ema_decay1", assumed)), float(_arg(args, "ema_decay2", assumed))]
    epoch = int(ckpt.get("epoch", -1))
    per_epoch = steps_per_epoch if steps_per_epoch is not None else estimate_steps_per_epoch(args)
    step = (epoch + 1) * per_epoch if per_epoch is not None and epoch >= 0 else 0
    note = (f"estimated: (epoch {epoch} + 1) x {per_epoch} steps per epoch" if step else
            "unknown (0): no epoch, or args lack batch_size/world_size or are not ImageNet-1k; "
            "pass --steps_per_epoch")
    state_key, ema_state = _ema_state(net, [ema1, ema2], decays, step)
    out = {
        "epoch": max(epoch, 0),
        "global_step": step,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": module.state_dict(),  # the raw weights as net.* (and whatever else JiTModule registers)
        "hyper_parameters": dict(module.hparams),
        "hparams_name": "kwargs",
        "callbacks": {state_key: ema_state},
        "official_sampling": official_sampling(args),
        "jitlab_source": {"path": str(Path(src).resolve()), "epoch": epoch if epoch >= 0 else None,
                          "args": plain(args), "global_step": note, "assumptions": assumed},
    }
    return out, assumed


def save_atomic(obj: Any, out: Path) -> None:
    """``torch.save`` to a temporary file next to ``out``, then rename over it."""
    with atomic_path(out) as tmp:
        torch.save(obj, tmp)


def convert_official(src: str | Path, out: str | Path, *, overwrite: bool = False,
                     in_context_start: int | None = None, steps_per_epoch: int | None = None,
                     attn_impl: Literal["fp32", "sdpa"] = "fp32") -> dict[str, Any]:
    """Write the release checkpoint ``src`` as a jitlab checkpoint ``out``; returns what was written."""
    src, out = Path(src), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise FileExistsError(f"--out {out} is the source checkpoint itself")
    converted, _ = build_converted(src, in_context_start=in_context_start, steps_per_epoch=steps_per_epoch,
                                   attn_impl=attn_impl)
    save_atomic(converted, out)
    return converted
