"""The released network: its architecture from the checkpoint's own ``args``, its weights loaded strictly.

The release's ``args.model`` names its model (``JiT-B/16``, ...), ``args.img_size`` and ``args.class_num`` its
image size and classes: the network is the registry's model of that name, and every tensor must fit it
(``load_state_dict(strict=True)``). Only a checkpoint without ``args.model`` (or with a name jitlab does not
know) falls back to reading the architecture from the tensor shapes (``jitlab.train.convert.shapes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from jitlab.train.convert.read import OfficialCheckpointError, Weights, read_official, release_args, weights_of
from jitlab.train.convert.shapes import shape_facts, shapes_architecture, shapes_of
from jitlab.core.models.jit import JiT
from jitlab.core.models.registry import MODELS, model_kwargs

# the fields of args.model's architecture a mismatch is explained by, in the order they are named
EXPLAINED = ("depth", "hidden_size", "num_heads", "patch_size", "bottleneck_dim", "in_context_len")


def args_architecture(sd: Mapping[str, Any], args: Mapping[str, Any], in_context_start: int | None) -> dict:
    """JiT constructor arguments of ``args.model`` (a registry name) at ``args.img_size`` / ``args.class_num``.

    A field the args lack (img_size, class_num) is read from the shapes, the one use of them here.
    """
    arch = model_kwargs(args["model"])
    needs_shapes = args.get("img_size") is None or args.get("class_num") is None
    facts = shape_facts(sd) if needs_shapes else {}
    arch["img_size"] = int(args["img_size"]) if args.get("img_size") is not None else facts["img_size"]
    arch["num_classes"] = int(args["class_num"]) if args.get("class_num") is not None else facts["num_classes"]
    arch["attn_drop"] = float(args.get("attn_dropout") or 0.0)
    arch["proj_drop"] = float(args.get("proj_dropout") or 0.0)
    if in_context_start is not None:
        arch["in_context_start"] = int(in_context_start)
    with torch.device("meta"):  # every constructor argument, the defaults included, without memory
        arch = dict(JiT(**arch).init_args)
    arch.pop("attn_impl", None)  # a kernel choice, not the architecture: the caller picks it
    return arch


def infer_architecture(sd: Mapping[str, Any], args: Mapping[str, Any] | None = None, *,
                       in_context_start: int | None = None) -> dict[str, Any]:
    """JiT constructor arguments for the release state dict ``sd`` (tensors or shapes; ``net.`` stripped).

    From ``args`` (``vars`` of the release's Namespace) when ``args.model`` is a registry name; else from the
    shapes (``in_context_start``: this argument > the paper's default for the matched size).
    """
    args = dict(args or {})
    if args.get("model") in MODELS:
        return args_architecture(sd, args, in_context_start)
    # the shapes' reading warns when args.model names a model jitlab does not know
    return shapes_architecture(sd, args, in_context_start=in_context_start)


def mismatch(net: torch.nn.Module, sd: Mapping[str, Tensor]) -> str | None:
    """The keys and shapes of ``sd`` that ``net`` lacks, does not expect or holds at another shape (a few each)."""
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    have = shapes_of(sd)
    missing, unexpected = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
    wrong = [f"{k} {have[k]} != {want[k]}" for k in sorted(want.keys() & have.keys()) if have[k] != want[k]]
    parts = [f"{label} ({len(items)}): {items[:5]}" for label, items in
             (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    return "; ".join(parts) or None


def explain(sd: Mapping[str, Tensor], args: Mapping[str, Any]) -> str | None:
    """Which field of ``args`` the weights contradict (read from their shapes), if one does."""
    try:
        facts = shape_facts(sd)
    except OfficialCheckpointError:
        return None
    for arg, key in (("img_size", "img_size"), ("class_num", "num_classes")):
        if args.get(arg) is not None and int(args[arg]) != facts[key]:
            return f"args.{arg} is {args[arg]} but the weights imply {key}={facts[key]}"
    name = args.get("model")
    if name in MODELS:
        for key in EXPLAINED:
            if key in facts and facts[key] != MODELS[name][key]:
                return f"args.model is {name!r} ({key}={MODELS[name][key]}) but the weights have {key}={facts[key]}"
    return None


def check_state_dict(net: torch.nn.Module, sd: Mapping[str, Tensor], what: str,
                     args: Mapping[str, Any] | None = None) -> None:
    """Fail if ``sd``'s keys or shapes differ from ``net``'s: the contradicted ``args`` field, else the keys."""
    found = mismatch(net, sd)
    if found is None:
        return
    reason = explain(sd, args or {})
    raise OfficialCheckpointError(f"{what}: {reason}" if reason else f"{what} does not match the JiT: {found}")


def build_official(sd: Mapping[str, Tensor], arch: dict[str, Any], what: str, attn_impl: str = "fp32",
                   args: Mapping[str, Any] | None = None) -> JiT:
    """A JiT with ``arch`` holding the weights ``sd`` (strict), in eval mode."""
    net = JiT(**arch, attn_impl=attn_impl)
    check_state_dict(net, sd, what, args)
    net.load_state_dict(dict(sd), strict=True)
    return net.eval()


def load_official(path: str | Path, weights: Weights = "model_ema1", *, in_context_start: int | None = None,
                  attn_impl: Literal["fp32", "sdpa"] = "fp32") -> JiT:
    """The released network ``net(x, t, y)`` with one of its three weight sets, in eval mode.

    ``model_ema1`` (decay 0.9999) is the one the paper samples with.
    """
    ckpt = read_official(path)
    sd = weights_of(ckpt, weights, path)
    args = release_args(ckpt)
    arch = infer_architecture(sd, args, in_context_start=in_context_start)
    return build_official(sd, arch, f"{path} [{weights}]", attn_impl, args)
