"""Read the authors' released JiT checkpoints safely.

A release ``.pth`` is a dict of ``model``, ``model_ema1``, ``model_ema2`` (state dicts, network keys under ``net.``),
``optimizer``, ``epoch`` and ``args`` (an ``argparse.Namespace``, the one type allowed beyond ``weights_only``: a
file holding anything else is refused, never executed).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from torch import Tensor

Weights = Literal["model", "model_ema1", "model_ema2"]
WEIGHTS: tuple[str, ...] = ("model", "model_ema1", "model_ema2")
PREFIX = "net."


class OfficialCheckpointError(ValueError):
    """A release checkpoint cannot be read or does not describe a JiT network; the message says why."""


def _safe_load(path: Path) -> Any:
    """``torch.load`` with weights only, plus ``argparse.Namespace`` (the release's ``args``)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        try:  # the disallowed globals the file names (read without running it), else those the error names
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            names = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        foreign = [n for n in names if n != "argparse.Namespace"]
        if foreign:
            raise OfficialCheckpointError(f"refusing to load {path}: it pickles objects other than tensors, plain "
                                          f"containers and argparse.Namespace (found: {', '.join(foreign[:5])}); "
                                          "jitlab never unpickles arbitrary objects, so nothing in it was run. Re-save "
                                          "only the state dicts and args from a trusted environment.") from error
        raise OfficialCheckpointError(f"cannot read {path} as a PyTorch checkpoint: {error}") from error


def read_official(path: str | Path) -> dict[str, Any]:
    """The release checkpoint dict, read safely; fails unless it is a dict with at least one ``model*`` entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"release checkpoint not found: {path}")
    ckpt = _safe_load(path)
    if not isinstance(ckpt, dict):
        raise OfficialCheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if not any(isinstance(ckpt.get(k), Mapping) for k in WEIGHTS):
        raise OfficialCheckpointError(f"{path} has none of the weights {', '.join(WEIGHTS)} (it holds keys "
                                      f"{sorted(map(str, ckpt))[:8]})")
    return ckpt


def weights_of(ckpt: dict[str, Any], key: str, path: str | Path) -> dict[str, Tensor]:
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
