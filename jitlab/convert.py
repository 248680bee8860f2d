"""Load the authors' released JiT checkpoints, and convert them to jitlab's Lightning layout.

A release checkpoint (``.pth``) is a dict with ``model``, ``model_ema1``, ``model_ema2`` (state dicts
of a wrapper whose network keys start with ``net.``), ``optimizer``, ``epoch`` and ``args`` (an
``argparse.Namespace``). It is read with ``weights_only=True`` and exactly one extra allowed type,
``argparse.Namespace``: a file holding anything else is refused, never executed.

The architecture is read from the tensor shapes, cross-checked with ``args``; the one knob the
shapes cannot show, ``in_context_start``, comes from the registry entry of ``args.model`` or the
paper's default for the model size. ``jitlab convert-official CKPT --out OUT.ckpt`` writes a
checkpoint that :func:`jitlab.checkpoint.load_module` reads (``ema=0`` -> ``model_ema1``,
``ema=1`` -> ``model_ema2``, ``ema=None`` -> ``model``).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import Tensor

from jitlab.atomic import atomic_path
from jitlab.errors import ConfigError
from jitlab.models.jit import JiT
from jitlab.models.registry import MODELS, SIZES

__all__ = [
    "OfficialCheckpointError",
    "read_official",
    "shape_facts",
    "infer_architecture",
    "check_state_dict",
    "load_official",
    "estimate_steps_per_epoch",
    "official_sampling",
    "build_converted",
    "convert_official",
    "main",
]

Weights = Literal["model", "model_ema1", "model_ema2"]
WEIGHTS: tuple[str, ...] = ("model", "model_ema1", "model_ema2")
PREFIX = "net."
IMAGENET_TRAIN_IMAGES = 1_281_167  # the release trains on ImageNet-1k train
# The release's training defaults (its argument parser; paper.md section 4), used when ``args`` lacks a field.
RELEASE_DEFAULTS: dict[str, Any] = {
    "P_mean": -0.8, "P_std": 0.8, "t_eps": 0.05, "label_drop_prob": 0.1,
    "ema_decay1": 0.9999, "ema_decay2": 0.9996, "blr": 5e-5, "warmup_epochs": 5, "weight_decay": 0.0,
    "attn_dropout": 0.0, "proj_dropout": 0.0,
}
NOISE_SCALE_BY_IMG = {256: 1.0, 512: 2.0}  # the release's noise_scale per resolution (jitlab.flow)


class OfficialCheckpointError(ValueError):
    """A release checkpoint cannot be read or does not describe a JiT network; the message says why."""


# -- reading --------------------------------------------------------------------------------------


def _safe_load(path: Path) -> Any:
    """``torch.load`` with weights only, plus ``argparse.Namespace`` (the release's ``args``)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        foreign = _unsafe_globals(path, error)
        if foreign:
            raise OfficialCheckpointError(
                f"refusing to load {path}: it pickles objects other than tensors, plain containers and "
                f"argparse.Namespace (found: {', '.join(foreign[:5])}); jitlab never unpickles arbitrary objects, "
                f"so nothing in it was run. Re-save only the state dicts and args from a trusted environment."
            ) from error
        raise OfficialCheckpointError(f"cannot read {path} as a PyTorch checkpoint: {error}") from error


def _unsafe_globals(path: Path, error: Exception) -> list[str]:
    """The disallowed globals the file names (read without running it), else those named by ``error``."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        names = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    return [n for n in names if n != "argparse.Namespace"]


def read_official(path: str | Path) -> dict[str, Any]:
    """The release checkpoint dict, read safely; fails unless it is a dict with at least one ``model*`` entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"release checkpoint not found: {path}")
    ckpt = _safe_load(path)
    if not isinstance(ckpt, dict):
        raise OfficialCheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if not any(isinstance(ckpt.get(k), Mapping) for k in WEIGHTS):
        raise OfficialCheckpointError(
            f"{path} has none of the weights {', '.join(WEIGHTS)} (it holds keys {sorted(map(str, ckpt))[:8]})"
        )
    return ckpt


def _weights(ckpt: dict[str, Any], key: str, path: str | Path) -> dict[str, Tensor]:
    """One state dict of the release with ``net.`` stripped."""
    if key not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {key!r}")
    sd = ckpt.get(key)
    if not isinstance(sd, Mapping):
        held = [k for k in WEIGHTS if isinstance(ckpt.get(k), Mapping)]
        raise OfficialCheckpointError(f"{path} has no {key!r} state dict (it holds {', '.join(held)})")
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise OfficialCheckpointError(f"{path}: {key!r} has non-tensor entries {bad[:5]}")
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in sd.items()}


