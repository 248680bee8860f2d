"""A learned skip around any backbone (issue 15, the pre-conditioners): ``out = net(z, t, y) + c(t) * z``.

The skip gives eps- and v-prediction the part of their target that is a multiple of the input (eps = z at t = 0;
``v = (x - z) / (1 - t)`` has ``-z / (1 - t)`` in it). ``c(t)`` is a small MLP on sinusoidal features of t, its last
layer zero so the wrapper starts as the wrapped net; EDM's ``c_skip`` (``jitlab.core.precond``) is the fixed,
derived counterpart. What the data decide (``FILLED_FROM_DATA``) is taken by the wrapper and handed to the wrapped
net, so ``jitlab fit`` fills it as for a plain backbone. The wrapper answers the rank argument (``PatchBackbone``)
with the wrapped net's widths: it is about what the network computes, not the skip.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn

from jitlab.classpath import import_path
from jitlab.errors import ConfigError
from jitlab.core.models.layers import init_zero, timestep_embedding
from jitlab.core.models.protocol import FILLED_FROM_DATA, check_backbone
from jitlab.core.models.spec import build_net, need, net_spec, record_init_args

# what the wrapper answers for the wrapped net: the contract, the rank warning, `jitlab grid plan`, `jitlab info`,
# and the wrapped net's regional compilation (JiTModule's compile)
DELEGATED = ("num_classes", "sample_shape", "patch_dim", "noise_widths", "patch_size", "hidden_size", "depth",
             "img_size", "num_patches", "compile_blocks")


class LearnedSkip(nn.Module):
    """``net(z, t, y) + c(t) z``. Args: ``net`` (the wrapped backbone's spec ``{"class_path", "init_args"}``, as in a
    config or a checkpoint, or the module itself), ``skip_features`` (sinusoidal features of t fed to c's MLP),
    ``skip_hidden`` (its hidden width), and what the data decide, handed to the wrapped net (leave null)."""

    def __init__(self, net: dict[str, Any], skip_features: int = 64, skip_hidden: int = 64,
                 img_size: int | None = None, num_classes: int | None = None, in_channels: int | None = None,
                 dim: int | None = None):
        init_args = record_init_args(locals())
        super().__init__()
        need(skip_features >= 2 and skip_features % 2 == 0 and skip_hidden >= 1, "skip_features",
             f"need an even skip_features >= 2 and skip_hidden >= 1, got {skip_features} and {skip_hidden}")
        filled = {k: init_args[k] for k in FILLED_FROM_DATA if init_args.get(k) is not None}
        inner = net if isinstance(net, nn.Module) else build_net(_with_filled(net, filled))
        self.net = check_backbone(inner, "model.net.init_args.net")
        init_args["net"] = net_spec(inner)
        self.init_args = init_args
        self.skip_features = skip_features
        self.skip = nn.Sequential(nn.Linear(skip_features, skip_hidden), nn.SiLU(), nn.Linear(skip_hidden, 1))
        init_zero([self.skip[-1]])  # c(t) = 0 at the start: the wrapper begins as the wrapped net

    def __getattr__(self, name: str) -> Any:
        if name in DELEGATED:
            inner = self._modules.get("net")
            if inner is None:
                raise AttributeError(name)
            return getattr(inner, name)
        return super().__getattr__(name)

    def c(self, t: Tensor) -> Tensor:
        """The skip's coefficient per sample: (N,) -> (N,)."""
        features = timestep_embedding(t, self.skip_features).to(self.skip[0].weight.dtype)  # (N, F)
        return self.skip(features).squeeze(-1)  # (N,)

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        out = self.net(z, t, y)  # (N, ...)
        c = self.c(t).to(out.dtype).reshape(-1, *([1] * (z.ndim - 1)))  # (N, 1, ...)
        return out + c * z  # (N, ...)


def _with_filled(spec: dict[str, Any], filled: dict[str, Any]) -> dict[str, Any]:
    """The wrapped net's spec with what the data decide, where its constructor takes it and leaves it unset."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ConfigError("model.net.init_args.net", f"must be a backbone spec {{class_path: ..., init_args: "
                                                     f"{{...}}}}, got {spec!r}")
    args = dict(spec.get("init_args") or {})
    try:
        params = inspect.signature(import_path(str(spec["class_path"]))).parameters
    except (ImportError, AttributeError, ValueError):
        raise ConfigError("model.net.init_args.net.class_path", f"cannot import {spec['class_path']!r}") from None
    for key, value in filled.items():
        if key not in params:
            continue
        if args.get(key) is None:
            args[key] = value
        elif args[key] != value:
            raise ConfigError(f"model.net.init_args.net.init_args.{key}", f"is {args[key]} but the wrapper (the "
                                                                          f"data) gives {value}; leave it null")
    return {"class_path": spec["class_path"], "init_args": args}

