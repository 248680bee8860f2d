"""The released network: the registry model its ``args.model`` names (``JiT-B/16``, ...), weights loaded strictly.

A checkpoint without ``args.model`` (or with a name jitlab does not know) falls back to reading the architecture
from the tensor shapes: they decide everything they show; the one knob they cannot show, ``in_context_start``, is
given or is the paper's default for the matched model size.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from jitlab.train.convert.read import OfficialCheckpointError, Weights, read_official, release_args, weights_of
from jitlab.core.models.jit import JiT
from jitlab.core.models.registry import MODELS, SIZES, model_kwargs


def shapes_of(sd: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """key -> shape, from tensors or from plain shapes (lists)."""
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in sd.items()}


def _need(shapes: dict[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise OfficialCheckpointError(f"missing tensor {key!r} needed to infer the architecture; the weights hold "
                                      f"e.g. {sorted(shapes)[:5]}")
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
    shapes = shapes_of(sd)
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


def contradicted_size(facts: dict[str, Any], args: Mapping[str, Any]) -> str | None:
    """Which of ``args.img_size`` / ``args.class_num`` the shapes' ``facts`` contradict, if one does."""
    for arg, key in (("img_size", "img_size"), ("class_num", "num_classes")):
        if args.get(arg) is not None and int(args[arg]) != facts[key]:
            return f"args.{arg} is {args[arg]} but the weights imply {key}={facts[key]}"
    return None


def shapes_architecture(sd: Mapping[str, Any], args: Mapping[str, Any] | None = None, *,
                        in_context_start: int | None = None) -> dict[str, Any]:
    """JiT constructor arguments for the state dict ``sd``; ``args`` (no registry ``model``) are cross-checked and
    give the dropout; ``num_heads`` without qk-norm and ``in_context_start`` (unless given) are the matched size's."""
    args = dict(args or {})
    facts = shape_facts(sd)
    if args.get("model") is not None:
        warnings.warn(f"args.model {args['model']!r} is not a jitlab registry name; the architecture comes from "
                      "the shapes")
    contradiction = contradicted_size(facts, args)
    if contradiction:
        raise OfficialCheckpointError(contradiction)
    keys = ("depth", "hidden_size", "num_heads", "bottleneck_dim", "in_context_len")
    hits = [(n, s) for n, s in SIZES.items() if all(k not in facts or facts[k] == s[k] for k in keys)]
    size = hits[0] if len(hits) == 1 else None  # the registry size (B, L, H, ...) the shapes match, if one
    if "num_heads" not in facts:
        if size is None:
            raise OfficialCheckpointError("the weights have no q_norm, so the number of heads needs a known args.model")
        facts["num_heads"] = size[1]["num_heads"]
    facts["in_context_start"] = _in_context_start(facts, args, size, in_context_start)
    facts["rope"] = True  # RoPE has no weights; every released JiT uses it
    facts["attn_drop"] = float(args.get("attn_dropout") or 0.0)
    facts["proj_drop"] = float(args.get("proj_dropout") or 0.0)
    return facts


def _in_context_start(facts: dict[str, Any], args: dict[str, Any], size: tuple[str, dict[str, Any]] | None,
                      given: int | None) -> int:
    """The block where the class tokens enter: not visible in the shapes."""
    if given is not None:
        return int(given)
    if facts["in_context_len"] == 0:
        return 0  # no class tokens: unused
    if size is not None:
        name, spec = size
        warnings.warn(f"args.model is {'missing' if args.get('model') is None else repr(args['model'])}: "
                      f"in_context_start={spec['in_context_start']} is the default of size {name} "
                      f"(depth {spec['depth']}, hidden {spec['hidden_size']})")
        return spec["in_context_start"]
    raise OfficialCheckpointError(f"cannot tell in_context_start (not visible in the weights): args.model is "
                                  f"{args.get('model')!r} and depth {facts['depth']} / hidden {facts['hidden_size']} "
                                  "match no known size; pass in_context_start (CLI: --in_context_start)")


# the fields of args.model's architecture a mismatch is explained by, in the order they are named
EXPLAINED = ("depth", "hidden_size", "num_heads", "patch_size", "bottleneck_dim", "in_context_len")


def infer_architecture(sd: Mapping[str, Any], args: Mapping[str, Any] | None = None, *,
                       in_context_start: int | None = None) -> dict[str, Any]:
    """JiT constructor arguments for the release state dict ``sd`` (tensors or shapes; ``net.`` stripped): the
    registry's ``args.model`` at ``args.img_size`` / ``args.class_num`` (else from the shapes), or the shapes'
    reading (``shapes_architecture``) when ``args.model`` is not a registry name."""
    args = dict(args or {})
    if args.get("model") not in MODELS:  # the shapes' reading warns when args.model names a model jitlab does not know
        return shapes_architecture(sd, args, in_context_start=in_context_start)
    arch = model_kwargs(args["model"])
    facts = shape_facts(sd) if args.get("img_size") is None or args.get("class_num") is None else {}
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
    reason, name = contradicted_size(facts, args), args.get("model")
    for key in EXPLAINED if reason is None and name in MODELS else ():
        if key in facts and facts[key] != MODELS[name][key]:
            return f"args.model is {name!r} ({key}={MODELS[name][key]}) but the weights have {key}={facts[key]}"
    return reason


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
    """The released network ``net(x, t, y)`` with one of its three weight sets (the paper samples with
    ``model_ema1``, decay 0.9999), in eval mode."""
    ckpt = read_official(path)
    sd = weights_of(ckpt, weights, path)
    args = release_args(ckpt)
    arch = infer_architecture(sd, args, in_context_start=in_context_start)
    return build_official(sd, arch, f"{path} [{weights}]", attn_impl, args)
