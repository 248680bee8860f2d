"""The backbone contract: what jitlab asks of a denoiser network, declared once.

Every network the module trains (JiT, the toy MLP, a new head or latent model) satisfies ``Backbone``, a
``typing.Protocol`` (as DiT's model contract and k-diffusion's denoiser signature: nothing to inherit):

- ``forward(z, t, y)``: ``z`` (N, *sample_shape) noisy sample, ``t`` (N,) in [0, 1], ``y`` (N,) integer labels
  with ``num_classes`` meaning "no class" (CFG's null label) or ``None`` for an unconditional net; returns a tensor
  of ``z``'s shape whose meaning (x, eps or v) is decided by ``jitlab.core.flow``, never by the network.
- ``sample_shape``: the shape of one sample without the batch, e.g. (C, H, W) or (D,).
- ``num_classes``: the number of real classes (``None``: unconditional).
- ``init_args``: the constructor's arguments, so ``jitlab.core.models.spec`` can rebuild it from a checkpoint.

A network that maps patches also satisfies ``PatchBackbone`` (the rank argument of
``module.warn_noise_through_bottleneck``): ``patch_dim`` (values per output token) and ``noise_widths`` (the widths,
by config field, every token passes through from ``z`` to the output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from jitlab.errors import ConfigError

# constructor arguments a data module may fill (its ``net_defaults``; ``jitlab.commands.cli.fill_net_from_data``)
FILLED_FROM_DATA = ("img_size", "num_classes", "in_channels", "dim")


@runtime_checkable
class Backbone(Protocol):
    init_args: dict[str, Any]
    num_classes: int | None

    @property
    def sample_shape(self) -> tuple[int, ...]: ...

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor: ...


@runtime_checkable
class PatchBackbone(Backbone, Protocol):
    patch_dim: int

    def noise_widths(self) -> dict[str, int]: ...


MEMBERS = ("forward", "sample_shape", "num_classes", "init_args")


def check_backbone(net: nn.Module, field: str = "model.net") -> nn.Module:
    """Return ``net`` if it satisfies ``Backbone``; else one ConfigError naming the class and what it lacks."""
    missing = [name for name in MEMBERS if not hasattr(net, name)]
    if missing:
        raise ConfigError(field, f"{type(net).__module__}.{type(net).__qualname__} is not a jitlab backbone: it "
                                 f"lacks {', '.join(missing)} (see jitlab/core/models/protocol.py)")
    name, shape, classes = type(net).__qualname__, net.sample_shape, net.num_classes
    if not (isinstance(shape, tuple) and shape and all(isinstance(s, int) and s > 0 for s in shape)):
        raise ConfigError(field, f"{name}.sample_shape must be a tuple of positive ints, got {shape!r}")
    if classes is not None and not (isinstance(classes, int) and classes > 0):
        raise ConfigError(field, f"{name}.num_classes must be a positive int or None, got {classes!r}")
    return net


# -- the extension: a flow state that is not the image, auxiliary losses, logged diagnostics ---------------------
#
# A ``StateBackbone`` moves the flow off the image: ``encode(x, y)`` maps the clean image to the clean state the
# flow noises (REG: image and representation token packed in one flat vector; DSD: a learned latent), ``decode``
# maps a sampled state back to an image. ``sample_shape`` is the state's, so the flow and the sampler integrate the
# packed tensor without knowing its parts. ``target_state(x, y, state)`` is the clean state the flow's target is
# built from (``state``, ``state.detach()`` or an EMA encoder's: DSD's variants). An ``AuxLossBackbone`` returns
# named, unweighted auxiliary losses from its own training forward (Table 11's loss needs the blocks' features);
# the module adds ``loss_weights[name] * loss`` and logs each. A ``DiagnosedBackbone`` reports tensors to log (DSD:
# the latent's effective rank) from the clean state of a training batch.


@dataclass(frozen=True)
class CleanBatch:
    """The clean side of a training micro-batch, for the auxiliary losses: x (N, C, H, W) images in [-1, 1]; y (N,)
    true labels; state (N, *sample_shape) ``encode(x, y)`` (``x`` for an image backbone); y_in (N,) the labels the
    network was given (the null class where CFG's label drop hit)."""

    x: Tensor
    y: Tensor
    state: Tensor
    y_in: Tensor


@runtime_checkable
class StateBackbone(Backbone, Protocol):
    @property
    def image_shape(self) -> tuple[int, ...]: ...

    def encode(self, x: Tensor, y: Tensor | None) -> Tensor: ...

    def decode(self, state: Tensor) -> Tensor: ...

    def target_state(self, x: Tensor, y: Tensor | None, state: Tensor) -> Tensor: ...


@runtime_checkable
class AuxLossBackbone(Backbone, Protocol):
    loss_weights: dict[str, float]

    def forward_losses(self, z: Tensor, t: Tensor, y: Tensor | None, clean: CleanBatch
                       ) -> tuple[Tensor, dict[str, Tensor]]: ...


@runtime_checkable
class DiagnosedBackbone(Backbone, Protocol):
    def diagnostics(self, state: Tensor) -> dict[str, Tensor]: ...


def check_state_backbone(net: nn.Module, field: str = "model.net") -> None:
    """A StateBackbone's ``image_shape`` is (C, H, W); an AuxLossBackbone's weights are finite numbers >= 0."""
    if isinstance(net, StateBackbone):
        shape = net.image_shape
        if not (isinstance(shape, tuple) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
            raise ConfigError(field, f"{type(net).__qualname__}.image_shape must be (C, H, W), got {shape!r}")
    if isinstance(net, AuxLossBackbone):
        for name, weight in net.loss_weights.items():
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise ConfigError(field, f"the weight of the auxiliary loss {name!r} must be a number >= 0, "
                                         f"got {weight!r}")