def release_args(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``vars(ckpt["args"])`` (empty when the file has no args)."""
    args = ckpt.get("args")
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        return vars(args)
    if isinstance(args, Mapping):
        return dict(args)
    raise OfficialCheckpointError(f"checkpoint 'args' is a {type(args).__name__}, expected argparse.Namespace")


def plain(value: Any) -> Any:
    """``value`` as JSON-like builtins (dicts, lists, str, numbers, bool, None); anything else as ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


# -- architecture from shapes --------------------------------------------------------------------


def _shapes(sd: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """key -> shape, from tensors or from plain shapes (lists)."""
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in sd.items()}


def _need(shapes: dict[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise OfficialCheckpointError(
            f"missing tensor {key!r} needed to infer the architecture; the weights hold e.g. {sorted(shapes)[:5]}"
        )
    return shapes[key]


def _depth(shapes: dict[str, tuple[int, ...]]) -> int:
    """Number of blocks from the ``blocks.<i>.`` indices (which must run 0..depth-1)."""
    found = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not found:
        raise OfficialCheckpointError("no 'blocks.<i>.*' tensors: this is not a JiT state dict")
    depth = max(found) + 1
    gaps = sorted(set(range(depth)) - found)
    if gaps:
        raise OfficialCheckpointError(f"blocks {gaps[:5]} are missing (found block indices up to {depth - 1})")
    return depth


def _mlp(shapes: dict[str, tuple[int, ...]], hidden: int) -> tuple[str, float]:
    """(``swiglu`` | ``gelu``, mlp_ratio) whose hidden width reproduces block 0's MLP weights."""
    if "blocks.0.mlp.w12.weight" in shapes:
        kind, width = "swiglu", shapes["blocks.0.mlp.w12.weight"][0] // 2  # w12: (2 * width, D)
        widths = lambda r: int(int(hidden * r) * 2 / 3)  # noqa: E731  (SwiGLU: int(hidden * 2/3))
        guesses = [(width * 1.5 + k) / hidden for k in (0.0, 0.5, 1.0, 1.5)]
    else:
        kind, width = "gelu", _need(shapes, "blocks.0.mlp.fc1.weight")[0]  # fc1: (width, D)
        widths = lambda r: int(hidden * r)  # noqa: E731
        guesses = [width / hidden]
    for ratio in (4.0, *guesses):
        if widths(ratio) == width:
            return kind, ratio
    raise OfficialCheckpointError(f"no mlp_ratio gives the {kind} MLP width {width} at hidden size {hidden}")


def shape_facts(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Every JiT constructor argument the tensor shapes determine (``net.`` already stripped)."""
    shapes = _shapes(sd)
    _, tokens, hidden = _need(shapes, "pos_embed")  # (1, L, D)
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise OfficialCheckpointError(f"pos_embed has {tokens} tokens, not a square grid")
    if "x_embedder.proj1.weight" in shapes:
        bottleneck, channels, patch, _ = shapes["x_embedder.proj1.weight"]  # (d', C, p, p)
    else:
        _, channels, patch, _ = _need(shapes, "x_embedder.proj.weight")  # (D, C, p, p)
        bottleneck = None
    mlp, mlp_ratio = _mlp(shapes, hidden)
    facts = dict(
        img_size=grid * patch, patch_size=patch, in_channels=channels, hidden_size=hidden, depth=_depth(shapes),
        mlp_ratio=mlp_ratio, mlp=mlp, bottleneck_dim=bottleneck,
        qk_norm="blocks.0.attn.q_norm.weight" in shapes,
        in_context_len=shapes["in_context_posemb"][1] if "in_context_posemb" in shapes else 0,  # (1, P, D)
        norm="layer" if "blocks.0.norm1.bias" in shapes else "rms",
        num_classes=_need(shapes, "y_embedder.embedding_table.weight")[0] - 1,  # (classes + 1, D)
    )
    if facts["qk_norm"]:
        head_dim = shapes["blocks.0.attn.q_norm.weight"][0]  # (head_dim,)
        if hidden % head_dim:
            raise OfficialCheckpointError(f"q_norm width {head_dim} does not divide the hidden size {hidden}")
        facts["num_heads"] = hidden // head_dim
    return facts


def _size_entry(facts: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The registry size (B, L, H, ...) whose depth and width match the shapes, if exactly one does."""
    keys = ("depth", "hidden_size", "num_heads", "bottleneck_dim", "in_context_len")
    hits = [(n, s) for n, s in SIZES.items() if all(k not in facts or facts[k] == s[k] for k in keys)]
    return hits[0] if len(hits) == 1 else None


def _cross_check(facts: dict[str, Any], args: dict[str, Any]) -> dict[str, Any] | None:
    """Compare the shapes with ``args.model``/``img_size``/``class_num``; the registry entry of args.model."""
    entry = None
    name = args.get("model")
    if name is not None and name in MODELS:
        entry = MODELS[name]
        for key in ("depth", "hidden_size", "num_heads", "bottleneck_dim", "in_context_len", "patch_size"):
            if key in facts and facts[key] != entry[key]:
                raise OfficialCheckpointError(
                    f"args.model is {name!r} ({key}={entry[key]}) but the weights have {key}={facts[key]}"
                )
    elif name is not None:
        warnings.warn(f"args.model {name!r} is not a jitlab registry name; the architecture comes from the shapes")
    for arg, key in (("img_size", "img_size"), ("class_num", "num_classes")):
        if args.get(arg) is not None and int(args[arg]) != facts[key]:
            raise OfficialCheckpointError(f"args.{arg} is {args[arg]} but the weights imply {key}={facts[key]}")
    return entry


def infer_architecture(sd: Mapping[str, Any], args: Mapping[str, Any] | None = None, *,
                       in_context_start: int | None = None) -> dict[str, Any]:
    """JiT constructor arguments for the state dict ``sd`` (tensors or shapes; ``net.`` stripped).

    Shapes decide everything they show; ``args`` (``vars`` of the release's Namespace) are
    cross-checked and supply what shapes cannot: ``num_heads`` without qk-norm, ``in_context_start``
    (argument > registry entry of ``args.model`` > the paper's default for the matched size), dropout.
    """
    args = dict(args or {})
    facts = shape_facts(sd)
    entry = _cross_check(facts, args)
    size = _size_entry(facts)
    if "num_heads" not in facts:
        source = entry or (size[1] if size else None)
        if source is None:
            raise OfficialCheckpointError("the weights have no q_norm, so the number of heads needs a known args.model")
        facts["num_heads"] = source["num_heads"]
    facts["in_context_start"] = _in_context_start(facts, args, entry, size, in_context_start)
    facts["rope"] = True  # RoPE has no weights; every released JiT uses it
    facts["attn_drop"] = float(args.get("attn_dropout") or 0.0)
    facts["proj_drop"] = float(args.get("proj_dropout") or 0.0)
    return facts


def _in_context_start(facts: dict[str, Any], args: dict[str, Any], entry: dict[str, Any] | None,
                      size: tuple[str, dict[str, Any]] | None, given: int | None) -> int:
    """The block where the class tokens enter: not visible in the shapes."""
    if given is not None:
        return int(given)
    if facts["in_context_len"] == 0:
        return 0  # no class tokens: unused
    if entry is not None:
        return entry["in_context_start"]
    if size is not None:
        name, spec = size
        warnings.warn(
            f"args.model is {'missing' if args.get('model') is None else repr(args['model'])}: in_context_start="
            f"{spec['in_context_start']} is the default of size {name} "
            f"(depth {spec['depth']}, hidden {spec['hidden_size']})"
        )
        return spec["in_context_start"]
    raise OfficialCheckpointError(
        f"cannot tell in_context_start (not visible in the weights): args.model is {args.get('model')!r} and "
        f"depth {facts['depth']} / hidden {facts['hidden_size']} match no known size; pass in_context_start "
        f"(CLI: --in-context-start)"
    )


# -- building and checking -----------------------------------------------------------------------


def check_state_dict(net: torch.nn.Module, sd: Mapping[str, Tensor], what: str) -> None:
    """Fail, listing a few, if ``sd``'s keys or shapes differ from ``net``'s."""
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    have = _shapes(sd)
    missing, unexpected = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
    wrong = [f"{k} {have[k]} != {want[k]}" for k in sorted(want.keys() & have.keys()) if have[k] != want[k]]
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(items)}): {items[:5]}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
        raise OfficialCheckpointError(f"{what} does not match the inferred JiT: " + "; ".join(parts))


def build_official(sd: Mapping[str, Tensor], arch: dict[str, Any], what: str, attn_impl: str = "fp32") -> JiT:
    """A JiT with ``arch`` holding the weights ``sd`` (strict), in eval mode."""
    net = JiT(**arch, attn_impl=attn_impl)
    check_state_dict(net, sd, what)
    net.load_state_dict(dict(sd), strict=True)
    return net.eval()


def load_official(path: str | Path, weights: Weights = "model_ema1", *, in_context_start: int | None = None,
                  attn_impl: Literal["fp32", "sdpa"] = "fp32") -> JiT:
    """The released network ``net(x, t, y)`` with one of its three weight sets, in eval mode.

    ``model_ema1`` (decay 0.9999) is the one the paper samples with.
    """
    ckpt = read_official(path)
    sd = _weights(ckpt, weights, path)
    arch = infer_architecture(sd, release_args(ckpt), in_context_start=in_context_start)
    return build_official(sd, arch, f"{path} [{weights}]", attn_impl)


# -- conversion ----------------------------------------------------------------------------------


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
    from jitlab.flow import FlowConfig
    from jitlab.module import JiTModule, OptimConfig

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
    from jitlab.ema import MultiEMA

    ema = MultiEMA(decays=decays)
    names = [n for n, p in net.named_parameters() if p.is_floating_point()]
    ema.averages = [{n: avg[n].detach().to(torch.float32) for n in names} for avg in averages]
    ema.num_updates, ema.last_step = step, step
    return ema.state_key, ema.state_dict()


def build_converted(src: str | Path, *, in_context_start: int | None = None, steps_per_epoch: int | None = None,
                    attn_impl: Literal["fp32", "sdpa"] = "fp32") -> tuple[dict[str, Any], list[str]]:
    """The jitlab checkpoint dict for release checkpoint ``src``, and the assumptions it rests on."""
    ckpt = read_official(src)
    args = release_args(ckpt)
    raw, ema1, ema2 = (_weights(ckpt, key, src) for key in WEIGHTS)
    arch = infer_architecture(raw, args, in_context_start=in_context_start)
    net = build_official(raw, arch, f"{src} [model]", attn_impl)
    check_state_dict(net, ema1, f"{src} [model_ema1]")
    check_state_dict(net, ema2, f"{src} [model_ema2]")
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
            "pass --steps-per-epoch")
    state_key, ema_state = _ema_state(net, [ema1, ema2], decays, step)
    out = {
        "epoch": max(epoch, 0),
        "global_step": step,
        "pytorch-lightning_version": _lightning_version(),
        "state_dict": module.state_dict(),  # the raw weights as net.* (and whatever else JiTModule registers)
        "hyper_parameters": dict(module.hparams),
        "hparams_name": "kwargs",
        "callbacks": {state_key: ema_state},
        "official_sampling": official_sampling(args),
        "jitlab_source": {"path": str(Path(src).resolve()), "epoch": epoch if epoch >= 0 else None,
                          "args": plain(args), "global_step": note, "assumptions": assumed},
    }
    return out, assumed


def _lightning_version() -> str:
    import lightning

    return lightning.__version__


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


# -- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jitlab convert-official",
        description="Convert an authors' JiT checkpoint (.pth) to a jitlab checkpoint that `jitlab sample` reads.",
    )
    parser.add_argument("ckpt", type=Path,
                        help="the release checkpoint (dict with model, model_ema1, model_ema2, args)")
    parser.add_argument("--out", type=Path, required=True, help="the jitlab checkpoint to write (e.g. jit-b16.ckpt)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--in-context-start", type=int, default=None,
                        help="block where the class tokens enter (default: from args.model or the model size)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="optimizer steps per epoch for global_step (default: estimated from args, else 0)")
    parser.add_argument("--attn-impl", choices=["fp32", "sdpa"], default="fp32",
                        help="attention kernel of the rebuilt network (fp32 = the release's float32 softmax)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            converted = convert_official(args.ckpt, args.out, overwrite=args.overwrite,
                                         in_context_start=args.in_context_start,
                                         steps_per_epoch=args.steps_per_epoch, attn_impl=args.attn_impl)
    except (OfficialCheckpointError, ConfigError, FileNotFoundError, FileExistsError) as error:
        print(f"jitlab convert-official: error: {error}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"jitlab convert-official: warning: {warning.message}", file=sys.stderr)
    _report(converted, args.out)
    return 0


def _report(converted: dict[str, Any], out: Path) -> None:
    source = converted["jitlab_source"]
    init = converted["hyper_parameters"]["net"]["init_args"]
    arch = ", ".join(f"{k}={init[k]}" for k in ("img_size", "patch_size", "hidden_size", "depth", "num_heads",
                                                 "bottleneck_dim", "in_context_len", "in_context_start", "num_classes"))
    print(f"wrote {out}")
    print(f"  architecture: {arch}")
    print(f"  epoch {source['epoch']}, global_step {converted['global_step']} ({source['global_step']})")
    decays = list(converted["callbacks"].values())[0]["decays"]
    print(f"  EMA decays {decays} (load_module ema=0, ema=1; ema=None = raw weights)")
    print(f"  official sampling: {converted['official_sampling']}")
    for note in source["assumptions"]:
        print(f"  assumed: {note}")


if __name__ == "__main__":
    sys.exit(main())
