"""ToyMLP: the denoiser of the Figure 2 toy, a plain ReLU MLP that does not know the projection."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jitlab.errors import ConfigError
from jitlab.core.models.layers import timestep_embedding
from jitlab.core.models.spec import record_init_args


class ToyMLP(nn.Module):
    """``net(z, t, y)``: (N, D), (N,) -> (N, D) in the configured prediction space; ``y`` is ignored.

    Args:
        dim: the ambient dimension ``D`` (``None``: filled from the data module by the CLI).
        hidden: width of the hidden layers (paper: 256).
        layers: number of linear layers (paper: "a 5-layer ReLU MLP").
        time_features: sinusoidal features of ``t`` concatenated to ``z`` at the input.
    """

    num_classes = None  # unconditional

    def __init__(self, dim: int | None = None, hidden: int = 256, layers: int = 5, time_features: int = 64):
        self.init_args = record_init_args(locals())
        super().__init__()
        if dim is None or dim < 1:
            raise ConfigError("model.net.init_args.dim", f"must be a positive dimension, got {dim}")
        if layers < 2 or hidden < 1 or time_features < 2:
            raise ConfigError("model.net.init_args.layers", "need layers >= 2, hidden >= 1, time_features >= 2")
        self.dim = dim
        self.time_features = time_features
        # "5-layer" = 5 linear layers, ReLU between them: (D + time) -> 256 -> 256 -> 256 -> 256 -> D,
        # i.e. 4 hidden ReLU layers of width 256; the output layer is linear.
        widths = [dim + time_features] + [hidden] * (layers - 1) + [dim]
        modules: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            modules.append(nn.Linear(w_in, w_out))
            if i < layers - 1:
                modules.append(nn.ReLU())
        self.mlp = nn.Sequential(*modules)

    @property
    def sample_shape(self) -> tuple[int]:
        return (self.dim,)

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        features = timestep_embedding(t, self.time_features).to(z.dtype)  # (N, time_features)
        return self.mlp(torch.cat([z, features], dim=1))  # (N, D + time_features) -> (N, D)
