"""The fallback for a release checkpoint without ``args``: the JiT architecture read from the tensor shapes.

Shapes decide everything they show; the one knob they cannot show, ``in_context_start``, comes from the
registry entry of ``args.model`` or the paper's default for the matched model size.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Mapping

from jitlab.train.convert.read import OfficialCheckpointError
from jitlab.core.models.registry import MODELS, SIZES


def shapes_of(sd: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
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


def shapes_architecture(sd: Mapping[str, Any], args: Mapping[str, Any] | None = None, *,
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
        f"(CLI: --in_context_start)"
    )
